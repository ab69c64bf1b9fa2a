"""Scan over layers and remat: compile time, compiled step memory and step time of a deep model.

The model is SmolLM2-135M's shape (llama, 30 blocks, D=576, 9/3 heads of 64, I=1536, V=49152, tied
embeddings; random weights, float32) unless `--layers` / `--hidden` say otherwise. For each variant
(`model.scan_layers` x `model.remat`) the script builds the one SFT train step
(`make_train_step(make_sft_loss_fn(..., lean=True), AdamW)`) on a B x T batch and reports:

  lower_s, compile_s   jax.jit(...).lower(...) and .compile() wall seconds (each variant in a fresh
                       trace; XLA's compilation cache is off for this process)
  temp_MiB             the compiled step's temporary buffers (`memory_analysis().temp_size_in_bytes`):
                       activations kept for the backward pass and scratch
  step_s               median wall seconds of `--repeats` steps after one warm-up (0 repeats: skipped)
  loss                 the first step's loss (must agree across variants)

  python benchmarks/scan_layers.py                    # 30 blocks, 4 x 256, all variants
  python benchmarks/scan_layers.py --repeats 0        # compile time and memory only
  python benchmarks/scan_layers.py --quick            # smoke test: 4 blocks, 2 x 32

Prints a markdown table, the load average before and after, and (with `--out`) a JSON file.
"""

from __future__ import annotations

import argparse
import gc
import time

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import numpy as np
from common import load_snapshot, machine_info, markdown_table, write_json

VARIANTS = (("unrolled", False, "none"), ("unrolled", False, "full"), ("scan", True, "none"),
            ("scan", True, "full"), ("scan", True, "dots_saveable"))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--layers", type=int, default=30)
  p.add_argument("--hidden", type=int, default=576)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.layers, args.hidden, args.batch, args.seq, args.repeats = 4, 64, 2, 32, 1
  return args


def model_config(args, scan: bool, remat: str):
  from pragjax.models import ModelConfig

  heads = max(1, args.hidden // 64)
  kv = 3 if heads % 3 == 0 else 1
  return ModelConfig(model_type="llama", vocab_size=49152 if not args.quick else 512, hidden_size=args.hidden,
                     intermediate_size=args.hidden * 8 // 3, num_hidden_layers=args.layers,
                     num_attention_heads=heads, num_key_value_heads=kv, head_dim=args.hidden // heads,
                     tie_word_embeddings=True, scan_layers=scan, remat=remat)


def measure(args, scan: bool, remat: str, batch) -> dict:
  from flax import nnx

  from pragjax.methods.sft.loss import make_sft_loss_fn
  from pragjax.models import Decoder
  from pragjax.optim import make_optimizer
  from pragjax.train import init_train_state, make_train_step

  cfg = model_config(args, scan, remat)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  tx = make_optimizer({"name": "adamw", "lr": 1e-4})
  graphdef, state = init_train_state(model, tx)
  step = make_train_step(make_sft_loss_fn(graphdef, lean=True), tx)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  mem = compiled.memory_analysis()
  state, metrics = compiled(state, batch)
  loss = float(jax.block_until_ready(metrics["loss"]))
  times = []
  for _ in range(args.repeats):
    s = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics["loss"])
    times.append(time.perf_counter() - s)
  del state, compiled, lowered
  gc.collect()
  return {"lower_s": t1 - t0, "compile_s": t2 - t1, "temp_MiB": mem.temp_size_in_bytes / 2**20,
          "args_MiB": mem.argument_size_in_bytes / 2**20,
          "step_s": float(np.median(times)) if times else float("nan"), "loss": loss}


def main(argv=None):
  args = parse_args(argv)
  jax.config.update("jax_enable_compilation_cache", False)
  rng = np.random.default_rng(0)
  vocab = model_config(args, False, "none").vocab_size
  ids = rng.integers(0, vocab, (args.batch, args.seq)).astype(np.int32)
  ones = np.ones_like(ids)
  batch = jax.device_put({"input_ids": ids, "attention_mask": ones, "loss_mask": ones.copy()})
  load_before = load_snapshot()
  results = {}
  for name, scan, remat in VARIANTS:
    key = f"{name}/remat={remat}"
    results[key] = measure(args, scan, remat, batch)
    print(key, {k: round(v, 3) for k, v in results[key].items()}, flush=True)
  load_after = load_snapshot()
  base = results["unrolled/remat=none"]
  rows = [[k, f"{r['lower_s']:.1f}", f"{r['compile_s']:.1f}", f"{(r['lower_s'] + r['compile_s']) / (base['lower_s'] + base['compile_s']):.2f}x",
           f"{r['temp_MiB']:.0f}", f"{r['temp_MiB'] / base['temp_MiB']:.2f}x", f"{r['step_s']:.2f}", f"{r['loss']:.6f}"]
          for k, r in results.items()]
  print(f"\n{args.layers} blocks, D={args.hidden}, batch {args.batch} x {args.seq}, float32, AdamW, lean SFT loss")
  print(markdown_table(["variant", "lower s", "compile s", "build time vs unrolled", "temp MiB",
                        "temp vs unrolled", "step s (median)", "first loss"], rows))
  print(f"load average before {load_before}, after {load_after}")
  losses = [r["loss"] for r in results.values()]
  spread = max(losses) - min(losses)
  print(f"first-step loss spread across variants: {spread:.2e}")
  write_json(args.out, {"machine": machine_info(), "args": vars(args), "results": results,
                        "load_before": load_before, "load_after": load_after})
  return results


if __name__ == "__main__":
  main()
