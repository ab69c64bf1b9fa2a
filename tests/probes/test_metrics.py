"""Probe metrics against direct transcriptions of their definitions and hand-computed cases."""

import itertools

import numpy as np
import pytest

from pragjax.methods.probes import metrics


def _binary_mcc(y, p):
  """MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))."""
  tp, tn = np.sum((y == 1) & (p == 1)), np.sum((y == 0) & (p == 0))
  fp, fn = np.sum((y == 0) & (p == 1)), np.sum((y == 1) & (p == 0))
  d = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
  return (tp * tn - fp * fn) / d if d else 0.0


def _ap_by_thresholds(y, s):
  """AP = sum over distinct thresholds (descending) of (recall gain) x precision, computed by brute force."""
  ap, prev_recall = 0.0, 0.0
  for th in sorted(set(s), reverse=True):
    pred = s >= th
    recall = (pred & y).sum() / y.sum()
    ap += (recall - prev_recall) * (pred & y).sum() / pred.sum()
    prev_recall = recall
  return ap


def test_mcc_binary_matches_formula():
  rng = np.random.default_rng(0)
  for _ in range(20):
    y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    np.testing.assert_allclose(metrics.mcc(y, p), _binary_mcc(y, p), atol=1e-12)
  assert metrics.mcc([0, 1, 1], [1, 1, 1]) == 0.0  # constant prediction
  assert metrics.mcc([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)


def test_multiclass_mcc_by_hand():
  # Confusion [[2,1,0],[0,2,0],[1,0,2]]: s=6, n=8, t=(3,2,3), p=(3,3,2).
  y = [0, 0, 0, 1, 1, 2, 2, 2]
  p = [0, 0, 1, 1, 1, 2, 2, 0]
  expected = (6 * 8 - (3 * 3 + 2 * 3 + 3 * 2)) / np.sqrt((64 - (9 + 9 + 4)) * (64 - (9 + 4 + 9)))
  assert metrics.mcc(y, p) == pytest.approx(expected)
  with pytest.raises(ValueError, match="abstentions"):
    metrics.mcc([0, 1], [0, -1])
  assert metrics.selective_mcc([0, 1, 1], [0, 1, -1]) == pytest.approx(1.0)


def test_average_precision_matches_definition_with_ties():
  rng = np.random.default_rng(1)
  for _ in range(30):
    y = rng.integers(0, 2, 25).astype(bool)
    y[0] = True
    s = rng.integers(0, 6, 25).astype(float)  # many ties
    assert metrics.average_precision(y, s) == pytest.approx(_ap_by_thresholds(y, s))
  assert metrics.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
  assert np.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))


def test_coverage_and_abstention():
  sets = np.array(list(itertools.product([False, True], repeat=3)))
  y = np.zeros(len(sets), int)
  assert metrics.coverage(sets, y) == 0.5
  assert metrics.abstention_rate([0, -1, 2, -1]) == 0.5
