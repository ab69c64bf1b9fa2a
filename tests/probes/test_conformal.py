"""Conformal prediction: coverage over many random calibration/test splits, and the set rules by hand."""

import numpy as np
import pytest

from pragjax.methods.probes import conformal, metrics

ALPHA = 0.1
SPLITS = 300


def _scores(rng, n):
  """Synthetic one-vs-all decision values: class 1 ~ N(1, 1), class 0 ~ N(-1, 1.5) (30% positives)."""
  y = (rng.random(n) < 0.3).astype(int)
  return np.where(y == 1, rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.5, n)), y


def _split_coverages(fit_predict, n_cal=200, n_test=200, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(SPLITS):
    f, y = _scores(rng, n_cal + n_test)
    out.append(fit_predict(f[:n_cal], y[:n_cal], f[n_cal:], y[n_cal:]))
  return np.asarray(out)


def test_binary_icp_coverage_over_random_splits():
  def run(fc, yc, ft, yt):
    return metrics.coverage(conformal.BinaryICP(alpha=ALPHA).fit(fc, yc).predict_sets(ft), yt)

  cov = _split_coverages(run)
  # Marginal validity: E[coverage] in [1 - alpha, 1 - alpha + 1/(n_cal + 1)]; the mean of 300 splits is within 3 SE.
  se = cov.std() / np.sqrt(SPLITS)
  assert 1 - ALPHA - 3 * se <= cov.mean() <= 1 - ALPHA + 1 / 201 + 3 * se, (cov.mean(), se)
  assert abs(cov.mean() - (1 - ALPHA)) < 0.03


def test_mondrian_icp_covers_each_label():
  def run(fc, yc, ft, yt):
    sets = conformal.BinaryICP(alpha=ALPHA, mondrian=True).fit(fc, yc).predict_sets(ft)
    return [metrics.coverage(sets[yt == c], yt[yt == c]) for c in (0, 1)]

  cov = _split_coverages(run)
  for c in (0, 1):
    se = cov[:, c].std() / np.sqrt(SPLITS)
    assert cov[:, c].mean() >= 1 - ALPHA - 3 * se, (c, cov[:, c].mean())


def test_multiclass_icp_coverage():
  rng = np.random.default_rng(1)
  cov = []
  for _ in range(SPLITS):
    n = 400
    y = rng.integers(0, 3, n)
    f = rng.normal(0.0, 1.0, (n, 3)) + 1.5 * np.eye(3)[y]
    icp = conformal.MulticlassICP(alpha=ALPHA).fit(f[:200], y[:200])
    cov.append(metrics.coverage(icp.predict_sets(f[200:]), y[200:]))
  cov = np.asarray(cov)
  assert abs(cov.mean() - (1 - ALPHA)) < 0.01 + 3 * cov.std() / np.sqrt(SPLITS)


def test_p_values_by_hand():
  icp = conformal.BinaryICP(alpha=0.25).fit([2.0, -1.0, 0.5, -0.2], [1, 0, 1, 0])
  # Calibration nonconformities exp(-(2y-1) f): e^-2, e^-1, e^-0.5, e^-0.2 (sorted: 0.135, 0.368, 0.607, 0.819).
  p = icp.p_values([0.0])
  # Candidate 1 or 0 at f=0: nonconformity 1, exceeding all four -> p = (0 + 1) / 5.
  np.testing.assert_allclose(p, [[0.2, 0.2]])
  p = icp.p_values([1.0])
  # Candidate 1: e^-1 = 0.368 -> 3 calibration values >= it -> 4/5; candidate 0: e^1 -> 1/5.
  np.testing.assert_allclose(p, [[0.2, 0.8]])
  assert icp.predict_sets([1.0]).tolist() == [[False, True]]
  np.testing.assert_allclose(conformal.nonconformity([1, 0], [0.5, 0.5]), np.exp([-0.5, 0.5]))


def test_three_way_sets_and_abstention():
  p_pos = np.array([[0.5, 0.05, 0.01],  # only "true" survives
                    [0.5, 0.4, 0.01],  # two survive -> abstain
                    [0.01, 0.02, 0.03],  # none survives -> abstain
                    [0.01, 0.02, 0.9]])  # only "neither"
  sets = conformal.three_way_sets(p_pos, alpha=0.1)
  assert conformal.decide(sets).tolist() == [0, -1, -1, 2]
  assert metrics.abstention_rate(conformal.decide(sets)) == 0.5


def test_margin_nonconformity_and_errors():
  f = np.array([[2.0, 0.5, -1.0]])
  np.testing.assert_allclose(conformal.margin_nonconformity(f, [0]), [-1.5])
  np.testing.assert_allclose(conformal.margin_nonconformity(f, [2]), [3.0])
  with pytest.raises(RuntimeError, match="calibrated"):
    conformal.BinaryICP().p_values([0.0])
  with pytest.raises(ValueError, match="alpha"):
    conformal.BinaryICP(alpha=1.5).fit([0.0, 1.0], [0, 1]).predict_sets([0.0])
