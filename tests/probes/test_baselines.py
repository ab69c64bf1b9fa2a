"""Baseline probes against numpy transcriptions, a reference QP solver and scipy's optimiser."""

import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.methods.probes import baselines, metrics
from tests.probes.qp_reference import svm_reference


def _data(seed=0, n=150, d=8):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.normal(size=d)
  y = (x @ rng.normal(size=d) + rng.normal(scale=2.0, size=n) > 0).astype(int)
  return x.astype(np.float32), y


def test_last_token_any_padding_side():
  bags = np.arange(2 * 4 * 1, dtype=np.float32).reshape(2, 4, 1)
  mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], bool)
  np.testing.assert_array_equal(baselines.last_token(bags, mask)[:, 0], [2.0, 7.0])


def test_mean_difference_transcription():
  x, y = _data()
  probe = baselines.MeanDifference().fit(x, y)
  mu1, mu0 = x[y == 1].astype(np.float64).mean(0), x[y == 0].astype(np.float64).mean(0)
  d = (mu1 - mu0) / np.linalg.norm(mu1 - mu0)
  np.testing.assert_allclose(probe.decision_function(x), (x - (mu1 + mu0) / 2) @ d, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("c", [0.5, 10.0])
def test_svm_probe_matches_reference_qp(c):
  x, y = _data(1)
  probe = baselines.LinearSVMProbe(C=c).fit(x, y)
  z = (x - x.mean(0)) / x.std(0)
  ys = np.where(y == 1, 1.0, -1.0)
  w_ref, b_ref, _, _ = svm_reference(z, ys, np.ones(len(y)), np.full(len(y), c / len(y)))
  f = probe.decision_function(x)
  f_ref = z @ w_ref + b_ref
  assert np.corrcoef(f, f_ref)[0, 1] >= 0.999
  np.testing.assert_allclose(np.linalg.norm(probe.coef_), 1.0, rtol=1e-5)
  assert probe.diagnostics_["converged"]


def test_logistic_probe_is_the_regularised_optimum():
  optimize = pytest.importorskip("scipy.optimize")
  x, y = _data(2)
  c = 0.5
  probe = baselines.LogisticProbe(C=c).fit(x, y)
  z = ((x - x.mean(0)) / x.std(0)).astype(np.float64)

  def objective(theta):  # 1/2 |w|^2 + C sum log(1 + exp(f)) - y f
    f = z @ theta[:-1] + theta[-1]
    return 0.5 * theta[:-1] @ theta[:-1] + c * np.sum(np.logaddexp(0.0, f) - y * f)

  ref = optimize.minimize(objective, np.zeros(z.shape[1] + 1), method="BFGS", options={"gtol": 1e-8}).x
  ours = np.r_[probe.coef_, probe.intercept_]
  np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)
  assert float(baselines.logistic_objective(jnp.asarray(ours, jnp.float32), z, y, c)) == pytest.approx(
      objective(ref), rel=1e-5)


def test_cross_validated_probes_separate_separable_data():
  x, y = _data(3, n=240)
  for probe in (baselines.LinearSVMProbe(), baselines.LogisticProbe()):
    probe.fit(x[:160], y[:160])
    assert probe.cv_results_["chosen"] == probe.C_
    assert metrics.average_precision(y[160:], probe.decision_function(x[160:])) > 0.8
  with pytest.raises(ValueError, match="both classes"):
    baselines.MeanDifference().fit(x, np.ones_like(y))
