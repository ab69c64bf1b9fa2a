"""Reward functions `(record, response_text) -> {"reward": float, "correct": float, ...}` for the rollout source.

- `arithmetic_reward`: the arithmetic world's checker on `record["problem"]`
  (an `arithmetic.Problem`): reward 1 when the final answer is right, else 0;
  with `step_weight > 0` plus `step_weight x` the share of steps before the
  first wrong one (shaping experiments); `format_penalty` is subtracted when
  the response has no answer line.
- `math_reward`: `{prompt, answer}` records (GSM8K / MATH style): the
  response's final answer (`\\boxed{}` or the last number,
  `pragjax.eval.math_answers.extract_answer`) against `record["answer"]`
  (`math_answers.is_equiv`); `format_penalty` when no answer can be read.
- `format_reward`: 1 when `pattern` (a regular expression) matches the
  response, else 0.
- `from_callable`: any user `reward_fn(prompt, response) -> float`.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

from pragjax.toyworld import arithmetic

__all__ = ["arithmetic_reward", "math_reward", "format_reward", "from_callable", "REWARDS"]


def arithmetic_reward(record: Mapping, response: str, *, step_weight: float = 0.0,
                      format_penalty: float = 0.0) -> dict[str, float]:
  problem = record["problem"]
  correct = arithmetic.is_correct(problem, response)
  reward = float(correct)
  if step_weight:
    first = arithmetic.first_error(problem, response)
    steps = len(problem.gold_steps)  # the operations and the answer line
    reward += step_weight * (steps if first == -1 else first) / steps
  answered = arithmetic.extract_answer(response) is not None
  if format_penalty and not answered:
    reward -= format_penalty
  return {"reward": reward, "correct": float(correct), "answered": float(answered)}


def math_reward(record: Mapping, response: str, *, format_penalty: float = 0.0) -> dict[str, float]:
  from pragjax.eval import math_answers

  pred = math_answers.extract_answer(response)
  correct = pred is not None and math_answers.is_equiv(pred, str(record["answer"]))
  reward = float(correct) - (format_penalty if pred is None else 0.0)
  return {"reward": reward, "correct": float(correct), "answered": float(pred is not None)}


def format_reward(record: Mapping, response: str, *, pattern: str) -> dict[str, float]:
  del record
  return {"reward": float(re.search(pattern, response) is not None)}


def from_callable(fn: Callable[[str, str], float], prompt_key: str = "prompt"):
  """A user's `fn(prompt, response) -> float` as a reward function of the rollout source."""
  def reward(record: Mapping, response: str) -> dict[str, float]:
    return {"reward": float(fn(record[prompt_key], response))}

  return reward


REWARDS = {"arithmetic": arithmetic_reward, "math": math_reward}
