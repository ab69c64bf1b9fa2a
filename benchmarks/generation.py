"""Greedy generation throughput: pragjax `generate` vs transformers `generate`.

Same weights on both sides. B prompts of P random tokens (no padding), N new
tokens each, greedy, no stop token (both sides must produce exactly N
tokens). Tokens/s = B * N / median seconds per call (prefill included).
pragjax's first call (trace + compile + run) is reported separately and
excluded from the median. The two sides' tokens are compared and the match
printed. Target: pragjax / peer >= 3.

  python benchmarks/generation.py                 # B=8, P=32, N=128
  python benchmarks/generation.py --quick         # smoke test (< 1 min)
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import numpy as np
from common import (
  MODEL_HELP,
  bench_config,
  load_snapshot,
  machine_info,
  markdown_table,
  model_pair,
  paired_timings,
  speedups,
  summary,
  verdict,
  write_json,
)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt-len", type=int, default=32)
  p.add_argument("--new-tokens", type=int, default=128)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  p.add_argument("--intermediate", type=int, default=688)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--attn", nargs="+", default=["sdpa", "eager"], help="transformers attn_implementation(s)")
  p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads")
  p.add_argument("--target", type=float, default=3.0)
  p.add_argument("--model", default="", help=MODEL_HELP)
  p.add_argument("--quick", action="store_true", help="smoke test: B=2, P=8, N=16, 2 repeats")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.prompt_len, args.new_tokens, args.repeats = 2, 8, 16, 2
  return args


def pragjax_fn(model, ids, mask, new_tokens):
  from pragjax.models import generate

  jids, jmask = jax.device_put(ids), jax.device_put(mask)
  return lambda: np.asarray(jax.block_until_ready(
      generate(model, jids, jmask, max_new_tokens=new_tokens).tokens))


def torch_fn(model, ids, mask, new_tokens):
  import torch
  from transformers import GenerationConfig

  gc = GenerationConfig(
      do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
      eos_token_id=None, pad_token_id=0, bos_token_id=None,
  )
  tids, tmask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
  p = ids.shape[1]
  return lambda: model.generate(
      input_ids=tids, attention_mask=tmask, generation_config=gc
  )[:, p:].numpy()


def compare_tokens(a: np.ndarray, b: np.ndarray) -> dict:
  """Exact match, and for each row the length of the common prefix."""
  same = a.shape == b.shape and bool(np.array_equal(a, b))
  prefix = []
  for ra, rb in zip(a, b):
    diff = np.nonzero(ra[: len(rb)] != rb[: len(ra)])[0]
    prefix.append(int(diff[0]) if len(diff) else int(min(len(ra), len(rb))))
  return {
      "identical": same, "shape_pragjax": list(a.shape), "shape_torch": list(b.shape),
      "rows_identical": int(sum(p == a.shape[1] for p in prefix)),
      "common_prefix_per_row": prefix,
  }


def main(argv=None):
  args = parse_args(argv)
  cfg = bench_config(dtype=args.dtype, intermediate=args.intermediate)
  model, cfg, peers = model_pair(args.model, cfg, args.attn, torch_threads=args.torch_threads, dtype=args.dtype)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, cfg.vocab_size, size=(args.batch, args.prompt_len), dtype=np.int32)
  mask = np.ones_like(ids)
  b, n = args.batch, args.new_tokens

  fns = {"pragjax": pragjax_fn(model, ids, mask, n)}
  t0 = time.perf_counter()
  ours = fns["pragjax"]()
  first_call_s = time.perf_counter() - t0
  for impl, m in peers.items():
    fns[f"torch-{impl}"] = torch_fn(m, ids, mask, n)
  match = {k: compare_tokens(ours, fns[k]()) for k in fns if k != "pragjax"}

  before = load_snapshot()
  times = paired_timings(fns, warmup=args.warmup, repeats=args.repeats)
  after = load_snapshot()
  stats = {k: summary(v) for k, v in times.items()}
  for s in stats.values():
    s["tokens_per_s"] = b * n / s["median_s"]
  peer = min((k for k in stats if k != "pragjax"), key=lambda k: stats[k]["median_s"])
  sp = speedups(times["pragjax"], times[peer])
  ratio = sp["of_medians"]

  info = machine_info()
  print(f"# generation  ({info['date']}, {info['processor']}, {info['cpu_count']} cores,"
        f" jax {info['jax']} {info['jax_backend']}, torch {info['torch']} x{info['torch_threads']} threads)")
  print(f"config: {args.model or 'bench'} ({cfg.model_type}) D={cfg.hidden_size} L={cfg.num_hidden_layers}"
        f" I={cfg.intermediate_size}"
        f" V={cfg.vocab_size} dtype={cfg.dtype}; greedy, B={b}, prompt {args.prompt_len},"
        f" {n} new tokens; warmup {args.warmup}, median of {args.repeats}\n")
  rows = []
  for k, s in stats.items():
    rows.append([k, s["tokens_per_s"], f"{s['median_s'] * 1e3:.0f}",
                 f"{s['min_s'] * 1e3:.0f}-{s['max_s'] * 1e3:.0f}",
                 "-" if k == "pragjax" else ("identical" if match[k]["identical"]
                                             else f"{match[k]['rows_identical']}/{b} rows identical"),
                 "-" if k == "pragjax" else f"{stats[k]['median_s'] / stats['pragjax']['median_s']:.2f}x"])
  print(markdown_table(["impl", "new tok/s", "median ms", "min-max ms", "tokens vs pragjax", "pragjax speed-up"], rows))
  print(f"\npragjax first call (trace + compile + run): {first_call_s:.2f} s")
  print(f"pragjax / {peer}: {ratio:.2f}x of medians (paired {sp['paired_median']:.2f}x, mins {sp['of_mins']:.2f}x)"
        f"  -> {verdict(ratio, args.target)} (target >= {args.target}x)")
  print(f"machine load: load1 {before['load1']:.2f} -> {after['load1']:.2f},"
        f" steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  for k, m in match.items():
    print(f"tokens pragjax vs {k}: {'IDENTICAL' if m['identical'] else 'DIFFER'}"
          f" (common prefix per row: {m['common_prefix_per_row']})")
  write_json(args.out, {
      "benchmark": "generation", "machine": info, "args": vars(args), "stats": stats,
      "times": times, "peer": peer, "ratio": ratio, "speedups": sp,
      "load": {"before": before, "after": after}, "verdict": verdict(ratio, args.target),
      "pragjax_first_call_s": first_call_s, "token_match": match,
  })


if __name__ == "__main__":
  main()
