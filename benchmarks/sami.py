"""SAMI on the toy config: time per iteration (sampling, C x C scoring, training) and scoring throughput.

  python benchmarks/sami.py [--queries 128] [--repeats 3] [--out results.json]

1. One SAMI iteration of `experiments/configs/sami.py:toy` on the built-in
   `sami` model, `--queries` training queries x C constitutions, split into
   sampling (the project's KV-cache sampler), scoring (the held-out-style
   C x C matrix of every group, jitted, one forward per `score_batch`
   groups) and training (one pass with the engine's step). The first round
   includes compilation and is reported apart; medians over the others.
2. Scoring throughput on the same groups, in (constitution, response)
   sequence pairs per second: the batched jitted C x C scorer against a
   plain per-pair loop (one jitted forward per pair, no padding, every
   shape compiled in a warm-up pass first), with the largest difference
   between their matrices.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import machine_info, markdown_table, write_json  # noqa: E402
from experiments.configs import sami as configs  # noqa: E402
from pragjax.methods.sami import iterate, scoring  # noqa: E402
from pragjax.methods.sami import toy_eval as sami_toy  # noqa: E402
from pragjax.methods.sami import training as sami_training  # noqa: E402
from pragjax.toyworld import sami as world  # noqa: E402
from pragjax.train import runner  # noqa: E402


def one_iteration(config, queries, library, seed: int, workdir: str) -> tuple[dict, list]:
  """(seconds of each phase, the sampled groups)."""
  sc = config.sami
  model = runner.load_model(dict(config.model))
  sets = iterate.constitution_sets(library, len(queries), (seed, 1), sc)
  t0 = time.perf_counter()
  groups = iterate.sample_groups(model, queries, sets, sc, rng=jax.random.key(seed), log=lambda *_: None)
  t1 = time.perf_counter()
  examples = iterate.group_examples(groups, model.tokenizer, sc)
  scoring.score_groups(model.model, examples, pad_id=model.tokenizer.pad_token_id, reduction=sc.reduction,
                       batch_size=sc.score_batch)
  t2 = time.perf_counter()
  shutil.rmtree(workdir, ignore_errors=True)
  sami_training.train_pass(config, workdir, examples, model, export_hf=config.train.export_hf)
  t3 = time.perf_counter()
  return {"sampling": t1 - t0, "scoring": t2 - t1, "training": t3 - t2, "total": t3 - t0}, examples


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--queries", type=int, default=128, help="training queries of the timed iteration")
  ap.add_argument("--repeats", type=int, default=3, help="timed rounds after the first (compile) round")
  ap.add_argument("--out", default=None, help="write every timing as JSON")
  args = ap.parse_args()
  runner.quiet_logging()
  config = configs.get_config("toy")
  config.train.update(progress=False, export_hf=False, async_checkpoint=False)
  config.mesh.update(fsdp=1)
  queries = [world.format_query(q) for q in world.training_queries(np.random.default_rng(0), args.queries)]
  library = sami_toy.library()
  tmp = tempfile.mkdtemp(prefix="sami_bench_")
  rounds = []
  for r in range(args.repeats + 1):
    times, examples = one_iteration(config, queries, library, seed=r, workdir=os.path.join(tmp, f"r{r}"))
    rounds.append(times)
    print(f"round {r}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()), flush=True)
  med = {k: statistics.median(t[k] for t in rounds[1:]) for k in rounds[0]}
  c = config.sami.num_constitutions
  rows = [[k, f"{rounds[0][k]:.1f}", f"{med[k]:.1f}"] for k in ("sampling", "scoring", "training", "total")]
  print(f"\nSAMI iteration, toy config: {args.queries} queries x C={c} ({args.queries * c} responses, "
        f"{args.queries * c * c} scored pairs), medians of {args.repeats} rounds\n")
  print(markdown_table(["phase", "first round (compiles) s", "median s"], rows))

  model = runner.load_model(dict(config.model))
  pad = model.tokenizer.pad_token_id
  pairs = sum(len(e["sequences"]) for e in examples)
  batched = scoring.score_groups(model.model, examples, pad_id=pad, batch_size=config.sami.score_batch)
  alone = scoring.score_pairs_one_by_one(model.model, examples)  # warm-up: compiles every length
  tb, tl = [], []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    batched = scoring.score_groups(model.model, examples, pad_id=pad, batch_size=config.sami.score_batch)
    tb.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    alone = scoring.score_pairs_one_by_one(model.model, examples)
    tl.append(time.perf_counter() - t0)
  diff = float(np.abs(batched - alone).max())
  rows = [["batched C x C (jit, one forward per batch)", f"{pairs / statistics.median(tb):.0f}",
           f"{statistics.median(tb):.2f}"],
          ["per-pair loop (jit, one forward per pair)", f"{pairs / statistics.median(tl):.0f}",
           f"{statistics.median(tl):.2f}"]]
  print(f"\nscoring throughput, {pairs} (constitution, response) pairs; max |difference| {diff:.2e}; "
        f"speed-up {statistics.median(tl) / statistics.median(tb):.1f}x\n")
  print(markdown_table(["scorer", "pairs/s", "median s"], rows))
  write_json(args.out, {"machine": machine_info(), "rounds": rounds, "median": med, "scoring_batched_s": tb,
                        "scoring_per_pair_s": tl, "pairs": pairs, "max_abs_diff": diff})
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
