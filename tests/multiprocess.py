"""Helpers for tests that start worker processes (multi-process runs on localhost)."""

import os
import socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(**extra) -> dict:
  """This process's environment without PRAGJAX_* variables, the repository on PYTHONPATH, plus `extra`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("PRAGJAX_")}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra)
  return env


def free_port() -> int:
  """A free TCP port on 127.0.0.1 (for the jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
