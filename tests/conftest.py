"""Test-session setup: 8 simulated CPU devices, float32 matmuls, fixtures."""

import os

# Must happen before jax is imported anywhere: sharded tests need 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit
import pathlib
import shutil
import tempfile

# One persistent XLA compilation cache per test session, shared by the tests' subprocesses (they inherit the
# environment) and by pytest-xdist workers: many tests build the same toy model's train step, sampler or scorer
# anew, and a cache hit replaces a multi-second CPU compile with a file read. A size limit turns on jax's file
# lock, so that concurrent processes never read a half-written entry. Set JAX_COMPILATION_CACHE_DIR to keep a
# cache between sessions; "" turns it off.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _xla_cache = tempfile.mkdtemp(prefix="pragjax-tests-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
  atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(16 << 30))

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data`; tests that need it skip with a reason when absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared datasets not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture
def memory_gcs(monkeypatch):
  """gs:// served by an in-memory fsspec filesystem (no network): etils epath's fsspec backend opens every
  gs:// path through it. Yields the filesystem's store (path -> file)."""
  import importlib

  from etils.epath import backend
  from fsspec.implementations.memory import MemoryFileSystem

  class FakeGcs(MemoryFileSystem):
    store, pseudo_dirs = {}, [""]

  monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, "gcs", FakeGcs)
  backend.fsspec_backend._get_filesystem.cache_clear()
  yield FakeGcs.store
  backend.fsspec_backend._get_filesystem.cache_clear()


# The heaviest test files (seconds on the 2-core CI machine, one process, 2026-12-04), started first so that
# pytest-xdist's `--dist loadfile` workers do not end the session waiting on one long file. Others keep their
# collection order after them.
HEAVY_FILES = (
    "tests/test_smollm2.py",  # 357 s
    "tests/priming/test_real.py",  # 308 s
    "tests/prm/test_pipeline.py",  # 279 s
    "tests/rl/test_run.py",  # 203 s
    "tests/train/test_runs.py",  # 165 s
    "tests/preference/test_run.py",  # 143 s
    "tests/train/test_loop_long_runs.py",  # 118 s
    "tests/priming/test_toy.py",  # 117 s
    "tests/train/test_step.py",  # 99 s
    "tests/numerics/test_topology_resume.py",  # 93 s
    "tests/test_scan_layers.py",  # 93 s
    "tests/optim/test_ignore_topk.py",  # 89 s
)


def pytest_collection_modifyitems(session, config, items):
  rank = {name: i for i, name in enumerate(HEAVY_FILES)}
  root = pathlib.Path(str(config.rootpath))

  def key(item):
    rel = pathlib.Path(str(item.path)).relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
    return rank.get(rel, len(HEAVY_FILES))

  items[:] = sorted(items, key=key)  # stable: the order within a file and among the rest is kept
