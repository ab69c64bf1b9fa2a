"""Prompts and the C x C (constitution, response) batch that SAMI scores and trains on.

A prompt is `template.format(constitution=..., query=...)` (the template is
config). One query's group holds C prompt id lists (one per constitution,
`sampling.prompt_ids`) and the C responses sampled under them (ids without
EOS). `pair_sequences` lays out the C*C sequences `prompt_i + response_j` in
row-major order (index i*C + j), each with a response mask: 1 on the tokens of
response j, 0 on the prompt, on padding and where EOS would be (EOS is never
part of a response). Responses are cut to the same length in every row, so
that each is scored on the same tokens under every constitution.

`group_sequences` lays a group out as the S*S sequences (S = the largest C
of the run) of `pragjax.data.groups`, whose `collate_groups` (through
`collate` here) and `GroupIterator` (training) pad them to `[B, S*S, T]`
(`input_ids`, `attention_mask`, `loss_mask`) plus `slot_mask [B, S*S]` (1 on
real pairs); `constitution_mask` is its diagonal `[B, S]`, for
`sami_loss(response_mask=...)`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from pragjax.data import groups as groups_lib
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


def group_sequences(example: Mapping[str, Any], num_slots: int | None = None) -> list[dict[str, Any] | None]:
  """One query's C x C example -> the S*S sequences of `pragjax.data.groups` (S = `num_slots`, default C).

  Prompt i + response j sits at slot i*S + j; with C < S the slots of the
  missing constitutions and responses are empty (None).
  """
  c = int(example["num_slots"])
  s = c if num_slots is None else int(num_slots)
  if c > s or len(example["sequences"]) != c * c:
    raise DataError(f"{len(example['sequences'])} sequences for {c} slots (at most {s})")
  out: list[dict[str, Any] | None] = [None] * (s * s)
  for k, (ids, mask) in enumerate(example["sequences"]):
    i, j = divmod(k, c)
    out[i * s + j] = {"input_ids": ids, "loss_mask": mask}
  return out


def constitution_mask(slot_mask):
  """`slot_mask [B, S*S]` (real (constitution, response) pairs) -> `[B, S]` real constitutions (the diagonal)."""
  b, ss = slot_mask.shape
  s = int(round(ss ** 0.5))
  return slot_mask.reshape(b, s, s).diagonal(axis1=1, axis2=2)


def collate(examples: Sequence[Mapping], *, pad_id: int, seq_len: int = 0, length_bucket: int = 16,
            num_slots: int | None = None) -> dict[str, np.ndarray]:
  """Groups -> right-padded `[B, S*S, T]` arrays and `slot_mask [B, S*S]` (S = `num_slots`, default the largest C).

  T = `seq_len` when > 0, else the longest sequence rounded up to
  `length_bucket` (a few compiled shapes). A group with fewer than S
  constitutions has empty slots (slot_mask 0). The layout of the training
  batches (`pragjax.data.groups.collate_groups` of `group_sequences`).
  """
  s = num_slots or max(int(e["num_slots"]) for e in examples)
  groups = []
  for n, e in enumerate(examples):
    try:
      groups.append(group_sequences(e, s))
    except DataError as err:
      raise DataError(f"example {n}: {err}") from err
  return groups_lib.collate_groups(groups, group_size=s * s, pad_id=pad_id, seq_len=seq_len or None,
                                   pad_to_multiple_of=length_bucket)
