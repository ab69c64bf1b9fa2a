"""`ModelConfig.scan_layers` and `ModelConfig.remat`: the same numbers as the unrolled model, the same layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax import sharding
from pragjax.models import Decoder, ModelConfig, load_hf, save_hf
from pragjax.models.config import ConfigError
from pragjax.models.decoder import scan_period

FAMILIES = {
    "llama": {},
    "mixtral": dict(model_type="mixtral", num_local_experts=4),
    "gemma2": dict(
        model_type="gemma2", tie_word_embeddings=True, norm_offset=1.0, scale_embeddings=True, post_norms=True,
        sliding_window=4, layer_types=("sliding_attention", "full_attention") * 2, attn_logit_softcapping=3.0,
        final_logit_softcapping=10.0, query_pre_attn_scalar=8, hidden_act="gelu_pytorch_tanh"),
    # the first layer differs from the rest: no period below L, so the scan falls back to the unrolled loop
    "qwen2_mixed": dict(model_type="qwen2", qkv_bias=True, sliding_window=4,
                        layer_types=("full_attention", "sliding_attention", "sliding_attention", "sliding_attention")),
}


def _config(family, **kw):
  base = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8)
  base.update(FAMILIES[family])
  base.update(kw)
  return ModelConfig(**base)


def _batch():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 96, (4, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :3] = 0  # left padding
  mask[2, 9:] = 0  # right padding
  return ids, mask


def _loss_and_grads(model, ids, mask):
  graphdef, state = nnx.split(model)

  def loss(s):
    out = nnx.merge(graphdef, s)(ids, mask)
    logp = jax.nn.log_softmax(out.logits[:, :-1])
    nll = -jnp.take_along_axis(logp, jnp.asarray(ids)[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(nll * mask[:, 1:]) / jnp.sum(mask[:, 1:])

  return jax.jit(jax.value_and_grad(loss))(state)


def test_scan_period_finds_the_repeating_group():
  assert scan_period(Decoder(_config("llama"), rngs=nnx.Rngs(0)).layers) == 1
  assert scan_period(Decoder(_config("gemma2"), rngs=nnx.Rngs(0)).layers) == 2  # sliding, full, sliding, full
  assert scan_period(Decoder(_config("qwen2_mixed"), rngs=nnx.Rngs(0)).layers) is None


@pytest.mark.parametrize("family,scan,remat", [
    ("llama", True, "none"), ("llama", False, "dots_with_no_batch_dims_saveable"), ("mixtral", True, "full"),
    ("gemma2", True, "dots_saveable"), ("qwen2_mixed", True, "full")])
def test_scanned_and_rematerialised_equal_unrolled(family, scan, remat):
  ids, mask = _batch()
  ref = Decoder(_config(family), rngs=nnx.Rngs(1))
  new = Decoder(_config(family, scan_layers=scan, remat=remat), rngs=nnx.Rngs(1))
  # the parameter layout is unchanged: the same tree of per-layer tensors, equal values
  ref_state, new_state = nnx.state(ref), nnx.state(new)
  assert jax.tree.structure(ref_state) == jax.tree.structure(new_state)
  jax.tree.map(np.testing.assert_array_equal, ref_state, new_state)

  want, got = ref(ids, mask, output_hidden_states=True, output_block_outputs=True), \
      new(ids, mask, output_hidden_states=True, output_block_outputs=True)
  np.testing.assert_allclose(got.logits, want.logits, atol=2e-5, rtol=1e-5)
  assert len(got.hidden_states) == len(want.hidden_states) == 5
  for a, b in zip(got.hidden_states + got.block_outputs, want.hidden_states + want.block_outputs):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)

  (l_ref, g_ref), (l_new, g_new) = _loss_and_grads(ref, ids, mask), _loss_and_grads(new, ids, mask)
  np.testing.assert_allclose(l_new, l_ref, rtol=1e-6)
  flat_ref, flat_new = jax.tree.leaves(g_ref), jax.tree.leaves(g_new)
  assert len(flat_ref) == len(flat_new)
  for a, b in zip(flat_new, flat_ref):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_remat_full_keeps_fewer_activations_than_none():
  """What remat is for: the compiled backward pass of a deeper model holds less temporary memory."""
  ids = np.zeros((8, 64), np.int32)
  mask = np.ones_like(ids)
  temps = {}
  for remat in ("none", "full"):
    model = Decoder(_config("llama", num_hidden_layers=8, scan_layers=True, remat=remat), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    f = jax.jit(jax.grad(lambda s: nnx.merge(graphdef, s)(ids, mask).logits.mean()))
    temps[remat] = f.lower(state).compile().memory_analysis().temp_size_in_bytes
  assert temps["full"] < 0.8 * temps["none"], temps


def test_bad_remat_name_is_a_config_error():
  with pytest.raises(ConfigError, match="remat='sometimes'.*expected one of none, full"):
    _config("llama", remat="sometimes")


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_scanned_model_loaded_sharded_matches_unrolled_single_device(tmp_path):
  ids, mask = _batch()
  ids, mask = np.tile(ids, (2, 1)), np.tile(mask, (2, 1))  # 8 rows: one per batch shard
  path = str(tmp_path / "ckpt")
  save_hf(Decoder(_config("gemma2"), rngs=nnx.Rngs(2)), _config("gemma2"), path)
  single, _ = load_hf(path)
  (l_ref, g_ref) = _loss_and_grads(single, ids, mask)
  mesh = sharding.make_mesh(fsdp=4, tensor=2)
  with jax.set_mesh(mesh):
    model, cfg = load_hf(path, mesh=mesh, scan_layers=True, remat="full")
    assert cfg.scan_layers and cfg.remat == "full"
    assert model.layers[0].self_attn.q_proj[...].sharding.mesh.shape == mesh.shape
    l_new, g_new = _loss_and_grads(model, ids, mask)
  np.testing.assert_allclose(l_new, l_ref, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-3)
  # the export is the checkpoint it was loaded from: scanning is a compute-time choice only
  out = str(tmp_path / "export")
  save_hf(model, cfg, out)
  again, again_cfg = load_hf(out)
  assert not again_cfg.scan_layers and again_cfg.remat == "none"
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               nnx.state(again), nnx.state(single))


def test_runner_model_fields_reach_the_model_config():
  from pragjax.train import runner

  assert runner.model_overrides(dict(scan_layers=True, remat="dots_saveable", attention_impl="")) == dict(
      scan_layers=True, remat="dots_saveable")
  assert runner.model_overrides(dict(scan_layers=False, remat="none", attention_impl="chunked")) == dict(
      attention_impl="chunked")
  assert runner.model_overrides(dict(path="x")) == {}  # configs written before the fields existed
