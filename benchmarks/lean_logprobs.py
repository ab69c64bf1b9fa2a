"""Lean (chunked) vs full-logits log-probs: compiled peak memory and step time.

Tracker issue 8. Two passes, each with `lean=True` (never materialises the
`[B, T, V]` logits; `ops.chunked_token_logprobs`) and `lean=False`:

  score  forward only: `batch_token_logprobs(graphdef, params, batch, lean=...)`
  train  `jax.value_and_grad` of `make_sft_loss_fn(graphdef, lean=...)`

plus, for memory only, the same two passes on the log-prob head alone
(`head-*`: final hidden states `[B, T, D]` and the `[D, V]` projection in,
log-probs out), which is exactly the part that `lean` changes.

Memory comes from XLA's buffer assignment, with no execution:
`jax.jit(f).lower(...).compile().memory_analysis()`; peak = temp + argument
+ output bytes (temp is reported separately too), at 4096 tokens laid out as
1 x 4096 and 8 x 512, vocab 32000 / 128256, on a small llama (D=256, 2
layers, so that the vocab projection dominates the parameters). The model's
attention is `--attention chunked` by default (query blocks of 256,
rematerialised: O(256 x T) scores, as a fused GPU kernel would hold): with
dense attention (`--attention xla`, or the CPU default `causal_blocks`,
which keeps every block's scores for the backward pass) the `[B, N, T, T]`
float32 scores at 1 x 4096 are as large as the logits and hide them
(whole-model ratio 1.0-2.4x, `results/run3`); 8 x 512 has the same logits
and 1/8 of the attention. Target: full / lean peak >= 4x. Step time (median,
lean and full alternating in one loop) is measured at a size the CPU runs
quickly (1 x 1024), with max |lean - full| of the values (score) and of the
loss and gradients (train).

  python benchmarks/lean_logprobs.py                  # memory at 1x4096 and 8x512, time at 1 x 1024
  python benchmarks/lean_logprobs.py --no-time        # memory analysis only (no execution)
  python benchmarks/lean_logprobs.py --quick          # smoke test (< 1 min): vocab 32000, 1x4096, time 1 x 256
"""

from __future__ import annotations

import argparse
import os

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import jax.numpy as jnp
import numpy as np
from common import (
  bench_config,
  load_snapshot,
  machine_info,
  markdown_table,
  paired_timings,
  speedups,
  summary,
  verdict,
  write_json,
)
from flax import nnx

PASSES = ("score", "train")
VARIANTS = ("full", "lean")
MB = 2.0**20


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--vocabs", type=int, nargs="+", default=[32000, 128256])
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--intermediate", type=int, default=688)
  p.add_argument("--chunk-size", type=int, default=128, help="lean chunk (positions)")
  p.add_argument("--attention", default="chunked",
                 choices=["default", "xla", "explicit", "chunked", "causal_blocks"],
                 help="model attention_impl ('default': the CPU default, causal_blocks without remat)")
  p.add_argument("--attention-chunk", type=int, default=256, help="query block of chunked attention")
  p.add_argument("--time-vocabs", type=int, nargs="+", default=None, help="vocabs timed (default: --vocabs)")
  p.add_argument("--mem-shapes", nargs="+", default=["1x4096", "8x512"],
                 help="B x T layouts of the memory analysis (same token count: 8x512 shrinks attention)")
  p.add_argument("--time-batch", type=int, default=1)
  p.add_argument("--time-seq", type=int, default=1024)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--no-time", action="store_true", help="memory analysis only")
  p.add_argument("--cpus", type=int, default=2,
                 help="pin the process to this many cores before jax starts (0: no pinning)")
  p.add_argument("--target", type=float, default=4.0, help="full/lean peak-memory target")
  p.add_argument("--quick", action="store_true", help="smoke test: vocab 32000, memory at 1x4096, time at 1 x 256, 2 repeats")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.vocabs, args.mem_shapes, args.time_seq, args.repeats = [32000], ["1x4096"], 256, 2
  args.mem_shapes = [parse_shape(x) for x in args.mem_shapes]
  return args


def parse_shape(s: str) -> tuple[int, int]:
  b, t = s.lower().split("x")
  return int(b), int(t)


# -- model, batch, passes ---------------------------------------------------


def model_config(vocab: int, args):
  return bench_config(
      vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
      intermediate=args.intermediate, max_position_embeddings=max([t for _, t in args.mem_shapes] + [args.time_seq]),
      attention_impl=None if args.attention == "default" else args.attention, attention_chunk=args.attention_chunk,
  )


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int32)
  ones = np.ones((batch, seq), np.int32)
  return {"input_ids": ids, "attention_mask": ones, "loss_mask": ones.copy()}


def abstract_batch(batch: int, seq: int) -> dict[str, jax.ShapeDtypeStruct]:
  s = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
  return {"input_ids": s, "attention_mask": s, "loss_mask": s}


def split_model(cfg, abstract: bool):
  """`(graphdef, params)`; abstract params are ShapeDtypeStructs (nothing allocated)."""
  from pragjax.models import Decoder

  make = lambda: Decoder(cfg, rngs=nnx.Rngs(0))
  model = nnx.eval_shape(make) if abstract else make()
  return nnx.split(model, nnx.Param)


def make_pass(graphdef, name: str, lean: bool, chunk: int):
  """`f(params, batch)`: the scoring pass or the train pass's value_and_grad."""
  from pragjax.methods.sft.loss import batch_token_logprobs, make_sft_loss_fn

  if name == "score":
    return lambda p, b: batch_token_logprobs(graphdef, p, b, lean=lean, chunk_size=chunk)
  grad_fn = jax.value_and_grad(make_sft_loss_fn(graphdef, lean=lean, chunk_size=chunk), has_aux=True)
  return lambda p, b: grad_fn(p, b, None)


def make_head_pass(name: str, lean: bool, chunk: int):
  """The log-prob head alone, as `pragjax.methods.sft.loss` calls it: `f((hidden, weight), ids)`.

  hidden `[B, T, D]` final-normed states, weight `[D, V]`; "score" returns the
  `[B, T-1]` log-probs, "train" the mean NLL and its gradient w.r.t. both.
  """
  from pragjax import ops

  def logp(hw, ids):
    h, w = hw
    if lean:
      return ops.chunked_token_logprobs(h[:, :-1], w, ids[:, 1:], chunk_size=chunk)
    return ops.token_logprobs((h @ w).astype(jnp.float32), ids)

  if name == "score":
    return logp
  return jax.value_and_grad(lambda hw, ids: -jnp.mean(logp(hw, ids)))


# -- memory -----------------------------------------------------------------


def memory_stats(f, params, batch) -> dict[str, int]:
  m = jax.jit(f).lower(params, batch).compile().memory_analysis()
  out = {
      "temp": m.temp_size_in_bytes, "argument": m.argument_size_in_bytes,
      "output": m.output_size_in_bytes, "alias": m.alias_size_in_bytes,
      "xla_peak": int(getattr(m, "peak_memory_in_bytes", 0) or 0),
  }
  out["peak"] = out["temp"] + out["argument"] + out["output"]
  return out


def memory_row(fns: dict, inputs: tuple, vocab: int, name: str, shape, args) -> dict:
  mem = {v: memory_stats(f, *inputs) for v, f in fns.items()}
  ratio = mem["full"]["peak"] / mem["lean"]["peak"]
  b, t = shape
  return {
      "vocab": vocab, "pass": name, "batch": b, "seq": t, "memory": mem, "ratio": ratio,
      "temp_ratio": mem["full"]["temp"] / max(mem["lean"]["temp"], 1),
      "logits_bytes": 4 * b * t * vocab, "verdict": verdict(ratio, args.target),
  }


def bench_memory(vocab: int, shape: tuple[int, int], args) -> list[dict]:
  """Model-level passes, then the log-prob head alone, at one B x T layout."""
  cfg = model_config(vocab, args)
  graphdef, params = split_model(cfg, abstract=True)
  batch = abstract_batch(*shape)
  rows = []
  for name in PASSES:
    fns = {v: make_pass(graphdef, name, v == "lean", args.chunk_size) for v in VARIANTS}
    rows.append(memory_row(fns, (params, batch), vocab, name, shape, args))
  hw = (jax.ShapeDtypeStruct(shape + (cfg.hidden_size,), jnp.float32),
        jax.ShapeDtypeStruct((cfg.hidden_size, vocab), jnp.float32))
  for name in PASSES:
    fns = {v: make_head_pass(name, v == "lean", args.chunk_size) for v in VARIANTS}
    rows.append(memory_row(fns, (hw, batch["input_ids"]), vocab, f"head-{name}", shape, args))
  return rows


# -- time -------------------------------------------------------------------


def max_abs_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def bench_time(vocab: int, args) -> list[dict]:
  cfg = model_config(vocab, args)
  graphdef, params = split_model(cfg, abstract=False)
  batch = jax.device_put(make_batch(args.time_batch, args.time_seq, vocab))
  tokens = args.time_batch * args.time_seq
  rows = []
  for name in PASSES:
    fns = {v: jax.jit(make_pass(graphdef, name, v == "lean", args.chunk_size)) for v in VARIANTS}
    outs = {v: jax.block_until_ready(f(params, batch)) for v, f in fns.items()}
    runs = {v: (lambda f=f: jax.block_until_ready(f(params, batch))) for v, f in fns.items()}
    times = paired_timings(runs, warmup=args.warmup, repeats=args.repeats)
    stats = {v: summary(t) for v, t in times.items()}
    for s in stats.values():
      s["tokens_per_s"] = tokens / s["median_s"]
    rows.append({
        "vocab": vocab, "pass": name, "batch": args.time_batch, "seq": args.time_seq, "times": times,
        "stats": stats, "speedup_lean_over_full": speedups(times["lean"], times["full"]),
        "max_abs_diff": max_abs_diff(outs["lean"], outs["full"]),
    })
    del outs
  return rows


# -- output -----------------------------------------------------------------


def print_memory(rows: list[dict], args) -> None:
  out = []
  for r in rows:
    f, l = r["memory"]["full"], r["memory"]["lean"]
    out.append([
        f"{r['batch']}x{r['seq']}", r["vocab"], r["pass"], f"{r['logits_bytes'] / MB:,.0f}",
        f"{f['peak'] / MB:,.1f}", f"{l['peak'] / MB:,.1f}",
        f"**{r['ratio']:.2f}x**", f"{f['temp'] / MB:,.1f}", f"{l['temp'] / MB:,.1f}", f"{r['temp_ratio']:.1f}x",
        f"{r['verdict']} (>= {args.target}x)",
    ])
  print("## peak memory (compiled, no execution)\n")
  print(markdown_table(
      ["B x T", "vocab", "pass", "[B,T,V] f32 MiB", "full peak MiB", "lean peak MiB", "full/lean",
       "full temp MiB", "lean temp MiB", "temp full/lean", "target"], out))
  print("\npeak = temp + argument + output bytes from `memory_analysis()`"
        " (arguments: params + batch; train outputs include the gradients)."
        "\nscore/train: the whole model (`batch_token_logprobs`, value_and_grad of `make_sft_loss_fn`);"
        "\nhead-*: the log-prob head alone on given final hidden states (what `lean` changes).")


def print_time(rows: list[dict], args) -> None:
  out = []
  for r in rows:
    s, sp = r["stats"], r["speedup_lean_over_full"]
    ms = lambda v: f"{s[v]['median_s'] * 1e3:.1f} [{s[v]['min_s'] * 1e3:.1f}]"
    out.append([
        r["vocab"], r["pass"], ms("full"), ms("lean"), f"{sp['of_medians']:.2f}x", f"{sp['paired_median']:.2f}x",
        s["lean"]["tokens_per_s"], f"{r['max_abs_diff']:.1e}",
    ])
  print(f"\n## step time, B x T = {args.time_batch} x {args.time_seq}; warmup {args.warmup},"
        f" median of {args.repeats}\n")
  print(markdown_table(
      ["vocab", "pass", "full ms [min]", "lean ms [min]", "full/lean time (medians)", "paired",
       "lean tok/s", "max |lean-full|"], out))


def pin_cpus(n: int) -> list[int]:
  """Restricts this process (XLA's thread pool) to the first `n` allowed cores."""
  cores = sorted(os.sched_getaffinity(0))
  if 0 < n < len(cores):
    cores = cores[:n]
    os.sched_setaffinity(0, cores)
  return cores


def main(argv=None):
  args = parse_args(argv)
  cores = pin_cpus(args.cpus)  # before jax starts its thread pool
  info = machine_info()
  info["cores_used"] = cores
  print(f"# lean_logprobs  ({info['date']}, {info['processor']}, {info['cpu_count']} cores, {len(cores)} used,"
        f" jax {info['jax']} {info['jax_backend']})")
  print(f"config: llama D={args.hidden} L={args.layers} I={args.intermediate} float32,"
        f" lean chunk {args.chunk_size} positions, attention {args.attention}"
        f" (query block {args.attention_chunk})\n")
  before = load_snapshot()
  memory = [r for shape in args.mem_shapes for v in args.vocabs for r in bench_memory(v, shape, args)]
  print_memory(memory, args)
  timing = [] if args.no_time else [r for v in (args.time_vocabs or args.vocabs) for r in bench_time(v, args)]
  if timing:
    print_time(timing, args)
  after = load_snapshot()
  print(f"\nmachine load: load1 {before['load1']:.2f} -> {after['load1']:.2f},"
        f" steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  write_json(args.out, {"benchmark": "lean_logprobs", "machine": info, "args": vars(args),
                        "load": {"before": before, "after": after}, "memory": memory, "timing": timing})


if __name__ == "__main__":
  main()
