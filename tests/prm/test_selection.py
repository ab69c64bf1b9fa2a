"""Early stopping of a PRM: the within-problem AUC against a direct count, and the best-model tracker."""

import json
import os

import numpy as np
import pytest

from pragjax.methods.prm import data as prm_data
from pragjax.methods.prm.selection import BestByMetric, within_problem_auc


def _direct_auc(s, c):
  """Per problem with both outcomes: the share of (correct, wrong) pairs ordered right, ties half."""
  per = []
  for row, lab in zip(s, c):
    pairs = [(a, b) for a, la in zip(row, lab) for b, lb in zip(row, lab) if la and not lb]
    if pairs:
      per.append(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs]))
  return float(np.mean(per)), len(per)


def test_within_problem_auc_equals_a_direct_pair_count():
  rng = np.random.default_rng(0)
  correct = rng.random((30, 8)) < 0.4
  correct[0] = True  # one-sided problems are left out
  correct[1] = False
  scores = np.round(rng.normal(size=(30, 8)) + 0.8 * correct, 1)  # rounding makes ties
  got = within_problem_auc(scores, correct, num_boot=300)
  want, n = _direct_auc(scores, correct)
  assert got["auc"] == pytest.approx(want) and got["problems"] == n <= 28
  assert got["lo"] <= got["auc"] <= got["hi"] and got["auc"] > 0.6
  # A score that ignores the problem's labels is at chance; the labels themselves are perfect.
  assert within_problem_auc(np.zeros((30, 8)), correct)["auc"] == 0.5
  assert within_problem_auc(correct.astype(float), correct)["auc"] == 1.0
  # Within-problem, not pooled across problems: a per-problem offset does not change it.
  shifted = scores + 100 * np.arange(30)[:, None]
  assert within_problem_auc(shifted, correct, num_boot=0)["auc"] == pytest.approx(want)
  assert np.isnan(within_problem_auc(np.ones((2, 3)), np.ones((2, 3), bool))["auc"])
  with pytest.raises(ValueError, match="shape"):
    within_problem_auc(np.ones((2, 3)), np.ones((3, 2), bool))


def _tracker(tmp_path, values, patience=2, saved=None):
  it = iter(values)
  saved = [] if saved is None else saved

  def save(model, directory):
    os.makedirs(directory, exist_ok=True)
    saved.append((model, directory))

  return BestByMetric(lambda model: next(it), str(tmp_path / "sel"), save=save, patience=patience), saved


def test_best_by_metric_keeps_the_best_and_stops_after_patience(tmp_path):
  sel, saved = _tracker(tmp_path, [0.55, 0.60, 0.58, 0.59, 0.70])
  assert sel(10, "m10") == {"val_auc": 0.55, "best_val_auc": 0.55}
  sel(20, "m20")
  assert not sel.should_stop()
  sel(30, "m30")
  assert not sel.should_stop()
  sel(40, "m40")
  assert sel.should_stop() and sel.best_step == 20 and sel.best_value == 0.60
  assert [m for m, _ in saved] == ["m10", "m20"] and sel.has_best()
  record = json.loads((tmp_path / "sel" / "selection.json").read_text())
  assert record["history"] == {"10": 0.55, "20": 0.6, "30": 0.58, "40": 0.59} and record["best_saved"] == 20
  # A resumed run reads the history: still stopped, same best.
  again, _ = _tracker(tmp_path, [])
  assert again.should_stop() and again.best_step == 20 and again.has_best()
  # Resumed from the checkpoint at step 20: steps 30 and 40 are replayed, their entries replaced.
  replay, saved2 = _tracker(tmp_path, [0.58, 0.75])
  replay(30, "r30")
  assert replay.history == {10: 0.55, 20: 0.6, 30: 0.58} and not replay.should_stop()
  replay(40, "r40")
  assert replay.best_step == 40 and [m for m, _ in saved2] == ["r40"]


def test_best_by_metric_patience_zero_never_stops_and_bad_record_is_named(tmp_path):
  sel, _ = _tracker(tmp_path, [0.5, 0.4, 0.3], patience=0)
  for step in (1, 2, 3):
    sel(step, step)
  assert not sel.should_stop() and sel.best_step == 1
  (tmp_path / "sel" / "selection.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"selection\.json: not a selection record"):
    _tracker(tmp_path, [])
  with pytest.raises(ValueError, match="patience"):
    _tracker(tmp_path / "x", [], patience=-1)


def test_instance_balanced_ce_records():
  recs = ([{"prompt": "a", "response": f"r{i}", "label": float(i < 2)} for i in range(7)]  # 2 right, 5 wrong
          + [{"prompt": "b", "response": f"s{i}", "label": 1.0} for i in range(3)]  # one-sided: dropped
          + [{"prompt": "c", "response": f"t{i}", "label": float(i % 2)} for i in range(6)])  # 3 and 3
  kept, stats = prm_data.training_records(recs, "ce", balance="instance", seed=1)
  assert stats == {"records": 10, "prompts": 2, "prompts_dropped": 1}
  for p, k in (("a", 2), ("c", 3)):
    labels = [r["label"] for r in kept if r["prompt"] == p]
    assert labels.count(1.0) == labels.count(0.0) == k
  assert {r["response"] for r in kept if r["prompt"] == "a" and r["label"] == 1.0} == {"r0", "r1"}
  assert len({r["response"] for r in kept}) == len(kept)  # no record twice
  assert prm_data.training_records(recs, "ce")[1] == {"records": 16}
  with pytest.raises(ValueError, match="balance"):
    prm_data.training_records(recs, "ce", balance="class")
