"""The arithmetic world's preference pairs: a gold solution over the same solution with one wrong step.

For a problem of `pragjax.toyworld.arithmetic`, the chosen response is the
gold solution and the rejected one makes an arithmetic slip: the result of
one operation (drawn uniformly) is off by a nonzero amount in -9..9, and every
later step uses the wrong value faithfully, so the answer is wrong too and
`arithmetic.first_error` is the slipped step. Every value stays in the
world's range 0..max_value (slips that would leave it, or whose error a later
step would cancel, are redrawn). Held-out pairs come from
`arithmetic.heldout_problems`, which no training problem can equal.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pragjax.toyworld import arithmetic

__all__ = ["wrong_solution", "pairs", "training_pairs", "heldout_pairs"]

MAX_SLIP = 9


def _value(operand, values: dict[str, int]) -> int:
  return values[operand] if isinstance(operand, str) else int(operand)


def _chain(problem: arithmetic.Problem, slip_step: int, slip: int, max_value: int) -> tuple[list[str], int] | None:
  """The solution lines with `slip` added to the result of operation `slip_step` and carried on; None if a value
  leaves 0..max_value."""
  values = dict(problem.inputs)
  lines = []
  for i, o in enumerate(problem.operations):
    left, right = _value(o.left, values), _value(o.right, values)
    result = arithmetic.apply_op(o.op, left, right) + (slip if i == slip_step else 0)
    if not 0 <= result <= max_value:
      return None
    values[o.target] = result
    lines.append(arithmetic.format_step(arithmetic.Step(o.target, left, o.op, right, result)))
  answer = values[problem.operations[-1].target]
  return lines + [arithmetic.format_answer(answer)], answer


def wrong_solution(problem: arithmetic.Problem, rng: np.random.Generator, *,
                   max_value: int = arithmetic.DEFAULT_MAX_VALUE) -> tuple[str, int]:
  """(solution text with one slipped step carried to a wrong answer, index of the slipped step).

  RuntimeError if no slip of any step keeps every value in range and the answer wrong.
  """
  slips = [d for d in range(-MAX_SLIP, MAX_SLIP + 1) if d]
  for step in rng.permutation(len(problem.operations)):
    for slip in rng.permutation(slips):
      out = _chain(problem, int(step), int(slip), max_value)
      if out is not None and out[1] != problem.answer:
        return "".join(line + arithmetic.STEP_SEPARATOR for line in out[0]), int(step)
  raise RuntimeError(f"no in-range slip of any step of {problem.prompt!r} changes its answer")


def pairs(problems: Sequence[arithmetic.Problem], seed: int) -> list[dict]:
  """`{"prompt", "chosen", "rejected", "slip_step"}` for each problem (one pair each)."""
  rng = np.random.default_rng(seed)
  out = []
  for p in problems:
    text, step = wrong_solution(p, rng)
    out.append({"prompt": p.prompt, "chosen": p.solution, "rejected": text, "slip_step": step})
  return out


def training_pairs(seed: int, n: int) -> list[dict]:
  """`n` pairs of training problems (the problem stream of `sft`'s toy records: `default_rng(seed + 1)`)."""
  return pairs(arithmetic.training_problems(np.random.default_rng(seed + 1), n), seed + 2)


def heldout_pairs(seed: int, n: int) -> list[dict]:
  """`n` pairs of distinct held-out problems."""
  return pairs(arithmetic.heldout_problems(seed, n), seed + 3)
