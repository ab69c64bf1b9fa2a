"""Decode cost against the cache size: blocked attention over the filled slots vs attention over every slot.

The bench config (llama D=256, L=4, 8/4 heads, V=4096, float32), B prompts of P random tokens, greedy,
no stop token. For each cache size S (`--slots`, default 96 and 544) the run generates N = S - P new
tokens twice per repeat, interleaved: `decode_attention="blocked"` (the default: only the cache blocks
that hold tokens are read) and `"full"` (every preallocated slot under the mask). It reports the median
milliseconds per new token (prefill included, P tokens once), the paired ratio and whether both give the same tokens.

  python benchmarks/decode_step.py                 # S = 96, 544; B=8, P=32
  python benchmarks/decode_step.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import numpy as np
from common import bench_config, build_pragjax, load_snapshot, machine_info, markdown_table, paired_timings, write_json


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt-len", type=int, default=32)
  p.add_argument("--slots", type=int, nargs="+", default=[96, 544])
  p.add_argument("--block", type=int, default=64, help="decode_block")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.prompt_len, args.slots, args.repeats, args.block = 2, 8, [24, 40], 2, 8
  return args


def gen_fn(model, ids, mask, new_tokens):
  """`run() -> tokens` of one greedy `generate` call (cache of P + N slots, rounded up to the block)."""
  from pragjax.models import generate

  jids, jmask = jax.device_put(ids), jax.device_put(mask)
  return lambda: np.asarray(jax.block_until_ready(generate(model, jids, jmask, max_new_tokens=new_tokens).tokens))


def main(argv=None):
  args = parse_args(argv)
  base = bench_config()
  rng = np.random.default_rng(0)
  ids = rng.integers(0, base.vocab_size, size=(args.batch, args.prompt_len), dtype=np.int32)
  mask = np.ones_like(ids)
  models = {name: build_pragjax(dataclasses.replace(base, decode_attention=name, decode_block=args.block))
            for name in ("blocked", "full")}
  before = load_snapshot()
  rows, results = [], {}
  for s in args.slots:
    n = s - args.prompt_len
    fns = {name: gen_fn(m, ids, mask, n) for name, m in models.items()}
    outs = {name: fn() for name, fn in fns.items()}  # compile
    times = paired_timings(fns, warmup=args.warmup, repeats=args.repeats)
    med = {k: float(np.median(v)) for k, v in times.items()}
    paired = float(np.median(np.asarray(times["full"]) / np.asarray(times["blocked"])))
    same = bool(np.array_equal(outs["blocked"], outs["full"]))
    results[s] = {"new_tokens": n, "median_s": med, "paired_full_over_blocked": paired, "tokens_identical": same}
    rows.append([s, n, f"{med['blocked'] / n * 1e3:.2f}", f"{med['full'] / n * 1e3:.2f}", f"{paired:.2f}x",
                 "identical" if same else "DIFFER"])
  after = load_snapshot()
  info = machine_info()
  print(f"# decode ({info['date']}, {info['cpu_count']} cores, jax {info['jax']} {info['jax_backend']})")
  print(f"llama D={base.hidden_size} L={base.num_hidden_layers} V={base.vocab_size} float32, greedy, "
        f"B={args.batch}, prompt {args.prompt_len}, decode_block {args.block}; median of {args.repeats}\n")
  print(markdown_table(["cache slots S", "new tokens", "blocked ms/token", "full ms/token",
                        "full / blocked (paired)", "tokens"], rows))
  print(f"load average {before['load1']:.2f} -> {after['load1']:.2f}")
  write_json(args.out, {"machine": info, "args": vars(args), "results": results, "load_before": before,
                        "load_after": after})
  return results


if __name__ == "__main__":
  main()
