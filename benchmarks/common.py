"""Shared helpers for the pragjax-vs-transformers CPU benchmarks.

- `bench_config`: the benchmark model (llama, hidden 256, 4 layers, 8 heads /
  4 KV heads, head_dim 32, intermediate 688, vocab 4096, float32).
- `build_pair`: the *same weights* on both sides: a pragjax `Decoder` is
  created, written with `save_hf`, and read back by transformers'
  `AutoModelForCausalLM.from_pretrained`.
- `timed`/`paired_timings`: warmup, then N repeats, medians; the pragjax and
  PyTorch calls alternate within one loop so that machine noise hits both.
- `markdown_table`, `write_json`, `machine_info`: output.

Run from the repository root: `python benchmarks/NAME.py` (the scripts put
the root on `sys.path` themselves).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402

TORCH_THREADS = 2


# -- config and models ------------------------------------------------------


def bench_config(*, dtype: str = "float32", intermediate: int = 688, **overrides):
  """The benchmark `ModelConfig` (llama; intermediate 688 = 8/3 * 256 rounded)."""
  from pragjax.models import ModelConfig

  kw = dict(
      model_type="llama", vocab_size=4096, hidden_size=256, intermediate_size=intermediate,
      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
      max_position_embeddings=2048, dtype=dtype, param_dtype=dtype,
  )
  kw.update(overrides)
  return ModelConfig(**kw)


def setup_torch(threads: int = TORCH_THREADS):
  import torch

  torch.set_num_threads(threads)
  torch.set_grad_enabled(False)
  return torch


def build_pragjax(cfg, seed: int = 0):
  from flax import nnx

  from pragjax.models import Decoder

  return Decoder(cfg, rngs=nnx.Rngs(seed))


def load_torch(path: str, attn_implementation: str, dtype: str = "float32", threads: int = TORCH_THREADS):
  """transformers model from an HF directory, eval mode, no grad."""
  torch = setup_torch(threads)
  import transformers
  from transformers import AutoModelForCausalLM

  transformers.utils.logging.disable_progress_bar()

  model = AutoModelForCausalLM.from_pretrained(
      path, attn_implementation=attn_implementation, dtype=getattr(torch, dtype)
  )
  return model.eval()


def build_pair(cfg, attn_implementations: Sequence[str] = ("sdpa", "eager"), seed: int = 0,
               torch_threads: int = TORCH_THREADS):
  """`(pragjax_model, {impl: torch_model})` holding identical weights."""
  from pragjax.models import save_hf

  model = build_pragjax(cfg, seed)
  with tempfile.TemporaryDirectory(prefix="pragjax_bench_") as d:
    save_hf(model, cfg, d)
    peers = {impl: load_torch(d, impl, cfg.param_dtype, torch_threads) for impl in attn_implementations}
  return model, peers


MODEL_HELP = ("'' = the bench config with random weights; else a model path, a .gguf file or "
              "builtin:smollm2-135m-instruct (its weights, dequantized, and its config) on both sides")


def model_pair(spec: str, cfg, attn_implementations: Sequence[str] = ("sdpa", "eager"),
               torch_threads: int = TORCH_THREADS, dtype: str = "float32"):
  """`(pragjax_model, cfg, {impl: torch_model})`: the bench `cfg` with random weights when `spec` is empty,
  else the model `spec` names (HF directory, GGUF file or `builtin:NAME`, loaded in `dtype`) with the same
  weights handed to transformers through an HF export."""
  if not spec:
    model, peers = build_pair(cfg, attn_implementations, torch_threads=torch_threads)
    return model, cfg, peers
  from pragjax.models import save_hf
  from pragjax.train import runner

  loaded = runner.load_model(dict(path=spec, dtype=dtype, param_dtype=dtype))
  with tempfile.TemporaryDirectory(prefix="pragjax_bench_") as d:
    save_hf(loaded.model, loaded.config, d)
    peers = {impl: load_torch(d, impl, dtype, torch_threads) for impl in attn_implementations}
  return loaded.model, loaded.config, peers


def jit_forward(model):
  """`f(state, ids, mask) -> logits`, jitted on split NNX state."""
  from flax import nnx

  gd, st = nnx.split(model)
  f = jax.jit(lambda st, ids, m: nnx.merge(gd, st)(ids, m).logits)
  return f, st


# -- timing -----------------------------------------------------------------


def block(x):
  return jax.block_until_ready(x)


def timed(fn: Callable[[], Any]) -> float:
  """Seconds for one call of `fn` (which must block until its result is ready)."""
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def paired_timings(
    fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int
) -> dict[str, list[float]]:
  """Times every fn `repeats` times, interleaved (a, b, a, b, ...) after warmup."""
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  out: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      out[k].append(timed(fn))
  return out


def summary(times: Sequence[float]) -> dict[str, float]:
  return {
      "median_s": statistics.median(times),
      "min_s": min(times),
      "max_s": max(times),
      "repeats": len(times),
  }


def speedups(ours: Sequence[float], peer: Sequence[float]) -> dict[str, float]:
  """pragjax speed-up over a peer (> 1: pragjax faster), three ways.

  `of_medians`: median(peer) / median(ours), the headline number.
  `paired_median`: median over rounds of peer_i / ours_i; the two calls of a
    round run back to back, so this cancels slow drifts in machine load.
  `of_mins`: min(peer) / min(ours), the best case of each side.
  """
  paired = [p / o for o, p in zip(ours, peer)]
  return {
      "of_medians": statistics.median(peer) / statistics.median(ours),
      "paired_median": statistics.median(paired),
      "of_mins": min(peer) / min(ours),
  }


def load_snapshot() -> dict[str, float]:
  """1-min load average and cumulative steal seconds (to judge machine noise)."""
  with open("/proc/loadavg") as f:
    load1 = float(f.read().split()[0])
  with open("/proc/stat") as f:
    steal = int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")
  return {"load1": load1, "steal_s": steal}


def verdict(ratio: float, target: float) -> str:
  return "PASS" if ratio >= target else "MISS"


# -- output -----------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    return str(v)

  lines = [
      "| " + " | ".join(headers) + " |",
      "| " + " | ".join("---" for _ in headers) + " |",
  ]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def machine_info() -> dict[str, Any]:
  import flax

  info = {
      "date": datetime.date.today().isoformat(),
      "python": platform.python_version(),
      "cpu_count": os.cpu_count(),
      "processor": _cpu_model(),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "jax_backend": jax.default_backend(),
  }
  try:
    import torch
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__,
                torch_threads=torch.get_num_threads())
  except ImportError:
    pass
  return info


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def write_json(path: str | None, results: dict[str, Any]) -> None:
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  print(f"\nwrote {path}")
