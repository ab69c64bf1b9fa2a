"""Direct preference optimisation (and IPO, cDPO, robust DPO, SPPO, hinge, NCA) on preference pairs.

  python -m experiments.dpo --config=experiments/configs/dpo.py:toy --workdir=/tmp/dpo
  python -m experiments.dpo --config=experiments/configs/dpo.py:llama8b \
      --config.model.path=/ckpt/Llama-3.1-8B-Instruct --config.data.train_path=pairs.jsonl \
      --config.data.eval_path=heldout.jsonl --workdir=/runs/dpo

A killed run restarted with the same command resumes from its last checkpoint
(and reuses its reference store).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.preference import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/dpo.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, reference_store/, metrics.jsonl, "
                               "tb/, report.json, hf/)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value, _WORKDIR.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
