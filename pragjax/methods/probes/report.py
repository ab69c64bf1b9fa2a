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
- with a validation split, the same test metrics on validation (what chooses
  the layer; test never chooses).
Over re-splits: `aggregate_layers` averages every number and keeps each
re-split's values with a bootstrap interval (`spread`); `best_layers` picks
each method's layer on validation; `verdict` evaluates the acceptance
hypothesis (with `nested_bootstrap`: re-splits x test entities, paired across
methods); `transfer_at_best` scores generalisation at the source's layer. The
`format_*` functions turn results into markdown tables; `plot_layers` draws
the per-layer figure.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pragjax import paths
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
                   mondrian: bool = False, resplit_repeats: int = 200, keep_scores: dict | None = None,
                   log=None) -> tuple[dict, dict]:
  """Fits and evaluates every method on one layer -> (results, fitted scorers {method: {class: Scorer}}).

  With a "validation" split, `results[method]["validation"]` holds its `_test_metrics` (what layer
  selection reads; the test split never chooses anything). `resplit_repeats` re-splits of calibration +
  test for `resplit_coverage` (0: none). `keep_scores`, when given, receives {method: test scores [n, K]}.
  """
  options = dict(options or {})
  train, cal, test = splits["train"], splits["calibration"], splits["test"]
  val = splits.get("validation")
  results, fitted = {}, {}
  for method in methods:
    t0 = time.time()
    scorers = {k: fit_probe(method, train, train.labels == k, options) for k in classes}
    cal_s = np.stack([scorers[k].scores(cal.bags, cal.mask) for k in classes], axis=1)
    test_s = np.stack([scorers[k].scores(test.bags, test.mask) for k in classes], axis=1)
    res = _test_metrics(test_s, test.labels, classes)
    if val is not None:
      val_s = np.stack([scorers[k].scores(val.bags, val.mask) for k in classes], axis=1)
      res["validation"] = _test_metrics(val_s, val.labels, classes)
    if keep_scores is not None:
      keep_scores[method] = test_s
    res["conformal"] = _conformal_metrics(cal_s, cal.labels, test_s, test.labels, classes, alpha, mondrian)
    if cal.groups is not None and test.groups is not None and resplit_repeats > 0:
      res["conformal"]["resplit_coverage"] = resplit_coverage(cal, test, cal_s, test_s, classes, alpha, mondrian,
                                                              repeats=resplit_repeats)
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


def _f(x, spec: str = ".3f") -> str:
  return "-" if x is None or x != x else format(x, spec)


# Scalars of one re-split's result (method, layer) that get a mean and an interval over re-splits.
SPREAD = {"mcc_mean": ("mcc_mean",), "ap_mean": ("ap_mean",), "mcc_argmax": ("mcc_argmax",),
          "validation_mcc_mean": ("validation", "mcc_mean"),
          "coverage": ("conformal", "binary_coverage_mean"), "abstention": ("conformal", "ova_abstention"),
          "set_coverage": ("conformal", "ova_set_coverage"),
          "multiclass_coverage": ("conformal", "multiclass_coverage"),
          "multiclass_abstention": ("conformal", "multiclass_abstention")}


def _get(tree, path):
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _is_number(x) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating, bool, np.bool_))


def _mean_tree(trees: Sequence[Any], skip: Sequence[str] = ("fit",)):
  """Numeric leaves averaged over `trees` (NaNs left out); mappings merged key by key; anything else from
  the first tree that has it."""
  trees = [t for t in trees if t is not None]
  if not trees:
    return None
  if all(isinstance(t, Mapping) for t in trees):
    keys = list(dict.fromkeys(k for t in trees for k in t))
    return {k: _mean_tree([t.get(k) for t in trees], skip) for k in keys if k not in skip}
  if all(_is_number(t) for t in trees):
    v = np.asarray(trees, np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
  return trees[0]


def aggregate_resplits(results: Sequence[Mapping[str, Any]], *, level: float = 0.95, num_samples: int = 2000,
                       seed: int = 0) -> dict:
  """One method at one layer over re-splits: the mean of every numeric field (as in one result, so tables
  and plots read it alike), `resplits` (their number) and `spread`: for each `SPREAD` scalar, its values
  per re-split and `metrics.bootstrap_mean_ci` of them (mean, percentile `level` interval, std, min, max)."""
  out = _mean_tree(results)
  out["resplits"] = len(results)
  out["spread"] = {}
  for name, path in SPREAD.items():
    values = [_get(r, path) for r in results]
    if any(v is not None for v in values):
      values = [float("nan") if v is None else float(v) for v in values]
      out["spread"][name] = {**metrics.bootstrap_mean_ci(values, level=level, num_samples=num_samples, seed=seed),
                             "values": values}
  return out


def aggregate_layers(per_resplit: Sequence[Mapping[int, Mapping[str, dict]]], methods: Sequence[str],
                     **kwargs) -> dict[int, dict[str, dict]]:
  """{layer: {method: aggregate_resplits(...)}} from one {layer: {method: result}} per re-split."""
  layers = sorted(per_resplit[0])
  return {l: {m: aggregate_resplits([r[l][m] for r in per_resplit], **kwargs) for m in methods} for l in layers}


def _selection_value(entry: Mapping[str, Any]) -> float:
  v = _get(entry, ("spread", "validation_mcc_mean", "mean"))
  if v is None:
    v = _get(entry, ("validation", "mcc_mean"))
  if v is None:
    raise ValueError("layer selection reads the validation split's mean one-vs-all MCC, and this result has "
                     "none; the test split never chooses a layer")
  return float(v) if v == v else -np.inf


def best_layers(per_layer: Mapping[int, Mapping[str, dict]], methods: Sequence[str]) -> dict[str, int]:
  """Each method's layer: the highest validation mean one-vs-all MCC (mean over re-splits when aggregated);
  ties go to the shallowest layer. Test numbers are never read."""
  return {m: max(sorted(per_layer), key=lambda l: _selection_value(per_layer[l][m])) for m in methods}


def _ci(entry: Mapping[str, Any] | None, key: str) -> str:
  """"0.512 [0.490, 0.530]" (mean over re-splits and its interval), or the plain value for one re-split."""
  if entry is None:
    return "-"
  sp = _get(entry, ("spread", key))
  if sp is None:
    return _f(_get(entry, SPREAD.get(key, (key,))))
  if sp["n"] <= 1:
    return _f(sp["mean"])
  return f"{_f(sp['mean'])} [{_f(sp['lo'])}, {_f(sp['hi'])}]"


def _range(entry: Mapping[str, Any], key: str) -> str:
  """"0.903 (0.881-0.925)": mean and range over re-splits, or the plain value for one re-split."""
  sp = _get(entry, ("spread", key))
  if sp is None:
    return _f(_get(entry, SPREAD.get(key, (key,))))
  if sp["n"] <= 1:
    return _f(sp["mean"])
  return f"{_f(sp['mean'])} ({_f(sp['min'])}-{_f(sp['max'])})"


def format_layer_table(per_layer: Mapping[int, Mapping[str, dict]], methods: Sequence[str], key: str = "mcc_mean",
                       best: Mapping[str, int] | None = None) -> str:
  """Markdown: one row per layer, one column per method: `key` (default mean one-vs-all MCC on test), with
  its interval over re-splits when there are several; the layer in `best` (chosen on validation) in bold."""
  def cell(layer, m):
    text = _ci(per_layer[layer][m], key)
    return f"**{text}**" if best is not None and best.get(m) == layer else text
  return markdown_table([[layer] + [cell(layer, m) for m in methods] for layer in sorted(per_layer)],
                        ["layer"] + [METHOD_NAMES.get(m, m) for m in methods])


def format_best_table(per_layer, methods, classes, label_names) -> str:
  """Markdown: each method at its layer chosen on validation (`best_layers`): validation and test mean
  one-vs-all MCC, per-class test MCC, AP, and the conformal columns (means over re-splits, with the
  interval or the range over re-splits when there are several)."""
  best = best_layers(per_layer, methods)
  repeats = [_get(per_layer[best[m]][m], ("conformal", "resplit_coverage", "repeats")) for m in methods]
  repeats = [int(r) for r in repeats if r]
  resplit = bool(repeats)
  inner = f"coverage, {repeats[0]} re-splits of cal + test" if resplit else ""
  head = (["method", "layer (validation)", "validation MCC"] + [f"MCC {label_names[k]}" for k in classes] +
          ["mean MCC", "mean AP", "argmax MCC", "coverage"] + ([inner] if resplit else []) +
          ["OvA set coverage", "abstention", "MCC decided", "multiclass coverage", "multiclass abstention"])
  rows = []
  for m in methods:
    r = per_layer[best[m]][m]
    c = r["conformal"]
    rc = c.get("resplit_coverage")
    cells = ([METHOD_NAMES.get(m, m), str(best[m]), _f(_selection_value(r))] +
             [_f(r["per_class"][k]["mcc"]) for k in classes] +
             [_ci(r, "mcc_mean"), _ci(r, "ap_mean"), _f(r["mcc_argmax"]), _range(r, "coverage")] +
             ([("-" if rc is None else f"{rc['mean']:.3f} ± {rc['std']:.3f}")] if resplit else []) +
             [_range(r, "set_coverage"), _range(r, "abstention"), _f(c["ova_selective_mcc"]),
              _range(r, "multiclass_coverage"), _range(r, "multiclass_abstention")])
    rows.append(cells)
  return markdown_table(rows, head)


def nested_bootstrap(tests: Sequence[Mapping[str, Any]], layer_of: Mapping[str, int], classes: Sequence[int], *,
                     num_samples: int = 1000, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Bootstrap draws of the mean one-vs-all MCC and AP of each method at its layer, over re-splits and over
  the entities of each re-split's test split.

  tests[r] = {"labels": [n], "groups": [n], "scores": {layer: {method: [n, K]}}} for re-split r. One draw
  takes R re-splits with replacement and, in each, a cluster bootstrap of its test entities
  (`metrics.group_bootstrap_indices`); every method sees the same draw (paired), so differences between
  methods get their own interval. Returns {method: {"mcc": [num_samples], "ap": [num_samples]}}.
  """
  rng = np.random.default_rng([seed, 0xB007])
  members = [metrics.group_members(t["groups"]) for t in tests]
  r_count = len(tests)
  if r_count == 0:  # no saved scores: no draws (intervals come out NaN)
    return {m: {"mcc": np.full(num_samples, np.nan), "ap": np.full(num_samples, np.nan)} for m in layer_of}
  out = {m: {"mcc": np.zeros(num_samples), "ap": np.zeros(num_samples)} for m in layer_of}
  for b in range(num_samples):
    picks = rng.integers(0, r_count, r_count)
    acc = {m: [0.0, 0.0] for m in layer_of}
    for r in picks:
      idx = metrics.group_bootstrap_indices(members[r], rng)
      labels = np.asarray(tests[r]["labels"])[idx]
      for m, layer in layer_of.items():
        mcc, ap = metrics.ova_means(labels, np.asarray(tests[r]["scores"][layer][m])[idx], classes)
        acc[m][0] += mcc / r_count
        acc[m][1] += ap / r_count
    for m in layer_of:
      out[m]["mcc"][b], out[m]["ap"][b] = acc[m]
  return out


def verdict(per_layer: Mapping[int, Mapping[str, dict]], tests: Sequence[Mapping[str, Any]], methods: Sequence[str],
            classes: Sequence[int], *, reference: str = "sawmil", target_coverage: float = 0.9,
            coverage_tolerance: float = 0.03, level: float = 0.95, num_samples: int = 1000, seed: int = 0) -> dict:
  """The acceptance hypothesis of issue 15, stated before measuring and evaluated mechanically here:

    "sAwMIL at its best layer >= the best baseline at its best layer on mean one-vs-all MCC; conformal
    coverage within 0.03 of 0.90 over re-splits".

  `per_layer` is `aggregate_layers` output (every number a mean over re-splits, `spread` per re-split).
  Layers: `best_layers`, i.e. each method's highest validation mean one-vs-all MCC; test numbers never
  choose. MCC part: met when the reference's test mean one-vs-all MCC (mean over re-splits) at its layer is
  >= that of the best other method (the best baseline) at its own layer. Intervals: over re-splits
  (`spread`) and, from `tests` (the test labels, entities and scores of each re-split, see
  `nested_bootstrap`), over re-splits x test entities, paired across methods, which also gives the
  difference its interval (`separated`: it excludes 0). Coverage part: met when the reference's binary
  conformal coverage on test at its layer (mean over the K one-vs-all probes, then over re-splits) lies
  within `coverage_tolerance` of `target_coverage` (`share_within`: the share of single re-splits that do).
  A part is None (undecidable) when a number it compares is NaN; `met` is their three-valued AND
  (`all_met`), and None for all three when the reference or every baseline is missing.
  """
  best = best_layers(per_layer, methods)
  boot = nested_bootstrap(tests, best, classes, num_samples=num_samples, seed=seed)
  rows = {}
  for m in methods:
    r = per_layer[best[m]][m]
    sp = r["spread"]
    rows[m] = {"layer": best[m], "validation_mcc": _selection_value(r), "mcc": sp["mcc_mean"], "ap": sp["ap_mean"],
               "mcc_ci_nested": list(metrics.percentile_interval(boot[m]["mcc"], level)),
               "ap_ci_nested": list(metrics.percentile_interval(boot[m]["ap"], level)),
               "coverage": sp.get("coverage"), "abstention": sp.get("abstention")}
  out = {"methods": rows, "level": level, "bootstrap_samples": num_samples, "resplits": len(tests),
         "selection": "validation split, mean one-vs-all MCC (mean over re-splits)", "mcc": None, "coverage": None,
         "met": None}
  others = [m for m in methods if m != reference]
  if reference not in methods or not others:
    return out
  finite = lambda x: x is not None and np.isfinite(x)
  ref_mcc = rows[reference]["mcc"]["mean"]
  base_mccs = {m: rows[m]["mcc"]["mean"] for m in others}
  base = max(others, key=lambda m: base_mccs[m] if finite(base_mccs[m]) else -np.inf)
  base_mcc = base_mccs[base]
  diff = boot[reference]["mcc"] - boot[base]["mcc"]
  lo, hi = metrics.percentile_interval(diff, level)
  # Undecidable (None) when the reference's number or any baseline's is NaN: the best baseline is then unknown.
  decidable = finite(ref_mcc) and all(finite(v) for v in base_mccs.values())
  out["mcc"] = {"met": bool(ref_mcc >= base_mcc) if decidable else None, "reference": reference,
                "reference_mcc": ref_mcc, "reference_ci": [rows[reference]["mcc"]["lo"], rows[reference]["mcc"]["hi"]],
                "reference_ci_nested": rows[reference]["mcc_ci_nested"], "best_baseline": base,
                "baseline_mcc": base_mcc, "baseline_ci": [rows[base]["mcc"]["lo"], rows[base]["mcc"]["hi"]],
                "baseline_ci_nested": rows[base]["mcc_ci_nested"], "difference": ref_mcc - base_mcc,
                "difference_ci": [lo, hi], "separated": bool(lo > 0 or hi < 0) if lo == lo else None}
  cov = rows[reference]["coverage"]
  if cov is None or not finite(cov["mean"]):
    out["coverage"] = {"met": None, "mean": float("nan") if cov is None else cov["mean"], "lo": float("nan"),
                       "hi": float("nan"), "min": float("nan"), "max": float("nan"), "share_within": float("nan"),
                       "values": [] if cov is None else cov["values"], "target": target_coverage,
                       "tolerance": coverage_tolerance}
  else:
    values = np.asarray(cov["values"], np.float64)
    within = np.abs(values[np.isfinite(values)] - target_coverage) <= coverage_tolerance + 1e-12
    out["coverage"] = {"met": bool(abs(cov["mean"] - target_coverage) <= coverage_tolerance + 1e-12),
                       "mean": cov["mean"], "lo": cov["lo"], "hi": cov["hi"], "min": cov["min"], "max": cov["max"],
                       "share_within": float(np.mean(within)), "values": cov["values"], "target": target_coverage,
                       "tolerance": coverage_tolerance}
  out["met"] = all_met([out["mcc"]["met"], out["coverage"]["met"]])
  return out


def all_met(parts: Sequence[bool | None]) -> bool | None:
  """Three-valued AND: False when any part is False, else None when any is undecidable, else True."""
  if any(p is False for p in parts):
    return False
  if any(p is None for p in parts):
    return None
  return True


def verdict_word(met: bool | None) -> str:
  return "MET" if met else "NOT MET" if met is not None else "UNDECIDED (NaN)"


def format_verdict(v: Mapping[str, Any]) -> str:
  """A table of each method at its validation-chosen layer with both intervals, and the hypothesis lines."""
  pct = f"{100 * v['level']:.0f}%"
  rows = []
  for m, r in v["methods"].items():
    lo, hi = r["mcc_ci_nested"]
    alo, ahi = r["ap_ci_nested"]
    rows.append([METHOD_NAMES.get(m, m), str(r["layer"]), _f(r["validation_mcc"]),
                 _ci({"spread": {"mcc_mean": r["mcc"]}}, "mcc_mean"), f"[{_f(lo)}, {_f(hi)}]",
                 _ci({"spread": {"ap_mean": r["ap"]}}, "ap_mean"), f"[{_f(alo)}, {_f(ahi)}]",
                 "-" if r["coverage"] is None else _range({"spread": {"coverage": r["coverage"]}}, "coverage"),
                 "-" if r["abstention"] is None else _range({"spread": {"abstention": r["abstention"]}}, "abstention")])
  table = markdown_table(rows, ["method", "layer (validation)", "validation MCC",
                                f"test mean MCC [{pct} CI, re-splits]", f"{pct} CI, re-splits x entities",
                                f"test mean AP [{pct} CI, re-splits]", f"{pct} CI, re-splits x entities",
                                "coverage (range)", "abstention (range)"])
  lines = [table, ""]
  mcc, cov = v.get("mcc"), v.get("coverage")
  if mcc is None:
    lines.append("hypothesis: not evaluated (needs sAwMIL and at least one baseline)")
    return "\n".join(lines)
  ref, base = METHOD_NAMES.get(mcc["reference"], mcc["reference"]), METHOD_NAMES.get(mcc["best_baseline"],
                                                                                     mcc["best_baseline"])
  lo, hi = mcc["difference_ci"]
  sep = {True: ", excludes 0", False: ", includes 0", None: ""}[mcc["separated"]]
  lines.append(f"- hypothesis (stated before measuring): {ref} at its best layer >= the best baseline at its best "
               f"layer on test mean one-vs-all MCC (layers chosen on validation), and {ref}'s conformal coverage "
               f"within {cov['tolerance']:.2f} of {cov['target']:.2f} over re-splits")
  lines.append(f"- MCC: {verdict_word(mcc['met'])} ({_f(mcc['reference_mcc'])} vs {base} "
               f"{_f(mcc['baseline_mcc'])}; difference {_signed(mcc['difference'])}, {pct} CI "
               f"[{_signed(lo)}, {_signed(hi)}]{sep}; {v['resplits']} re-split(s))")
  lines.append(f"- coverage: {verdict_word(cov['met'])} (mean {_f(cov['mean'])} over {v['resplits']} re-split(s), "
               f"range {_f(cov['min'])}-{_f(cov['max'])}, {_f(100 * cov['share_within'], '.0f')}% of re-splits "
               f"within)")
  lines.append(f"- both: {verdict_word(v['met'])}")
  return "\n".join(lines)


def _signed(x) -> str:
  return "-" if x is None or x != x else f"{x:+.3f}"


def transfer_at_best(src_layers: Mapping[int, Mapping[str, dict]], transfer_layers: Mapping[int, Mapping[str, dict]],
                     dst_layers: Mapping[int, Mapping[str, dict]], methods: Sequence[str]) -> dict[str, dict]:
  """Generalisation: each method at its layer chosen on the source dataset's validation split, scored on
  the target dataset's test split (`transfer_layers`, aggregated), beside the source's own test number at
  that layer and the target's in-domain number at the target's validation-chosen layer."""
  best_src, best_dst = best_layers(src_layers, methods), best_layers(dst_layers, methods)
  out = {}
  for m in methods:
    l = best_src[m]
    out[m] = {"layer": l, "transfer": transfer_layers[l][m], "source_test": src_layers[l][m],
              "target_layer": best_dst[m], "target_in_domain": dst_layers[best_dst[m]][m]}
  return out


def format_transfer_table(rows: Mapping[str, dict]) -> str:
  """Markdown of `transfer_at_best`: mean MCC and AP (intervals over re-splits)."""
  return markdown_table(
      [[METHOD_NAMES.get(m, m), str(r["layer"]), _ci(r["source_test"], "mcc_mean"), _ci(r["transfer"], "mcc_mean"),
        _ci(r["transfer"], "ap_mean"), f"{_ci(r['target_in_domain'], 'mcc_mean')} (layer {r['target_layer']})"]
       for m, r in rows.items()],
      ["method", "layer (source validation)", "source test MCC", "target test MCC", "target test AP",
       "target in-domain MCC"])


def plot_layers(per_layer, methods, classes, label_names, path: str, title: str = "", *,
                target_coverage: float | None = None, coverage_tolerance: float = 0.03) -> str:
  """PNG: (left) test mean one-vs-all MCC per layer and method, with its interval over re-splits as a band
  and the validation-chosen layer starred; (right) sAwMIL's (else the first method's) per-class MCC,
  conformal coverage (band: range over re-splits; shaded: the target +- tolerance) and abstention."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  layers = sorted(per_layer)
  try:
    best = best_layers(per_layer, methods)
  except ValueError:
    best = {}
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
  for m in methods:
    line, = ax1.plot(layers, [per_layer[l][m]["mcc_mean"] for l in layers], marker="o", ms=3,
                     label=METHOD_NAMES.get(m, m))
    sp = [_get(per_layer[l][m], ("spread", "mcc_mean")) for l in layers]
    if all(s is not None and s["n"] > 1 for s in sp):
      ax1.fill_between(layers, [s["lo"] for s in sp], [s["hi"] for s in sp], color=line.get_color(), alpha=0.15)
    if m in best:
      ax1.plot([best[m]], [per_layer[best[m]][m]["mcc_mean"]], marker="*", ms=13, color=line.get_color(),
               markeredgecolor="k")
  n = _get(per_layer[layers[0]][methods[0]], ("resplits",))
  ax1.set(xlabel="layer (block output)", ylabel="mean one-vs-all MCC (test)",
          title=(title or "probes per layer") + (f" ({n} re-splits, 95% band)" if n and n > 1 else ""))
  ax1.axhline(0.0, color="grey", lw=0.5)
  ax1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax1.legend(fontsize=8, title="* layer chosen on validation", title_fontsize=7)
  main = "sawmil" if "sawmil" in methods else methods[0]
  for k in classes:
    ax2.plot(layers, [per_layer[l][main]["per_class"][k]["mcc"] for l in layers], marker="o", ms=3,
             label=f"MCC {label_names[k]}")
  ax2.plot(layers, [per_layer[l][main]["conformal"]["binary_coverage_mean"] for l in layers], "k--",
           label="conformal coverage")
  sp = [_get(per_layer[l][main], ("spread", "coverage")) for l in layers]
  if all(s is not None and s["n"] > 1 for s in sp):
    ax2.fill_between(layers, [s["min"] for s in sp], [s["max"] for s in sp], color="k", alpha=0.1)
  if target_coverage is not None:
    ax2.axhspan(target_coverage - coverage_tolerance, target_coverage + coverage_tolerance, color="g", alpha=0.1)
  ax2.plot(layers, [per_layer[l][main]["conformal"]["ova_abstention"] for l in layers], "k:", label="abstention")
  ax2.set(xlabel="layer (block output)", ylim=(-0.2, 1.05), title=f"{METHOD_NAMES.get(main, main)} per class")
  ax2.legend(fontsize=8)
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path
