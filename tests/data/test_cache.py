"""`pragjax.data.cache`: hits, recomputation on a changed key or input, corrupt files, atomic writes, URIs."""

import os

import numpy as np
import pytest
from ml_collections import ConfigDict

from pragjax import paths
from pragjax.data import cache

KEY = {"model": {"path": "/ckpt/m", "dtype": "float32"}, "seed": 0}


class Counter:
  """`compute` that counts its calls and returns `value`."""

  def __init__(self, value):
    self.value, self.calls = value, 0

  def __call__(self):
    self.calls += 1
    return self.value


def _arrays():
  return {"scores": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([3, 1], np.int64)}


@pytest.mark.parametrize("value, ext", [(_arrays(), "npz"), (np.linspace(0, 1, 5), "npz"),
                                        ([["a", "b"], ["c"]], "json"), ({"x": 1.5, "y": [1, 2]}, "json")])
def test_hit_returns_the_stored_value_without_computing(tmp_path, value, ext):
  lines = []
  c = Counter(value)
  first = cache.cached(tmp_path, "entry", key=KEY, inputs_fingerprint="f", compute=c, log=lines.append)
  again = cache.cached(tmp_path, "entry", key=KEY, inputs_fingerprint="f", compute=c, log=lines.append)
  assert c.calls == 1 and os.listdir(tmp_path) == [f"entry.{ext}"]
  assert lines == [f"cache: reusing {tmp_path / f'entry.{ext}'}"]
  if isinstance(value, dict) and ext == "npz":
    assert set(again) == set(value)
    for k in value:
      np.testing.assert_array_equal(again[k], value[k])
      assert again[k].dtype == value[k].dtype
  elif ext == "npz":
    np.testing.assert_array_equal(again, value)
  else:
    assert again == first == value


def test_key_change_recomputes_and_replaces_naming_the_field(tmp_path):
  lines = []
  cache.cached(tmp_path, "e", key=KEY, compute=lambda: {"v": np.zeros(2)}, log=lines.append)
  bf16 = {**KEY, "model": {**KEY["model"], "dtype": "bfloat16"}}
  got = cache.cached(tmp_path, "e", key=bf16, compute=lambda: {"v": np.ones(2)}, log=lines.append)
  np.testing.assert_array_equal(got["v"], np.ones(2))
  assert lines == [f"cache: {tmp_path / 'e.npz'} is stale (key: model.dtype); recomputing"]
  c = Counter({"v": np.full(2, 5.0)})
  np.testing.assert_array_equal(cache.cached(tmp_path, "e", key=bf16, compute=c, log=None)["v"], np.ones(2))
  assert c.calls == 0  # the replaced entry is a hit for the new key
  cache.cached(tmp_path, "e", key={**bf16, "extra": 1}, compute=c, log=None)
  assert c.calls == 1  # a new field is a different key


def test_fingerprint_change_recomputes(tmp_path):
  lines = []
  a, b = cache.fingerprint(["p1", "p2"]), cache.fingerprint(["p1", "p3"])
  cache.cached(tmp_path, "e", key=KEY, inputs_fingerprint=a, compute=lambda: [1], log=lines.append)
  assert cache.cached(tmp_path, "e", key=KEY, inputs_fingerprint=b, compute=lambda: [2], log=lines.append) == [2]
  assert lines == [f"cache: {tmp_path / 'e.json'} is stale (inputs differ); recomputing"]
  assert cache.cached(tmp_path, "e", key=KEY, inputs_fingerprint=b, compute=lambda: [3], log=None) == [2]


def test_corrupt_file_is_reported_in_one_line_and_recomputed(tmp_path):
  cache.cached(tmp_path, "e", key=KEY, compute=_arrays, log=None)
  path = tmp_path / "e.npz"
  path.write_bytes(path.read_bytes()[:40])  # truncated
  lines = []
  c = Counter(_arrays())
  got = cache.cached(tmp_path, "e", key=KEY, compute=c, log=lines.append)
  assert c.calls == 1 and len(lines) == 1 and "is unreadable" in lines[0] and str(path) in lines[0]
  np.testing.assert_array_equal(got["scores"], _arrays()["scores"])
  np.testing.assert_array_equal(cache.cached(tmp_path, "e", key=KEY, compute=c, log=None)["ids"], [3, 1])
  assert c.calls == 1  # the rewritten entry is whole again
  (tmp_path / "j.json").write_text('{"not": "an entry"}')
  lines.clear()
  assert cache.cached(tmp_path, "j", key=KEY, compute=lambda: 7, log=lines.append) == 7
  assert len(lines) == 1 and "not a pragjax-cache-v1 entry" in lines[0]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
  cache.cached(tmp_path, "e", key=KEY, compute=lambda: [1], log=None)
  before = (tmp_path / "e.json").read_bytes()

  def crash(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", crash)  # the write dies after its temporary file, before the rename
  with pytest.raises(OSError, match="disk full"):
    cache.cached(tmp_path, "e", key={**KEY, "seed": 1}, compute=lambda: [2], log=None)
  monkeypatch.undo()
  assert (tmp_path / "e.json").read_bytes() == before  # the old entry is intact, never half-replaced
  assert [f for f in os.listdir(tmp_path) if not f.startswith(".")] == ["e.json"]
  assert cache.cached(tmp_path, "e", key=KEY, compute=lambda: [3], log=None) == [1]


def test_uri_directory(memory_gcs):
  c = Counter(_arrays())
  uri = "gs://bucket/run/cache"
  cache.cached(uri, "scores", key=KEY, compute=c, log=None)
  got = cache.cached(uri, "scores", key=KEY, compute=c, log=None)
  assert c.calls == 1 and paths.resolve(paths.join(uri, "scores.npz")).exists()
  assert any(k.endswith("run/cache/scores.npz") for k in memory_gcs)
  np.testing.assert_array_equal(got["scores"], _arrays()["scores"])


def test_keys_compare_after_a_json_round_trip_and_take_config_sections(tmp_path):
  c = Counter([1])
  cache.cached(tmp_path, "e", key={"shape": (2, 3), "model": ConfigDict({"dtype": "float32"})}, compute=c, log=None)
  cache.cached(tmp_path, "e", key={"shape": [2, 3], "model": {"dtype": "float32"}}, compute=c, log=None)
  assert c.calls == 1


def test_fingerprint_sees_values_dtypes_and_shapes():
  x = np.arange(6, dtype=np.int32)
  assert cache.fingerprint(x) == cache.fingerprint(x.copy())
  assert len({cache.fingerprint(x), cache.fingerprint(x.astype(np.int64)), cache.fingerprint(x.reshape(2, 3)),
              cache.fingerprint(x + 1), cache.fingerprint(x.tolist())}) == 5
  assert cache.fingerprint({"a": 1, "b": [1, 2]}) == cache.fingerprint({"b": [1, 2], "a": 1})
  assert cache.fingerprint("a", "b") != cache.fingerprint("ab") != cache.fingerprint(["a", "b"])
  with pytest.raises(TypeError, match="object"):
    cache.fingerprint(object())
