"""Truth probes (sAwMIL and baselines, conformal three-way prediction) per layer of a model.

  python -m experiments.truth_probes --config=experiments/configs/truth_probes.py:toy --workdir=/tmp/truth_toy
  python -m experiments.truth_probes --config=experiments/configs/truth_probes.py:trilemma \
      --config.model.path=/ckpt/Meta-Llama-3-8B --workdir=/tmp/truth_trilemma

Collects activation bags of every statement (WORKDIR/bags/<dataset>/, reused
by a rerun with the same model, layers and statements), re-splits each dataset
`split.num_resplits` times by entity into train / validation / calibration /
test, fits the probes of `probe.methods` one-vs-all per layer and re-split,
chooses each method's layer on validation, evaluates the acceptance hypothesis
(`pragjax.methods.probes.report.verdict`) with bootstrap intervals, and writes
WORKDIR/results.json, WORKDIR/scores/<dataset>.npz (test scores per re-split),
one PNG per dataset (per-layer MCC with its band over re-splits, coverage,
abstention) and prints the tables. Probes trained on one dataset are also
scored on the others' test splits.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.probes import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/truth_probes.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (bags/, results.json, plots)")


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  recipe.print_summary(recipe.run(_CONFIG.value, _WORKDIR.value), _CONFIG.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
