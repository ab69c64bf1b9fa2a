"""The reproduction protocol's pieces: bootstrap intervals, entity re-splits, the trilemma CSV reader and the verdict."""

import csv

import numpy as np
import pytest

from experiments.configs import truth_probes as configs
from pragjax.data.errors import DataError
from pragjax.methods.probes import metrics, report
from pragjax.methods.probes import recipe as truth_probes

HEADER = ("statement", "object_1", "object_2", "correct", "negation", "real_object", "category")


# ----------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_ci_equals_a_direct_numpy_computation():
  v = np.random.default_rng(3).normal(0.4, 0.2, 37)
  v_nan = np.r_[v[:10], np.nan, v[10:]]  # NaNs are dropped
  out = metrics.bootstrap_mean_ci(v_nan, level=0.9, num_samples=500, seed=11)
  means = v[np.random.default_rng(11).integers(0, len(v), (500, len(v)))].mean(axis=1)
  lo, hi = np.quantile(means, [0.05, 0.95])
  assert out["n"] == 37
  np.testing.assert_allclose([out["mean"], out["lo"], out["hi"], out["std"], out["min"], out["max"]],
                             [v.mean(), lo, hi, v.std(), v.min(), v.max()], rtol=1e-12)
  assert out["lo"] < out["mean"] < out["hi"]
  one = metrics.bootstrap_mean_ci([0.7])
  assert one["lo"] == one["hi"] == one["mean"] == 0.7 and one["n"] == 1
  none = metrics.bootstrap_mean_ci([np.nan])
  assert none["n"] == 0 and np.isnan(none["mean"]) and np.isnan(none["lo"])


def test_bootstrap_mean_ci_covers_the_true_mean_at_its_level():
  """Exponential(1) samples of 60 (skewed): the 90% interval holds the true mean 1 in about 90% of draws."""
  rng = np.random.default_rng(0)
  trials = 400
  hits = [(lambda o: o["lo"] <= 1.0 <= o["hi"])(
      metrics.bootstrap_mean_ci(rng.exponential(1.0, 60), level=0.9, num_samples=400, seed=t)) for t in range(trials)]
  rate = float(np.mean(hits))
  # Binomial sd at 0.9 over 400 trials is 0.015; percentile intervals under-cover a little at n = 60.
  assert 0.84 <= rate <= 0.95, rate
  widths_90 = np.mean([(lambda o: o["hi"] - o["lo"])(metrics.bootstrap_mean_ci(rng.normal(0, 1, 60), level=0.9,
                                                                               num_samples=400)) for _ in range(50)])
  # Normal theory: the 90% interval of a mean of 60 N(0, 1) is 2 x 1.645 / sqrt(60) = 0.425 wide.
  assert abs(widths_90 - 2 * 1.645 / np.sqrt(60)) < 0.05, widths_90


def test_percentile_interval_is_numpy_quantiles():
  s = np.random.default_rng(1).normal(size=1001)
  np.testing.assert_allclose(metrics.percentile_interval(s, 0.8), np.quantile(s, [0.1, 0.9]))
  assert all(np.isnan(metrics.percentile_interval([np.nan, np.inf])))


def test_group_bootstrap_resamples_whole_entities():
  groups = np.array(["b", "a", "c", "a", "b", "b", "d"])
  members = metrics.group_members(groups)
  assert [sorted(groups[m].tolist()) for m in members] == [["a", "a"], ["b", "b", "b"], ["c"], ["d"]]
  rng = np.random.default_rng(5)
  sizes = {"a": 2, "b": 3, "c": 1, "d": 1}
  seen_repeat = False
  for _ in range(200):
    idx = metrics.group_bootstrap_indices(members, rng)
    drawn = groups[idx]
    counts = {g: int(np.sum(drawn == g)) for g in sizes}
    # Every entity comes with all of its statements, a whole number of times; as many entities as there are.
    assert all(counts[g] % sizes[g] == 0 for g in sizes), counts
    assert sum(counts[g] // sizes[g] for g in sizes) == len(sizes)
    for g in sizes:  # each copy of an entity is its full index set
      rows = idx[drawn == g]
      assert sorted(set(rows.tolist())) == sorted(np.flatnonzero(groups == g).tolist()) or not len(rows)
    seen_repeat |= any(counts[g] > sizes[g] for g in sizes)
  assert seen_repeat  # with replacement
  assert len(metrics.group_bootstrap_indices([], rng)) == 0


def test_ova_means_matches_per_class_metrics():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 3, 80)
  scores = rng.normal(size=(80, 3)) + 1.2 * (2 * np.eye(3)[labels] - 1)
  mcc, ap = metrics.ova_means(labels, scores, [0, 1, 2])
  np.testing.assert_allclose(mcc, np.mean([metrics.mcc(labels == k, scores[:, k] >= 0, 2) for k in range(3)]))
  np.testing.assert_allclose(ap, np.mean([metrics.average_precision(labels == k, scores[:, k]) for k in range(3)]))
  res = report._test_metrics(scores, labels, [0, 1, 2])  # what the per-layer tables report
  np.testing.assert_allclose([mcc, ap], [res["mcc_mean"], res["ap_mean"]])


# ----------------------------------------------------------------------------------------------- re-splits


def _groups(rng, n_entities=60):
  return np.repeat([f"e{g}" for g in range(n_entities)], rng.integers(1, 7, n_entities))


def test_make_splits_is_entity_disjoint_and_covers_every_statement_once():
  groups = _groups(np.random.default_rng(0))
  split = configs.get_config("toy").split
  sp = truth_probes.make_splits(groups, split, seed=0)
  assert sorted(sp) == ["calibration", "test", "train", "validation"]
  everything = np.concatenate(list(sp.values()))
  np.testing.assert_array_equal(np.sort(everything), np.arange(len(groups)))  # every statement exactly once
  entities = {name: set(groups[idx]) for name, idx in sp.items()}
  for a in entities:
    for b in entities:
      if a < b:
        assert not entities[a] & entities[b], (a, b)
  n = len(groups)
  assert all(len(idx) > 0 for idx in sp.values())
  assert abs(len(sp["test"]) - split.test_fraction * n) <= 6  # whole entities of at most 6 statements
  rest = n - len(sp["test"])
  assert abs(len(sp["calibration"]) - split.calibration_fraction * rest) <= 6
  assert abs(len(sp["validation"]) - split.validation_fraction * (rest - len(sp["calibration"]))) <= 6
  again = truth_probes.make_splits(groups, split, seed=0)
  assert all(np.array_equal(sp[k], again[k]) for k in sp)  # deterministic in its seed
  other = truth_probes.make_splits(groups, split, seed=1)
  for k in sp:
    assert not np.array_equal(sp[k], other[k]), k  # another seed: other entities in every split
  split.validation_fraction = 0.0
  with pytest.raises(ValueError, match="validation_fraction"):
    truth_probes.make_splits(groups, split, seed=0)


# ----------------------------------------------------------------------------------------------- trilemma CSVs


def _write_csv(path, rows, header=HEADER):
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def test_read_trilemma_csv_labels_and_negation(tmp_path):
  path = _write_csv(tmp_path / "cities.csv", [
      ("The city of Lima is located in Peru.", "Lima", "Peru", "TRUE", "FALSE", "TRUE", "cities"),
      ("The city of Lima is located in Chile.", "Lima", "Chile", "FALSE", "FALSE", "TRUE", "cities"),
      ("The city of Lima is not located in Chile.", "Lima", "Chile", "true", "true", "true", "cities"),
      ("The city of Zubrava is located in Peru.", " Zubrava ", "Peru", "False", "FALSE", "FALSE", "cities")])
  records = truth_probes.read_trilemma_csv(path, "real")
  assert [r["label"] for r in records] == [0, 1, 0, 2]  # true, false, true (negated), neither
  assert [truth_probes.LABELS[r["label"]] for r in records] == ["true", "false", "true", "neither"]
  assert [r["negated"] for r in records] == [False, False, True, False]
  assert [r["group"] for r in records] == ["Lima", "Lima", "Lima", "Zubrava"]
  assert records[2]["text"] == "The city of Lima is not located in Chile." and records[0]["source"] == "real"
  # Without a negation column every statement is affirmative; extra columns are ignored.
  plain = _write_csv(tmp_path / "plain.csv", [("A is B.", "A", "TRUE", "TRUE", "x")],
                     header=("statement", "object_1", "correct", "real_object", "extra"))
  assert truth_probes.read_trilemma_csv(plain) == [{"text": "A is B.", "label": 0, "group": "A", "negated": False,
                                                    "source": "real"}]


def test_read_trilemma_csv_errors_name_file_line_and_column(tmp_path):
  good = ("The city of Lima is located in Peru.", "Lima", "Peru", "TRUE", "FALSE", "TRUE", "cities")
  bad_cell = _write_csv(tmp_path / "bad_cell.csv", [good, good[:3] + ("yes",) + good[4:]])
  with pytest.raises(DataError, match=r"bad_cell\.csv, line 3, column 'correct': expected TRUE/FALSE.*'yes'"):
    truth_probes.read_trilemma_csv(bad_cell)
  bad_negation = _write_csv(tmp_path / "bad_negation.csv", [good[:4] + ("",) + good[5:]])
  with pytest.raises(DataError, match=r"bad_negation\.csv, line 2, column 'negation'"):
    truth_probes.read_trilemma_csv(bad_negation)
  missing = _write_csv(tmp_path / "missing.csv", [("A is B.", "A", "TRUE")], header=("statement", "object_1", "correct"))
  with pytest.raises(DataError, match=r"missing\.csv, line 1: missing column\(s\) \['real_object'\]"):
    truth_probes.read_trilemma_csv(missing)
  short = _write_csv(tmp_path / "short.csv", [good, good, good[:4]])
  with pytest.raises(DataError, match=r"short\.csv, line 4: expected 7 columns as in the header, got 4"):
    truth_probes.read_trilemma_csv(short)
  long = _write_csv(tmp_path / "long.csv", [good + ("extra",)])
  with pytest.raises(DataError, match=r"long\.csv, line 2: expected 7 columns as in the header, got 8"):
    truth_probes.read_trilemma_csv(long)
  empty = _write_csv(tmp_path / "empty.csv", [good[:1] + ("",) + good[2:]])
  with pytest.raises(DataError, match=r"empty\.csv, line 2, column 'object_1': empty"):
    truth_probes.read_trilemma_csv(empty)
  with pytest.raises(DataError, match=r"none\.csv: no statements"):
    truth_probes.read_trilemma_csv(_write_csv(tmp_path / "none.csv", []))


def test_trilemma_files_find_the_synthetic_file_and_honour_synthetic_paths(tmp_path):
  real = _write_csv(tmp_path / "cities.csv", [("The city of Lima is located in Peru.", "Lima", "Peru", "TRUE",
                                                "FALSE", "TRUE", "cities")])
  config = configs.get_config("trilemma")
  assert truth_probes.trilemma_files(config, real) == (real, None)  # nothing beside it
  beside = _write_csv(tmp_path / "cities_synthetic.csv", [("The city of Zub is located in Peru.", "Zub", "Peru",
                                                           "FALSE", "FALSE", "FALSE", "cities")])
  assert truth_probes.trilemma_files(config, real) == (real, beside)
  records = truth_probes.load_records(config, real)
  assert [(r["label"], r["source"]) for r in records] == [(0, "real"), (2, "synthetic")]
  assert truth_probes.dataset_name(real) == "cities"
  other = _write_csv(tmp_path / "elsewhere.csv", [("The city of Qu is located in Peru.", "Qu", "Peru", "FALSE",
                                                   "FALSE", "FALSE", "cities")])
  config.data.synthetic_paths = f"cities={other}"  # by dataset name
  assert truth_probes.trilemma_files(config, real) == (real, other)
  config.data.synthetic_paths = f"{real}=none"  # by entry, and 'none'
  assert truth_probes.trilemma_files(config, real) == (real, None)
  config.data.synthetic_paths = "cities=NONE, city_locations=none"
  assert truth_probes.trilemma_files(config, real) == (real, None)
  config.data.synthetic_paths = f"cities={tmp_path / 'gone.csv'}"
  with pytest.raises(DataError, match="gone.csv: not found"):
    truth_probes.trilemma_files(config, real)
  config.data.synthetic_paths = "cities"
  with pytest.raises(ValueError, match="DATASET=PATH"):
    truth_probes.trilemma_files(config, real)
  # Shipped names read data.trilemma_dir; a missing file and an unknown name are errors.
  config.data.synthetic_paths = ""
  config.data.trilemma_dir = str(tmp_path)
  with pytest.raises(DataError, match="city_locations.csv: not found"):
    truth_probes.trilemma_files(config, "city_locations")
  with pytest.raises(ValueError, match="unknown dataset 'cities'"):
    truth_probes.trilemma_files(config, "cities")


def test_shipped_trilemma_files_pair_real_and_synthetic(shared_data):
  config = configs.get_config("smollm2")
  config.data.trilemma_dir = str(shared_data / "trilemma")
  for name in truth_probes.TRILEMMA:
    real, synthetic = truth_probes.trilemma_files(config, name)
    assert real.endswith(f"{name}.csv") and synthetic.endswith(f"{name}_synthetic.csv")
    records = truth_probes.trilemma_records(config, name)
    labels = np.bincount([r["label"] for r in records], minlength=3)
    assert labels.min() > 0, labels  # true, false and neither
    assert all(r["label"] == 2 for r in records if r["source"] == "synthetic")
    negated = np.mean([r["negated"] for r in records])
    assert 0.4 < negated < 0.6  # the datasets are half negated


# ----------------------------------------------------------------------------------------------- verdict


def _layer_result(mcc_test, mcc_val, coverage):
  return {"mcc_mean": mcc_test, "ap_mean": 0.5, "mcc_argmax": mcc_test, "validation": {"mcc_mean": mcc_val},
          "conformal": {"binary_coverage_mean": coverage, "ova_abstention": 0.5}}


def _aggregated(table):
  """table[r][layer][method] = (test MCC, validation MCC, coverage) -> aggregate_layers output."""
  per_resplit = [{l: {m: _layer_result(*v) for m, v in row.items()} for l, row in rs.items()} for rs in table]
  return report.aggregate_layers(per_resplit, ["sawmil", "mean_diff", "logreg_last"], num_samples=200)


def _table(sawmil, cov, baseline=(0.5, 0.5), resplits=3):
  """Two layers; sAwMIL's validation picks layer 1 (test MCC `sawmil`); the baselines' validation picks layer 0,
  where their test MCC is `baseline`; each method's test MCC at its other layer is higher (0.95), which the
  verdict must not read (layers are chosen on validation, never on test)."""
  out = []
  for r in range(resplits):
    out.append({0: {"sawmil": (0.95, 0.1, 0.5), "mean_diff": (baseline[0], 0.8, 0.9), "logreg_last": (baseline[1], 0.7, 0.9)},
                1: {"sawmil": (sawmil[r], 0.6, cov[r]), "mean_diff": (0.95, 0.2, 0.9), "logreg_last": (0.95, 0.1, 0.9)}})
  return _aggregated(out)


def test_verdict_met_on_hand_built_layers():
  per_layer = _table(sawmil=(0.52, 0.50, 0.54), cov=(0.91, 0.88, 0.93))
  assert report.best_layers(per_layer, ["sawmil", "mean_diff", "logreg_last"]) == {"sawmil": 1, "mean_diff": 0,
                                                                                   "logreg_last": 0}
  v = report.verdict(per_layer, [], ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["met"] is True and v["mcc"]["met"] is True and v["coverage"]["met"] is True
  assert v["mcc"]["best_baseline"] in ("mean_diff", "logreg_last")
  np.testing.assert_allclose([v["mcc"]["reference_mcc"], v["mcc"]["baseline_mcc"], v["mcc"]["difference"]],
                             [0.52, 0.5, 0.02])
  np.testing.assert_allclose(v["coverage"]["mean"], (0.91 + 0.88 + 0.93) / 3)
  np.testing.assert_allclose(v["coverage"]["share_within"], 1.0)
  assert v["methods"]["sawmil"]["layer"] == 1 and v["methods"]["mean_diff"]["layer"] == 0
  assert "MCC: MET" in report.format_verdict(v) and "both: MET" in report.format_verdict(v)
  # Equal MCC counts as met (>=); one re-split outside the tolerance does not fail a mean inside it.
  v = report.verdict(_table(sawmil=(0.5, 0.5, 0.5), cov=(0.95, 0.89, 0.86), baseline=(0.5, 0.45)), [],
                     ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["met"] is True and v["mcc"]["best_baseline"] == "mean_diff"
  np.testing.assert_allclose(v["coverage"]["share_within"], 1 / 3)


def test_verdict_not_met_by_mcc():
  v = report.verdict(_table(sawmil=(0.49, 0.48, 0.50), cov=(0.9, 0.9, 0.9), baseline=(0.4, 0.5)), [],
                     ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["mcc"]["met"] is False and v["coverage"]["met"] is True and v["met"] is False
  assert v["mcc"]["best_baseline"] == "logreg_last"
  np.testing.assert_allclose(v["mcc"]["difference"], 0.49 - 0.5)
  assert "MCC: NOT MET" in report.format_verdict(v)


def test_verdict_not_met_by_coverage():
  v = report.verdict(_table(sawmil=(0.6, 0.6, 0.6), cov=(0.94, 0.93, 0.935)), [],
                     ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["mcc"]["met"] is True and v["coverage"]["met"] is False and v["met"] is False
  np.testing.assert_allclose(v["coverage"]["share_within"], 1 / 3)
  low = report.verdict(_table(sawmil=(0.6, 0.6, 0.6), cov=(0.86, 0.87, 0.86)), [],
                       ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert low["coverage"]["met"] is False  # too low fails as too high does
  edge = report.verdict(_table(sawmil=(0.6, 0.6, 0.6), cov=(0.93, 0.93, 0.93)), [],
                        ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert edge["coverage"]["met"] is True  # the tolerance is inclusive


def test_verdict_undecidable_on_nan():
  nan = float("nan")
  v = report.verdict(_table(sawmil=(nan, nan, nan), cov=(0.9, 0.9, 0.9)), [],
                     ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["mcc"]["met"] is None and v["met"] is None
  v = report.verdict(_table(sawmil=(0.6, 0.6, 0.6), cov=(nan, nan, nan)), [],
                     ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["mcc"]["met"] is True and v["coverage"]["met"] is None and v["met"] is None
  assert "UNDECIDED" in report.format_verdict(v)
  # A decided failure stays a failure when the other part is undecidable.
  v = report.verdict(_table(sawmil=(0.1, 0.1, 0.1), cov=(nan, nan, nan)), [],
                     ["sawmil", "mean_diff", "logreg_last"], [0, 1, 2], num_samples=50)
  assert v["mcc"]["met"] is False and v["met"] is False
  v = report.verdict(_table(sawmil=(0.6, 0.6, 0.6), cov=(0.9,) * 3), [], ["sawmil"], [0, 1, 2], num_samples=50)
  assert v["met"] is None and v["mcc"] is None  # no baseline to compare with
  assert report.all_met([True, True]) is True and report.all_met([True, None]) is None
  assert report.all_met([None, False]) is False


def test_verdict_intervals_from_scores_are_paired_cluster_bootstraps():
  """With test scores, the verdict's re-split x entity intervals hold the point estimates, and the difference
  interval excludes 0 when sAwMIL's scores are clearly better on every entity."""
  rng = np.random.default_rng(0)
  tests, table = [], []
  for r in range(2):
    groups = np.repeat([f"e{r}_{g}" for g in range(40)], 4)
    labels = rng.integers(0, 3, len(groups))
    onehot = 2 * np.eye(3)[labels] - 1
    good, weak = rng.normal(size=onehot.shape) * 0.5 + onehot, rng.normal(size=onehot.shape) * 1.5 + 0.5 * onehot
    tests.append({"labels": labels, "groups": groups, "scores": {0: {"sawmil": good, "mean_diff": weak}}})
    res = {m: {**report._test_metrics(s, labels, [0, 1, 2]), "validation": {"mcc_mean": 0.5},
               "conformal": {"binary_coverage_mean": 0.9, "ova_abstention": 0.0}}
           for m, s in (("sawmil", good), ("mean_diff", weak))}
    table.append({0: res})
  per_layer = report.aggregate_layers(table, ["sawmil", "mean_diff"], num_samples=200)
  v = report.verdict(per_layer, tests, ["sawmil", "mean_diff"], [0, 1, 2], num_samples=300)
  assert v["met"] is True and v["mcc"]["separated"] is True
  lo, hi = v["mcc"]["difference_ci"]
  assert 0 < lo <= v["mcc"]["difference"] <= hi
  for m in ("sawmil", "mean_diff"):
    lo, hi = v["methods"][m]["mcc_ci_nested"]
    assert lo <= v["methods"][m]["mcc"]["mean"] <= hi and hi - lo > 0.01
