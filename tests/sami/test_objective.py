"""`sami_loss` and `mi_lower_bound` against a direct numpy transcription of the SAMI equation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.objectives.sami import mi_lower_bound, sami_loss


def _numpy_loss(L: np.ndarray, mask=None) -> float:
  """0.5 * (row CE + column CE) with the diagonal as target, written loop by loop (one query)."""
  c = L.shape[0]
  idx = [i for i in range(c) if mask is None or mask[i]]
  rows = [-(L[i, i] - np.log(sum(np.exp(L[i, j]) for j in idx))) for i in idx]
  cols = [-(L[j, j] - np.log(sum(np.exp(L[i, j]) for i in idx))) for j in idx]
  return 0.5 * (np.mean(rows) + np.mean(cols))


@pytest.mark.parametrize("c", [2, 3, 8])
def test_unbatched_equals_numpy(c):
  rng = np.random.default_rng(c)
  L = rng.normal(scale=3.0, size=(c, c)) - 5.0
  np.testing.assert_allclose(float(sami_loss(L)), _numpy_loss(L), rtol=1e-5)
  np.testing.assert_allclose(float(mi_lower_bound(L)), np.log(c) - _numpy_loss(L), rtol=1e-5, atol=1e-6)


def test_batched_equals_mean_of_numpy():
  rng = np.random.default_rng(0)
  L = rng.normal(scale=2.0, size=(5, 4, 4))
  want = np.mean([_numpy_loss(x) for x in L])
  np.testing.assert_allclose(float(sami_loss(L)), want, rtol=1e-5)
  np.testing.assert_allclose(float(mi_lower_bound(L)), np.log(4) - want, rtol=1e-5)


def test_response_mask_drops_slots():
  rng = np.random.default_rng(1)
  L = rng.normal(size=(3, 4, 4))
  mask = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], bool)
  # Masked slots hold values that would change the loss if they were used.
  L[1, :, 1] = L[1, 1, :] = L[1, :, 3] = L[1, 3, :] = 50.0
  want = np.mean([_numpy_loss(L[0]), _numpy_loss(L[1], mask[1])])  # the empty query contributes nothing
  np.testing.assert_allclose(float(sami_loss(L, response_mask=mask)), want, rtol=1e-5)
  want_mi = np.mean([np.log(4) - _numpy_loss(L[0]), np.log(2) - _numpy_loss(L[1], mask[1])])
  np.testing.assert_allclose(float(mi_lower_bound(L, response_mask=mask)), want_mi, rtol=1e-5)


def test_gradient_matches_finite_differences():
  rng = np.random.default_rng(2)
  L = rng.normal(size=(2, 3, 3))
  grad = np.asarray(jax.grad(lambda x: sami_loss(x))(jnp.asarray(L, jnp.float64 if jax.config.jax_enable_x64
                                                                     else jnp.float32)))
  eps = 1e-3
  fd = np.zeros_like(L)
  for idx in np.ndindex(L.shape):
    up, down = L.copy(), L.copy()
    up[idx] += eps
    down[idx] -= eps
    fd[idx] = (np.mean([_numpy_loss(x) for x in up]) - np.mean([_numpy_loss(x) for x in down])) / (2 * eps)
  np.testing.assert_allclose(grad, fd, atol=2e-4)
  # The diagonal is pushed up (negative gradient), the off-diagonal down.
  assert np.all(grad[:, np.arange(3), np.arange(3)] < 0)


def test_minimal_when_diagonal_dominates():
  rng = np.random.default_rng(3)
  base = rng.normal(size=(4, 4))
  losses = [float(sami_loss(base + s * np.eye(4))) for s in (0.0, 2.0, 8.0, 30.0)]
  assert all(a > b for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 1e-6
  np.testing.assert_allclose(float(mi_lower_bound(base + 30 * np.eye(4))), np.log(4), atol=1e-5)
  # Moving the large entries off the diagonal (permuting responses) makes the loss large.
  dominant = base + 8 * np.eye(4)
  for perm in ([1, 0, 2, 3], [3, 2, 1, 0], [1, 2, 3, 0]):
    assert float(sami_loss(dominant[:, perm])) > float(sami_loss(dominant)) + 4.0
  # Uniform scores: no information, loss = log C and the bound is 0.
  np.testing.assert_allclose(float(sami_loss(np.zeros((4, 4)))), np.log(4), rtol=1e-6)
  np.testing.assert_allclose(float(mi_lower_bound(np.zeros((4, 4)))), 0.0, atol=1e-6)


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="square"):
    sami_loss(np.zeros((2, 3)))
  with pytest.raises(ValueError, match="response_mask"):
    sami_loss(np.zeros((2, 3, 3)), response_mask=np.ones((3, 3), bool))
