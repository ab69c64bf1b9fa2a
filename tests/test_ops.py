"""pragjax.ops against direct numpy computations."""

import jax.numpy as jnp
import numpy as np

from pragjax import ops


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_token_logprobs_matches_numpy_and_is_float32():
  rng = np.random.RandomState(0)
  logits = rng.randn(2, 5, 11).astype(np.float32) * 3
  ids = rng.randint(0, 11, (2, 5))
  want = np.take_along_axis(_log_softmax(logits.astype(np.float64))[:, :-1], ids[:, 1:, None], -1)[..., 0]
  got = ops.token_logprobs(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), ids)
  assert got.shape == (2, 4) and got.dtype == jnp.float32
  np.testing.assert_allclose(ops.token_logprobs(logits, ids), want, atol=1e-5)
  assert ops.token_logprobs(jnp.asarray(logits, jnp.bfloat16), ids).dtype == jnp.float32


def test_masked_reductions():
  x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  m = np.array([[1, 0, 1], [0, 0, 0]])
  np.testing.assert_allclose(ops.masked_sum(x, m), [4.0, 0.0])
  np.testing.assert_allclose(ops.masked_mean(x, m), [2.0, 0.0])  # empty row: 0, not NaN
  np.testing.assert_allclose(ops.log_ratio(x, x[::-1], m), np.where(m, x - x[::-1], 0.0))


def test_positions_from_mask_left_and_right_padding():
  m = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(ops.positions_from_mask(m), [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]])
