"""The linear SVM solver against a reference QP solver and direct transcriptions of its parts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.methods.probes import svm
from tests.probes.qp_reference import svm_reference


def _problem(seed, n=240, d=12, noise=1.5):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
  y = np.sign(x @ rng.normal(size=d) + noise * rng.normal(size=n))
  rho = np.ones(n)
  rho[: n // 8] = rng.uniform(-0.8, 1.0, n // 8)  # sMIL-style relaxed margins
  return x, y, rho, rng


def _solve(x, y, rho, u, **kw):
  return svm.solve(*(jnp.asarray(a, jnp.float32) for a in (x, y, rho, u)), **kw)


@pytest.mark.parametrize("method", ["dcd", "fista"])
@pytest.mark.parametrize("seed,c", [(0, 0.1), (1, 1.0), (2, 10.0)])
def test_decision_values_match_reference_qp(seed, c, method):
  x, y, rho, rng = _problem(seed)
  u = np.full(len(y), c / len(y))
  u[rng.random(len(y)) < 0.1] = 0.0  # ignored points (padding / other stage)
  w_ref, b_ref, _, dual_ref = svm_reference(x, y, rho, u)
  sol = _solve(x, y, rho, u, method=method)
  assert bool(sol.converged)
  f_ref = x @ w_ref + b_ref
  f = x @ np.asarray(sol.w, np.float64) + float(sol.b)
  assert np.corrcoef(f, f_ref)[0, 1] >= 0.999
  assert np.mean(np.sign(f) == np.sign(f_ref)) >= 0.99
  np.testing.assert_allclose(float(sol.dual), dual_ref, rtol=2 * svm.DEFAULT_TOL)
  # The stopping rule's certificate: |w - w*|^2 <= 2 gap (plus float32 slack).
  assert np.sum((np.asarray(sol.w) - w_ref) ** 2) <= 2 * max(float(sol.gap), 0.0) + 1e-6 * np.sum(w_ref ** 2)


def test_batched_over_c_equals_one_by_one():
  x, y, rho, _ = _problem(4)
  args = [jnp.asarray(a, jnp.float32) for a in (x, y, rho)]
  cs = jnp.asarray([0.05, 1.0, 10.0])
  batched = jax.vmap(lambda c: svm.solve(*args, c * jnp.ones(len(y)) / len(y)))(cs)
  for i, c in enumerate(cs):
    single = svm.solve(*args, c * jnp.ones(len(y)) / len(y))
    assert bool(batched.converged[i]) and bool(single.converged)
    # Both are within sqrt(2 gap) of the optimum (the stopping rule's certificate).
    bound = np.sqrt(2 * max(float(batched.gap[i]), 0.0)) + np.sqrt(2 * max(float(single.gap), 0.0)) + 1e-5
    assert np.linalg.norm(np.asarray(batched.w[i]) - np.asarray(single.w)) <= bound


def _box_problem(rng, n, positive, cap, ignored):
  """(y, u, v): labels (a `positive` share of +1), caps in [0, cap) with the first `ignored` at 0, a point."""
  y = np.where(rng.random(n) < positive, 1.0, -1.0)
  u = rng.uniform(0.0, cap, n)
  u[:ignored] = 0.0
  return y, u, rng.normal(scale=cap, size=n)


def test_projection_is_the_euclidean_projection():
  rng = np.random.default_rng(0)
  n = 200
  y, u, v = _box_problem(rng, n, positive=0.3, cap=0.2, ignored=10)
  p = np.asarray(svm.project(*(jnp.asarray(a, jnp.float32) for a in (v, y, u))), np.float64)
  assert np.all(p >= -1e-7) and np.all(p <= u + 1e-7) and abs(p @ y) < 1e-5
  # Variational inequality: (v - p) . (q - p) <= 0 for every feasible q (here: random feasible points).
  for _ in range(50):
    q = rng.uniform(0, 1, n) * u
    pos, neg = y > 0, y < 0
    excess = q[pos].sum() - q[neg].sum()  # make y . q = 0 by shrinking the larger side
    if excess > 0:
      q[pos] *= 1 - excess / q[pos].sum()
    else:
      q[neg] *= 1 + excess / q[neg].sum()
    assert (v - p) @ (q - p) <= 1e-6


def test_weighted_projection_and_sectioned_search():
  rng = np.random.default_rng(2)
  n = 300
  y, u, v = _box_problem(rng, n, positive=0.4, cap=0.1, ignored=7)
  m = rng.uniform(0.1, 10.0, n)
  f32 = lambda *a: [jnp.asarray(t, jnp.float32) for t in a]
  bisect = np.asarray(svm.project(*f32(v, y, u), sections=2), np.float64)
  # 256 points per round (the accelerator default) finds the same multiplier.
  np.testing.assert_allclose(np.asarray(svm.project(*f32(v, y, u), sections=256)), bisect, atol=1e-7)
  p = np.asarray(svm.project(*f32(v, y, u, m)), np.float64)
  np.testing.assert_allclose(np.asarray(svm.project(*f32(v, y, u, m), sections=256)), p, atol=1e-7)
  assert np.all(p >= -1e-7) and np.all(p <= u + 1e-7) and abs(p @ y) < 1e-5
  # Projection in the norm sum m a^2: (v - p) . M (q - p) <= 0 for feasible q (here: the Euclidean projection
  # of random points).
  for _ in range(20):
    q = np.asarray(svm.project(*f32(rng.normal(scale=0.1, size=n), y, u)), np.float64)
    assert (v - p) @ (m * (q - p)) <= 1e-6
  # A shifted box and a non-zero target (FISTA's offsets from its reference point).
  lo, hi = -0.5 * u, 0.5 * u
  b = np.asarray(svm.project_box(*f32(v, y, lo, hi), 0.01), np.float64)
  assert np.all(b >= lo - 1e-7) and np.all(b <= hi + 1e-7) and abs(b @ y - 0.01) < 1e-5


def test_optimal_bias_minimises_the_hinge_sum():
  rng = np.random.default_rng(1)
  n = 300
  s, y = rng.normal(size=n), np.where(rng.random(n) < 0.4, 1.0, -1.0)
  rho, u = rng.uniform(-0.5, 1.0, n), rng.uniform(0.0, 1.0, n)

  def h(b):  # direct transcription
    return np.sum(u * np.maximum(0.0, rho - y * (s + b)))

  b = float(svm.optimal_bias(*(jnp.asarray(a, jnp.float32) for a in (s, y, rho, u))))
  kinks = y * (rho - y * s)
  assert h(b) <= min(h(k) for k in kinks) + 1e-4


def test_gap_formula_equals_primal_minus_dual():
  x, y, rho, rng = _problem(5, n=80)
  u = np.full(len(y), 0.02)
  alpha = np.asarray(svm.project(*(jnp.asarray(a, jnp.float32) for a in (rng.uniform(0, 0.02, len(y)), y, u))),
                     np.float64)
  w = x.T @ (y * alpha)
  b = 0.3
  primal = 0.5 * w @ w + np.sum(u * np.maximum(0.0, rho - y * (x @ w + b)))
  dual = rho @ alpha - 0.5 * w @ w
  gap = float(svm.duality_gap(*(jnp.asarray(a, jnp.float64 if jax.config.x64_enabled else jnp.float32)
                                for a in (alpha, x @ w + b, y, rho, u))))
  np.testing.assert_allclose(gap, primal - dual, rtol=1e-4, atol=1e-6)


def test_unconverged_runs_say_so():
  x, y, rho, _ = _problem(6)
  sol = _solve(x, y, rho, np.full(len(y), 10.0 / len(y)), max_iters=20, tol=1e-9, method="fista")
  assert not bool(sol.converged) and int(sol.iterations) == 20
  sol = _solve(x, y, rho, np.full(len(y), 10.0 / len(y)), max_epochs=5, tol=1e-9, method="dcd", check_every=4)
  assert not bool(sol.converged) and int(sol.iterations) == 5
  with pytest.raises(ValueError, match="unknown SVM method"):
    _solve(x, y, rho, np.ones(len(y)), method="smo")


def test_unit_linearization_is_the_support_vector_midpoint():
  x = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-3.0, 0.0], [5.0, 0.0]])
  y = np.array([1.0, 1.0, -1.0, -1.0, 1.0])
  alpha = np.array([0.5, 0.2, 0.4, 0.3, 0.0])  # point 4 is not a support vector
  u = np.full(5, 1.0)
  d, bias = svm.unit_linearization(*(jnp.asarray(a, jnp.float32) for a in ([4.0, 0.0], 0.3, x, y, alpha, u)))
  np.testing.assert_allclose(np.asarray(d), [1.0, 0.0])
  # mean positive SV score (2 + 1) / 2 = 1.5, mean negative (-1 - 3) / 2 = -2 -> bias -(1.5 - 2) / 2 = 0.25.
  assert float(bias) == pytest.approx(0.25)
  _, bias = svm.unit_linearization(*(jnp.asarray(a, jnp.float32) for a in ([4.0, 0.0], 0.3, x, y, alpha * (y > 0), u)))
  assert float(bias) == pytest.approx(0.3 / 4)  # no negative support vector: b / |w|
