"""Responses sampled from a model under text prompts, with the token ids kept for scoring.

Prompt ids are the tokenizer's leading special tokens (BOS) and the prompt's
own ids (`prompt_ids`), exactly what the scoring batch puts before each
response, so a response is scored on the very tokens it was sampled as. A
response's ids stop before the EOS that ended it (EOS is never scored);
`ended` says whether it stopped on EOS or ran out of `max_new_tokens`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from pragjax.data import collate
from pragjax.eval import batching
from pragjax.models import Decoder, generate
from pragjax.models.tokenizer import Tokenizer


@dataclasses.dataclass
class Response:
  ids: list[int]
  text: str
  ended: bool

  def to_json(self) -> dict:
    return {"ids": [int(i) for i in self.ids], "text": self.text, "ended": bool(self.ended)}

  @classmethod
  def from_json(cls, d: dict) -> "Response":
    return cls(list(d["ids"]), d["text"], bool(d["ended"]))


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
  """`[leading special tokens] + ids(prompt)` (no EOS), as at sampling and scoring time."""
  return collate._prompt_ids(tokenizer, prompt)  # pylint: disable=protected-access


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, multiple: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows of ids -> left-padded (ids, mask) int32 `[B, T]`, T the longest row rounded up to `multiple`."""
  t = collate.bucket_length(max(len(r) for r in rows), multiple=multiple)
  ids = np.full((len(rows), t), pad_id, np.int32)
  mask = np.zeros((len(rows), t), np.int32)
  for i, r in enumerate(rows):
    ids[i, t - len(r):] = r
    mask[i, t - len(r):] = 1
  return ids, mask


def sample(model: Decoder, tokenizer: Tokenizer, prompts: Sequence[str], *, rng: jax.Array,
           max_new_tokens: int, temperature: float = 1.0, top_p: float | None = None, top_k: int | None = None,
           batch_size: int = 64, pad_multiple: int = 16, progress=None) -> list[Response]:
  """One response per prompt, in order. `progress(done, total)` is called after each batch.

  Prompts go in batches of `batch_size` (`pragjax.eval.batching.chunks`,
  sharded over the current mesh's batch axes): prompts that fit in one batch
  are not padded, a short last batch of several is filled with copies of its
  last prompt (one compiled shape), whose responses are dropped. A batch
  samples with `fold_in(rng, index of its first prompt)`.
  """
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  out: list[Response] = []
  for chunk in batching.chunks(prompts, batch_size, shrink=True):
    ids, mask = left_pad([prompt_ids(tokenizer, p) for p in chunk.items], pad, pad_multiple)
    res = generate(model, *batching.place((ids, mask)), max_new_tokens=max_new_tokens, temperature=temperature,
                   top_p=top_p, top_k=top_k, rng=jax.random.fold_in(rng, chunk.start),
                   eos_token_ids=(eos,) if eos is not None else (), pad_token_id=pad)
    toks, lengths = batching.fetch((res.tokens, res.lengths))
    for row, n in zip(toks[:chunk.n], lengths[:chunk.n]):
      row = [int(x) for x in row[:int(n)]]
      ended = bool(row) and eos is not None and row[-1] == eos
      if ended:
        row = row[:-1]
      out.append(Response(row, tokenizer.decode(row), ended))
    if progress is not None:
      progress(len(out), len(prompts))
  return out
