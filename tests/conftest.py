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
