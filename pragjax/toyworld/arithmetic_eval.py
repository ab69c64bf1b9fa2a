"""Greedy (or sampled) solving of arithmetic-chain problems, scored exactly."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from pragjax.eval import batching
from pragjax.models import Decoder, generate
from pragjax.models.tokenizer import Tokenizer
from pragjax.toyworld import arithmetic


def solve(model: Decoder, tok: Tokenizer, problems: Sequence[arithmetic.Problem], *,
          max_new_tokens: int = 64, batch_size: int = 64, temperature: float = 0.0,
          rng: jax.Array | None = None, num_samples: int = 1) -> list[str]:
  """Solution texts, `num_samples` per problem (adjacent), stopping at EOS.

  Problems go in chunks of `batch_size` (`pragjax.eval.batching.chunks`,
  sharded over the current mesh's batch axes); problems that fit in one chunk
  are not padded, a short last chunk of several is filled with copies of its
  last problem, whose samples are dropped. A chunk samples with
  `fold_in(rng, index of its first problem)`.
  """
  out: list[str] = []
  for chunk in batching.chunks(problems, batch_size, shrink=True):
    ids, mask = tok.encode_batch([p.prompt for p in chunk.items], padding_side="left", pad_to_multiple_of=16)
    key = None if rng is None else jax.random.fold_in(rng, chunk.start)
    ids, mask = batching.place((ids, mask))
    res = generate(model, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature, rng=key,
                   eos_token_ids=(tok.eos_token_id,), num_samples=num_samples, pad_token_id=tok.pad_token_id)
    toks, lengths = batching.fetch((res.tokens, res.lengths))
    keep = chunk.n * num_samples
    out.extend(tok.decode_batch(toks[:keep], lengths=lengths[:keep]))
  return out


def evaluate(model: Decoder, tok: Tokenizer, problems: Sequence[arithmetic.Problem], **kw) -> dict:
  """accuracy (final answer), exact (every step right), first-step accuracy."""
  sols = solve(model, tok, problems, **kw)
  correct = [arithmetic.is_correct(p, s) for p, s in zip(problems, sols)]
  errors = [arithmetic.first_error(p, s) for p, s in zip(problems, sols)]
  return {
      "accuracy": float(np.mean(correct)),
      "exact": float(np.mean([e == -1 for e in errors])),
      "first_step_ok": float(np.mean([e != 0 for e in errors])),
      "n": len(problems),
  }
