"""Multi-process start-up (`jax.distributed`) from flags or the environment.

Localhost CPU runs set, per process:
  PRAGJAX_COORDINATOR=127.0.0.1:PORT  PRAGJAX_NUM_PROCESSES=N  PRAGJAX_PROCESS_ID=i
  (and XLA_FLAGS=--xla_force_host_platform_device_count=M for M devices each)
GPU nodes under SLURM and TPU pod slices need no variables: there
`jax.distributed.initialize()` discovers the cluster itself
(`PRAGJAX_DISTRIBUTED=auto`).
"""

from __future__ import annotations

import os

import jax

_initialized = False


def initialize_from_env() -> bool:
  """Initializes `jax.distributed` when the environment asks for it.

  Returns whether this is a multi-process run.
  """
  global _initialized
  if _initialized:
    return jax.process_count() > 1
  coord = os.environ.get("PRAGJAX_COORDINATOR")
  mode = os.environ.get("PRAGJAX_DISTRIBUTED", "")
  if coord:
    try:
      n = int(os.environ["PRAGJAX_NUM_PROCESSES"])
      i = int(os.environ["PRAGJAX_PROCESS_ID"])
    except KeyError as e:
      raise RuntimeError(f"PRAGJAX_COORDINATOR is set but {e.args[0]} is not") from e
    jax.distributed.initialize(coordinator_address=coord, num_processes=n, process_id=i)
    _initialized = True
  elif mode == "auto":
    jax.distributed.initialize()
    _initialized = True
  return jax.process_count() > 1
