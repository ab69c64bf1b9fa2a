"""Test-session setup: 8 simulated CPU devices, float32 matmuls, fixtures."""

import os

# Must happen before jax is imported anywhere: sharded tests need 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib

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
