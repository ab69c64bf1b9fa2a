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
  """One response per prompt, in order. `progress(done, total)` is called after each batch."""
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  out: list[Response] = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    rows = [prompt_ids(tokenizer, p) for p in chunk]
    if len(chunk) < batch_size and start > 0:  # keep one compiled batch shape
      rows = rows + [rows[-1]] * (batch_size - len(chunk))
    ids, mask = left_pad(rows, pad, pad_multiple)
    res = generate(model, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   top_k=top_k, rng=jax.random.fold_in(rng, start), eos_token_ids=(eos,) if eos is not None else (),
                   pad_token_id=pad)
    toks, lengths = np.asarray(res.tokens), np.asarray(res.lengths)
    for row, n in zip(toks[:len(chunk)], lengths[:len(chunk)]):
      row = [int(x) for x in row[:int(n)]]
      ended = bool(row) and eos is not None and row[-1] == eos
      if ended:
        row = row[:-1]
      out.append(Response(row, tokenizer.decode(row), ended))
    if progress is not None:
      progress(len(out), len(prompts))
  return out
