"""Peak host memory of `load_hf` relative to the checkpoint's size on disk.

Every measurement runs in a fresh subprocess so that its baseline is clean:
  1. import jax + pragjax, initialise the CPU backend with a tiny jnp op;
  2. record the baseline RSS (VmRSS) and reset the kernel's peak-RSS counter
     (`echo 5 > /proc/self/clear_refs`, so VmHWM/ru_maxrss restart from here);
  3. start a thread sampling VmRSS (and RssAnon) every 5 ms, call `load_hf`,
     block until every parameter is ready, stop the thread;
  4. report (peak - baseline) / checkpoint bytes, with peak taken both from
     the sampler and from `resource.getrusage(RUSAGE_SELF).ru_maxrss`.
On the CPU backend the loaded parameters themselves live in host memory, so
1.0x is the floor (the model) and anything above it is load-time overhead.
Target: <= 1.5x. The checkpoint is written by `save_hf` in its own
subprocess first, once as one file and once sharded into 3+ files.
`--torch-ref` adds transformers' `from_pretrained` on the same files as a
reference; every weight is then read once (its safetensors loader may mmap
lazily, and an untouched mapped page is not in RSS), and mapped file pages
count in VmRSS but not in RssAnon.

  python benchmarks/load_memory.py                # D=1024, L=8, V=32000, I=2048 (~0.56 GB)
  python benchmarks/load_memory.py --quick        # smoke test (< 1 min)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--hidden", type=int, default=1024)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--heads", type=int, default=16)
  p.add_argument("--kv-heads", type=int, default=8)
  p.add_argument("--intermediate", type=int, default=2048)
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  p.add_argument("--shards", type=int, default=4, help="target file count of the sharded checkpoint (>= 3)")
  p.add_argument("--repeats", type=int, default=3, help="fresh-process loads per checkpoint")
  p.add_argument("--interval-ms", type=float, default=5.0)
  p.add_argument("--torch-ref", action="store_true", help="also measure transformers from_pretrained")
  p.add_argument("--target", type=float, default=1.5)
  p.add_argument("--keep", default=None, help="write checkpoints here (kept) instead of a temp dir")
  p.add_argument("--quick", action="store_true", help="smoke test: D=256, L=2, V=8000, 1 repeat")
  p.add_argument("--out", default=None, help="write results JSON here")
  # Internal: what the subprocesses run.
  p.add_argument("--child", choices=["save", "measure"], help=argparse.SUPPRESS)
  p.add_argument("--ckpt", nargs="+", help=argparse.SUPPRESS)
  p.add_argument("--impl", default="pragjax", help=argparse.SUPPRESS)
  p.add_argument("--shard-bytes", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.hidden, args.layers, args.heads, args.kv_heads = 256, 2, 8, 4
    args.intermediate, args.vocab, args.repeats = 688, 8000, 1
  return args


# -- memory sampling (child side) -------------------------------------------


def proc_status_kb(*keys: str) -> dict[str, int]:
  out = {}
  with open("/proc/self/status") as f:
    for line in f:
      k, _, v = line.partition(":")
      if k in keys:
        out[k] = int(v.split()[0])
  return out


def reset_peak_rss() -> bool:
  """Restarts VmHWM / ru_maxrss from the current RSS (Linux >= 4.0)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


class RssSampler(threading.Thread):
  """Polls VmRSS and RssAnon every `interval` seconds; keeps the maxima."""

  def __init__(self, interval: float):
    super().__init__(daemon=True)
    self.interval = interval
    self.peak_rss_kb = 0
    self.peak_anon_kb = 0
    self.samples = 0
    self._halt = threading.Event()

  def run(self):
    while not self._halt.is_set():
      s = proc_status_kb("VmRSS", "RssAnon")
      self.peak_rss_kb = max(self.peak_rss_kb, s["VmRSS"])
      self.peak_anon_kb = max(self.peak_anon_kb, s.get("RssAnon", 0))
      self.samples += 1
      time.sleep(self.interval)

  def stop(self):
    self._halt.set()
    self.join()


def child_measure(args) -> None:
  """Loads args.ckpt[0] once and prints one JSON line of kB figures."""
  import resource

  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, ROOT)
  import jax
  import jax.numpy as jnp

  jnp.ones(4).sum().block_until_ready()  # backend initialised
  if args.impl == "pragjax":
    from pragjax.models import load_hf

    def load():
      model, _ = load_hf(args.ckpt[0])
      jax.block_until_ready(jax.tree.leaves(__import__("flax").nnx.state(model)))
      return model
  else:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

    def load():  # reads every weight once: a lazily mmapped tensor is not yet in RSS
      model = AutoModelForCausalLM.from_pretrained(args.ckpt[0], dtype=getattr(torch, args.dtype))
      for p in model.parameters():
        p.sum()
      return model
  import gc

  gc.collect()
  base = proc_status_kb("VmRSS", "RssAnon", "VmHWM")
  hwm_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  was_reset = reset_peak_rss()
  sampler = RssSampler(args.interval_ms / 1e3)
  sampler.start()
  t0 = time.perf_counter()
  model = load()
  load_s = time.perf_counter() - t0
  sampler.stop()
  after = proc_status_kb("VmRSS", "RssAnon", "VmHWM")
  ru_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(json.dumps({
      "baseline_rss_kb": base["VmRSS"], "baseline_anon_kb": base.get("RssAnon", 0),
      "ru_maxrss_before_kb": hwm_before, "peak_reset": was_reset,
      "sampled_peak_rss_kb": max(sampler.peak_rss_kb, after["VmRSS"]),
      "sampled_peak_anon_kb": max(sampler.peak_anon_kb, after.get("RssAnon", 0)),
      "ru_maxrss_kb": ru_peak, "final_rss_kb": after["VmRSS"],
      "final_anon_kb": after.get("RssAnon", 0), "samples": sampler.samples, "load_s": load_s,
  }))
  del model


def child_save(args) -> None:
  """Builds a random model and writes it to each of args.ckpt."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, ROOT)
  from flax import nnx

  from pragjax.models import Decoder, ModelConfig, save_hf

  cfg = model_config(args, ModelConfig)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  save_hf(model, cfg, args.ckpt[0])
  if len(args.ckpt) > 1:
    save_hf(model, cfg, args.ckpt[1], max_shard_bytes=args.shard_bytes)


def model_config(args, ModelConfig):
  return ModelConfig(
      model_type="llama", vocab_size=args.vocab, hidden_size=args.hidden,
      intermediate_size=args.intermediate, num_hidden_layers=args.layers,
      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
      head_dim=args.hidden // args.heads, dtype=args.dtype, param_dtype=args.dtype,
  )


# -- parent side ------------------------------------------------------------


def param_bytes(args) -> int:
  d, i, v, L = args.hidden, args.intermediate, args.vocab, args.layers
  h = d // args.heads
  per_layer = d * h * (2 * args.heads + 2 * args.kv_heads) + 3 * d * i + 2 * d
  n = 2 * v * d + L * per_layer + d
  return n * (4 if args.dtype == "float32" else 2)


def run_child(args, *extra) -> str:
  cmd = [sys.executable, os.path.abspath(__file__), *extra, "--dtype", args.dtype,
         "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
         "--kv-heads", str(args.kv_heads), "--intermediate", str(args.intermediate),
         "--vocab", str(args.vocab), "--interval-ms", str(args.interval_ms)]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error",
             HF_HUB_DISABLE_PROGRESS_BARS="1")
  res = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if res.returncode:
    raise RuntimeError(f"child {' '.join(extra)} failed:\n{res.stderr[-4000:]}")
  return res.stdout


def checkpoint_bytes(path: str) -> tuple[int, int]:
  files = glob.glob(os.path.join(path, "*.safetensors"))
  return sum(os.path.getsize(f) for f in files), len(files)


def measure(args, ckpt: str, impl: str) -> dict:
  size, nfiles = checkpoint_bytes(ckpt)
  runs = []
  for _ in range(args.repeats):
    out = run_child(args, "--child", "measure", "--impl", impl, "--ckpt", ckpt)
    runs.append(json.loads(out.strip().splitlines()[-1]))
  med = lambda k: statistics.median(r[k] for r in runs)
  kb = 1024
  res = {
      "impl": impl, "checkpoint": os.path.basename(ckpt), "files": nfiles, "checkpoint_bytes": size,
      "baseline_mb": med("baseline_rss_kb") / kb,
      "ratio_sampled": statistics.median((r["sampled_peak_rss_kb"] - r["baseline_rss_kb"]) * kb / size for r in runs),
      "ratio_ru_maxrss": statistics.median((r["ru_maxrss_kb"] - r["baseline_rss_kb"]) * kb / size for r in runs),
      "ratio_anon": statistics.median((r["sampled_peak_anon_kb"] - r["baseline_anon_kb"]) * kb / size for r in runs),
      "ratio_retained": statistics.median((r["final_rss_kb"] - r["baseline_rss_kb"]) * kb / size for r in runs),
      "load_s": med("load_s"), "runs": runs,
  }
  res["verdict"] = "PASS" if max(res["ratio_sampled"], res["ratio_ru_maxrss"]) <= args.target else "MISS"
  return res


def main(argv=None):
  args = parse_args(argv)
  if args.child == "measure":
    return child_measure(args)
  if args.child == "save":
    return child_save(args)
  shard_bytes = max(1, param_bytes(args) // args.shards)
  tmp = None
  root = args.keep or (tmp := tempfile.mkdtemp(prefix="pragjax_loadmem_"))
  single, sharded = os.path.join(root, "single"), os.path.join(root, "sharded")
  try:
    t0 = time.perf_counter()
    run_child(args, "--child", "save", "--ckpt", single, sharded, "--shard-bytes", str(shard_bytes))
    save_s = time.perf_counter() - t0
    impls = ["pragjax"] + (["transformers"] if args.torch_ref else [])
    results = [measure(args, c, impl) for impl in impls for c in (single, sharded)]
  finally:
    if tmp:
      subprocess.run(["rm", "-rf", tmp], check=False)
  print(f"# load_memory  ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
  print(f"config: llama D={args.hidden} L={args.layers} heads={args.heads}/{args.kv_heads}"
        f" I={args.intermediate} V={args.vocab} {args.dtype}; checkpoint written in {save_s:.1f} s;"
        f" median of {args.repeats} fresh processes; sampler every {args.interval_ms:g} ms\n")
  rows = []
  for r in results:
    rows.append([
        r["impl"], f"{r['checkpoint']} ({r['files']} file{'s' * (r['files'] > 1)})",
        f"{r['checkpoint_bytes'] / 2**20:.0f}", f"{r['baseline_mb']:.0f}",
        f"{r['ratio_sampled']:.2f}x", f"{r['ratio_ru_maxrss']:.2f}x", f"{r['ratio_anon']:.2f}x",
        f"{r['ratio_retained']:.2f}x", f"{r['load_s']:.2f}",
        f"{r['verdict']} (<= {args.target}x)" if r["impl"] == "pragjax" else "(reference)",
    ])
  print(markdown_table(
      ["loader", "checkpoint", "MiB on disk", "baseline RSS MiB", "peak/ckpt (5 ms VmRSS)",
       "peak/ckpt (ru_maxrss)", "peak anon/ckpt", "retained/ckpt", "load s", "target"], rows))
  print("\npeak/ckpt = (peak RSS during load - RSS before load) / checkpoint bytes;"
        " retained = RSS after load - baseline.")
  if args.out:
    sys.path.insert(0, HERE)
    from common import write_json

    write_json(args.out, {"benchmark": "load_memory", "args": vars(args), "results": results})


def markdown_table(headers, rows) -> str:
  lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
  return "\n".join(lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows])


if __name__ == "__main__":
  main()
