"""Forward-pass throughput: pragjax (jax.jit, CPU) vs transformers (PyTorch CPU).

Same weights on both sides (pragjax model -> save_hf -> from_pretrained).
For each shape `B x T` the pragjax call and the PyTorch calls (sdpa and
eager attention) alternate within one timing loop; the faster PyTorch
implementation is the peer. Tokens/s = B * T / median seconds per forward.
Target: pragjax / peer >= 1.5.

  python benchmarks/model_forward.py                      # 8x256 and 8x512, float32
  python benchmarks/model_forward.py --dtype bfloat16
  python benchmarks/model_forward.py --quick              # smoke test (< 1 min)
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import numpy as np
from common import (
  MODEL_HELP,
  bench_config,
  jit_forward,
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
  p.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512])
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  p.add_argument("--intermediate", type=int, default=688)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--attn", nargs="+", default=["sdpa", "eager"], help="transformers attn_implementation(s)")
  p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads")
  p.add_argument("--target", type=float, default=1.5)
  p.add_argument("--model", default="", help=MODEL_HELP)
  p.add_argument("--quick", action="store_true", help="smoke test: 2x64, 1 warmup, 3 repeats")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.seq_lens, args.warmup, args.repeats = 2, [64], 1, 3
  return args


def make_inputs(batch: int, seq: int, vocab: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int32)
  return ids, np.ones((batch, seq), np.int32)


def max_logit_diff(f, st, peer, ids, mask) -> float:
  import torch

  ours = np.asarray(f(st, ids, mask), np.float32)
  theirs = peer(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
  return float(np.max(np.abs(ours - theirs.logits.float().numpy())))


def bench_shape(f, st, peers, batch, seq, cfg, args) -> dict:
  import torch

  ids, mask = make_inputs(batch, seq, cfg.vocab_size)
  jids, jmask = jax.device_put(ids), jax.device_put(mask)
  tids, tmask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
  fns = {"pragjax": lambda: jax.block_until_ready(f(st, jids, jmask))}
  for impl, m in peers.items():
    fns[f"torch-{impl}"] = lambda m=m: m(input_ids=tids, attention_mask=tmask).logits
  times = paired_timings(fns, warmup=args.warmup, repeats=args.repeats)
  stats = {k: summary(v) for k, v in times.items()}
  for s in stats.values():
    s["tokens_per_s"] = batch * seq / s["median_s"]
  peer = min(peers, key=lambda i: stats[f"torch-{i}"]["median_s"])
  sp = speedups(times["pragjax"], times[f"torch-{peer}"])
  ratio = sp["of_medians"]
  return {
      "batch": batch, "seq": seq, "stats": stats, "times": times, "peer": f"torch-{peer}",
      "ratio": ratio, "speedups": sp,
      "verdict": verdict(ratio, args.target),
      "max_abs_logit_diff": max_logit_diff(f, st, peers[peer], ids, mask),
  }


def main(argv=None):
  args = parse_args(argv)
  cfg = bench_config(dtype=args.dtype, intermediate=args.intermediate)
  model, cfg, peers = model_pair(args.model, cfg, args.attn, torch_threads=args.torch_threads, dtype=args.dtype)
  f, st = jit_forward(model)
  info = machine_info()
  print(f"# model_forward  ({info['date']}, {info['processor']}, {info['cpu_count']} cores,"
        f" jax {info['jax']} {info['jax_backend']}, torch {info['torch']} x{info['torch_threads']} threads)")
  print(f"config: {args.model or 'bench'} ({cfg.model_type}) D={cfg.hidden_size} L={cfg.num_hidden_layers}"
        f" heads={cfg.num_attention_heads}/"
        f"{cfg.num_key_value_heads} head_dim={cfg.head_dim} I={cfg.intermediate_size} V={cfg.vocab_size}"
        f" dtype={cfg.dtype}; warmup {args.warmup}, median of {args.repeats}\n")
  before = load_snapshot()
  results = [bench_shape(f, st, peers, args.batch, t, cfg, args) for t in args.seq_lens]
  after = load_snapshot()
  rows = []
  for r in results:
    s, sp = r["stats"], r["speedups"]
    ms = lambda k: f"{s[k]['median_s'] * 1e3:.1f} [{s[k]['min_s'] * 1e3:.1f}]"
    row = [f"{r['batch']}x{r['seq']}", s["pragjax"]["tokens_per_s"], ms("pragjax")]
    for impl in args.attn:
      row += [s[f"torch-{impl}"]["tokens_per_s"], ms(f"torch-{impl}")]
    row += [r["peer"], f"**{sp['of_medians']:.2f}x**", f"{sp['paired_median']:.2f}x", f"{sp['of_mins']:.2f}x",
            f"{r['verdict']} (>= {args.target}x)", f"{r['max_abs_logit_diff']:.1e}"]
    rows.append(row)
  headers = ["B x T", "pragjax tok/s", "pragjax ms [min]"]
  for impl in args.attn:
    headers += [f"torch-{impl} tok/s", f"torch-{impl} ms [min]"]
  headers += ["peer", "pragjax/peer (medians)", "paired", "mins", "target", "max |dlogit|"]
  print(markdown_table(headers, rows))
  print(f"\ntok/s from medians; 'paired' = median of per-round ratios; 'mins' = ratio of best times."
        f"\nmachine load: load1 {before['load1']:.2f} -> {after['load1']:.2f},"
        f" steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  write_json(args.out, {"benchmark": "model_forward", "machine": info, "args": vars(args),
                        "config": {"intermediate_size": cfg.intermediate_size, "dtype": cfg.dtype},
                        "load": {"before": before, "after": after}, "results": results})


if __name__ == "__main__":
  main()
