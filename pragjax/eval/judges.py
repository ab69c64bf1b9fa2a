"""Pairwise judges: which of two responses better follows a constitution's principles.

A judge is any callable `judge(comparisons) -> [N] float` giving, for each
`Comparison`, the preference for response A: 1.0 (A better), 0.0 (B better)
or 0.5 (tie). `pragjax.eval.win_rate` randomises which response is A.

- `programmatic_judge(score_fn)`: compares `score_fn(comparison, response)`
  (e.g. the number of principles a toy-world answer satisfies; equal scores tie).
- `LogprobJudge`: asks a local causal LM. The prompt (a template with
  `{constitution}`, `{query}`, `{response_a}`, `{response_b}`) is followed in
  turn by each answer string (e.g. " A" and " B"); the answer with the higher
  log-probability (summed over its tokens) wins, a difference within
  `tie_margin` nats is a tie. One jitted forward per batch scores both answers
  (`pragjax.eval.batching.chunks`; sharded over the current mesh's batch axes).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx

from pragjax import ops
from pragjax.data import collate
from pragjax.eval import batching
from pragjax.models.logprobs import batch_token_logprobs


@dataclasses.dataclass
class Comparison:
  """One pairwise judgement: the query and constitution as texts, the two responses, world data in `meta`."""
  query: str
  constitution: str
  response_a: str
  response_b: str
  meta: Any = None


Judge = Callable[[Sequence[Comparison]], np.ndarray]


def programmatic_judge(score_fn: Callable[[Comparison, str], float]) -> Judge:
  """A judge from a scoring program: the response with the higher score wins, equal scores tie."""

  def judge(comparisons: Sequence[Comparison]) -> np.ndarray:
    out = []
    for c in comparisons:
      a, b = score_fn(c, c.response_a), score_fn(c, c.response_b)
      out.append(1.0 if a > b else 0.0 if a < b else 0.5)
    return np.asarray(out, np.float64)

  return judge


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _answer_logprobs(graphdef, params, batch):
  logp = batch_token_logprobs(graphdef, params, batch)
  return ops.masked_sum(logp, batch["loss_mask"][:, 1:])


class LogprobJudge:
  """A local causal LM as judge (module docstring).

  Args:
    model, tokenizer: the judge model (e.g. `runner.load_model(config.judge.model)`).
    template: prompt with `{constitution}`, `{query}`, `{response_a}`, `{response_b}`.
    answers: the two answer strings (A first), appended to the prompt.
    tie_margin: |log p(A) - log p(B)| at most this is a tie.
    batch_size: comparisons per forward (each gives two sequences).
    max_length: prompt tokens kept (the prompt's start is cut first).
  """

  def __init__(self, model, tokenizer, *, template: str, answers: Sequence[str] = (" A", " B"),
               tie_margin: float = 0.0, batch_size: int = 8, max_length: int = 1024, pad_multiple: int = 64):
    for key in ("{constitution}", "{query}", "{response_a}", "{response_b}"):
      if key not in template:
        raise ValueError(f"judge template lacks {key}: {template!r}")
    if len(answers) != 2 or answers[0] == answers[1]:
      raise ValueError(f"judge answers must be two distinct strings, got {answers!r}")
    self.graphdef, self.params = nnx.split(model)
    self.tokenizer, self.template, self.answers = tokenizer, template, tuple(answers)
    self.tie_margin, self.batch_size = float(tie_margin), int(batch_size)
    self.max_length, self.pad_multiple = int(max_length), int(pad_multiple)

  def _examples(self, c: Comparison) -> list[dict]:
    text = self.template.format(constitution=c.constitution, query=c.query, response_a=c.response_a,
                                response_b=c.response_b)
    p = collate._prompt_ids(self.tokenizer, text)  # pylint: disable=protected-access
    out = []
    for ans in self.answers:
      a = list(self.tokenizer.encode(ans, add_special_tokens=False))
      if not a:
        raise ValueError(f"judge answer {ans!r} encodes to no tokens")
      keep = max(1, self.max_length - len(a))
      pp = p[:1] + p[-(keep - 1):] if len(p) > keep and keep > 1 else p[-keep:]
      ids = pp + a
      out.append({"input_ids": np.asarray(ids, np.int32),
                  "loss_mask": np.asarray([0] * len(pp) + [1] * len(a), np.int32)})
    return out

  def log_odds(self, comparisons: Sequence[Comparison]) -> np.ndarray:
    """`log p(answer A) - log p(answer B)` per comparison."""
    pad = self.tokenizer.pad_token_id or 0
    out = []
    for chunk in batching.chunks(comparisons, self.batch_size):  # padded with copies: one compiled batch shape
      examples = [e for c in chunk.items for e in self._examples(c)]
      t = collate.bucket_length(max(len(e["input_ids"]) for e in examples), multiple=self.pad_multiple)
      batch = collate.pad_batch(examples, t, pad)
      lp = batching.fetch(_answer_logprobs(self.graphdef, self.params, batching.place(batch)))
      lp = lp[:2 * chunk.n].reshape(chunk.n, 2)
      out.extend(lp[:, 0] - lp[:, 1])
    return np.asarray(out, np.float64)

  def __call__(self, comparisons: Sequence[Comparison]) -> np.ndarray:
    d = self.log_odds(comparisons)
    return np.where(np.abs(d) <= self.tie_margin, 0.5, (d > 0).astype(np.float64))
