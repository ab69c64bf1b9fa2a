"""Outcome-labelled responses -> CE / pairwise / KTO training examples and their token groups.

Record formats understood by `outcome_record` (one JSONL line each):

- outcome: `{"prompt": str, "response": str, "label": float}` (label 1 = correct,
  0 = wrong; soft labels in [0, 1] allowed for CE);
- outcome with steps: `{"prompt": str, "steps": [str], "label": float}`;
- stepwise (`../shared/data/scan`): `{"question": str, "steps": [str], "scores": [float]}`;
  the response-level label is the last step's score (the estimated
  correctness of the whole solution), the steps are joined by the separator.

Example groups. Every training example is a group of G token sequences of
one prompt plus a label: CE G=1 (the response), DPO/NCA G=2 (chosen,
rejected), KTO G=2 (the response, and the same prompt with another
prompt's response for the KL baseline). `tokenize_group` gives
`{"sequences": [(ids, loss_mask)] * G, "label"}`; `tokenize_sequences` the
same as the sequences that `pragjax.data.groups` batches (the training
iterator is its `GroupIterator`). Batches are `input_ids`, `attention_mask`,
`loss_mask` `[B, G, T]` int32, `slot_mask [B, G]` and `label` float32 (`[B]`
from `collate_groups` here, `[B, G]` from the iterator: each sequence carries
its group's label); `loss_mask[b, g, t] = 1` where token t is a response
target (EOS included), as in `pragjax.data.collate`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np

from pragjax.data import groups as groups_lib
from pragjax.data.errors import DataError
from pragjax.methods.prm.steps import join_steps, prompt_and_response_ids

LOSSES = ("ce", "dpo", "nca", "kto")
PAIRWISE = ("dpo", "nca")

__all__ = ["LOSSES", "PAIRWISE", "outcome_record", "build_pairs", "build_kto_records", "training_records",
           "tokenize_group", "group_size", "group_sequences", "tokenize_sequences", "collate_groups"]


def _label(value, where: str) -> float:
  if isinstance(value, bool):
    return float(value)
  if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
    raise DataError(f"{where}: label must be a number in [0, 1] or a bool, got {value!r}")
  return float(value)


def outcome_record(record: Mapping[str, Any], *, separator: str = "\n\n", where: str = "record") -> dict:
  """Any supported record -> `{"prompt", "response", "label"}` (see the module docstring)."""
  if not isinstance(record, Mapping):
    raise DataError(f"{where}: expected a dict record, got {type(record).__name__}")
  if "question" in record and "scores" in record:
    steps, scores = record.get("steps"), record["scores"]
    if not isinstance(steps, list) or not isinstance(scores, list) or len(steps) != len(scores) or not steps:
      raise DataError(f"{where}: stepwise records need non-empty 'steps' and 'scores' lists of equal length")
    prompt, label = record["question"], _label(scores[-1], f"{where}, scores[-1]")
    response = join_steps(steps, separator)[0]
  elif "prompt" in record:
    prompt = record["prompt"]
    if "response" in record:
      response = record["response"]
    elif "steps" in record:
      response = join_steps(record["steps"], separator)[0]
    else:
      raise DataError(f"{where}: missing field 'response' or 'steps' (present: {sorted(record)})")
    if "label" not in record:
      raise DataError(f"{where}: missing field 'label' (present: {sorted(record)})")
    label = _label(record["label"], f"{where}, label")
  else:
    raise DataError(f"{where}: expected 'prompt' + 'response'/'steps' + 'label', or 'question' + 'steps' + "
                    f"'scores' (present: {sorted(record)})")
  for name, value in (("prompt", prompt), ("response", response)):
    if not isinstance(value, str):
      raise DataError(f"{where}: {name} must be a string, got {type(value).__name__}")
  return {"prompt": prompt, "response": response, "label": label}


def _by_prompt(records: Sequence[Mapping]) -> dict[str, list[Mapping]]:
  groups: dict[str, list[Mapping]] = {}
  for r in records:
    groups.setdefault(r["prompt"], []).append(r)
  return groups


def build_pairs(records: Sequence[Mapping], *, threshold: float = 0.5, max_pairs_per_prompt: int = 0,
                seed: int = 0) -> tuple[list[dict], dict]:
  """Every (correct, incorrect) response pair of each prompt -> `{"prompt", "chosen", "rejected"}`.

  A response is correct when its label is >= `threshold`. Prompts whose
  responses are all correct or all wrong give no pair and are dropped.
  `max_pairs_per_prompt` > 0 keeps that many of a prompt's pairs, drawn
  without replacement with `seed` (a compute budget; 0 = all pairs, the
  reference protocol). Returns (pairs in prompt order, then correct x
  incorrect order; stats).
  """
  rng = np.random.default_rng(seed)
  pairs, dropped, kept, total = [], 0, 0, 0
  for prompt, group in _by_prompt(records).items():
    good = [r["response"] for r in group if r["label"] >= threshold]
    bad = [r["response"] for r in group if r["label"] < threshold]
    if not good or not bad:
      dropped += 1
      continue
    kept += 1
    combos = [(w, l) for w in good for l in bad]
    total += len(combos)
    if 0 < max_pairs_per_prompt < len(combos):
      combos = [combos[i] for i in sorted(rng.choice(len(combos), max_pairs_per_prompt, replace=False))]
    pairs.extend({"prompt": prompt, "chosen": w, "rejected": l} for w, l in combos)
  return pairs, {"prompts_kept": kept, "prompts_dropped": dropped, "pairs": len(pairs), "pairs_available": total}


def build_kto_records(records: Sequence[Mapping], *, seed: int = 0) -> list[dict]:
  """Each record plus `kl_response`: a response of another prompt (KTO's mismatched pair for the KL baseline).

  Responses are matched along a seeded permutation, each record taking the
  response of the next record in it whose prompt differs (DataError when
  every record has the same prompt).
  """
  if len({r["prompt"] for r in records}) < 2:
    raise DataError("KTO's KL baseline needs responses of at least two different prompts")
  order = np.random.default_rng(seed).permutation(len(records))
  out = [dict(r) for r in records]
  n = len(order)
  for pos, i in enumerate(order):
    for step in range(1, n):
      j = order[(pos + step) % n]
      if records[j]["prompt"] != records[i]["prompt"]:
        out[i]["kl_response"] = records[j]["response"]
        break
  return out


def balance_instances(records: Sequence[Mapping], *, threshold: float = 0.5, seed: int = 0) -> tuple[list[dict], dict]:
  """Instance-balanced outcome records (the implicit-PRM paper's CE data): per prompt, as many correct as wrong
  responses (the larger side subsampled at random); prompts with only one kind are dropped.

  Returns (records in their original order, stats: `records`, `prompts`, `prompts_dropped`).
  """
  by_prompt: dict[str, list[int]] = {}
  for i, r in enumerate(records):
    by_prompt.setdefault(r["prompt"], []).append(i)
  rng = np.random.default_rng([0x42414C, seed])
  keep, dropped = [], 0
  for idx in by_prompt.values():
    pos = [i for i in idx if records[i]["label"] >= threshold]
    neg = [i for i in idx if records[i]["label"] < threshold]
    k = min(len(pos), len(neg))
    if not k:
      dropped += 1
      continue
    keep += [pos[j] for j in rng.permutation(len(pos))[:k]] + [neg[j] for j in rng.permutation(len(neg))[:k]]
  kept = [dict(records[i]) for i in sorted(keep)]
  return kept, {"records": len(kept), "prompts": len(by_prompt) - dropped, "prompts_dropped": dropped}


def training_records(records: Sequence[Mapping], loss: str, *, seed: int = 0, threshold: float = 0.5,
                     max_pairs_per_prompt: int = 0, balance: str = "none") -> tuple[list[dict], dict]:
  """Outcome records -> the examples `loss` trains on and stats. CE keeps every record, or with
  `balance="instance"` an instance-balanced subset (`balance_instances`)."""
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if balance not in ("none", "instance"):
    raise ValueError(f"balance must be 'none' or 'instance', got {balance!r}")
  if loss == "ce" and balance == "instance":
    return balance_instances(records, threshold=threshold, seed=seed)
  if loss in PAIRWISE:
    return build_pairs(records, threshold=threshold, max_pairs_per_prompt=max_pairs_per_prompt, seed=seed)
  if loss == "kto":
    recs = [{**r, "label": float(r["label"] >= threshold)} for r in records]
    return build_kto_records(recs, seed=seed), {"records": len(recs)}
  return list(records), {"records": len(records)}


def _sequence(tokenizer, prompt: str, response: str, max_length: int, chat_template
              ) -> tuple[np.ndarray, np.ndarray, bool]:
  """(ids, loss_mask, complete): `complete` is False when `max_length` cut the response (or its EOS)."""
  p_ids, r_ids = prompt_and_response_ids(tokenizer, prompt, response, chat_template=chat_template)
  complete = len(p_ids) + len(r_ids) <= max_length
  ids = np.asarray(p_ids + r_ids, np.int32)[:max_length]
  mask = np.asarray([0] * len(p_ids) + [1] * len(r_ids), np.int32)[:max_length]
  if len(mask):
    mask[0] = 0
  return ids, mask, complete


def tokenize_group(record: Mapping, tokenizer, *, loss: str, max_length: int, chat_template: bool | None = None
                   ) -> dict[str, Any] | None:
  """One training example -> `{"sequences": [(ids, loss_mask), ...], "label": float}` (see the module docstring).

  None (the iterator skips and counts it) when truncation to `max_length` would
  separate a label from its evidence: a labelled response (CE, KTO's own,
  either side of a pair) cut before its EOS, or KTO's KL response left
  without any target token.
  """
  seq = functools.partial(_sequence, tokenizer, max_length=max_length, chat_template=chat_template)
  if loss in PAIRWISE:
    seqs, label, labelled = [seq(record["prompt"], record["chosen"]), seq(record["prompt"], record["rejected"])], 1.0, 2
  elif loss == "kto":
    seqs = [seq(record["prompt"], record["response"]), seq(record["prompt"], record["kl_response"])]
    label, labelled = float(record["label"]), 1
  elif loss == "ce":
    seqs, label, labelled = [seq(record["prompt"], record["response"])], float(record["label"]), 1
  else:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if not all(complete for _, _, complete in seqs[:labelled]) or not all(m.any() for _, m, _ in seqs):
    return None
  return {"sequences": [(ids, mask) for ids, mask, _ in seqs], "label": label}


def group_size(loss: str) -> int:
  """G, the sequences per example of `loss`: 1 for CE, 2 for the pairwise losses and KTO."""
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  return 1 if loss == "ce" else 2


def group_sequences(example: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
  """`tokenize_group`'s example -> the sequences of `pragjax.data.groups` (each carries the group's `label`)."""
  if example is None:
    return None
  return [{"input_ids": ids, "loss_mask": mask, "label": float(example["label"])} for ids, mask in example["sequences"]]


def tokenize_sequences(record: Mapping, tokenizer, *, loss: str, max_length: int, chat_template: bool | None = None
                       ) -> list[dict[str, Any]] | None:
  """`tokenize_group` as the `tokenize` of `pragjax.data.groups.GroupIterator` (None: dropped)."""
  return group_sequences(tokenize_group(record, tokenizer, loss=loss, max_length=max_length,
                                        chat_template=chat_template))


def collate_groups(examples: Sequence[Mapping], seq_len: int, pad_id: int, length_bucket: int = 0
                   ) -> dict[str, np.ndarray]:
  """Example groups -> right-padded `input_ids`, `attention_mask`, `loss_mask` `[B, G, T]` and `label [B]`.

  T = seq_len, or with `length_bucket` > 0 the longest sequence rounded up to
  a multiple of it (at most seq_len): fewer padded tokens, a few compiled shapes.
  The layout is `pragjax.data.groups.collate_groups`'s (what training batches hold).
  """
  g = len(examples[0]["sequences"])
  for i, ex in enumerate(examples):
    if len(ex["sequences"]) != g:
      raise DataError(f"example {i} has {len(ex['sequences'])} sequences, others {g}")
  t = seq_len
  if length_bucket > 0:
    longest = max(len(ids) for ex in examples for ids, _ in ex["sequences"])
    t = min(seq_len, -(-max(longest, 2) // length_bucket) * length_bucket)
  batch = groups_lib.collate_groups([group_sequences(ex) for ex in examples], group_size=g, pad_id=pad_id, seq_len=t)
  batch["label"] = batch["label"][:, 0]
  return batch
