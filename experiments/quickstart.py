"""The built-in quickstart: every method's toy check in one table, minutes on a CPU.

  python -m experiments.quickstart [--workdir=/tmp/pragjax_quickstart] [--only=sft]

Each entry of `ROWS` runs one short experiment on the shipped toy model and
returns table rows; method issues add their entry here.
"""

import os
import tempfile
import time

from absl import app, flags

from experiments import sft
from experiments.configs import sft as sft_configs
from pragjax.train import runner

_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (default: a new temporary directory)")
_ONLY = flags.DEFINE_list("only", [], "run only these rows (names in ROWS)")


def sft_row(workdir: str) -> list[dict]:
  """Arithmetic SFT: the shipped model fine-tuned on fresh problems."""
  config = sft_configs.get_config("toy")
  config.train.progress = False
  result, _, rows = sft.run(config, os.path.join(workdir, "sft"))
  before, after = rows["before"], rows["after"]
  return [
      {"experiment": "sft (arithmetic)", "metric": "held-out answer accuracy",
       "before": before["accuracy"], "after": after["accuracy"], "n": after["n"]},
      {"experiment": "sft (arithmetic)", "metric": "held-out solutions with every step right",
       "before": before["exact"], "after": after["exact"], "n": after["n"]},
      {"experiment": "sft (arithmetic)", "metric": f"train loss after {result.step} steps",
       "before": float("nan"), "after": result.last_metrics["loss"], "n": result.step},
  ]


ROWS = {"sft": sft_row}


def _fmt(x):
  return "-" if x != x else f"{x:.3f}"


def main(argv):
  del argv
  runner.setup({})
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="pragjax_quickstart_")
  names = _ONLY.value or list(ROWS)
  unknown = sorted(set(names) - set(ROWS))
  if unknown:
    raise app.UsageError(f"unknown --only rows {unknown}; available: {', '.join(ROWS)}")
  table, times = [], {}
  for name in names:
    t0 = time.time()
    print(f"[quickstart] {name} ...", flush=True)
    table.extend(ROWS[name](workdir))
    times[name] = time.time() - t0
  print(f"\npragjax quickstart (workdir {workdir})\n")
  print("| experiment | metric | before | after | n |")
  print("|---|---|---|---|---|")
  for r in table:
    print(f"| {r['experiment']} | {r['metric']} | {_fmt(r['before'])} | {_fmt(r['after'])} | {r['n']} |")
  print("\n" + ", ".join(f"{k}: {v:.0f}s" for k, v in times.items()))


if __name__ == "__main__":
  app.run(main)
