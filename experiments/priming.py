"""Priming and ignore-top-k: inject one surprising sample into ordinary training, measure priming and memorization.

  python -m experiments.priming --config=experiments/configs/priming.py:toy --workdir=/tmp/priming
  python -m experiments.priming --config=experiments/configs/priming.py:real --config.model.path=/ckpt/gemma-2b \
      --config.data.background_path=bg.jsonl --config.data.samples_path=outlandish.jsonl \
      --config.data.prompts_path=prompts.jsonl --workdir=/runs/priming

Protocol (Sun et al., 2025): `inject.warmup_steps` steps of ordinary training
on background data, then, for every sample and variant, `inject.steps` more
steps in which the sample replaces one element of every batch (every run sees
the same background batches). Scores before (after the warm-up) and after
each run: priming (thematic prompts of the keyword's theme) and memorization
(the sample's own context), see `pragjax.methods.priming.scores`. Variants: baseline,
ignore-top-k per `variants.ignore_topk` (`pragjax.optim.ignore_topk` chained
after the optimizer), and stepping-stone rewrites (accepted only where the
keyword's prior in its own context rises) trained with the baseline
optimizer. Writes WORKDIR/report.json and, with `report.plot`,
WORKDIR/priming_scatter.png; each variant's scores are kept in
WORKDIR/runs/<variant>.npz and reused by a rerun with the same config.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.priming import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/priming.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (report.json, priming_scatter.png)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
