"""The attention function: every implementation agrees; chunking saves memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.models.attention import attention, make_attention_mask


def _inputs(t=37, s=None, seed=0):
  s = s or t
  k = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(k[0], (2, t, 4, 8))
  kk = jax.random.normal(k[1], (2, s, 2, 8))
  v = jax.random.normal(k[2], (2, s, 2, 8))
  slots = jnp.broadcast_to(jnp.arange(t), (2, t))
  valid = jnp.ones((2, t), bool).at[0, :5].set(False)
  pos = jnp.maximum(jnp.cumsum(valid, 1) - 1, 0)
  mask = make_attention_mask(slots, slots, valid, q_positions=pos, k_positions=pos, sliding_window=9)
  return q, kk, v, mask, valid


@pytest.mark.parametrize("softcap,chunk", [(None, 1), (None, 64), (2.0, 8)])
def test_chunked_equals_reference_values_and_grads(softcap, chunk):
  q, k, v, mask, valid = _inputs()
  ref_impl = "explicit" if softcap else "xla"

  def f(impl, q, k, v):
    o = attention(q, k, v, mask, scale=8**-0.5, softcap=softcap, implementation=impl, chunk_size=chunk)
    return jnp.sum(jnp.where(valid[:, :, None, None], o, 0.0) ** 2)

  np.testing.assert_allclose(
      np.asarray(attention(q, k, v, mask, scale=8**-0.5, softcap=softcap, implementation="chunked",
                           chunk_size=chunk))[np.asarray(valid)],
      np.asarray(attention(q, k, v, mask, scale=8**-0.5, softcap=softcap, implementation=ref_impl))[np.asarray(valid)],
      atol=1e-5)
  g_c = jax.grad(lambda *a: f("chunked", *a), argnums=(0, 1, 2))(q, k, v)
  g_r = jax.grad(lambda *a: f(ref_impl, *a), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_c, g_r):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_explicit_equals_xla():
  q, k, v, mask, valid = _inputs(seed=1)
  a = attention(q, k, v, mask, scale=0.3, implementation="explicit")
  b = attention(q, k, v, mask, scale=0.3, implementation="xla")
  np.testing.assert_allclose(np.asarray(a)[np.asarray(valid)], np.asarray(b)[np.asarray(valid)], atol=1e-5)


def test_chunked_uses_less_memory_for_long_sequences():
  t = 2048
  q = jax.ShapeDtypeStruct((1, t, 8, 32), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, t, 4, 32), jnp.float32)
  m = jax.ShapeDtypeStruct((1, 1, t, t), jnp.bool_)

  def peak(impl):
    f = lambda q, k, v, m: jnp.sum(attention(q, k, v, m, scale=0.2, implementation=impl, chunk_size=256))  # noqa: E731
    return jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(q, kv, kv, m).compile().memory_analysis().temp_size_in_bytes
  assert peak("xla") > 4 * peak("chunked")


@pytest.mark.parametrize("softcap,block", [(None, 8), (None, 64), (3.0, 16)])
def test_causal_blocks_equal_reference(softcap, block):
  q, k, v, mask, valid = _inputs(seed=2)
  ref = attention(q, k, v, mask, scale=0.3, softcap=softcap, implementation="explicit")
  got = attention(q, k, v, mask, scale=0.3, softcap=softcap, implementation="causal_blocks", chunk_size=block)
  np.testing.assert_allclose(np.asarray(got)[np.asarray(valid)], np.asarray(ref)[np.asarray(valid)], atol=1e-5)
  with pytest.raises(ValueError, match="same slots"):
    attention(q, k[:, :10], v[:, :10], mask[..., :10], scale=0.3, implementation="causal_blocks")
