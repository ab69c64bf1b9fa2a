"""Prompts and the C x C (constitution, response) batch that SAMI scores and trains on.

A prompt is `template.format(constitution=..., query=...)` (the template is
config). One query's group holds C prompt id lists (one per constitution,
`sampling.prompt_ids`) and the C responses sampled under them (ids without
EOS). `pair_sequences` lays out the C*C sequences `prompt_i + response_j` in
row-major order (index i*C + j), each with a response mask: 1 on the tokens of
response j, 0 on the prompt, on padding and where EOS would be (EOS is never
part of a response). Responses are cut to the same length in every row, so
that each is scored on the same tokens under every constitution.

`collate` pads groups to `[B, C*C, T]` (`input_ids`, `attention_mask`,
`loss_mask`) plus `slot_mask [B, C]` (1 on real constitution/response slots,
for `sami_loss(response_mask=...)`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from pragjax.data.errors import DataError

PLACEHOLDERS = ("{constitution}", "{query}")


def check_template(template: str, where: str = "sami.prompt_template") -> str:
  for key in PLACEHOLDERS:
    if key not in template:
      raise ValueError(f"{where} must contain {key}; got {template!r}")
  return template


def render_prompt(template: str, constitution: str, query: str) -> str:
  return template.replace("{constitution}", constitution).replace("{query}", query)


def pair_sequences(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, max_length: int,
                   where: str = "group") -> list[tuple[np.ndarray, np.ndarray]]:
  """C prompts x C responses -> C*C (ids, response mask) pairs, prompt i + response j at index i*C + j."""
  c = len(prompts)
  if len(responses) != c or c < 1:
    raise DataError(f"{where}: {len(prompts)} prompts but {len(responses)} responses; SAMI needs one per constitution")
  longest_prompt = max(len(p) for p in prompts)
  room = max_length - longest_prompt
  if room < 1:
    raise DataError(f"{where}: a prompt has {longest_prompt} tokens, no room for a response within "
                    f"max_length={max_length}; raise sami.max_length or shorten the prompt template")
  out = []
  for p in prompts:
    for r in responses:
      r = list(r)[:room]
      ids = np.asarray(list(p) + r, np.int32)
      mask = np.asarray([0] * len(p) + [1] * len(r), np.int32)
      out.append((ids, mask))
  return out


def make_example(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, max_length: int,
                 where: str = "group") -> dict[str, Any]:
  """One query's group -> `{"sequences": [(ids, mask)] * C*C, "num_slots": C}`."""
  return {"sequences": pair_sequences(prompts, responses, max_length=max_length, where=where),
          "num_slots": len(prompts)}


def collate(examples: Sequence[Mapping], *, pad_id: int, seq_len: int = 0, length_bucket: int = 16,
            num_slots: int | None = None) -> dict[str, np.ndarray]:
  """Groups -> right-padded `[B, S*S, T]` arrays and `slot_mask [B, S]` (S = `num_slots`, default the largest C).

  T = `seq_len` when > 0, else the longest sequence rounded up to
  `length_bucket` (a few compiled shapes). A group with fewer than S
  constitutions is padded with empty slots (slot_mask 0).
  """
  b = len(examples)
  s = num_slots or max(int(e["num_slots"]) for e in examples)
  longest = max(len(ids) for e in examples for ids, _ in e["sequences"])
  t = seq_len if seq_len > 0 else -(-max(longest, 2) // length_bucket) * length_bucket
  if longest > t:
    raise DataError(f"a SAMI sequence has {longest} tokens, more than seq_len={t}")
  batch = {"input_ids": np.full((b, s * s, t), pad_id, np.int32),
           "attention_mask": np.zeros((b, s * s, t), np.int32),
           "loss_mask": np.zeros((b, s * s, t), np.int32),
           "slot_mask": np.zeros((b, s), np.int32)}
  for n, e in enumerate(examples):
    c = int(e["num_slots"])
    if c > s or len(e["sequences"]) != c * c:
      raise DataError(f"example {n}: {len(e['sequences'])} sequences for {c} slots (at most {s})")
    batch["slot_mask"][n, :c] = 1
    for k, (ids, mask) in enumerate(e["sequences"]):
      i, j = divmod(k, c)
      row = i * s + j
      batch["input_ids"][n, row, :len(ids)] = ids
      batch["attention_mask"][n, row, :len(ids)] = 1
      batch["loss_mask"][n, row, :len(ids)] = mask
    for i in range(c, s):  # empty slots: a one-token row so that no row is all padding
      batch["attention_mask"][n, i * s:(i + 1) * s, 0] = 1
    for i in range(c):
      batch["attention_mask"][n, i * s + c:(i + 1) * s, 0] = 1
  return batch


class GroupIterator:
  """Batches of SAMI groups in a seeded order, one pass (or more), with the `get_state`/`set_state` that
  `pragjax.train.loop.run` checkpoints (a resumed run continues at the same batch)."""

  def __init__(self, examples: Sequence[Mapping], *, batch_size: int, seed: int, pad_id: int, seq_len: int = 0,
               length_bucket: int = 16, shuffle: bool = True):
    if len(examples) < batch_size:
      raise DataError(f"{len(examples)} SAMI groups are fewer than one batch of {batch_size}")
    self.examples, self.batch_size, self.pad_id = list(examples), batch_size, pad_id
    self.seq_len, self.length_bucket = seq_len, length_bucket
    self.num_slots = max(int(e["num_slots"]) for e in examples)
    self.seed, self.shuffle, self.index = seed, shuffle, 0

  def _order(self, epoch: int) -> np.ndarray:
    n = len(self.examples)
    return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    per_epoch = len(self.examples) // self.batch_size
    epoch, k = divmod(self.index, per_epoch)
    order = self._order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
    self.index += 1
    return collate([self.examples[i] for i in order], pad_id=self.pad_id, seq_len=self.seq_len,
                   length_bucket=self.length_bucket, num_slots=self.num_slots)

  def get_state(self) -> dict:
    return {"index": self.index}

  def set_state(self, state: Mapping) -> None:
    self.index = int(state.get("index", 0))
