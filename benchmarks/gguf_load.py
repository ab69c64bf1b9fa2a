"""Load time and peak host memory of `load_gguf` vs transformers' GGUF loader, on one GGUF file.

Each load runs in a fresh subprocess (pragjax and transformers alternate, so
machine noise hits both): imports first, then the RSS baseline and a reset of
the kernel's peak-RSS counter (`/proc/self/clear_refs`), then the timed load
(every parameter materialised: `block_until_ready` / a sum over each torch
tensor), then peak RSS above the baseline from `ru_maxrss`. transformers
dequantizes the whole file on every load (`from_pretrained(dir,
gguf_file=...)`); pragjax dequantizes one tensor at a time into its place.
pragjax's time includes the metadata parse and the tokenizer; transformers'
does not include its tokenizer.

  python benchmarks/gguf_load.py                     # the real built-in SmolLM2-135M-Instruct (Q4_1)
  python benchmarks/gguf_load.py --gguf=/models/x.gguf --repeats=5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--gguf", default="builtin:smollm2-135m-instruct", help="GGUF file or builtin:NAME")
  p.add_argument("--repeats", type=int, default=3, help="fresh-process loads per side")
  p.add_argument("--torch-threads", type=int, default=2)
  p.add_argument("--out", default=None, help="write results JSON here")
  p.add_argument("--child", choices=["pragjax", "transformers"], help=argparse.SUPPRESS)
  p.add_argument("--file", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def _rss_kb() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1])
  return 0


def child(args) -> None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.child == "pragjax":
    import jax  # noqa: F401
    import jax.numpy as jnp

    from pragjax.train import runner
    jnp.zeros(1).block_until_ready()
  else:
    import torch
    import transformers  # noqa: F401
    torch.set_num_threads(args.torch_threads)
  base = _rss_kb()
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # peak RSS counts from here
  except OSError:
    pass
  t0 = time.perf_counter()
  if args.child == "pragjax":
    from flax import nnx

    loaded = runner.load_model(dict(path=args.file))
    for _, v in nnx.to_flat_state(nnx.state(loaded.model, nnx.Param)):
      v[...].block_until_ready()
  else:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(args.file), gguf_file=os.path.basename(args.file),
                                                 dtype=torch.float32)
    _ = sum(float(p.sum()) for p in model.parameters())
  seconds = time.perf_counter() - t0
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(json.dumps(dict(seconds=seconds, peak_mb=(peak - base) / 1024, baseline_mb=base / 1024)))


def main(argv=None):
  args = parse_args(argv)
  if args.child:
    return child(args)
  sys.path.insert(0, ROOT)
  from benchmarks.common import load_snapshot, machine_info, markdown_table, write_json
  from pragjax.models import real_builtins

  path = real_builtins.resolve(args.gguf)
  runs = {"pragjax": [], "transformers": []}
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
         "TQDM_DISABLE": "1"}
  env.pop("XLA_FLAGS", None)
  load_before = load_snapshot()
  for r in range(args.repeats):
    for side in ("pragjax", "transformers"):
      out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={side}", f"--file={path}",
                            f"--torch-threads={args.torch_threads}"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=False)
      if out.returncode:
        raise SystemExit(f"{side} load failed:\n{out.stderr[-3000:]}")
      res = json.loads(out.stdout.strip().splitlines()[-1])
      runs[side].append(res)
      print(f"repeat {r + 1} {side}: {res['seconds']:.2f} s, peak +{res['peak_mb']:.0f} MB", flush=True)
  med = {s: dict(seconds=statistics.median(x["seconds"] for x in v), peak_mb=statistics.median(x["peak_mb"] for x in v))
         for s, v in runs.items()}
  ratios = [t["seconds"] / p["seconds"] for p, t in zip(runs["pragjax"], runs["transformers"])]
  rows = [[s, f"{m['seconds']:.2f}", f"{m['peak_mb']:.0f}"] for s, m in med.items()]
  print(f"\n{os.path.basename(path)} ({os.path.getsize(path) / 2**20:.0f} MB on disk), {args.repeats} fresh-process "
        f"loads each, medians; load average {load_before}")
  print(markdown_table(["loader", "load s", "peak RSS above baseline (MB)"], rows))
  print(f"transformers / pragjax load time: median paired ratio {statistics.median(ratios):.2f}x "
        f"(per repeat: {', '.join(f'{x:.2f}' for x in ratios)})")
  write_json(args.out, dict(file=path, runs=runs, medians=med, paired_ratios=ratios, load_before=load_before,
                            load_after=load_snapshot(), machine=machine_info()))


if __name__ == "__main__":
  main()
