"""`pragjax.paths` on local directories and on an object store (gs:// served in memory)."""

import os

import pytest

from pragjax import paths


def test_fetch_dir_copies_every_object_under_a_uri(memory_gcs, tmp_path):
  paths.write_text("gs://bucket/run/iter_1/hf/config.json", '{"a": 1}')
  paths.write_bytes("gs://bucket/run/iter_1/hf/sub/model.safetensors", b"\x00\x01\x02")
  paths.write_text("gs://bucket/run/iter_1/other.json", "{}")
  local = paths.fetch_dir("gs://bucket/run/iter_1/hf")
  got = sorted(os.path.relpath(os.path.join(r, f), local) for r, _, fs in os.walk(local) for f in fs)
  assert got == ["config.json", os.path.join("sub", "model.safetensors")]
  with open(os.path.join(local, "sub", "model.safetensors"), "rb") as f:
    assert f.read() == b"\x00\x01\x02"


def test_fetch_dir_of_a_local_directory_is_the_directory(tmp_path):
  assert paths.fetch_dir(str(tmp_path)) == str(tmp_path)


def test_shared_data_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("PRAGJAX_SHARED_DATA", str(tmp_path))
  assert paths.shared_data_dir() == str(tmp_path)
  monkeypatch.delenv("PRAGJAX_SHARED_DATA")
  assert paths.shared_data_dir().endswith(os.path.join("shared", "data"))


def test_fetch_dir_refuses_an_empty_path():
  with pytest.raises(ValueError, match="empty path"):
    paths.fetch_dir("")
