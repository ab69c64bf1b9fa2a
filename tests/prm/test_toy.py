"""The arithmetic-world helpers of the toy reproduction: labels, the names-ignored diagnostic, the F1 report."""

import numpy as np

from pragjax.methods.prm import toy_eval as prm_toy
from pragjax.toyworld import arithmetic


def _problem():
  return arithmetic.build_problem([("q", 3), ("f", 5)], [arithmetic.Operation("x", "+", "q", "f"),
                                                         arithmetic.Operation("m", "*", "x", 2)])


def test_outcome_labels_use_the_final_answer_only():
  p = _problem()  # x=3+5=8, m=8*2=16, #16
  recs = prm_toy.outcome_records([p], [["x=3+5=8\nm=8*2=16\n#16\n", "z=3+5=9\nm=9*2=16\n#16\n", "#15\n"]])
  assert [r["label"] for r in recs] == [1.0, 1.0, 0.0]
  labels = prm_toy.first_error_labels([p], [[r["response"] for r in recs]])
  assert labels.tolist() == [[-1, 0, 0]]


def test_value_first_error_ignores_only_names():
  p = _problem()
  assert prm_toy.value_first_error(p, "z=3+5=8\nk=8*2=16\n#16\n") == -1
  assert arithmetic.first_error(p, "z=3+5=8\nk=8*2=16\n#16\n") == 0
  assert prm_toy.value_first_error(p, "x=3+5=8\nm=8*3=24\n#24\n") == 1
  assert prm_toy.value_first_error(p, "x=3+5=8\nm=8*2=16\n#17\n") == 2
  assert prm_toy.value_first_error(p, "x=3+5=8\n#16\n") == 1  # missing step
  assert prm_toy.value_first_error(p, "x=3+5=8\nm=8*2=16\n#16\n#16\n") == 3  # extra line
  assert prm_toy.value_first_error(p, "x=3+5=8\nm=8*2=16\n") == 2  # no answer line


def test_first_error_report_tunes_on_the_first_problems():
  # Two problems x two samples; step scores dip exactly at the first error.
  steps = [[np.array([1.0, -2.0, 1.0]), np.array([1.0, 1.0])], [np.array([-3.0, 1.0]), np.array([1.0, 1.0, 1.0])]]
  labels = np.array([[1, -1], [0, -1]])
  correct = np.array([[False, True], [False, True]])
  r = prm_toy.first_error_report(steps, labels, correct, tune_problems=1)
  assert r["cases"] == 2 and r["prm"]["f1"] == 1.0 and -2.0 < r["threshold"] <= 1.0
  assert r["constant"] == 0.0
  assert r["outcome_baseline_step"] == 1 and r["outcome_baseline"]["acc_error"] == 0.0
