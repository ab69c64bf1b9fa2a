"""SAMI: iterate sample -> train on the C x C InfoNCE bound -> evaluate, and report win rate, MI bound, length.

  python -m experiments.sami --config=experiments/configs/sami.py:toy --workdir=/tmp/sami
  launch/gpu_node.sh sami --config=experiments/configs/sami.py:mistral7b \
      --config.model.path=/ckpt/Mistral-7B-v0.1 --config.data.queries_path=tldr.jsonl \
      --config.sami.constitutions_dir=../shared/data/sami/constitutions_mistral --workdir=/runs/sami

Toy (`world.name=sami`): queries, principles and the programmatic judge of
the principles world. Files: queries from `data.queries_path` (held out by
hash), principles from `sami.constitutions_dir`, the log-probability judge.
Rerunning the same command resumes (see `pragjax.methods.sami.iterate`).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.sami import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/sami.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (iter_K/ per iteration, report.json)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
