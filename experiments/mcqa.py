"""Multiple-choice and pairwise evaluation by option likelihood (sum, mean, PMI, letter).

  python -m experiments.mcqa --config=experiments/configs/mcqa.py:smollm2 --workdir=/tmp/mcqa_smollm2
  python -m experiments.mcqa --config=experiments/configs/mcqa.py --config.model.path=/ckpt/Mistral-7B-v0.1 \
      --config.tasks=implicatures,presuppositions_as_nli,/data/pub.jsonl --workdir=/runs/mcqa

Loads every task of `tasks` (BIG-bench directories or files, JSONL, CSV; see
`pragjax.eval.mcqa`), scores every option of every record under each mode
of `modes` in one batched lean pass, writes WORKDIR/results.json (config,
per-task / per-group / overall accuracies with 95% Wilson intervals, chance
and majority rates, the table, and with `save_examples` every record's
option scores), WORKDIR/mcqa.png (per-task accuracies beside chance and majority; `plot`) and
prints the markdown table.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.mcqa import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/mcqa.py", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (results.json)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_report(recipe.run(_CONFIG.value, _WORKDIR.value))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
