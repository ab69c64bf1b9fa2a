"""Implicit-PRM scores of whole solutions and of ProcessBench cases, in padded batches of `batch_size` rows.

Batches come from `pragjax.eval.batching.chunks`: `batch_size` rows (rounded
up to the current mesh's batch shards, over which they are sharded), the last
one filled with zero rows (no token, no step) whose scores are dropped.

`scorer` comes from `pragjax.methods.prm.implicit.make_scorer`; the metrics
that consume these scores are method-agnostic (`pragjax.eval.best_of_n`,
`pragjax.eval.processbench`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pragjax.eval import batching
from pragjax.methods.prm import implicit
from pragjax.methods.prm import steps as steps_lib


def score_cases(scorer, policy_params, ref_params, tokenizer, cases: Sequence[Mapping], *,
                separator: str = "\n\n", chat_template: bool | None = None, add_eos: bool = False,
                max_length: int = 4096, batch_size: int = 8) -> dict[str, list[np.ndarray]]:
  """Implicit-PRM step rewards of ProcessBench-format cases (`problem`, `steps`): mode -> one array per case.

  `scorer` comes from `pragjax.methods.prm.implicit.make_scorer`; every mode
  (`single`, `accumulative`) comes from the same pass. Steps cut off by
  `max_length` get no score (they can then never be predicted). Batches are
  padded to `batch_size` rows so that one compiled shape serves each length bucket.
  """
  out = {mode: [] for mode in implicit.MODES}
  for chunk in batching.chunks(cases, batch_size):
    enc = [steps_lib.encode_steps(tokenizer, c["problem"], c["steps"], separator=separator,
                                  chat_template=chat_template, add_eos=add_eos, max_length=max_length)
           for c in chunk.real]
    batch = steps_lib.collate_solutions(enc, tokenizer.pad_token_id, pad_to_multiple_of=64)
    res = batching.fetch(scorer(policy_params, ref_params, batching.place(batching.pad_rows(batch, chunk.rows))))
    for mode in implicit.MODES:
      out[mode].extend(res[mode][i, :len(e.step_end)] for i, e in enumerate(enc))
  return out


def score_responses(scorer, policy_params, ref_params, tokenizer, prompts: Sequence[str],
                    responses: Sequence[Sequence[str]], *, separator: str = "\n\n", chat_template: bool | None = None,
                    max_length: int = 4096, batch_size: int = 8) -> dict[str, np.ndarray]:
  """Implicit-PRM solution scores of N responses per prompt: `{"{mode}_{how}": [P, N], "outcome": [P, N]}`.

  Steps are the response split after each `separator` (`pragjax.methods.prm.steps.split_response`);
  `scorer` comes from `pragjax.methods.prm.implicit.make_scorer`.
  """
  n = len(responses[0]) if responses else 0
  if any(len(r) != n for r in responses):
    raise ValueError("every prompt needs the same number of responses")
  flat = [(p, r) for p, group in zip(prompts, responses) for r in group]
  keys = [f"{m}_{h}" for m in implicit.MODES for h in implicit.AGGREGATIONS] + ["outcome"]
  out = {k: [] for k in keys}
  for chunk in batching.chunks(flat, batch_size):
    enc = [steps_lib.encode_solution(tokenizer, p, r, steps_lib.split_response(r, separator),
                                     chat_template=chat_template, max_length=max_length) for p, r in chunk.real]
    batch = steps_lib.collate_solutions(enc, tokenizer.pad_token_id, pad_to_multiple_of=64)
    res = batching.fetch(scorer(policy_params, ref_params, batching.place(batching.pad_rows(batch, chunk.rows))))
    for k in keys:
      out[k].extend(res[k][:chunk.n])
  return {k: np.asarray(v, np.float64).reshape(len(prompts), n) for k, v in out.items()}
