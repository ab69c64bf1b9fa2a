"""Built-in toy checkpoints shipped inside the package (HF layout).

Each is produced by `python -m experiments.pretrain_toy` with the config
variant of the same name and copied here with `--config.ship=True`; the
script reproduces it exactly from its seed.
"""

from __future__ import annotations

import os

# The files sit beside the worlds that trained them (package data of `pragjax/toyworld`).
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toyworld", "assets")
# Greedy answer accuracy of the shipped model on `arithmetic.heldout_problems(0, 500)`,
# as printed by its pretraining run (tests check the shipped files against it).
STATED_HELDOUT_ACCURACY = {"arithmetic": 0.370}
BUILTIN_MODELS = ("arithmetic", "knowledge", "priming", "sami")


def model_path(name: str) -> str:
  if name not in BUILTIN_MODELS:
    raise ValueError(f"unknown built-in model {name!r}; built-in: {', '.join(BUILTIN_MODELS)}")
  path = os.path.join(ASSETS, name)
  if not os.path.exists(os.path.join(path, "config.json")):
    raise FileNotFoundError(
        f"built-in model {name!r} is missing at {path}; recreate it with "
        f"`python -m experiments.pretrain_toy --config=experiments/configs/pretrain_toy.py:{name} "
        f"--workdir=/tmp/pretrain_{name} --config.ship=True`"
    )
  return path
