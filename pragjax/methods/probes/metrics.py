"""Probe metrics: Matthews correlation, average precision, conformal coverage and abstention.

All take numpy-compatible arrays and return Python floats. Labels are class
indices (binary: 0/1); predictions of -1 mean "abstained".
"""

from __future__ import annotations

import numpy as np


def mcc(y_true, y_pred, num_classes: int | None = None) -> float:
  """Matthews correlation coefficient; multiclass is Gorodkin's R_K (equal to MCC for two classes).

  With confusion matrix C (rows true, columns predicted), s = trace(C),
  n = sum(C), t_k = row sums, p_k = column sums:
    R_K = (s n - t.p) / sqrt((n^2 - p.p) (n^2 - t.t)),
  and 0 when the denominator is 0 (a constant prediction or a single class).
  Abstentions (-1) must be filtered out by the caller.
  """
  y_true, y_pred = np.asarray(y_true, np.int64).ravel(), np.asarray(y_pred, np.int64).ravel()
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
  if y_true.size == 0:
    return 0.0
  if min(y_true.min(), y_pred.min()) < 0:
    raise ValueError("mcc got negative labels; drop abstentions (-1) first")
  k = num_classes or int(max(y_true.max(), y_pred.max())) + 1
  conf = np.zeros((k, k), np.float64)
  np.add.at(conf, (y_true, y_pred), 1.0)
  t, p, s, n = conf.sum(1), conf.sum(0), np.trace(conf), conf.sum()
  denom = np.sqrt((n * n - p @ p) * (n * n - t @ t))
  return float((s * n - t @ p) / denom) if denom > 0 else 0.0


def average_precision(y_true, scores) -> float:
  """Average precision of `scores` for binary `y_true` (1 = positive), as scikit-learn defines it.

  AP = sum_k (R_k - R_{k-1}) P_k over the distinct score thresholds in
  decreasing order (tied scores enter together), where P_k and R_k are the
  precision and recall of predicting positive at scores >= threshold k.
  NaN when there is no positive.
  """
  y = np.asarray(y_true).astype(bool).ravel()
  s = np.asarray(scores, np.float64).ravel()
  if y.shape != s.shape:
    raise ValueError(f"y_true {y.shape} and scores {s.shape} differ in shape")
  n_pos = int(y.sum())
  if n_pos == 0:
    return float("nan")
  order = np.argsort(-s, kind="stable")
  s, y = s[order], y[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
  tp = np.cumsum(y)[last_of_tie]
  precision = tp / (last_of_tie + 1)
  recall = tp / n_pos
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def coverage(sets, y_true) -> float:
  """Share of rows whose true label is in its prediction set. sets: [N, K] bool; y_true: [N] in 0..K-1."""
  sets = np.asarray(sets, bool)
  y = np.asarray(y_true, np.int64)
  return float(np.mean(sets[np.arange(len(y)), y])) if len(y) else float("nan")


def abstention_rate(predictions) -> float:
  """Share of predictions that are -1 (abstained)."""
  p = np.asarray(predictions)
  return float(np.mean(p < 0)) if p.size else float("nan")


def selective_mcc(y_true, predictions, num_classes: int | None = None) -> float:
  """MCC on the rows that were not abstained on (prediction >= 0); NaN if every row abstained."""
  y, p = np.asarray(y_true), np.asarray(predictions)
  keep = p >= 0
  return mcc(y[keep], p[keep], num_classes) if keep.any() else float("nan")
