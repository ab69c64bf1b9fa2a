"""Online RL (GRPO, Dr. GRPO, DAPO, RLOO) with a verifiable reward.

  python -m experiments.rl --config=experiments/configs/rl.py:toy --workdir=/tmp/rl
  python -m experiments.rl --config=experiments/configs/rl.py:toy --config.rl.algorithm=dapo --workdir=/tmp/dapo
  python -m experiments.rl --config=experiments/configs/rl.py:qwen_math7b \
      --config.model.path=/ckpt/Qwen2.5-Math-7B --config.data.train_path=train.jsonl \
      --config.data.eval_path=test.jsonl --workdir=/runs/grpo

A killed run restarted with the same command resumes from its last checkpoint (the rollout in progress
included).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.rl import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/rl.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics.jsonl, tb/, report.json)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value, _WORKDIR.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
