"""Multiple-choice scoring throughput: `pragjax.eval.mcqa` (batched lean pass) vs a transformers per-option loop.

Both sides score the same (context, option) token rows of one BIG-bench task
on the same model (default: the real built-in SmolLM2-135M-Instruct, read by
pragjax's GGUF loader and by transformers' from the same file): the sum of
the option tokens' log-probabilities. pragjax runs `mcqa.score_rows` (rows
sorted by length, bucketed, `--batch` rows per jitted lean forward);
transformers runs one forward per row (what a per-option evaluation loop
does) with `torch.inference_mode`, a float32 log-softmax and the same
positions. Timings alternate between the two sides (`--repeats`), after one
untimed warm-up pass of each (pragjax compiles its buckets there); the
table gives medians, options/s and the paired ratio, and the largest score
difference between the two.

  python benchmarks/mcqa.py                          # implicatures, 64 records (128 options)
  python benchmarks/mcqa.py --task=presuppositions_as_nli --records=48 --threads=1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.common import load_snapshot, machine_info, markdown_table, setup_torch, write_json  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="builtin:smollm2-135m-instruct")
  p.add_argument("--task", default="implicatures", help="a task under ../shared/data/bigbench, or a path")
  p.add_argument("--records", type=int, default=64)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=2, help="torch threads")
  p.add_argument("--out", default=None)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  import numpy as np
  import torch
  from transformers import AutoModelForCausalLM

  from pragjax.eval import mcqa
  from pragjax.train import runner

  setup_torch(args.threads)
  task = args.task if os.path.exists(args.task) else os.path.join(
      os.path.dirname(os.path.dirname(HERE)), "shared", "data", "bigbench", args.task)
  records = mcqa.subsample(mcqa.load_task(task), args.records, seed=0)
  loaded = runner.load_model(dict(path=args.model))
  tok = loaded.tokenizer
  rows = []
  for r in records:
    for o in r.options:
      ctx, opt = mcqa.continuation_ids(tok, r.prompt, o)
      rows.append((ctx + opt, len(opt)))
  tokens = sum(len(ids) for ids, _ in rows)
  path = loaded.path
  peer = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                              dtype=torch.float32).eval()

  def ours():
    return mcqa.score_rows(loaded.model, rows, pad_id=tok.pad_token_id or 0, batch_size=args.batch)

  def theirs():
    out = np.zeros((len(rows),), np.float64)
    with torch.inference_mode():
      for i, (ids, n) in enumerate(rows):
        logits = peer(torch.tensor([ids], dtype=torch.long)).logits[0].float()
        lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        out[i] = float(lp[-n:].double().sum())
    return out

  load0 = load_snapshot()
  a, b = ours(), theirs()  # warm-up (pragjax compiles each bucket once)
  times = {"pragjax": [], "transformers": []}
  for _ in range(args.repeats):
    for name, fn in (("pragjax", ours), ("transformers", theirs)):
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  med = {k: statistics.median(v) for k, v in times.items()}
  paired = [t / p for p, t in zip(times["pragjax"], times["transformers"])]
  diff = float(np.abs(a - b).max())
  print(f"\n{os.path.basename(task)}: {len(records)} records, {len(rows)} options, {tokens} tokens; model "
        f"{os.path.basename(path)}; torch threads {args.threads}; load average {load0}")
  print(markdown_table(["scorer", "median s", "options/s", "tokens/s"],
                       [[k, med[k], len(rows) / med[k], tokens / med[k]] for k in med]))
  print(f"transformers / pragjax time: paired median {statistics.median(paired):.2f}x "
        f"({', '.join(f'{x:.2f}' for x in paired)}); largest score difference {diff:.2e} nats")
  write_json(args.out, dict(task=task, records=len(records), options=len(rows), tokens=tokens, times=times,
                            medians=med, paired=paired, max_abs_diff=diff, load_before=load0,
                            load_after=load_snapshot(), threads=args.threads, machine=machine_info()))


if __name__ == "__main__":
  main()
