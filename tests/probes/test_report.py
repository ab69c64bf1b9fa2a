"""Report helpers: re-split conformal coverage, and the best-layer table's columns."""

import numpy as np
import pytest

from pragjax.methods.probes import report

ALPHA = 0.1


def _grouped_split(rng, n_groups, per_group, classes=3):
  """Statements of `n_groups` entities; label drawn per statement; scores [n, K] = noisy one-hot of the label."""
  groups = np.repeat([f"e{g}" for g in range(n_groups)], per_group)
  labels = rng.integers(0, classes, len(groups))
  scores = rng.normal(0.0, 1.0, (len(groups), classes)) + 1.5 * (2 * np.eye(classes)[labels] - 1)
  return groups, labels, scores


def test_resplit_coverage_is_valid_and_entity_disjoint(monkeypatch):
  rng = np.random.default_rng(0)
  groups, labels, scores = _grouped_split(rng, 120, 4)
  cal = report.Split(None, None, labels[:240], groups[:240])
  test = report.Split(None, None, labels[240:], groups[240:])
  seen = []
  real = report.activations.entity_disjoint_split

  def spy(g, **kw):
    sp = real(g, **kw)
    g = np.asarray(g)
    assert not set(g[sp["train"]]) & set(g[sp["test"]])  # no entity on both sides
    assert len(sp["calibration"]) == 0 and len(sp["train"]) + len(sp["test"]) == len(g)
    seen.append(len(sp["test"]))
    return sp

  monkeypatch.setattr(report.activations, "entity_disjoint_split", spy)
  out = report.resplit_coverage(cal, test, scores[:240], scores[240:], [0, 1, 2], ALPHA, repeats=200)
  assert out["repeats"] == 200 and len(seen) == 200
  assert abs(np.mean(seen) - 240) <= 4  # the test share of the original split (whole entities)
  # Marginal ICP validity: mean coverage in [1 - alpha, 1 - alpha + 1/(n_cal + 1)] up to the repeats' noise.
  assert abs(out["mean"] - (1 - ALPHA)) < 0.02, out
  assert 0.0 < out["std"] < 0.05
  # Deterministic in its seed.
  monkeypatch.setattr(report.activations, "entity_disjoint_split", real)
  a = report.resplit_coverage(cal, test, scores[:240], scores[240:], [0, 1, 2], ALPHA, repeats=20, seed=3)
  b = report.resplit_coverage(cal, test, scores[:240], scores[240:], [0, 1, 2], ALPHA, repeats=20, seed=3)
  assert a == b


def test_resplit_coverage_by_hand_on_one_resplit():
  """One re-split equals a BinaryICP fitted on its calibration side and scored on its test side."""
  rng = np.random.default_rng(1)
  groups, labels, scores = _grouped_split(rng, 40, 5, classes=2)
  cal = report.Split(None, None, labels[:100], groups[:100])
  test = report.Split(None, None, labels[100:], groups[100:])
  out = report.resplit_coverage(cal, test, scores[:100], scores[100:], [0, 1], ALPHA, repeats=1, seed=7)
  sp = report.activations.entity_disjoint_split(groups, test_fraction=0.5, calibration_fraction=0.0, seed=7)
  c, t = sp["train"], sp["test"]
  per = []
  for j in (0, 1):
    a_cal = np.exp(-(2 * (labels[c] == j) - 1) * scores[c, j])
    a_true = np.exp(-(2 * (labels[t] == j) - 1) * scores[t, j])
    p = (np.sum(a_cal[None, :] >= a_true[:, None], axis=1) + 1) / (len(c) + 1)
    per.append(np.mean(p > ALPHA))
  np.testing.assert_allclose(out["mean"], np.mean(per))
  assert out["std"] == 0.0


def test_best_table_reports_single_split_and_resplit_coverage_apart():
  res = {"per_class": {0: {"mcc": 0.5, "ap": 0.7}, 1: {"mcc": 0.4, "ap": 0.6}}, "mcc_mean": 0.45, "mcc_argmax": 0.4,
         "ap_mean": 0.65, "validation": {"mcc_mean": 0.41},
         "conformal": {"binary_coverage_mean": 0.934, "ova_set_coverage": 0.9, "ova_abstention": 0.2,
                       "ova_selective_mcc": 0.6, "multiclass_coverage": 0.91, "multiclass_abstention": 0.3,
                       "resplit_coverage": {"mean": 0.903, "std": 0.021, "repeats": 200}}}
  table = report.format_best_table({2: {"sawmil": res}}, ["sawmil"], [0, 1], ("true", "false"))
  head, _, row = table.splitlines()
  assert "| layer (validation) | validation MCC |" in head and "coverage, 200 re-splits of cal + test" in head
  assert "| 2 | 0.410 |" in row and "| 0.934 | 0.903 ± 0.021 |" in row
  # Aggregated over re-splits: means with their interval, ranges for the conformal columns.
  agg = report.aggregate_layers([{2: {"sawmil": res}}, {2: {"sawmil": {**res, "mcc_mean": 0.55, "conformal": {
      **res["conformal"], "binary_coverage_mean": 0.874}}}}], ["sawmil"], num_samples=200)
  assert agg[2]["sawmil"]["resplits"] == 2
  np.testing.assert_allclose([agg[2]["sawmil"]["mcc_mean"], agg[2]["sawmil"]["conformal"]["binary_coverage_mean"]],
                             [0.5, 0.904])
  row = report.format_best_table(agg, ["sawmil"], [0, 1], ("true", "false")).splitlines()[2]
  assert "| 0.500 [0.450, 0.550] |" in row and "| 0.904 (0.874-0.934) |" in row


def test_best_layers_read_validation_only():
  per_layer = {0: {"m": {"mcc_mean": 0.9, "validation": {"mcc_mean": 0.2}}},
               1: {"m": {"mcc_mean": 0.1, "validation": {"mcc_mean": 0.6}}},
               2: {"m": {"mcc_mean": 0.5, "validation": {"mcc_mean": 0.6}}}}
  assert report.best_layers(per_layer, ["m"]) == {"m": 1}  # ties: the shallowest
  per_layer[1]["m"]["validation"]["mcc_mean"] = float("nan")
  assert report.best_layers(per_layer, ["m"]) == {"m": 2}
  with pytest.raises(ValueError, match="validation"):
    report.best_layers({0: {"m": {"mcc_mean": 0.9}}}, ["m"])
