"""Best-of-N selection: accuracy of a selection rule over N sampled solutions per problem.

For each problem there are N candidates with a correctness bit, an answer
class (equal ids = equivalent final answers, None = no answer) and any number
of scores. A rule picks one candidate among the first n (the reference
protocol) or among random n-subsets; its accuracy is whether the pick is
correct. Ties are broken uniformly at random, and the *expected* accuracy
under that tie-break is computed exactly (no tie-break noise):

  random          a uniformly random candidate: mean correctness of the subset
  majority        the most frequent answer class (None never votes)
  weighted:<s>    the class with the largest sum of sigmoid(score s)
  <s>             the candidate with the largest score s (e.g. an implicit-PRM aggregation)
  oracle          pass@n: 1 if any candidate is correct

Random subsets: `num_subsets` draws of an n-subset per problem (seeded);
the per-problem accuracy is averaged over draws, and the 95% interval is
mean +- 1.96 standard errors across problems (the problem sample is the
main source of variance).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from pragjax.eval.tables import markdown_table

__all__ = ["expected_pick_accuracy", "evaluate_best_of_n", "BestOfNRow", "format_table"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def _argmax_ties(values: np.ndarray) -> np.ndarray:
  return np.flatnonzero(values == values.max())


def _class_pick(correct: np.ndarray, classes: Sequence, weights: np.ndarray) -> float:
  """Expected correctness of the answer class with the largest total weight (ties uniform)."""
  totals: dict = {}
  for c, w in zip(classes, weights):
    if c is not None:
      totals[c] = totals.get(c, 0.0) + float(w)
  if not totals:
    return 0.0
  best = max(totals.values())
  winners = [c for c, t in totals.items() if t == best]
  return float(np.mean([np.mean(correct[[i for i, c in enumerate(classes) if c == w]]) for w in winners]))


def expected_pick_accuracy(method: str, correct: np.ndarray, classes: Sequence, scores: Mapping[str, np.ndarray]
                           ) -> float:
  """Expected accuracy of `method` on one candidate set (arrays `[n]`; see the module docstring)."""
  correct = np.asarray(correct, np.float64)
  if method == "random":
    return float(correct.mean())
  if method == "oracle":
    return float(correct.max())
  if method == "majority":
    return _class_pick(correct, classes, np.ones(len(correct)))
  if method.startswith("weighted:"):
    return _class_pick(correct, classes, _sigmoid(np.asarray(scores[method[len("weighted:"):]], np.float64)))
  if method in scores:
    return float(correct[_argmax_ties(np.asarray(scores[method], np.float64))].mean())
  raise ValueError(f"unknown selection method {method!r}; expected random, majority, oracle, weighted:<score> or "
                   f"one of the scores {sorted(scores)}")


@dataclasses.dataclass(frozen=True)
class BestOfNRow:
  """Accuracy of one method at one n: on the first n samples, and over random n-subsets with a 95% interval."""
  method: str
  n: int
  first_n: float
  subsets: float
  ci_low: float
  ci_high: float
  problems: int


def evaluate_best_of_n(correct, classes: Sequence[Sequence], scores: Mapping[str, np.ndarray], *,
                       ns: Sequence[int] = (4, 16, 64), methods: Sequence[str] | None = None,
                       num_subsets: int = 20, seed: int = 0) -> list[BestOfNRow]:
  """Best-of-n accuracy of every method at every n.

  Args:
    correct: `[P, N]` bools; classes: P lists of N answer-class ids (or None);
    scores: name -> `[P, N]` floats (higher = better).
    ns: subset sizes (each <= N); methods: default random, majority, every
      score, weighted:<every score>, oracle.
    num_subsets: random n-subsets drawn per problem (1 when n = N).
  """
  correct = np.asarray(correct, bool)
  p, n_total = correct.shape
  scores = {k: np.asarray(v, np.float64) for k, v in scores.items()}
  for k, v in scores.items():
    if v.shape != correct.shape:
      raise ValueError(f"score {k!r} has shape {v.shape}, correct has {correct.shape}")
  if len(classes) != p or any(len(c) != n_total for c in classes):
    raise ValueError(f"classes must be {p} lists of {n_total} ids")
  if methods is None:
    methods = ["random", "majority", *scores, *(f"weighted:{k}" for k in scores), "oracle"]
  rng = np.random.default_rng(seed)
  rows = []
  for n in ns:
    if not 1 <= n <= n_total:
      raise ValueError(f"n={n} must lie in 1..{n_total} (the samples per problem)")
    draws = 1 if n == n_total else num_subsets
    subsets = [[rng.choice(n_total, n, replace=False) for _ in range(draws)] for _ in range(p)]

    def acc(method: str, idx_per_problem) -> np.ndarray:
      return np.asarray([
          expected_pick_accuracy(method, correct[i, idx], [classes[i][j] for j in idx],
                                 {k: v[i, idx] for k, v in scores.items()})
          for i, idx in enumerate(idx_per_problem)])

    first = [np.arange(n)] * p
    for method in methods:
      per_problem = np.mean([acc(method, [s[d] for s in subsets]) for d in range(draws)], axis=0)
      half = 1.96 * per_problem.std(ddof=1) / np.sqrt(p) if p > 1 else float("nan")
      mean = float(per_problem.mean())
      rows.append(BestOfNRow(method, n, float(acc(method, first).mean()), mean, mean - half, mean + half, p))
  return rows


def format_table(rows: Sequence[BestOfNRow], *, label: str = "method") -> str:
  """A markdown table: one line per method, one column per n (random-subset mean [95% CI]; first-n in parentheses)."""
  ns = sorted({r.n for r in rows})
  methods = list(dict.fromkeys(r.method for r in rows))
  by = {(r.method, r.n): r for r in rows}
  def cell(r: BestOfNRow | None) -> str:
    return "-" if r is None else f"{r.subsets:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] ({r.first_n:.3f})"

  return markdown_table([[m] + [cell(by.get((m, n))) for n in ns] for m in methods],
                        [label] + [f"best-of-{n}" for n in ns])
