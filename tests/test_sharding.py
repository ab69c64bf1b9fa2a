"""Loading onto 8 simulated CPU devices: really sharded, same logits."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from pragjax import sharding
from pragjax.models import Decoder, ModelConfig, generate, load_hf, save_hf

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


def _config(**kw):
  base = dict(
      vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
  )
  base.update(kw)
  return ModelConfig(**base)


@pytest.fixture(scope="module", params=["llama", "mixtral", "gemma2"])
def checkpoint(request, tmp_path_factory):
  extra = {
      "llama": {},
      "mixtral": dict(model_type="mixtral", num_local_experts=4),
      "gemma2": dict(
          model_type="gemma2", tie_word_embeddings=True, norm_offset=1.0, scale_embeddings=True,
          post_norms=True, sliding_window=4, layer_types=("sliding_attention", "full_attention"),
          attn_logit_softcapping=3.0, final_logit_softcapping=10.0, query_pre_attn_scalar=16,
          hidden_act="gelu_pytorch_tanh",
      ),
  }[request.param]
  cfg = _config(**extra)
  model = Decoder(cfg, rngs=nnx.Rngs(3))
  path = str(tmp_path_factory.mktemp("ckpt") / request.param)
  save_hf(model, cfg, path)
  return path


def _logits(model, ids, mask):
  graphdef, state = nnx.split(model)
  f = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m).logits)
  return np.asarray(f(state, ids, mask))


@pytest.mark.parametrize("shape", [dict(fsdp=4, tensor=2), dict(fsdp=8, tensor=1), dict(data=2, fsdp=2, tensor=2)])
def test_sharded_load_matches_single_device(checkpoint, shape):
  ids = np.random.RandomState(0).randint(0, 256, (8, 10)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[::2, :3] = 0
  single, cfg = load_hf(checkpoint)
  want = _logits(single, ids, mask)

  mesh = sharding.make_mesh(**shape)
  model, _ = load_hf(checkpoint, mesh=mesh)
  q = model.layers[0].self_attn.q_proj[...]
  assert q.sharding.mesh.shape == mesh.shape
  assert q.sharding.spec == P("fsdp", "tensor" if shape.get("tensor", 1) > 1 else None, None)
  shard_shape = q.addressable_shards[0].data.shape
  assert np.prod(shard_shape) * mesh.shape["fsdp"] * mesh.shape["tensor"] == np.prod(q.shape)
  emb = model.embed[...]
  assert len({str(s.index) for s in emb.addressable_shards}) == mesh.shape["fsdp"] * mesh.shape["tensor"]

  batch = sharding.batch_sharding(mesh)
  with jax.set_mesh(mesh):
    got = _logits(model, jax.device_put(ids, batch), jax.device_put(mask, batch))
  np.testing.assert_allclose(got[mask == 1], want[mask == 1], atol=1e-5, rtol=0)


def test_sharded_greedy_generation_matches(checkpoint):
  ids = np.random.RandomState(1).randint(0, 256, (4, 6)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :2] = 0
  single, _ = load_hf(checkpoint)
  want = np.asarray(generate(single, ids, mask, max_new_tokens=6).tokens)
  mesh = sharding.make_mesh(fsdp=4, tensor=2)
  model, _ = load_hf(checkpoint, mesh=mesh)
  with jax.set_mesh(mesh):
    got = np.asarray(generate(model, ids, mask, max_new_tokens=6).tokens)
  np.testing.assert_array_equal(got, want)


def test_logical_rules_replicate_indivisible_dims():
  mesh = sharding.make_mesh(fsdp=1, tensor=8)
  # 2 kv heads cannot be split 8 ways: replicated, not an error.
  assert sharding.logical_to_spec(("embed", "kv_heads", None), (64, 2, 16), mesh) == P(None, None, None)
  assert sharding.logical_to_spec(("embed", "heads", None), (64, 8, 16), mesh) == P(None, "tensor", None)
  # A mesh axis is used at most once per spec.
  rules = (("a", "tensor"), ("b", "tensor"))
  assert sharding.logical_to_spec(("a", "b"), (8, 8), mesh, rules) == P("tensor", None)


def test_make_mesh_errors_are_clear():
  with pytest.raises(ValueError, match="needs 12 devices"):
    sharding.make_mesh(data=3, fsdp=4, tensor=1)
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="unknown mesh field"):
    sharding.mesh_from_config({"fsdp": 8, "model": 1})
  assert dict(sharding.make_mesh(tensor=2).shape) == {"data": 1, "fsdp": 4, "tensor": 2}
