"""Decoding against the KV cache: blocked attention over the filled slots equals attention over every slot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax.models import Decoder, KVCache, ModelConfig, generate
from pragjax.models.attention import cached_attention, full_cached_attention, make_attention_mask

FAMILIES = {
    "llama": {},
    "gemma2": dict(model_type="gemma2", tie_word_embeddings=True, norm_offset=1.0, scale_embeddings=True,
                   post_norms=True, sliding_window=5, layer_types=("sliding_attention", "full_attention"),
                   attn_logit_softcapping=3.0, final_logit_softcapping=10.0, query_pre_attn_scalar=8,
                   hidden_act="gelu_pytorch_tanh"),
}


def _config(family, **kw):
  base = dict(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8)
  base.update(FAMILIES[family])
  base.update(kw)
  return ModelConfig(**base)


def _numpy_attention(q, k, v, mask, scale, softcap=None):
  """Softmax attention in float64 over every slot; k, v in the cache layout [B, K, S, H]."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, t, n, h = q.shape
  g = n // k.shape[1]
  out = np.zeros((b, t, n, h))
  for i in range(n):
    s = np.einsum("bth,bsh->bts", q[:, :, i], k[:, i // g]) * scale
    if softcap:
      s = np.tanh(s / softcap) * softcap
    s = np.where(mask[:, 0], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out[:, :, i] = np.einsum("bts,bsh->bth", p, v[:, i // g])
  return out


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("filled,block", [(3, 4), (5, 4), (8, 4), (13, 16), (32, 8)])
def test_cached_attention_equals_softmax_over_every_slot(filled, block, softcap):
  rng = np.random.default_rng(filled)
  b, t, n, kh, h, s = 3, 2, 4, 2, 8, 32
  q = rng.normal(size=(b, t, n, h)).astype(np.float32)
  k, v = (rng.normal(size=(b, kh, s, h)).astype(np.float32) for _ in range(2))
  valid = np.zeros((b, s), bool)
  valid[:, :filled] = True
  valid[1, :1] = False  # left padding in one row
  q_slots = np.broadcast_to(np.arange(filled - t, filled), (b, t)).clip(0)
  mask = np.asarray(make_attention_mask(jnp.asarray(q_slots), jnp.broadcast_to(jnp.arange(s), (b, s)),
                                        jnp.asarray(valid)))
  want = _numpy_attention(q, k, v, mask, 0.35, softcap)
  got = cached_attention(q, k, v, mask, filled, scale=0.35, softcap=softcap, block=block)
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(full_cached_attention(q, k, v, mask, scale=0.35, softcap=softcap), want, atol=2e-5)
  # slots at and after `filled` are never read: garbage there changes nothing
  k2 = k.copy()
  k2[:, :, -(-filled // block) * block:] = np.nan
  np.testing.assert_allclose(cached_attention(q, k2, v, mask, filled, scale=0.35, softcap=softcap, block=block),
                             got, atol=0)


def test_cache_length_must_be_a_multiple_of_the_block():
  x = jnp.zeros((1, 1, 2, 4))
  with pytest.raises(ValueError, match="not a multiple of the decode block 4"):
    cached_attention(x, jnp.zeros((1, 1, 6, 4)), jnp.zeros((1, 1, 6, 4)), jnp.ones((1, 1, 1, 6), bool), 3,
                     scale=1.0, block=4)


def test_kv_cache_layout_and_rounding():
  cache = KVCache.init(_config("llama", decode_block=16), batch=2, length=20)
  assert cache.k[0].shape == (2, 2, 32, 8)  # [B, K, S rounded up to the block, H]
  assert cache.valid.shape == (2, 32) and not bool(cache.valid.any())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_blocked_decode_generates_what_full_decode_and_a_cache_free_pass_give(family):
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 80, (3, 7)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, :3] = 0  # left padded
  outs = {}
  for name, kw in {"blocked4": dict(decode_block=4), "blocked64": {}, "full": dict(decode_attention="full")}.items():
    model = Decoder(_config(family, **kw), rngs=nnx.Rngs(0))
    outs[name] = generate(model, ids, mask, max_new_tokens=9)
  for name in ("blocked4", "blocked64"):
    np.testing.assert_array_equal(outs[name].tokens, outs["full"].tokens)
    np.testing.assert_allclose(outs[name].logprobs, outs["full"].logprobs, atol=1e-5)
  # teacher-forced, no cache: the same log-probs of the generated tokens
  model = Decoder(_config(family), rngs=nnx.Rngs(0))
  full_ids = np.concatenate([ids, np.asarray(outs["blocked4"].tokens)], axis=1)
  full_mask = np.concatenate([mask, np.ones_like(np.asarray(outs["blocked4"].tokens))], axis=1)
  logp = jax.nn.log_softmax(model(full_ids, full_mask).logits, axis=-1)
  want = np.take_along_axis(np.asarray(logp[:, 6:-1]), full_ids[:, 7:, None], axis=-1)[..., 0]
  np.testing.assert_allclose(outs["blocked4"].logprobs, want, atol=1e-4)
