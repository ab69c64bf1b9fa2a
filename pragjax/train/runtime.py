"""Process-wide JAX settings: persistent compilation cache and deterministic mode.

- The persistent compilation cache is on by default
  (`~/.cache/pragjax/xla`, or `runtime.compilation_cache_dir`; "" disables
  it): a rerun, a resume or another experiment with the same shapes skips
  XLA compilation.
- `runtime.deterministic=True` makes GPU runs bitwise reproducible by adding
  `--xla_gpu_deterministic_ops=true` (deterministic reductions and
  scatter; no atomics) and `--xla_gpu_exclude_nondeterministic_ops=true` to
  XLA_FLAGS. Cost: scatter-add and some reductions run without atomics
  (typically a few percent of step time, more for embedding-gradient-heavy
  models), and cuDNN attention is limited to deterministic kernels. CPU and TPU
  runs are deterministic already; the flag changes nothing there. It must be
  set before JAX initialises its backends (the entry points do this first).
"""

from __future__ import annotations

import os

import jax

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "pragjax", "xla")
DETERMINISTIC_FLAGS = ("--xla_gpu_deterministic_ops=true", "--xla_gpu_exclude_nondeterministic_ops=true")


def configure(*, compilation_cache_dir: str | None = DEFAULT_CACHE_DIR, deterministic: bool = False,
              min_compile_time_secs: float = 1.0) -> None:
  if deterministic:
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in DETERMINISTIC_FLAGS if f not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
  if compilation_cache_dir:
    os.makedirs(compilation_cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_secs)

