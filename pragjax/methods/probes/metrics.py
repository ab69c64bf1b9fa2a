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


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
  """The central `level` interval of `samples` (the (1-level)/2 and (1+level)/2 quantiles, linear)."""
  s = np.asarray(samples, np.float64).ravel()
  s = s[np.isfinite(s)]
  if not s.size:
    return float("nan"), float("nan")
  lo, hi = np.quantile(s, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
  return float(lo), float(hi)


def bootstrap_mean_ci(values, *, level: float = 0.95, num_samples: int = 2000, seed: int = 0) -> dict:
  """Mean of `values` (NaNs dropped) with a percentile bootstrap interval, plus std, min, max and n.

  The interval is `percentile_interval` of `num_samples` means of n values
  drawn with replacement (`np.random.default_rng(seed).integers(0, n, (num_samples, n))`).
  One value gives a zero-width interval; none gives NaNs.
  """
  v = np.asarray(values, np.float64).ravel()
  v = v[np.isfinite(v)]
  n = int(v.size)
  if n == 0:
    nan = float("nan")
    return {"mean": nan, "lo": nan, "hi": nan, "std": nan, "min": nan, "max": nan, "n": 0}
  if n == 1:
    lo = hi = float(v[0])
  else:
    idx = np.random.default_rng(seed).integers(0, n, (num_samples, n))
    lo, hi = percentile_interval(v[idx].mean(axis=1), level)
  return {"mean": float(v.mean()), "lo": lo, "hi": hi, "std": float(v.std()), "min": float(v.min()),
          "max": float(v.max()), "n": n}


def group_members(groups) -> list[np.ndarray]:
  """Row indices of each distinct group (in sorted group order)."""
  groups = np.asarray([str(g) for g in groups])
  names, inverse = np.unique(groups, return_inverse=True)
  return [np.flatnonzero(inverse == g) for g in range(len(names))]


def group_bootstrap_indices(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
  """Row indices of one cluster bootstrap draw over `group_members(groups)`: as many groups as there are,
  drawn with replacement, each with all of its rows (statements of one entity are not independent, so
  entities are what is resampled)."""
  pick = rng.integers(0, len(members), len(members))
  return np.concatenate([members[g] for g in pick]) if len(pick) else np.zeros((0,), np.int64)


def ova_means(labels, scores, classes) -> tuple[float, float]:
  """(mean over `classes` of the one-vs-all MCC of `scores[:, j] >= 0`, mean of their average precisions)
  for labels [N] and scores [N, len(classes)]; AP NaNs (no positive) are left out of its mean."""
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  mccs, aps = [], []
  for j, k in enumerate(classes):
    y = (labels == k).astype(np.int64)
    mccs.append(mcc(y, (scores[:, j] >= 0).astype(np.int64), 2))
    aps.append(average_precision(y, scores[:, j]))
  aps = [a for a in aps if a == a]
  return float(np.mean(mccs)), float(np.mean(aps)) if aps else float("nan")
