"""Pretrains the built-in toy model on a toy world's corpus.

  python -m experiments.pretrain_toy --config=experiments/configs/pretrain_toy.py:arithmetic \
      --workdir=/tmp/pretrain_arithmetic [--config.ship=True]
  python -m experiments.pretrain_toy --config=experiments/configs/pretrain_toy.py:knowledge \
      --workdir=/tmp/pretrain_knowledge [--config.ship=True]
  python -m experiments.pretrain_toy --config=experiments/configs/pretrain_toy.py:priming \
      --workdir=/tmp/pretrain_priming [--config.ship=True]
  python -m experiments.pretrain_toy --config=experiments/configs/pretrain_toy.py:sami \
      --workdir=/tmp/pretrain_sami [--config.ship=True]

Prints the final loss against the corpus's unigram entropy and what the model
learnt (arithmetic: held-out accuracy; knowledge: fact recall and verdicts;
sami: how often sampled answers follow their rules, against chance);
with `ship`, copies WORKDIR/hf into the package's assets.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.sft import toy_pretrain
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/pretrain_toy.py:arithmetic",
                                          "pretraining config (file:variant)")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics, hf/)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  toy_pretrain.print_summary(toy_pretrain.pretrain(_CONFIG.value, _WORKDIR.value), _CONFIG.value, _WORKDIR.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
