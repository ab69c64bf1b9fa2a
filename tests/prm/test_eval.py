"""ProcessBench F1, threshold tuning, the real-file loader, best-of-N rules and math answer equivalence."""

import json

import numpy as np
import pytest

from pragjax.data.errors import DataError
from pragjax.eval import best_of_n, math_answers, processbench

# ---- ProcessBench ---------------------------------------------------------------------------------------------------

def test_processbench_f1_hand_computed():
  # labels: 3 erroneous cases (first errors 1, 0, 2), 2 correct cases.
  scores = [[0.9, 0.2, 0.8], [0.1, 0.9], [0.9, 0.8, 0.7, 0.1], [0.9, 0.6], [0.4, 0.9]]
  labels = [1, 0, 2, -1, -1]
  pred = processbench.predict_first_error(scores, 0.5)
  assert pred.tolist() == [1, 0, 3, -1, 0]
  r = processbench.processbench_f1(pred, labels)
  # acc_error = 2/3 (case 2 predicted 3), acc_correct = 1/2 (case 4 predicted 0); F1 = 2*(2/3)(1/2)/(2/3+1/2) = 4/7.
  assert r["acc_error"] == pytest.approx(2 / 3) and r["acc_correct"] == pytest.approx(0.5)
  assert r["f1"] == pytest.approx(4 / 7)
  assert (r["n_error"], r["n_correct"]) == (3, 2)


def test_constant_predictors_score_zero_f1():
  labels = [1, 0, -1, 2, -1]
  for c in (-1, 0, 1, 2):
    assert processbench.processbench_f1([c] * 5, labels)["f1"] == 0.0


def test_tune_threshold_finds_the_best_cut():
  scores = [[0.9, 0.2, 0.8], [0.1, 0.9], [0.9, 0.8, 0.3, 0.1], [0.9, 0.6], [0.7, 0.9]]
  labels = [1, 0, 2, -1, -1]
  t, f1 = processbench.tune_threshold(scores, labels)  # F1 = 1 exactly for 0.3 < t <= 0.6
  assert 0.3 < t <= 0.6 and f1 == pytest.approx(1.0)
  brute = max(processbench.processbench_f1(processbench.predict_first_error(scores, x), labels)["f1"]
              for x in np.linspace(0, 1, 1001))
  assert f1 >= brute - 1e-12
  rows = processbench.cross_split_report({"a": scores, "b": scores[:3] + scores[4:]},
                                         {"a": labels, "b": labels[:3] + labels[4:]})
  assert len(rows) == 4 and {r["tuned_on"] for r in rows} == {"a", "b"}


def test_loader_reads_the_real_files(shared_data):
  for split, n in (("gsm8k", 400), ("math", 1000)):
    cases = processbench.load_processbench(str(shared_data / "processbench" / f"{split}.json"))
    assert len(cases) == n
    assert all(-1 <= c["label"] < len(c["steps"]) for c in cases)
    assert any(c["label"] == -1 for c in cases) and any(c["label"] >= 0 for c in cases)


def test_loader_errors_name_file_record_and_field(tmp_path):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps([{"id": "x", "generator": "g", "problem": "p", "steps": ["a"], "label": 3,
                               "final_answer_correct": True}]))
  with pytest.raises(DataError, match=r"bad.json, record 0: label 3"):
    processbench.load_processbench(str(path))
  path.write_text(json.dumps([{"id": "x"}]))
  with pytest.raises(DataError, match="missing field 'generator'"):
    processbench.load_processbench(str(path))
  with pytest.raises(DataError, match="not found"):
    processbench.load_processbench(str(tmp_path / "none.json"))


# ---- best-of-N ------------------------------------------------------------------------------------------------------

def test_pick_rules_on_one_candidate_set():
  correct = np.array([1, 0, 0, 1, 0], bool)
  classes = [7, 3, 3, 7, 3]  # 7 is right; 3 has the majority
  s = {"prm": np.array([0.1, 2.0, -1.0, 0.5, 0.0])}
  acc = lambda m: best_of_n.expected_pick_accuracy(m, correct, classes, s)
  assert acc("random") == pytest.approx(0.4)
  assert acc("oracle") == 1.0
  assert acc("majority") == 0.0
  assert acc("prm") == 0.0  # argmax is candidate 1 (wrong)
  # weighted: 7 -> sig(.1)+sig(.5) = 1.147; 3 -> sig(2)+sig(-1)+sig(0) = 1.650
  assert acc("weighted:prm") == 0.0
  s2 = {"prm": np.array([5.0, -5.0, -5.0, 5.0, -5.0])}
  assert best_of_n.expected_pick_accuracy("weighted:prm", correct, classes, s2) == 1.0
  # ties: two classes with 2 votes each, one right -> expected 0.5; argmax ties likewise
  assert best_of_n.expected_pick_accuracy("majority", correct[:4], [7, 3, 3, 7], {}) == 0.5
  assert best_of_n.expected_pick_accuracy("prm", correct[:2], [7, 3], {"prm": np.zeros(2)}) == 0.5
  assert best_of_n.expected_pick_accuracy("majority", correct, [None] * 5, {}) == 0.0
  with pytest.raises(ValueError, match="unknown selection method"):
    acc("nope")


def test_evaluate_best_of_n_first_n_and_subsets():
  rng = np.random.default_rng(0)
  p, n = 30, 16
  correct = rng.random((p, n)) < 0.4
  classes = [[int(c) if c else int(rng.integers(2, 5)) for c in row] for row in correct]
  perfect = correct.astype(float) + 0.01 * rng.random((p, n))
  rows = best_of_n.evaluate_best_of_n(correct, classes, {"perfect": perfect}, ns=(4, 16), num_subsets=10)
  by = {(r.method, r.n): r for r in rows}
  assert by[("random", 16)].first_n == pytest.approx(correct.mean())
  assert by[("perfect", 4)].subsets == pytest.approx(by[("oracle", 4)].subsets)
  assert by[("oracle", 4)].first_n == pytest.approx(correct[:, :4].any(1).mean())
  assert by[("random", 16)].ci_low <= by[("random", 16)].subsets <= by[("random", 16)].ci_high
  assert "| perfect |" in best_of_n.format_table(rows)
  with pytest.raises(ValueError, match="n=32"):
    best_of_n.evaluate_best_of_n(correct, classes, {}, ns=(32,))


# ---- math answers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,answer", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("a \\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("She makes 9 * 2 = $18.\n#### 18", "18"),
    ("Thus, the answer is 42.", "42"),
    ("step one\nwe get x = 3.5 apples", "3.5"),
    ("no digits here", None),
    ("", None),
])
def test_extract_answer(text, answer):
  assert math_answers.extract_answer(text) == answer


@pytest.mark.parametrize("a,b,same", [
    ("\\frac{1}{2}", "0.5", True), ("\\dfrac12", "\\frac{1}{2}", True), ("1,000", "1000", True),
    ("x = 5", "5", True), ("18.0", "18", True), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True), ("3", "4", False), (None, "4", False), ("10\\%", "10", True),
])
def test_is_equiv(a, b, same):
  assert math_answers.is_equiv(a, b) is same


def test_answer_groups_merge_equivalent_forms():
  assert math_answers.answer_groups(["0.5", "\\frac{1}{2}", "2", None, "1/2", "2.0"]) == [0, 0, 1, None, 0, 1]
