"""`pragjax.eval.batching`: every chunking rule, outputs equal to one unbatched call, one compiled shape, and the
same outputs with the batch sharded over 8 simulated devices as on one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax import sharding as sharding_lib
from pragjax.eval import batching
from pragjax.models import Decoder, ModelConfig
from pragjax.models.logprobs import batch_token_logprobs

BATCH = 4


def _inputs(n: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(n)
  return {"x": rng.standard_normal((n, 3)).astype(np.float32), "k": rng.integers(1, 9, (n,)).astype(np.int32)}


def _fn(chunk):
  """Row-wise: `[rows]` and `[rows, 3]` outputs that depend only on their own row."""
  return {"s": jnp.sum(chunk["x"], axis=1) * chunk["k"], "y": jnp.tanh(chunk["x"]) + chunk["k"][:, None]}


class Recorder:
  """`_fn` that keeps the host copy of every chunk it was given."""

  def __init__(self):
    self.chunks = []

  def __call__(self, chunk):
    self.chunks.append(jax.tree.map(np.asarray, chunk))
    return _fn(chunk)


@pytest.mark.parametrize("n, num_chunks", [(3, 1), (BATCH, 1), (2 * BATCH + 1, 3), (BATCH + 1, 2)])
def test_outputs_equal_one_unbatched_call_and_every_chunk_has_batch_rows(n, num_chunks):
  inputs = _inputs(n)
  rec = Recorder()
  got = batching.map_batches(rec, inputs, batch_size=BATCH)
  want = jax.tree.map(np.asarray, _fn(inputs))
  assert got["s"].shape == (n,) and got["y"].shape == (n, 3)
  np.testing.assert_allclose(got["s"], want["s"], rtol=1e-6)
  np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
  assert len(rec.chunks) == num_chunks
  assert {c["x"].shape for c in rec.chunks} == {(BATCH, 3)}  # the last chunk too: one compiled shape
  last, real = rec.chunks[-1], n - BATCH * (num_chunks - 1)
  np.testing.assert_array_equal(last["x"][:real], inputs["x"][BATCH * (num_chunks - 1):])
  assert np.all(last["x"][real:] == 0) and np.all(last["k"][real:] == 0)  # padding rows are zeros


def test_jitted_fn_compiles_once_for_every_chunk():
  traces = []

  @jax.jit
  def fn(chunk):
    traces.append(chunk["x"].shape)
    return _fn(chunk)

  batching.map_batches(fn, _inputs(2 * BATCH + 1), batch_size=BATCH)
  batching.map_batches(fn, _inputs(1), batch_size=BATCH)  # a short input reuses the same shape
  assert traces == [(BATCH, 3)]


def test_pad_value_per_key_and_shrink():
  rec = Recorder()
  batching.map_batches(rec, _inputs(BATCH + 1), batch_size=BATCH, pad_value={"k": 7})
  assert np.all(rec.chunks[-1]["k"][1:] == 7) and np.all(rec.chunks[-1]["x"][1:] == 0)
  rec = Recorder()
  got = batching.map_batches(rec, _inputs(3), batch_size=BATCH, shrink=True)
  assert [c["x"].shape[0] for c in rec.chunks] == [3] and got["s"].shape == (3,)
  rec = Recorder()
  batching.map_batches(rec, _inputs(BATCH + 1), batch_size=BATCH, shrink=True)  # several chunks: padded as ever
  assert [c["x"].shape[0] for c in rec.chunks] == [BATCH, BATCH]


def test_empty_inputs_give_empty_outputs_of_the_right_structure_without_running_fn():
  calls = []

  def fn(chunk):
    calls.append(isinstance(chunk["x"], jax.core.Tracer))
    return _fn(chunk)

  got = batching.map_batches(fn, _inputs(0), batch_size=BATCH)
  assert got["s"].shape == (0,) and got["y"].shape == (0, 3) and got["y"].dtype == np.float32
  assert calls == [True]  # traced once, never run
  assert list(batching.chunks([], BATCH)) == []


def test_sequence_and_single_array_inputs():
  x = _inputs(5)["x"]
  got = batching.map_batches(lambda a: jnp.sum(a, axis=1), x, batch_size=2)
  np.testing.assert_allclose(got, x.sum(1), rtol=1e-6)
  a, b = batching.map_batches(lambda t: (t[0] * 2, t[1] + 1), (x, x[:, 0]), batch_size=2)
  np.testing.assert_allclose(a, 2 * x, rtol=1e-6)
  np.testing.assert_allclose(b, x[:, 0] + 1, rtol=1e-6)


def test_chunks_pad_with_copies_of_the_last_item():
  items = list("abcdefghij")  # 10 = 4 + 4 + 2
  got = list(batching.chunks(items, BATCH))
  assert [(c.start, c.n, c.rows) for c in got] == [(0, 4, 4), (4, 4, 4), (8, 2, 4)]
  assert got[-1].items == ["i", "j", "j", "j"] and got[-1].real == ["i", "j"]
  assert [x for c in got for x in c.real] == items
  assert [c.items for c in batching.chunks(items[:3], BATCH)] == [["a", "b", "c", "c"]]
  assert [c.items for c in batching.chunks(items[:3], BATCH, shrink=True)] == [["a", "b", "c"]]
  assert [c.items for c in batching.chunks(items[:4], BATCH)] == [["a", "b", "c", "d"]]


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    batching.map_batches(_fn, _inputs(3), batch_size=0)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    list(batching.chunks([1, 2], 0))
  with pytest.raises(ValueError, match="common leading axis"):
    batching.map_batches(_fn, {"x": np.zeros((3, 3), np.float32), "k": np.zeros((2,), np.int32)}, batch_size=2)
  with pytest.raises(ValueError, match="more than"):
    batching.pad_rows({"x": np.zeros((3,))}, 2)


# ----------------------------------------------------------------------------- meshes

CFG = ModelConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8)


@functools.cache
def _model():
  return Decoder(CFG, rngs=nnx.Rngs(0))


@functools.partial(jax.jit, static_argnums=0)
def _logprobs(graphdef, params, batch):
  return batch_token_logprobs(graphdef, params, batch)


def _token_batch(n: int, t: int = 16) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(3)
  lengths = rng.integers(2, t + 1, n)
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
  return {"input_ids": (rng.integers(1, CFG.vocab_size, (n, t)) * mask).astype(np.int32), "attention_mask": mask}


def _needs_8():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (simulated) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")


def test_batch_size_rounds_up_to_the_batch_shards():
  _needs_8()
  mesh = sharding_lib.make_mesh(data=2, fsdp=2, tensor=2)
  assert batching.batch_shards(mesh) == 4 and batching.chunk_rows(6, mesh) == 8 and batching.chunk_rows(8, mesh) == 8
  assert batching.batch_shards(None) == 1 and batching.chunk_rows(6) == 6
  with jax.set_mesh(mesh):  # the current mesh is the default
    assert batching.batch_shards() == 4 and [c.rows for c in batching.chunks(list(range(9)), 6)] == [8, 8]
  assert batching.batch_shards(sharding_lib.make_mesh(data=1, fsdp=1, tensor=8)) == 1


def test_model_logprobs_sharded_over_8_devices_equal_one_device():
  _needs_8()
  graphdef, params = nnx.split(_model())
  inputs = _token_batch(11)
  fn = lambda chunk: _logprobs(graphdef, params, chunk)  # noqa: E731
  alone = np.asarray(_logprobs(graphdef, params, jax.tree.map(jnp.asarray, inputs)))
  one = batching.map_batches(fn, inputs, batch_size=3)
  mesh = sharding_lib.make_mesh(data=2, fsdp=4)
  seen = []

  def spy(chunk):
    seen.append((chunk["input_ids"].shape, chunk["input_ids"].sharding))
    return fn(chunk)

  sharded = batching.map_batches(spy, inputs, batch_size=3, mesh=mesh)  # 3 -> 8 rows: 2 chunks
  assert [s for s, _ in seen] == [(8, 16), (8, 16)]
  assert all(len(sh.device_set) == 8 and sh.spec[0] == ("data", "fsdp") for _, sh in seen)
  mask = inputs["attention_mask"][:, 1:] > 0
  np.testing.assert_allclose(np.where(mask, one, 0), np.where(mask, alone, 0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.where(mask, sharded, 0), np.where(mask, alone, 0), rtol=1e-5, atol=1e-5)
  with jax.set_mesh(mesh):
    current = batching.map_batches(fn, inputs, batch_size=3)
  np.testing.assert_allclose(current, sharded, rtol=1e-6, atol=1e-6)
