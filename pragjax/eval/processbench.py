"""ProcessBench: find the first erroneous step of a solution (or say there is none).

A case has a problem, steps and `label` = index of the earliest wrong step,
-1 if every step is right. A discriminative PRM scores every step; the
prediction is the first step whose score falls under a threshold, -1 if
none does. With `acc_error` the accuracy on cases with an error (prediction
== label) and `acc_correct` the accuracy on error-free cases (prediction ==
-1), the metric is their harmonic mean

    F1 = 2 * acc_error * acc_correct / (acc_error + acc_correct)   (0 when both are 0)

The threshold is tuned on one split (the F1-maximising cut between
consecutive observed scores) and reported applied to the others.
`pragjax.methods.prm.scoring.score_cases` scores ProcessBench-format cases with an implicit PRM.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from pragjax.data.errors import DataError

SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")
FIELDS = {"id": str, "generator": str, "problem": str, "steps": list, "label": int, "final_answer_correct": bool}

__all__ = ["SPLITS", "load_processbench", "predict_first_error", "processbench_f1", "tune_threshold",
           "cross_split_report"]


def load_processbench(path: str) -> list[dict]:
  """Cases of one ProcessBench JSON split (a JSON array; `path` a file, or a directory + `/<split>.json`).

  Every field is checked (DataError naming the file, the record and the field).
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: ProcessBench split not found (expected a JSON array such as gsm8k.json)")
  with open(path, encoding="utf-8") as f:
    try:
      records = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from e
  if not isinstance(records, list):
    raise DataError(f"{path}: expected a JSON array of cases, got {type(records).__name__}")
  for i, r in enumerate(records):
    where = f"{path}, record {i}"
    if not isinstance(r, dict):
      raise DataError(f"{where}: expected an object, got {type(r).__name__}")
    for name, kind in FIELDS.items():
      if name not in r:
        raise DataError(f"{where}: missing field {name!r}")
      if not isinstance(r[name], kind) or (kind is int and isinstance(r[name], bool)):
        raise DataError(f"{where}: field {name!r} must be {kind.__name__}, got {type(r[name]).__name__}")
    if not r["steps"] or not all(isinstance(s, str) for s in r["steps"]):
      raise DataError(f"{where}: 'steps' must be a non-empty list of strings")
    if not -1 <= r["label"] < len(r["steps"]):
      raise DataError(f"{where}: label {r['label']} is not -1 or a step index (0..{len(r['steps']) - 1})")
  return records


def _pad(step_scores: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
  k = max((len(s) for s in step_scores), default=0)
  x = np.zeros((len(step_scores), max(k, 1)), np.float64)
  m = np.zeros_like(x, bool)
  for i, s in enumerate(step_scores):
    x[i, :len(s)] = s
    m[i, :len(s)] = True
  return x, m


def predict_first_error(step_scores: Sequence[Sequence[float]], threshold: float) -> np.ndarray:
  """`[S]` int: the first step with score < threshold, -1 if none (a case without steps predicts -1)."""
  x, m = _pad(step_scores)
  below = (x < threshold) & m
  return np.where(below.any(axis=1), below.argmax(axis=1), -1)


def processbench_f1(pred: Sequence[int], label: Sequence[int]) -> dict:
  """`acc_error`, `acc_correct`, `f1` (see the module docstring) and the case counts.

  An empty side has accuracy NaN and makes F1 NaN.
  """
  pred, label = np.asarray(pred), np.asarray(label)
  err, ok = label != -1, label == -1
  acc_error = float(np.mean(pred[err] == label[err])) if err.any() else float("nan")
  acc_correct = float(np.mean(pred[ok] == -1)) if ok.any() else float("nan")
  total = acc_error + acc_correct
  f1 = 2 * acc_error * acc_correct / total if total > 0 else (0.0 if total == 0 else float("nan"))
  return {"acc_error": acc_error, "acc_correct": acc_correct, "f1": f1, "n_error": int(err.sum()),
          "n_correct": int(ok.sum())}


def tune_threshold(step_scores: Sequence[Sequence[float]], label: Sequence[int], *, max_candidates: int = 2000
                   ) -> tuple[float, float]:
  """The threshold maximising F1 on these cases -> (threshold, F1).

  Candidates are midpoints between consecutive distinct scores plus one below
  the smallest and one above the largest (at most `max_candidates`, taken at
  quantiles); the first best one wins.
  """
  x, m = _pad(step_scores)
  values = np.unique(x[m])
  if values.size == 0:
    return 0.0, processbench_f1(np.full(len(label), -1), label)["f1"]
  cands = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
  if cands.size > max_candidates:
    cands = np.quantile(cands, np.linspace(0, 1, max_candidates))
  best_t, best_f1 = float(cands[0]), float("nan")
  for t in cands:
    f1 = processbench_f1(predict_first_error(step_scores, t), label)["f1"]
    if f1 > best_f1 or (np.isnan(best_f1) and not np.isnan(f1)):
      best_t, best_f1 = float(t), f1
  return best_t, best_f1  # F1 is NaN (and the threshold arbitrary) when one kind of case is absent


def cross_split_report(scores: Mapping[str, Sequence[Sequence[float]]], labels: Mapping[str, Sequence[int]]
                       ) -> list[dict]:
  """For every tuning split: its threshold and in-split F1, and F1 on every other split with that threshold."""
  rows = []
  for tune in scores:
    t, f1 = tune_threshold(scores[tune], labels[tune])
    for split in scores:
      r = processbench_f1(predict_first_error(scores[split], t), labels[split])
      rows.append({"tuned_on": tune, "split": split, "threshold": t, **r})
  return rows
