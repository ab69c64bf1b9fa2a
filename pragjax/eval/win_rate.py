"""Win rate of one model's responses against another's, by a pairwise judge, order randomised, ties 0.5.

For each item the candidate's response is shown as A or B by a seeded coin
flip (so a judge biased towards a position favours neither model), the
judge's preference is mapped back to the candidate, and ties count 0.5.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from pragjax.eval.judges import Comparison, Judge


@dataclasses.dataclass
class WinRate:
  win_rate: float  # mean candidate score (win 1, tie 0.5, loss 0)
  ci95: float  # half-width of the normal 95% interval of the mean
  wins: int
  ties: int
  losses: int
  candidate_first: float  # share of items where the candidate was shown as A
  scores: list[float]


def win_rate(judge: Judge, queries: Sequence[str], constitutions: Sequence[str], candidate: Sequence[str],
             baseline: Sequence[str], *, seed: int, meta: Sequence[Any] | None = None) -> WinRate:
  """Candidate vs baseline responses (same queries and constitutions) -> `WinRate`."""
  n = len(queries)
  if not (len(constitutions) == len(candidate) == len(baseline) == n):
    raise ValueError(f"win_rate needs equal lengths, got {n} queries, {len(constitutions)} constitutions, "
                     f"{len(candidate)} candidate and {len(baseline)} baseline responses")
  first = np.random.default_rng(seed).random(n) < 0.5
  comps = [Comparison(q, c, a if f else b, b if f else a, None if meta is None else meta[i])
           for i, (q, c, a, b, f) in enumerate(zip(queries, constitutions, candidate, baseline, first))]
  pref_a = np.asarray(judge(comps), np.float64)
  scores = np.where(first, pref_a, 1.0 - pref_a)
  return WinRate(
      win_rate=float(scores.mean()) if n else float("nan"),
      ci95=float(1.96 * scores.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
      wins=int(np.sum(scores == 1.0)), ties=int(np.sum(scores == 0.5)), losses=int(np.sum(scores == 0.0)),
      candidate_first=float(first.mean()) if n else float("nan"), scores=[float(s) for s in scores])
