"""Implicit PRM: train outcome reward models r = beta log pi/pi_ref and evaluate their free process rewards.

  python -m experiments.implicit_prm --config=experiments/configs/implicit_prm.py:toy --workdir=/tmp/iprm
  python -m experiments.implicit_prm --config=experiments/configs/implicit_prm.py:llama8b \
      --config.model.path=/ckpt/Llama-3.1-8B-Instruct --config.data.train_path=rollouts.jsonl \
      --config.eval.processbench_dir=../shared/data/processbench --workdir=/runs/iprm

Toy (`world.name=arithmetic`): sample -> label by final answer -> train one
PRM per `prm.losses` -> best-of-n and first-error F1 on held-out problems.
Real checkpoints: train on `data.train_path` (outcome or stepwise JSONL, see
`pragjax.methods.prm.data`), then ProcessBench with a threshold tuned per split.
Each PRM trains in WORKDIR/<loss>; a killed run resumes there.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.prm import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/implicit_prm.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (one subdirectory per trained PRM, report.json)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
