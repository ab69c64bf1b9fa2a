"""Supervised fine-tuning on JSONL (or the toy arithmetic world).

  python -m experiments.sft --config=experiments/configs/sft.py:toy --workdir=/tmp/sft
  python -m experiments.sft --config=experiments/configs/sft.py:llama8b \
      --config.model.path=/ckpt/Llama-3.1-8B-Instruct --config.data.train_path=train.jsonl \
      --workdir=/runs/sft

A killed run restarted with the same command resumes from its last checkpoint.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.sft import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/sft.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics.jsonl, tb/, hf/)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value, _WORKDIR.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
