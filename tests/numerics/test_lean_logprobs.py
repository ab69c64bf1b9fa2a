"""Lean (chunked) log-probs equal the full-logits path, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax import ops
from pragjax.methods.sft.loss import batch_token_logprobs, make_sft_loss_fn
from pragjax.models import Decoder, ModelConfig


def _model(**kw):
  cfg = ModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, **kw)
  return Decoder(cfg, rngs=nnx.Rngs(0))


def _batch(t=29):
  rng = np.random.RandomState(0)
  ids = rng.randint(0, 300, (3, t)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, :5] = 0
  loss_mask = mask.copy()
  loss_mask[:, :8] = 0
  return {"input_ids": ids, "attention_mask": mask, "loss_mask": loss_mask}


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_lean_equals_full_values_and_grads(chunk, family):
  kw = {}
  if family == "gemma2":
    kw = dict(model_type="gemma2", tie_word_embeddings=True, final_logit_softcapping=3.0,
              norm_offset=1.0, scale_embeddings=True, post_norms=True)
  model = _model(**kw)
  graphdef, params = nnx.split(model, nnx.Param)
  batch = _batch()
  lean = batch_token_logprobs(graphdef, params, batch, lean=True, chunk_size=chunk)
  full = batch_token_logprobs(graphdef, params, batch, lean=False)
  assert lean.shape == (3, 28) and lean.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(lean), np.asarray(full), atol=1e-5)
  g_lean = jax.grad(lambda p: make_sft_loss_fn(graphdef, lean=True, chunk_size=chunk)(p, batch, None)[0])(params)
  g_full = jax.grad(lambda p: make_sft_loss_fn(graphdef, lean=False)(p, batch, None)[0])(params)
  for a, b in zip(jax.tree.leaves(g_lean), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_lean_path_uses_less_memory_than_full_logits():
  d, v, t = 64, 32768, 512
  h = jax.ShapeDtypeStruct((1, t, d), jnp.float32)
  w = jax.ShapeDtypeStruct((d, v), jnp.float32)
  tg = jax.ShapeDtypeStruct((1, t), jnp.int32)

  def full(h, w, tg):
    return jnp.sum(ops.token_logprobs(jnp.pad(h @ w, ((0, 0), (0, 1), (0, 0))), jnp.pad(tg, ((0, 0), (1, 0)))))

  def lean(h, w, tg):
    return jnp.sum(ops.chunked_token_logprobs(h, w, tg, chunk_size=64))

  def peak(f):
    m = jax.jit(jax.grad(f, argnums=(0, 1))).lower(h, w, tg).compile().memory_analysis()
    return m.temp_size_in_bytes
  assert peak(full) > 4 * peak(lean)
