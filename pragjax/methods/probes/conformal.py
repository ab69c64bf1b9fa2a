"""Inductive conformal prediction for one-vs-all probes, their three-way combination, and a multiclass variant.

Binary ICP (one probe, labels y in {0, 1}, decision values f):
- nonconformity a(y, f) = exp(-(2y - 1) f) (large when f disagrees with y);
- calibration: a_i = a(y_i, f_i) on a calibration split disjoint from training;
- p-value of candidate label c for a new f:
    p(c) = (#{i : a_i >= a(c, f)} + 1) / (n + 1);
- prediction set {c : p(c) > alpha}. If calibration and test points are
  exchangeable, P(y in set) >= 1 - alpha (and <= 1 - alpha + 1/(n + 1) for
  continuous scores): the coverage a test checks.
With `mondrian=True` the p-value of c counts only calibration points of label
c (label-conditional ICP), which gives coverage >= 1 - alpha within each label.

Three-way (true / false / neither) from three one-vs-all probes: label k
survives if candidate 1 is in probe k's set (p_k(1) > alpha); the prediction
is the surviving label if exactly one survives, else -1 (abstain).

Multiclass variant: one ICP on the vector of the K probe scores with the
margin nonconformity a(k, f) = max_{j != k} f_j - f_k; label k is in the set
if its p-value exceeds alpha; the prediction abstains unless the set holds
exactly one label.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_ALPHA = 0.1


def nonconformity(y, f) -> np.ndarray:
  """a(y, f) = exp(-(2y - 1) f) for labels y in {0, 1} and decision values f (broadcasting)."""
  y = np.asarray(y, np.float64)
  return np.exp(-(2.0 * y - 1.0) * np.asarray(f, np.float64))


def _p_values(calibration: np.ndarray, candidate: np.ndarray) -> np.ndarray:
  """(#{calibration >= candidate} + 1) / (n + 1) elementwise; `calibration` sorted ascending."""
  n = calibration.size
  at_least = n - np.searchsorted(calibration, candidate, side="left")
  return (at_least + 1.0) / (n + 1.0)


def _check_alpha(alpha: float) -> float:
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
  return float(alpha)


@dataclasses.dataclass
class BinaryICP:
  """Inductive conformal predictor for one probe's decision values (see the module docstring)."""
  alpha: float = DEFAULT_ALPHA
  mondrian: bool = False
  calibration_: dict | None = None

  def fit(self, scores, labels) -> "BinaryICP":
    """Calibrates on decision values [n] and their binary labels [n]."""
    f, y = np.asarray(scores, np.float64).ravel(), np.asarray(labels).astype(np.int64).ravel()
    if f.shape != y.shape or f.size == 0:
      raise ValueError(f"need matching non-empty scores and labels, got {f.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all():
      raise ValueError("labels must be 0 or 1")
    a = nonconformity(y, f)
    if self.mondrian:
      self.calibration_ = {c: np.sort(a[y == c]) for c in (0, 1)}
    else:
      self.calibration_ = {c: np.sort(a) for c in (0, 1)}
    return self

  def p_values(self, scores) -> np.ndarray:
    """[N, 2]: p-values of candidates 0 and 1 for each decision value."""
    if self.calibration_ is None:
      raise RuntimeError("BinaryICP is not calibrated; call fit first")
    f = np.asarray(scores, np.float64).ravel()
    return np.stack([_p_values(self.calibration_[c], nonconformity(c, f)) for c in (0, 1)], axis=1)

  def predict_sets(self, scores) -> np.ndarray:
    """[N, 2] bool: candidate c is in the set iff its p-value exceeds alpha."""
    return self.p_values(scores) > _check_alpha(self.alpha)


def three_way_sets(p_positive, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
  """[N, K] bool: label k survives iff p-value of candidate 1 under probe k exceeds alpha. p_positive: [N, K]."""
  return np.asarray(p_positive) > _check_alpha(alpha)


def decide(sets) -> np.ndarray:
  """[N] int: the only label of each set, or -1 (abstain) when the set is empty or holds several."""
  sets = np.asarray(sets, bool)
  return np.where(sets.sum(axis=1) == 1, np.argmax(sets, axis=1), -1)


def margin_nonconformity(scores, labels) -> np.ndarray:
  """a(k, f) = max_{j != k} f_j - f_k for score vectors f [N, K] and labels k [N]."""
  f = np.asarray(scores, np.float64)
  k = np.asarray(labels, np.int64)
  rows = np.arange(f.shape[0])
  others = f.copy()
  others[rows, k] = -np.inf
  return others.max(axis=1) - f[rows, k]


@dataclasses.dataclass
class MulticlassICP:
  """ICP on the K one-vs-all scores with the margin nonconformity (see the module docstring)."""
  alpha: float = DEFAULT_ALPHA
  calibration_: np.ndarray | None = None

  def fit(self, scores, labels) -> "MulticlassICP":
    """Calibrates on score vectors [n, K] and labels [n] in 0..K-1."""
    f = np.asarray(scores, np.float64)
    if f.ndim != 2 or f.shape[1] < 2 or f.shape[0] != len(labels):
      raise ValueError(f"need scores [n, K>=2] and n labels, got {f.shape} and {len(labels)}")
    self.calibration_ = np.sort(margin_nonconformity(f, labels))
    return self

  def p_values(self, scores) -> np.ndarray:
    """[N, K]: the p-value of every candidate label."""
    if self.calibration_ is None:
      raise RuntimeError("MulticlassICP is not calibrated; call fit first")
    f = np.asarray(scores, np.float64)
    cand = np.stack([margin_nonconformity(f, np.full(f.shape[0], k)) for k in range(f.shape[1])], axis=1)
    return _p_values(self.calibration_, cand)

  def predict_sets(self, scores) -> np.ndarray:
    """[N, K] bool prediction sets."""
    return self.p_values(scores) > _check_alpha(self.alpha)
