"""Preference pairs: records -> (chosen, rejected) token groups for the `[B, 2, T]` batches of DPO.

Record shapes (one JSONL line each; `parse_pair` checks them):

- strings: `{"prompt": str, "chosen": str, "rejected": str}`. Each side is
  `[BOS] prompt response EOS`, the prompt tokenised with the tokenizer's
  leading special tokens and the response alone, as
  `pragjax.data.collate.prompt_response_ids_and_mask` does for SFT records;
  targets are the response and its EOS. No chat template is applied: give
  messages for that.
- chat pairs: `{"chosen": [messages], "rejected": [messages]}`, two
  conversations sharing their leading turns. The longest common prefix of
  the two message lists is the prompt; the rest of each list is that side's
  response, which must hold an assistant turn.
- chat with an explicit prompt: `{"prompt": [messages], "chosen": [messages],
  "rejected": [messages]}`: the conversations `prompt + chosen` and
  `prompt + rejected`.
A message is `{"role": str, "content": str}`. Conversations are rendered with
the tokenizer's chat template (`pragjax.data.collate.chat_ids_and_mask`, which
finds each assistant turn's span by rendering prefixes); targets are the
assistant turns of the response with the template's end-of-turn tokens,
never a turn of the prompt, whatever its role.

A pair tokenises to a group of two examples, slot 0 the chosen and slot 1
the rejected sequence, each `{"input_ids": [L] int32, "loss_mask": [L] int32}`
(`loss_mask[t] = 1` where token t is a response target; the data contract of
`pragjax.data.collate`). A pair whose chosen or rejected response does not fit
in `max_length` tokens, EOS included, is dropped (`tokenize_pair` returns
None; the iterator counts it): a cut response would be compared with a whole
one. Every malformed record is a `DataError` naming the file, the line and
the field (`prefs.jsonl, line 3: field 'chosen' must be ...`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from pragjax.data.collate import chat_ids_and_mask, prompt_response_ids_and_mask
from pragjax.data.errors import DataError
from pragjax.data.jsonl import JsonlSource

__all__ = ["SIDES", "parse_pair", "PairSource", "read_pairs", "validate_pairs", "pair_where", "tokenize_pair",
           "pair_group"]

SIDES = ("chosen", "rejected")  # group slot 0, slot 1
ASSISTANT = "assistant"


def _messages(value: Any, field: str, where: str) -> list[dict]:
  if not isinstance(value, list):
    raise DataError(f"{where}: field {field!r} must be a string or a list of {{role, content}} messages, "
                    f"got {type(value).__name__}")
  out = []
  for i, m in enumerate(value):
    if not isinstance(m, dict):
      raise DataError(f"{where}: field {field}[{i}] must be an object with 'role' and 'content', "
                      f"got {type(m).__name__}")
    for key in ("role", "content"):
      if key not in m:
        raise DataError(f"{where}: missing field {field}[{i}].{key}")
      if not isinstance(m[key], str):
        raise DataError(f"{where}: field {field}[{i}].{key} must be a string, got {type(m[key]).__name__}")
    out.append({"role": m["role"], "content": m["content"]})
  return out


def _common_prefix(a: Sequence[dict], b: Sequence[dict]) -> int:
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


def parse_pair(record: Any, where: str = "record") -> dict:
  """A record of any shape above -> `{"format": "text" | "chat", "prompt", "chosen", "rejected"}`.

  "text": the three fields are strings. "chat": `prompt` is a list of
  messages (possibly empty) and `chosen` / `rejected` are the responses'
  messages, each holding an assistant turn. DataError names `where` and the field.
  """
  if not isinstance(record, Mapping):
    raise DataError(f"{where}: expected a JSON object with 'chosen' and 'rejected', got {type(record).__name__}")
  for side in SIDES:
    if side not in record:
      raise DataError(f"{where}: missing field {side!r} (a preference pair needs 'chosen' and 'rejected', and "
                      f"'prompt' unless they are conversations sharing their prompt turns; present: {sorted(record)})")
  chosen, rejected = record["chosen"], record["rejected"]
  if isinstance(chosen, str) or isinstance(rejected, str):
    for side in SIDES:
      if not isinstance(record[side], str):
        other = SIDES[1 - SIDES.index(side)]
        raise DataError(f"{where}: field {side!r} must be a string like {other!r}, got {type(record[side]).__name__}")
    if "prompt" not in record:
      raise DataError(f"{where}: missing field 'prompt' (string responses need a string prompt; present: "
                      f"{sorted(record)})")
    if not isinstance(record["prompt"], str):
      raise DataError(f"{where}: field 'prompt' must be a string when 'chosen' and 'rejected' are strings, "
                      f"got {type(record['prompt']).__name__}")
    return {"format": "text", "prompt": record["prompt"], "chosen": chosen, "rejected": rejected}
  chosen, rejected = _messages(chosen, "chosen", where), _messages(rejected, "rejected", where)
  if "prompt" in record:
    prompt = _messages(record["prompt"], "prompt", where)
  else:
    n = _common_prefix(chosen, rejected)
    prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
  shared = "" if "prompt" in record else " after the turns both sides share"
  for side, messages in (("chosen", chosen), ("rejected", rejected)):
    if not any(m["role"] == ASSISTANT for m in messages):
      raise DataError(f"{where}: field {side!r} has no {ASSISTANT!r} message{shared}, so nothing to compare")
  return {"format": "chat", "prompt": prompt, "chosen": chosen, "rejected": rejected}


def pair_where(source, index: int) -> str:
  """"FILE, line N" for record `index` of a JSONL source, else "record N"."""
  if hasattr(source, "line_number") and getattr(source, "path", None):
    return f"{source.path}, line {source.line_number(index)}"
  return f"record {index}"


class PairSource:
  """Random access to the parsed pairs of a JSONL file or an in-memory list of records.

  `src[i]` is `parse_pair` of record i (parsed when asked), DataError naming
  the file and line. `path` is the file's (None for lists), for fingerprints.
  """

  def __init__(self, records):
    self._records = JsonlSource(records) if isinstance(records, (str, bytes)) or hasattr(records, "__fspath__") \
        else records
    self.path = getattr(self._records, "path", None)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    return parse_pair(self._records[index], self.where(index))

  def where(self, index: int) -> str:
    """"FILE, line N" (JSONL) or "record N" (a list) for record `index`."""
    return pair_where(self._records, index)

  def __repr__(self) -> str:
    return f"PairSource({self.path or f'{len(self)} records'!r})"


def read_pairs(records) -> list[dict]:
  """Every pair of a JSONL path or a list of records, parsed now (DataError for the first bad one)."""
  src = PairSource(records)
  return [src[i] for i in range(len(src))]


def validate_pairs(records) -> int:
  """Parses every pair once (DataError for the first bad one) -> the number of pairs; DataError if there are none."""
  src = PairSource(records)
  for i in range(len(src)):
    src[i]
  if not len(src):
    raise DataError(f"{src.path or 'records'}: no preference pairs")
  return len(src)


def _chat_side(pair: Mapping, side: str, tokenizer, where: str) -> tuple[list[int], list[int]]:
  prompt = pair["prompt"]
  ids, mask = chat_ids_and_mask(prompt + pair[side], tokenizer, f"{where}, {side}")
  if prompt:
    try:
      prompt_ids = list(tokenizer.apply_chat_template(prompt, tokenize=True))
    except Exception as e:  # jinja2 TemplateError, no template, ...
      raise DataError(f"{where}, prompt: chat template failed ({type(e).__name__}: {e})") from e
    if ids[:len(prompt_ids)] != prompt_ids:
      raise DataError(f"{where}, {side}: the chat template's tokens of the prompt turns are not a prefix of the "
                      f"conversation's tokens, so the response cannot be located exactly")
    mask[:len(prompt_ids)] = [0] * len(prompt_ids)  # the prompt's own assistant turns are context, not targets
  return ids, mask


def tokenize_pair(pair: Mapping, tokenizer, *, max_length: int, where: str = "record"
                  ) -> list[dict[str, np.ndarray]] | None:
  """A parsed pair -> `[chosen, rejected]` examples (see the module docstring), or None when a response does not fit.

  `where` names the record in DataErrors (e.g. a chat template that does not
  render incrementally).
  """
  if max_length < 2:
    raise DataError(f"max_length must be >= 2, got {max_length}")
  group = []
  for side in SIDES:
    if pair["format"] == "text":
      ids, mask = prompt_response_ids_and_mask(pair["prompt"], pair[side], tokenizer)
    else:
      ids, mask = _chat_side(pair, side, tokenizer, where)
    if len(ids) > max_length:
      return None
    mask = np.asarray(mask, np.int32)
    if len(mask):
      mask[0] = 0
    if not mask.any():
      return None
    group.append({"input_ids": np.asarray(ids, np.int32), "loss_mask": mask})
  return group


def pair_group(source: PairSource, tokenizer, *, max_length: int):
  """`tokenize(index) -> group | None` over `source` (the `tokenize` of `pragjax.data.groups.GroupIterator`, whose
  examples are then the record indices `range(len(source))`)."""

  def tokenize(index):
    i = int(index)
    return tokenize_pair(source[i], tokenizer, max_length=max_length, where=source.where(i))

  return tokenize
