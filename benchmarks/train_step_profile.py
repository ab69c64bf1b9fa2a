"""Where the train step's time goes: a jax profiler trace of the bench SFT step, summed by XLA op kind.

  python benchmarks/train_step_profile.py                       # bench config, 8 x 256, lean loss, AdamW
  python benchmarks/train_step_profile.py --model builtin:smollm2-135m-instruct --batch 4
  python benchmarks/train_step_profile.py --quick               # tiny shapes (< 1 min)

The step is the one `train_step.py` times (`make_train_step(make_sft_loss_fn(..., lean=True), adamw)`,
donated state). After warm-up, `--steps` steps run under `jax.profiler.trace`; the trace (an XSpace protobuf,
read with `jax.profiler.ProfileData`) holds one event per executed XLA op on the CPU worker threads. Each op is
classed from the compiled HLO (`compiled.as_text()`): its instruction name -> opcode and, for fusions, whether
they contain a dot (the YNNPACK / oneDNN matmul fusions) or only elementwise / reduce work:

  matmul      `dot` and fusions containing one (the model's FLOPs)
  elementwise loop / input fusions without a dot (norms, rope, softmax, AdamW's update, casts)
  copy        `copy`, `transpose` and copy/bitcast fusions (layout changes)
  reduce      `reduce`, `reduce-window`, `sort`
  other       the rest (custom calls, dynamic slices, while loops' own bookkeeping, ...)

Per class: busy time summed over threads (ms/step), its share, and the wall time of a step; then the top
ops with their HLO shapes. "Python/dispatch" = step wall time minus the span of XLA work in that step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile
import time

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import numpy as np
from common import MODEL_HELP, bench_config, load_snapshot, machine_info, markdown_table, model_pair, write_json


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--steps", type=int, default=5, help="steps traced (after 3 warm-up steps)")
  p.add_argument("--top", type=int, default=15)
  p.add_argument("--full", action="store_true", help="profile the full-logits loss instead of the lean one")
  p.add_argument("--chunk-size", type=int, default=128, help="lean log-prob chunk (positions), as train_step.py")
  p.add_argument("--model", default="", help=MODEL_HELP)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.batch, args.seq, args.steps = 2, 64, 2
  return args


_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+([\w\-]+)\(")


def hlo_index(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, bool]]:
  """From compiled HLO text: instruction name -> (opcode, result shape), and fused computation name -> whether
  it contains a dot (a fusion's `calls=` names its computation)."""
  instr, has_dot, current = {}, {}, None
  calls = {}
  for line in text.splitlines():
    m = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      has_dot.setdefault(current, False)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, shape, op = m.groups()
    instr[name] = (op, shape)
    if op in ("dot", "convolution") and current is not None:
      has_dot[current] = True
    c = re.search(r"calls=%?([\w.\-]+)", line)
    if c:
      calls[name] = c.group(1)
  fusion_dot = {name: has_dot.get(comp, False) for name, comp in calls.items()}
  return instr, fusion_dot


def classify(name: str, instr, fusion_dot) -> str:
  op = instr.get(name, (None,))[0]
  if op is None:  # names the HLO text does not hold (thunk bookkeeping)
    base = name.split(".")[0]
    op = {"dot": "dot", "copy": "copy", "transpose": "transpose"}.get(base, base)
  if op in ("dot", "convolution") or (op == "fusion" and fusion_dot.get(name)):
    return "matmul"
  if op in ("copy", "transpose") or (op == "fusion" and re.match(r"^(copy|bitcast|transpose)", name)):
    return "copy"
  if op == "fusion":
    return "elementwise"
  if op in ("reduce", "reduce-window", "sort"):
    return "reduce"
  return "other"


def main(argv=None):
  args = parse_args(argv)
  from train_step import make_batch, pragjax_runner

  from pragjax.train.flops import measured_matmul_peak, train_flops_per_token

  cfg = bench_config(dtype="float32") if not args.quick else bench_config(
      hidden_size=64, num_hidden_layers=2, vocab_size=512, intermediate=128, num_attention_heads=4,
      num_key_value_heads=2, head_dim=16)
  model, cfg, _ = model_pair(args.model, cfg, attn_implementations=())
  batch = make_batch(args.batch, args.seq, cfg.vocab_size)
  run = pragjax_runner(model, batch, lean=not args.full, lr=1e-4, chunk_size=args.chunk_size)
  del model
  for _ in range(3):
    run()
  compiled_text = _compiled_text(run)
  instr, fusion_dot = hlo_index(compiled_text)
  before = load_snapshot()
  walls = []
  with tempfile.TemporaryDirectory(prefix="pragjax_profile_") as d:
    with jax.profiler.trace(d):
      for _ in range(args.steps):
        t0 = time.perf_counter()
        run()
        walls.append(time.perf_counter() - t0)
    path = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
  after = load_snapshot()

  busy, count, spans = collections.Counter(), collections.Counter(), []
  for plane in data.planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      if line.name == "python":
        continue
      for e in line.events:
        if e.name.startswith("ThunkExecutor"):
          spans.append((e.start_ns, e.start_ns + e.duration_ns))
          continue
        busy[e.name] += e.duration_ns
        count[e.name] += 1
  per_step = {k: v / args.steps / 1e6 for k, v in busy.items()}  # ms
  classes = collections.Counter()
  for k, v in per_step.items():
    classes[classify(k, instr, fusion_dot)] += v
  total_busy = sum(classes.values())
  wall_ms = float(np.median(walls)) * 1e3
  xla_span_ms = (max(e for _, e in spans) - min(s for s, _ in spans)) / args.steps / 1e6 if spans else 0.0
  peak = measured_matmul_peak("float32")
  fpt = train_flops_per_token(cfg, args.seq)
  tokens = args.batch * args.seq
  info = machine_info()
  print(f"# train_step_profile  ({info['date']}, {info['processor']}, {info['cpu_count']} cores, jax {info['jax']}"
        f" {info['jax_backend']}; load1 {before['load1']:.2f} -> {after['load1']:.2f})")
  print(f"config: {args.model or 'bench'} D={cfg.hidden_size} L={cfg.num_hidden_layers} V={cfg.vocab_size}"
        f" {cfg.dtype}; {args.batch} x {args.seq}; {'full-logits' if args.full else 'lean'} loss, AdamW;"
        f" {args.steps} traced steps\n")
  print(f"step wall time (median): {wall_ms:.1f} ms = {tokens / wall_ms * 1e3:,.0f} tok/s,"
        f" MFU {tokens / wall_ms * 1e3 * fpt / peak:.1%} of the measured {peak / 1e9:.0f} GFLOP/s;"
        f" XLA ops busy {total_busy:.1f} thread-ms/step over {info['cpu_count']} threads\n")
  matmul_flops_per_step = fpt * tokens
  rows = []
  for k in ("matmul", "elementwise", "copy", "reduce", "other"):
    v = classes.get(k, 0.0)
    extra = f"{matmul_flops_per_step / (v / 1e3) / 1e9:.0f} GFLOP/s per busy thread-second (model FLOPs)" if k == "matmul" and v else ""
    rows.append([k, f"{v:.1f}", f"{100 * v / total_busy:.1f}%" if total_busy else "-", extra])
  print(markdown_table(["class", "busy ms/step (all threads)", "share", "note"], rows))
  top = sorted(per_step.items(), key=lambda kv: -kv[1])[: args.top]
  print()
  print(markdown_table(["op", "class", "opcode", "shape", "ms/step", "calls/step"],
                       [[k, classify(k, instr, fusion_dot), instr.get(k, ("?",))[0], instr.get(k, ("", "?"))[1][:60],
                         f"{v:.2f}", f"{count[k] / args.steps:.0f}"] for k, v in top]))
  print(f"\nXLA span per step {xla_span_ms:.1f} ms of {wall_ms:.1f} ms wall: python/dispatch/idle"
        f" {max(wall_ms - xla_span_ms, 0.0):.1f} ms")
  write_json(args.out, {"benchmark": "train_step_profile", "machine": info, "args": vars(args),
                        "wall_ms": wall_ms, "walls_s": walls, "classes_ms": dict(classes), "top": top,
                        "xla_span_ms": xla_span_ms, "mfu": tokens / wall_ms * 1e3 * fpt / peak,
                        "load": {"before": before, "after": after}})


def _compiled_text(run) -> str:
  """The compiled HLO of the runner's step (its closure holds the jitted step, state and batch)."""
  cells = {n: c.cell_contents for n, c in zip(run.__code__.co_freevars, run.__closure__ or ())}
  holder, step, jbatch = cells["holder"], cells["step"], cells["jbatch"]
  return step.lower(holder["state"], jbatch).compile().as_text()


if __name__ == "__main__":
  main()
