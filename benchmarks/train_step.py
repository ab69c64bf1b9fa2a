"""SFT train-step throughput and MFU: pragjax (jax.jit, CPU) vs transformers (PyTorch CPU).

Same weights on both sides (pragjax model -> save_hf -> from_pretrained) and
the same step: mean token cross-entropy of the shifted labels, then AdamW
(lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay), float32.

  pragjax  `make_train_step(make_sft_loss_fn(graphdef, lean=...), tx)`, with
           `tx = make_optimizer({"name": "adamw", "lr": 1e-4})`; the step
           donates its state, which is threaded from call to call; timing
           blocks on `metrics["loss"]`. Both the lean (chunked log-probs) and
           the full-logits loss are measured.
  torch    `loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)` with
           `torch.optim.AdamW`, `torch.set_num_threads(2)`.

All calls alternate within one timing loop. Tokens/s = B * T / median seconds
per step. Targets: pragjax (lean) / fastest torch >= 1.5x, and
MFU = tokens/s * `train_flops_per_token(cfg, T)` / `measured_matmul_peak`
(a float32 1024^3 matmul on this machine) >= 50%. The first two steps' losses
of every side are compared (step 2 checks that the optimizers agree).

`--gpu-1b`: on a GPU, also the MFU of a ~1B llama (D=2048, L=16, 16/8 heads,
I=5632, V=32000; bfloat16 compute, float32 params; 8 x 2048 tokens) against
`device_peak_flops()`; skipped on CPU.

  python benchmarks/train_step.py                     # 8 x 256, float32
  python benchmarks/train_step.py --gpu-1b            # + the 1B MFU when a GPU is present
  python benchmarks/train_step.py --quick             # smoke test (< 1 min)

`--cpus N` (default 2) pins the process to N cores before jax starts (0: no
pinning); `--torch-threads` (default 2); `--skip-cpu` with `--gpu-1b` runs
only the GPU part. Under heavy machine load PyTorch's 2-thread steps are
erratic (OpenMP barriers), so compare only numbers from a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys

if "--gpu-1b" in sys.argv:  # let jax see the GPU (common defaults JAX_PLATFORMS to cpu)
  os.environ.setdefault("JAX_PLATFORMS", "")

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import jax.numpy as jnp
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

VARIANTS = ("lean", "full")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--intermediate", type=int, default=688)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--chunk-size", type=int, default=128, help="lean log-prob chunk (positions)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--attn", nargs="+", default=["sdpa", "eager"], help="transformers attn_implementation(s)")
  p.add_argument("--torch-threads", type=int, default=common.TORCH_THREADS)
  p.add_argument("--torch-adamw", choices=["default", "foreach", "fused"], default="default",
                 help="torch.optim.AdamW implementation")
  p.add_argument("--peak-n", type=int, default=1024, help="matmul size of the measured peak")
  p.add_argument("--target", type=float, default=1.5, help="pragjax/torch tokens/s target")
  p.add_argument("--mfu-target", type=float, default=0.5)
  p.add_argument("--cpus", type=int, default=2,
                 help="pin the process to this many cores before jax starts (0: no pinning)")
  p.add_argument("--gpu-1b", action="store_true", help="also the ~1B llama MFU (GPU only)")
  p.add_argument("--skip-cpu", action="store_true", help="with --gpu-1b: skip the CPU comparison")
  p.add_argument("--gpu-batch", type=int, default=8)
  p.add_argument("--gpu-seq", type=int, default=2048)
  p.add_argument("--gpu-attn", choices=["xla", "cudnn"], default="cudnn",
                 help="attention kernel of the 1B run (falls back to xla if cudnn fails)")
  p.add_argument("--gpu-repeats", type=int, default=10)
  p.add_argument("--model", default="", help=MODEL_HELP)
  p.add_argument("--quick", action="store_true", help="smoke test: 2x64, sdpa only, 1 warmup, 3 repeats")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.seq, args.warmup, args.repeats, args.attn = 2, 64, 1, 3, ["sdpa"]
    args.gpu_batch, args.gpu_seq, args.gpu_repeats = 2, 512, 3
  return args


# -- inputs -----------------------------------------------------------------


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  """SFT batch, every token real and a target (int32 [B, T])."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int32)
  ones = np.ones((batch, seq), np.int32)
  return {"input_ids": ids, "attention_mask": ones, "loss_mask": ones.copy()}


# -- pragjax side -----------------------------------------------------------


def fresh_state(model, tx):
  """`(graphdef, state)` on a private copy of the weights (the step donates them)."""
  from pragjax.train import init_train_state

  graphdef, state = init_train_state(model, tx)
  return graphdef, jax.tree.map(jnp.copy, state)


def pragjax_runner(model, batch: dict, *, lean: bool, lr: float, chunk_size: int):
  """`run() -> loss` performing one donated train step on threaded state."""
  from pragjax.methods.sft.loss import make_sft_loss_fn
  from pragjax.optim import make_optimizer
  from pragjax.train import make_train_step

  tx = make_optimizer({"name": "adamw", "lr": lr})
  graphdef, state = fresh_state(model, tx)
  step = make_train_step(make_sft_loss_fn(graphdef, lean=lean, chunk_size=chunk_size), tx)
  jbatch = jax.device_put(batch)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], jbatch)
    return jax.block_until_ready(metrics["loss"])

  return run


# -- torch side -------------------------------------------------------------


def torch_runner(peer, batch: dict, *, lr: float, adamw: str):
  """`run() -> loss`: forward, shifted-label cross-entropy, backward, AdamW step."""
  import torch
  import torch.nn.functional as F

  peer.train()
  kw = {} if adamw == "default" else {adamw: True}
  opt = torch.optim.AdamW(peer.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw)
  ids = torch.from_numpy(batch["input_ids"]).long()
  mask = torch.from_numpy(batch["attention_mask"]).long()
  labels = ids[:, 1:].reshape(-1)

  def run():
    with torch.enable_grad():
      logits = peer(input_ids=ids, attention_mask=mask).logits
      loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels)
      loss.backward()
      opt.step()
      opt.zero_grad(set_to_none=True)
    return loss.detach()

  return run


# -- measurement ------------------------------------------------------------


def first_losses(runners: dict, n: int = 2) -> dict[str, list[float]]:
  """The losses of each side's first `n` steps (before any timing)."""
  return {k: [float(run()) for _ in range(n)] for k, run in runners.items()}


def loss_diffs(losses: dict[str, list[float]], peer: str) -> dict[str, list[float]]:
  ref = losses[peer]
  return {k: [abs(a - b) for a, b in zip(v, ref)] for k, v in losses.items() if k != peer}


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
  return tokens_per_s * flops_per_token / peak


def bench_cpu(args) -> dict:
  from pragjax.train.flops import measured_matmul_peak, train_flops_per_token

  cfg = bench_config(dtype="float32", intermediate=args.intermediate)
  model, cfg, peers = model_pair(args.model, cfg, args.attn)
  set_torch_threads(args.torch_threads)  # load_torch sets the default
  batch = make_batch(args.batch, args.seq, cfg.vocab_size)
  runners = {f"pragjax-{v}": pragjax_runner(model, batch, lean=v == "lean", lr=args.lr,
                                             chunk_size=args.chunk_size) for v in VARIANTS}
  for impl, m in peers.items():
    runners[f"torch-{impl}"] = torch_runner(m, batch, lr=args.lr, adamw=args.torch_adamw)
  losses = first_losses(runners)
  times = paired_timings(runners, warmup=args.warmup, repeats=args.repeats)
  peak = measured_matmul_peak("float32", n=args.peak_n)
  fpt = train_flops_per_token(cfg, args.seq)
  tokens = args.batch * args.seq
  stats = {k: summary(v) for k, v in times.items()}
  for s in stats.values():
    s["tokens_per_s"] = tokens / s["median_s"]
    s["mfu"] = mfu(s["tokens_per_s"], fpt, peak)
  peer = min(peers, key=lambda i: stats[f"torch-{i}"]["median_s"])
  sp = {v: speedups(times[f"pragjax-{v}"], times[f"torch-{peer}"]) for v in VARIANTS}
  return {
      "config": cfg_summary(cfg), "batch": args.batch, "seq": args.seq, "times": times, "stats": stats,
      "peer": f"torch-{peer}", "speedups": sp, "first_losses": losses,
      "loss_abs_diff": loss_diffs(losses, f"torch-{peer}"),
      "flops_per_token": fpt, "matmul_peak_flops": peak, "peak_n": args.peak_n,
      "verdict": {v: verdict(sp[v]["of_medians"], args.target) for v in VARIANTS},
      "mfu_verdict": {v: verdict(stats[f"pragjax-{v}"]["mfu"], args.mfu_target) for v in VARIANTS},
  }


def cfg_summary(cfg) -> dict:
  keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "dtype", "param_dtype", "attention_impl")
  return {k: getattr(cfg, k) for k in keys}


# -- the 1B GPU run ---------------------------------------------------------


def gpu_1b_config(attn: str):
  return bench_config(
      dtype="bfloat16", param_dtype="float32", hidden_size=2048, num_hidden_layers=16,
      num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate=5632,
      vocab_size=32000, max_position_embeddings=4096, attention_impl=None if attn == "xla" else attn,
  )


def time_steps(run, warmup: int, repeats: int) -> list[float]:
  return paired_timings({"run": run}, warmup=warmup, repeats=repeats)["run"]


def bench_gpu_1b_once(args, attn: str) -> dict:
  from flax import nnx

  from pragjax.models import Decoder
  from pragjax.train.flops import device_peak_flops, train_flops_per_token

  cfg = gpu_1b_config(attn)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  batch = make_batch(args.gpu_batch, args.gpu_seq, cfg.vocab_size)
  run = pragjax_runner(model, batch, lean=True, lr=args.lr, chunk_size=args.chunk_size)
  del model
  first = [float(run()) for _ in range(2)]
  times = time_steps(run, warmup=1, repeats=args.gpu_repeats)
  s = summary(times)
  s["tokens_per_s"] = args.gpu_batch * args.gpu_seq / s["median_s"]
  fpt, peak = train_flops_per_token(cfg, args.gpu_seq), device_peak_flops("bfloat16")
  return {
      "config": cfg_summary(cfg), "params": int(n_params), "batch": args.gpu_batch, "seq": args.gpu_seq,
      "attn": attn, "device": jax.devices()[0].device_kind, "times": times, "stats": s,
      "first_losses": first, "flops_per_token": fpt, "peak_flops": peak,
      "mfu": mfu(s["tokens_per_s"], fpt, peak),
  }


def bench_gpu_1b(args) -> dict:
  if jax.default_backend() != "gpu":
    return {"skipped": f"no GPU (jax backend: {jax.default_backend()})"}
  if args.gpu_attn == "xla":
    return bench_gpu_1b_once(args, "xla")
  try:
    return bench_gpu_1b_once(args, args.gpu_attn)
  except Exception as e:  # noqa: BLE001  (cudnn attention may be unavailable)
    err = f"{type(e).__name__}: {str(e)[:500]}"
  gc.collect()  # free the failed attempt's device buffers before retrying
  print(f"gpu-1b with attention {args.gpu_attn!r} failed ({err}); retrying with xla")
  out = bench_gpu_1b_once(args, "xla")
  out["fallback_from"] = f"{args.gpu_attn}: {err}"
  return out


# -- output -----------------------------------------------------------------


def print_header(info: dict, r: dict, args) -> None:
  c = r["config"]
  print(f"# train_step  ({info['date']}, {info['processor']}, {info['cpu_count']} cores,"
        f" {len(info['cores_used'])} used,"
        f" jax {info['jax']} {info['jax_backend']}, torch {info['torch']} x{info['torch_threads']} threads)")
  print(f"config: {args.model or 'bench'} D={c['hidden_size']} L={c['num_hidden_layers']} heads={c['num_attention_heads']}/"
        f"{c['num_key_value_heads']} head_dim={c['head_dim']} I={c['intermediate_size']} V={c['vocab_size']}"
        f" {c['dtype']}; B x T = {r['batch']} x {r['seq']}; AdamW lr {args.lr}, torch AdamW"
        f" '{args.torch_adamw}'; warmup {args.warmup}, median of {args.repeats}\n")


def print_table(r: dict, args) -> None:
  s, peer = r["stats"], r["peer"]
  rows = []
  for k in s:
    ms = f"{s[k]['median_s'] * 1e3:.1f} [{s[k]['min_s'] * 1e3:.1f}]"
    row = [k, s[k]["tokens_per_s"], ms, f"{100 * s[k]['mfu']:.1f}%"]
    if k.startswith("pragjax"):
      v = k.split("-", 1)[1]
      sp = r["speedups"][v]
      row += [f"**{sp['of_medians']:.2f}x**", f"{sp['paired_median']:.2f}x", f"{sp['of_mins']:.2f}x",
              f"{r['verdict'][v]} (>= {args.target}x)", f"{r['mfu_verdict'][v]} (>= {100 * args.mfu_target:.0f}%)"]
    else:
      row += ["peer" if k == peer else "", "", "", "", ""]
    rows.append(row)
  headers = ["side", "tok/s", "ms/step [min]", "MFU", f"/ {peer} (medians)", "paired", "mins",
             "speed target", "MFU target"]
  print(markdown_table(headers, rows))


def print_checks(r: dict) -> None:
  print(f"\nmeasured float32 matmul peak ({r['peak_n']}^3): {r['matmul_peak_flops'] / 1e9:,.1f} GFLOP/s;"
        f" model FLOPs/token (train, T={r['seq']}): {r['flops_per_token'] / 1e6:,.1f} M")
  for k, d in r["loss_abs_diff"].items():
    l0 = r["first_losses"][k]
    print(f"loss {k} vs {r['peer']}: step 1 {l0[0]:.6f} |diff| {d[0]:.2e}; step 2 {l0[1]:.6f} |diff| {d[1]:.2e}")


def print_gpu(g: dict) -> None:
  if "skipped" in g:
    print(f"\ngpu-1b: skipped ({g['skipped']})")
    return
  s = g["stats"]
  print(f"\n## gpu-1b ({g['device']}, {g['params'] / 1e9:.2f} B params, {g['config']['dtype']} compute /"
        f" {g['config']['param_dtype']} params, {g['batch']} x {g['seq']}, attention {g['attn']})\n")
  print(markdown_table(
      ["tok/s", "ms/step [min]", "TFLOP/s", "peak TFLOP/s", "MFU", "first losses"],
      [[s["tokens_per_s"], f"{s['median_s'] * 1e3:.1f} [{s['min_s'] * 1e3:.1f}]",
        s["tokens_per_s"] * g["flops_per_token"] / 1e12, g["peak_flops"] / 1e12, f"{100 * g['mfu']:.1f}%",
        ", ".join(f"{x:.4f}" for x in g["first_losses"])]],
  ))


def set_torch_threads(n: int) -> None:
  import torch

  torch.set_num_threads(n)


def pin_cpus(n: int) -> list[int]:
  """Restricts this process (torch and XLA thread pools) to the first `n` allowed cores."""
  cores = sorted(os.sched_getaffinity(0))
  if 0 < n < len(cores):
    cores = cores[:n]
    os.sched_setaffinity(0, cores)
  return cores


def on_cpu():
  """Runs jax computations on the host CPU even when a GPU is the default device."""
  if jax.default_backend() == "cpu":
    return contextlib.nullcontext()
  return jax.default_device(jax.devices("cpu")[0])


def run_cpu(args, info: dict) -> dict:
  before = load_snapshot()
  with on_cpu():
    r = bench_cpu(args)
  after = load_snapshot()
  r["load"] = {"before": before, "after": after}
  print_header(info, r, args)
  print_table(r, args)
  print_checks(r)
  print(f"\ntok/s = B*T / median step; 'paired' = median of per-round ratios; 'mins' = ratio of best times."
        f"\nmachine load: load1 {before['load1']:.2f} -> {after['load1']:.2f},"
        f" steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  return r


def main(argv=None):
  args = parse_args(argv)
  skip_cpu = args.skip_cpu and args.gpu_1b
  cores = pin_cpus(0 if skip_cpu else args.cpus)  # before jax starts its thread pools
  set_torch_threads(args.torch_threads)
  info = machine_info()
  info["cores_used"] = cores
  r = None if skip_cpu else run_cpu(args, info)
  gpu = None
  if args.gpu_1b:
    gpu = bench_gpu_1b(args)
    print_gpu(gpu)
  write_json(args.out, {"benchmark": "train_step", "machine": info, "args": vars(args),
                        "results": r, "gpu_1b": gpu})


if __name__ == "__main__":
  main()
