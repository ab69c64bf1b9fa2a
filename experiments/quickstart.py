"""The built-in quickstart: every method's toy check in one table, minutes on a CPU.

  python -m experiments.quickstart [--workdir=/tmp/pragjax_quickstart] [--only=sft]

The rows are `pragjax.methods.quickstart.ROWS`: each runs one short
experiment on a shipped model and returns table rows.
"""

import tempfile
import time

from absl import app, flags

from pragjax.methods import quickstart
from pragjax.train import runner

_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (default: a new temporary directory)")
_ONLY = flags.DEFINE_list("only", [], "run only these rows (names in pragjax.methods.quickstart.ROWS)")


def main(argv):
  del argv
  runner.setup({})
  rows = quickstart.ROWS
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="pragjax_quickstart_")
  names = _ONLY.value or list(rows)
  unknown = sorted(set(names) - set(rows))
  if unknown:
    raise app.UsageError(f"unknown --only rows {unknown}; available: {', '.join(rows)}")
  table, times = [], {}
  for name in names:
    t0 = time.time()
    print(f"[quickstart] {name} ...", flush=True)
    table.extend(rows[name](workdir))
    times[name] = time.time() - t0
  print(f"\npragjax quickstart (workdir {workdir})\n")
  print(quickstart.format_table(table))
  print("\n" + ", ".join(f"{k}: {v:.0f}s" for k, v in times.items()))


if __name__ == "__main__":
  app.run(main)
