"""Early stopping of a PRM on a held-out metric: the within-problem AUC of its outcome reward `q(end)`.

An implicit PRM is an outcome reward model first: if its `q(end) = beta * sum_t (log pi - log pi_ref)` does not
separate right from wrong answers to the same problem, no process reward read from it can. `within_problem_auc`
measures exactly that on held-out problems; `BestByMetric` is the evaluator and `stop_when` pair of a
`pragjax.train.method.Method` that keeps the best model by such a metric and ends training when it stops
improving (patience), so a PRM trains to convergence on its validation split, never on best-of-N.
"""

from __future__ import annotations

import json
from typing import Callable

import jax
import numpy as np

from pragjax import paths
from pragjax.data.jsonl import write_json

__all__ = ["within_problem_auc", "BestByMetric"]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """P(score of a positive > score of a negative), ties 0.5 (the Mann-Whitney statistic)."""
  diff = pos[:, None] - neg[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def within_problem_auc(scores: np.ndarray, correct: np.ndarray, *, num_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict:
  """Mean over problems of the AUC separating a problem's correct samples from its wrong ones by `scores`.

  Args:
    scores: `[P, N]` float, one score per sample (higher = judged better).
    correct: `[P, N]` bool, the samples' outcome labels.
  Returns `auc` (mean over the problems that have both kinds of sample; NaN when none has), `problems` (their
  count), `lo`, `hi` (percentile bootstrap interval over those problems; NaN with `num_boot=0`) and `pooled` (the AUC over every
  within-problem (correct, wrong) pair pooled, which weights problems by their pair count).
  """
  scores, correct = np.asarray(scores, np.float64), np.asarray(correct, bool)
  if scores.shape != correct.shape:
    raise ValueError(f"scores {scores.shape} and correct {correct.shape} differ in shape")
  per, wins, pairs = [], 0.0, 0
  for s, c in zip(scores, correct):
    pos, neg = s[c], s[~c]
    if len(pos) and len(neg):
      a = _auc(pos, neg)
      per.append(a)
      wins += a * len(pos) * len(neg)
      pairs += len(pos) * len(neg)
  if not per:
    nan = float("nan")
    return {"auc": nan, "problems": 0, "lo": nan, "hi": nan, "pooled": nan}
  per = np.asarray(per)
  lo = hi = float("nan")
  if num_boot:
    rng = np.random.default_rng([0x415543, seed])
    boot = per[rng.integers(0, len(per), (num_boot, len(per)))].mean(axis=1)
    a = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
  return {"auc": float(per.mean()), "problems": len(per), "lo": float(lo), "hi": float(hi),
          "pooled": wins / pairs}


class BestByMetric:
  """Keeps the best model by a held-out metric (higher is better) and asks the loop to stop without progress.

  Use it as a method's evaluator and its `stop_when`:

      sel = BestByMetric(metric, directory, save=save_model, patience=3)
      Method(..., evaluators=[sel], stop_when=sel.should_stop)

  Every evaluation computes `metric(model)`; an improvement of more than `min_delta` over the best so far saves
  the model with `save(model, directory + "/best")` and resets the patience count. `should_stop()` is True once
  `patience` evaluations in a row brought none (0 = never stop, only keep the best). The history lives in
  `directory/selection.json` (process 0 writes it, atomically), keyed by step, so a resumed run continues the
  same count: an evaluation at a step already recorded (a replayed step) replaces that entry.
  """

  def __init__(self, metric: Callable[[object], float], directory: str, *, save: Callable[[object, str], None],
               patience: int = 3, min_delta: float = 0.0, name: str = "val_auc"):
    if patience < 0:
      raise ValueError(f"patience={patience} must be >= 0")
    self.metric, self.directory, self.save = metric, directory, save
    self.patience, self.min_delta, self.name = int(patience), float(min_delta), name
    self.history: dict[int, float] = {}
    self._best_saved: int | None = None
    path = self._path()
    if paths.resolve(path).exists():
      try:
        data = json.loads(paths.read_text(path))
        self.history = {int(k): float(v) for k, v in data["history"].items()}
        self._best_saved = data.get("best_saved")
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a selection record ({e}); delete it to start the selection afresh") from e

  def _path(self) -> str:
    return paths.join(self.directory, "selection.json")

  @property
  def best_dir(self) -> str:
    return paths.join(self.directory, "best")

  def _scan(self, upto: int | None = None) -> tuple[int | None, float, int]:
    """(best step, best value, evaluations since the best) over the history up to step `upto`."""
    best_step, best, since = None, -np.inf, 0
    for step in sorted(self.history):
      if upto is not None and step > upto:
        break
      v = self.history[step]
      if np.isfinite(v) and v > best + self.min_delta:
        best_step, best, since = step, v, 0
      else:
        since += 1
    return best_step, best, since

  @property
  def best_step(self) -> int | None:
    return self._scan()[0]

  @property
  def best_value(self) -> float:
    return self._scan()[1]

  def __call__(self, step: int, model) -> dict[str, float]:
    value = float(self.metric(model))
    self.history = {s: v for s, v in self.history.items() if s < step}  # replayed steps are re-evaluated
    self.history[step] = value
    best_step, best, _ = self._scan()
    if best_step == step:
      self.save(model, self.best_dir)
      self._best_saved = step
    write_json(self._path(), {"history": {str(k): v for k, v in sorted(self.history.items())}, "name": self.name,
                              "best_step": best_step, "best_value": best, "best_saved": self._best_saved,
                              "patience": self.patience})
    return {self.name: value, f"best_{self.name}": best}

  def should_stop(self) -> bool:
    return bool(self.patience) and self._scan()[2] >= self.patience

  def has_best(self) -> bool:
    """A best model is on disk, saved for the best step of the history."""
    return self._best_saved is not None and self._best_saved == self.best_step and (
        jax.process_count() > 1 or paths.resolve(self.best_dir).exists())
