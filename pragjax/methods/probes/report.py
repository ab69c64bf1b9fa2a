"""One layer's truth-probe evaluation: fit every probe one-vs-all, calibrate, score, and report.

`evaluate_layer(splits, classes, ...)` takes the train / calibration / test
bags of one layer (dense [B, T, D] + mask, labels in 0..K-1) and, for every
method of `METHODS` and every probed class k (one-vs-all: class k against
the rest):
- fits the probe on train, scores calibration and test;
- test metrics per class: MCC of the sign of the score, average precision;
- conformal: a `BinaryICP` per class calibrated on the calibration split
  (per-class binary coverage on test), the three-way sets of the K probes
  (coverage, abstention, MCC on the decided statements), and a
  `MulticlassICP` on the K-vector of scores;
- the argmax of the K scores as a K-class prediction (MCC);
- with entity groups, the binary coverage averaged over 200 random
  entity-disjoint re-splits of calibration + test (`resplit_coverage`: one
  split's coverage varies by about sqrt(alpha (1 - alpha) / n) either way).
`summary_rows` and `format_table` turn results into tables; `plot_layers`
draws the per-layer figure.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pragjax.eval.tables import markdown_table
from pragjax.methods.probes import activations, baselines, conformal, metrics, sawmil, svm

METHODS = ("sawmil", "mean_diff", "svm_last", "logreg_last")
METHOD_NAMES = {"sawmil": "sAwMIL", "mean_diff": "mean-diff (last)", "svm_last": "SVM (last)",
                "logreg_last": "LogReg (last)"}


@dataclasses.dataclass
class Split:
  """Dense bags of one split: bags [B, T, D], mask [B, T], labels [B] in 0..K-1, groups [B] (entities)."""
  bags: np.ndarray
  mask: np.ndarray
  labels: np.ndarray
  groups: np.ndarray | None = None


class Scorer:
  """A fitted one-vs-all probe: `scores(bags, mask)` -> [B] decision values (>= 0: the probed class)."""

  def __init__(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], info: Mapping[str, Any]):
    self.fn, self.info = fn, dict(info)

  def scores(self, bags, mask) -> np.ndarray:
    return np.asarray(self.fn(bags, mask), np.float64)


def fit_probe(method: str, split: Split, positive: np.ndarray, options: Mapping[str, Any]) -> Scorer:
  """Fits `method` on `split` with binary labels `positive`; `options` holds the sAwMIL / baseline settings."""
  o = dict(options)
  positive_or_none = lambda v: None if v is None or v <= 0 else v
  c = positive_or_none(o.get("C"))
  grid = tuple(float(x) for x in o.get("C_grid", sawmil.DEFAULT_C_GRID))
  seed = int(o.get("seed", 0))
  y = positive.astype(np.int64)
  solver = dict(tol=float(o.get("tol", svm.DEFAULT_TOL)), max_iters=int(o.get("max_iters", svm.DEFAULT_MAX_ITERS)),
                max_epochs=int(o.get("max_epochs", svm.DEFAULT_MAX_EPOCHS)), solver=str(o.get("solver", "auto")))
  if method == "sawmil":
    cap = lambda k: None if positive_or_none(o.get(k)) is None else int(o[k])
    probe = sawmil.SAwMIL(
        C=c, C_grid=grid, n_folds=int(o.get("n_folds", 3)), eta=positive_or_none(o.get("eta")),
        num_known_positives=int(o.get("num_known_positives", 2)),
        min_positive_fraction=float(o.get("min_positive_fraction", 0.05)), max_bag_size=cap("max_bag_size"),
        max_train_bags=cap("max_train_bags"), cv_max_bags=cap("cv_max_bags"), seed=seed,
        **solver).fit(split.bags, split.mask, y)
    return Scorer(probe.decision_function, {**probe.diagnostics_, "cv": probe.cv_results_})
  x = baselines.last_token(split.bags, split.mask)
  if method == "mean_diff":
    probe = baselines.MeanDifference().fit(x, y)
    info = {}
  elif method == "svm_last":
    probe = baselines.LinearSVMProbe(C=c, C_grid=grid, n_folds=int(o.get("n_folds", 3)), seed=seed, **solver).fit(x, y)
    info = {"C": probe.C_, **probe.diagnostics_, "cv": probe.cv_results_}
  elif method == "logreg_last":
    probe = baselines.LogisticProbe(C=c, C_grid=grid, n_folds=int(o.get("n_folds", 3)), seed=seed).fit(x, y)
    info = {"C": probe.C_, **probe.diagnostics_, "cv": probe.cv_results_}
  else:
    raise ValueError(f"unknown probe method {method!r}; available: {', '.join(METHODS)}")
  return Scorer(lambda b, m: probe.decision_function(baselines.last_token(b, m)), info)


def _test_metrics(test_scores: np.ndarray, test_labels: np.ndarray, classes: Sequence[int]) -> dict:
  per_class = {}
  for j, k in enumerate(classes):
    y = (test_labels == k).astype(np.int64)
    per_class[k] = {"mcc": metrics.mcc(y, test_scores[:, j] >= 0, 2),
                    "ap": metrics.average_precision(y, test_scores[:, j])}
  known = np.isin(test_labels, classes)
  pred = np.asarray(classes)[np.argmax(test_scores, axis=1)]
  return {"per_class": per_class,
          "mcc_mean": float(np.mean([v["mcc"] for v in per_class.values()])),
          "ap_mean": float(np.nanmean([v["ap"] for v in per_class.values()])),
          "mcc_argmax": metrics.mcc(test_labels[known], pred[known], max(classes) + 1)}


def _conformal_metrics(cal_scores, cal_labels, test_scores, test_labels, classes, alpha, mondrian) -> dict:
  p_pos, binary_cov = [], {}
  for j, k in enumerate(classes):
    icp = conformal.BinaryICP(alpha=alpha, mondrian=mondrian).fit(cal_scores[:, j], cal_labels == k)
    p = icp.p_values(test_scores[:, j])
    binary_cov[k] = metrics.coverage(p > alpha, (test_labels == k).astype(np.int64))
    p_pos.append(p[:, 1])
  label_index = {k: j for j, k in enumerate(classes)}
  known = np.isin(test_labels, classes)
  y_idx = np.asarray([label_index.get(int(k), 0) for k in test_labels])
  sets = conformal.three_way_sets(np.stack(p_pos, axis=1), alpha)
  decided = conformal.decide(sets)
  mc = conformal.MulticlassICP(alpha=alpha).fit(cal_scores[np.isin(cal_labels, classes)],
                                                [label_index[int(k)] for k in cal_labels if k in label_index])
  mc_sets = mc.predict_sets(test_scores)
  mc_decided = conformal.decide(mc_sets)
  return {
      "binary_coverage": binary_cov,
      "binary_coverage_mean": float(np.mean(list(binary_cov.values()))),
      "ova_set_coverage": metrics.coverage(sets[known], y_idx[known]),
      "ova_abstention": metrics.abstention_rate(decided),
      "ova_selective_mcc": metrics.selective_mcc(y_idx[known], decided[known], len(classes)),
      "multiclass_coverage": metrics.coverage(mc_sets[known], y_idx[known]),
      "multiclass_abstention": metrics.abstention_rate(mc_decided),
      "multiclass_selective_mcc": metrics.selective_mcc(y_idx[known], mc_decided[known], len(classes)),
  }


def resplit_coverage(cal: Split, test: Split, cal_scores, test_scores, classes, alpha, mondrian=False, *,
                     repeats: int = 200, seed: int = 0) -> dict:
  """Binary ICP coverage of the fitted probes over `repeats` random entity-disjoint re-splits of the
  calibration + test statements (same test share); the probes never saw either, so every re-split is a
  valid calibration/test split. Returns the mean and standard deviation of the per-class mean coverage."""
  labels = np.r_[cal.labels, test.labels]
  scores = np.concatenate([cal_scores, test_scores])
  groups = np.r_[cal.groups, test.groups]
  share = len(test.labels) / len(labels)
  covs = []
  for r in range(repeats):
    sp = activations.entity_disjoint_split(groups, test_fraction=share, calibration_fraction=0.0, seed=seed + r)
    c, t = sp["train"], sp["test"]
    per = []
    for j, k in enumerate(classes):
      icp = conformal.BinaryICP(alpha=alpha, mondrian=mondrian).fit(scores[c, j], labels[c] == k)
      per.append(metrics.coverage(icp.predict_sets(scores[t, j]), (labels[t] == k).astype(np.int64)))
    covs.append(np.mean(per))
  return {"mean": float(np.mean(covs)), "std": float(np.std(covs)), "repeats": repeats}


def evaluate_layer(splits: Mapping[str, Split], classes: Sequence[int], *, methods: Sequence[str] = METHODS,
                   options: Mapping[str, Any] | None = None, alpha: float = conformal.DEFAULT_ALPHA,
                   mondrian: bool = False, log=None) -> tuple[dict, dict]:
  """Fits and evaluates every method on one layer -> (results, fitted scorers {method: {class: Scorer}})."""
  options = dict(options or {})
  train, cal, test = splits["train"], splits["calibration"], splits["test"]
  results, fitted = {}, {}
  for method in methods:
    t0 = time.time()
    scorers = {k: fit_probe(method, train, train.labels == k, options) for k in classes}
    cal_s = np.stack([scorers[k].scores(cal.bags, cal.mask) for k in classes], axis=1)
    test_s = np.stack([scorers[k].scores(test.bags, test.mask) for k in classes], axis=1)
    res = _test_metrics(test_s, test.labels, classes)
    res["conformal"] = _conformal_metrics(cal_s, cal.labels, test_s, test.labels, classes, alpha, mondrian)
    if cal.groups is not None and test.groups is not None:
      res["conformal"]["resplit_coverage"] = resplit_coverage(cal, test, cal_s, test_s, classes, alpha, mondrian)
    res["fit"] = {k: s.info for k, s in scorers.items()}
    res["seconds"] = time.time() - t0
    results[method], fitted[method] = res, scorers
    if log is not None:
      log(f"    {METHOD_NAMES.get(method, method)}: mean one-vs-all MCC {res['mcc_mean']:.3f}, "
          f"argmax MCC {res['mcc_argmax']:.3f}, coverage {res['conformal']['binary_coverage_mean']:.3f} "
          f"({res['seconds']:.0f}s)")
  return results, fitted


def transfer(fitted: Mapping[str, Mapping[int, Scorer]], test: Split, classes: Sequence[int]) -> dict:
  """Probes fitted on one dataset scored on another's test split: per method, `_test_metrics`."""
  out = {}
  for method, scorers in fitted.items():
    ks = [k for k in classes if k in scorers]
    s = np.stack([scorers[k].scores(test.bags, test.mask) for k in ks], axis=1)
    out[method] = _test_metrics(s, test.labels, ks)
  return out


def _f(x) -> str:
  return "-" if x is None or x != x else f"{x:.3f}"


def format_layer_table(per_layer: Mapping[int, Mapping[str, dict]], methods: Sequence[str], key: str = "mcc_mean") -> str:
  """Markdown: one row per layer, one column per method (value `key`, default mean one-vs-all MCC)."""
  return markdown_table([[layer] + [_f(per_layer[layer][m][key]) for m in methods] for layer in sorted(per_layer)],
                        ["layer"] + [METHOD_NAMES.get(m, m) for m in methods])


def _resplit(c) -> str:
  r = c.get("resplit_coverage")
  return "-" if r is None else f"{r['mean']:.3f} ± {r['std']:.3f}"


def best_layers(per_layer: Mapping[int, Mapping[str, dict]], methods: Sequence[str],
                key: str = "mcc_mean") -> dict[str, int]:
  """The layer where each method's `key` is highest."""
  return {m: max(per_layer, key=lambda l: per_layer[l][m][key]) for m in methods}


def format_best_table(per_layer, methods, classes, label_names) -> str:
  """Markdown: each method at its best layer (by mean one-vs-all MCC), with per-class MCC and conformal columns."""
  best = best_layers(per_layer, methods)
  head = (["method", "layer"] + [f"MCC {label_names[k]}" for k in classes] +
          ["mean MCC", "argmax MCC", "mean AP", "coverage", "coverage, 200 re-splits", "OvA set coverage",
           "abstention", "MCC decided", "multiclass coverage", "multiclass abstention"])
  rows = []
  for m in methods:
    r = per_layer[best[m]][m]
    c = r["conformal"]
    cells = ([METHOD_NAMES.get(m, m), str(best[m])] + [_f(r["per_class"][k]["mcc"]) for k in classes] +
             [_f(r["mcc_mean"]), _f(r["mcc_argmax"]), _f(r["ap_mean"]), _f(c["binary_coverage_mean"]),
              _resplit(c), _f(c["ova_set_coverage"]), _f(c["ova_abstention"]), _f(c["ova_selective_mcc"]),
              _f(c["multiclass_coverage"]), _f(c["multiclass_abstention"])])
    rows.append(cells)
  return markdown_table(rows, head)


def plot_layers(per_layer, methods, classes, label_names, path: str, title: str = "") -> str:
  """PNG: (left) mean one-vs-all MCC per layer and method; (right) sAwMIL's per-class MCC, coverage and
  abstention per layer (or the first method's when sAwMIL is absent)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  layers = sorted(per_layer)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for m in methods:
    ax1.plot(layers, [per_layer[l][m]["mcc_mean"] for l in layers], marker="o", label=METHOD_NAMES.get(m, m))
  ax1.set(xlabel="layer (block output)", ylabel="mean one-vs-all MCC (test)", title=title or "probes per layer")
  ax1.axhline(0.0, color="grey", lw=0.5)
  ax1.legend(fontsize=8)
  main = "sawmil" if "sawmil" in methods else methods[0]
  for k in classes:
    ax2.plot(layers, [per_layer[l][main]["per_class"][k]["mcc"] for l in layers], marker="o",
             label=f"MCC {label_names[k]}")
  ax2.plot(layers, [per_layer[l][main]["conformal"]["binary_coverage_mean"] for l in layers], "k--",
           label="conformal coverage")
  ax2.plot(layers, [per_layer[l][main]["conformal"]["ova_abstention"] for l in layers], "k:", label="abstention")
  ax2.set(xlabel="layer (block output)", ylim=(-0.2, 1.05), title=f"{METHOD_NAMES.get(main, main)} per class")
  ax2.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
