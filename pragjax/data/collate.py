"""Records -> token arrays with loss masks -> padded or packed batches.

Batch contract (what `pragjax.train` consumes; numpy arrays):

- `input_ids [B, T] int32`, `attention_mask [B, T] int32` (1 = real token);
- `loss_mask [B, T] int32`: 1 where token t is a target, i.e. its prediction
  from the prefix is trained: a loss pairs `token_logprobs(...)[:, t-1]` with
  `loss_mask[:, t]`. Prompt tokens and padding are 0; response tokens, the EOS
  ending a response included, are 1. The first token of every example (and so
  of every packed segment) is never a target;
- packed batches also carry `segment_ids [B, T] int32` (0 = padding, 1, 2, ...
  per example in the row) and `positions [B, T] int32` (0, 1, ... within each
  segment, 0 on padding).

Record shapes understood by `tokenize_record` (field names remappable):

- `{"messages": [{"role", "content"}, ...]}`: rendered with the tokenizer's chat
  template; targets are the tokens of the assistant turns as the template
  renders them (content plus the template's end-of-turn tokens). A turn's span
  is found by rendering and tokenizing the conversation up to it (with the
  generation prompt) and through it, never by searching for strings.
- `{"prompt": str, "response": str}`: `prompt` tokenized with the tokenizer's
  leading special tokens (BOS), `response` tokenized alone and followed by EOS;
  targets are the response and its EOS. Tokenizing the two apart puts a token
  boundary where generation would start, as at sampling time.
- `{"text": str}`: tokenized with the tokenizer's special tokens; every token
  after the first is a target.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np

from pragjax.data.errors import DataError

FIELDS = ("messages", "prompt", "response", "text")
ASSISTANT_ROLE = "assistant"
_SIDES = ("left", "right")


def _where(index: int | None, source: str | None) -> str:
  parts = [p for p in (source, None if index is None else f"record {index}") if p]
  return ", ".join(parts) if parts else "record"


def _field_names(fields: Mapping[str, str] | None) -> dict[str, str]:
  names = dict(zip(FIELDS, FIELDS))
  for key, value in (fields or {}).items():
    if key not in names:
      raise DataError(f"fields: unknown key {key!r}; expected some of {FIELDS}")
    names[key] = value
  return names


def _get_str(record: Mapping, name: str, where: str) -> str:
  if name not in record:
    raise DataError(f"{where}: missing field {name!r} (present: {sorted(record)})")
  value = record[name]
  if not isinstance(value, str):
    raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
  return value


def _check_messages(messages: Any, name: str, where: str) -> list[dict]:
  if not isinstance(messages, list) or not messages:
    raise DataError(f"{where}: field {name!r} must be a non-empty list of {{role, content}} messages")
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      raise DataError(f"{where}: {name}[{i}] must be an object, got {type(m).__name__}")
    for key in ("role", "content"):
      if key not in m:
        raise DataError(f"{where}: missing field {name}[{i}].{key}")
      if not isinstance(m[key], str):
        raise DataError(f"{where}: field {name}[{i}].{key} must be a string, got {type(m[key]).__name__}")
  if not any(m["role"] == ASSISTANT_ROLE for m in messages):
    raise DataError(f"{where}: {name} has no {ASSISTANT_ROLE!r} message, so nothing to train on")
  return messages


def _render(tokenizer, messages, where, **kwargs) -> list[int]:
  try:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, **kwargs))
  except DataError:
    raise
  except Exception as e:  # jinja2 TemplateError, TokenizerError (no template), ...
    raise DataError(f"{where}: chat template failed on {len(messages)} messages ({type(e).__name__}: {e})") from e


def chat_ids_and_mask(messages: Sequence[dict], tokenizer, where: str = "record") -> tuple[list[int], list[int]]:
  """Token ids of a rendered conversation and its mask: 1 on the tokens of assistant turns.

  The span of assistant turn i is [len(ids(render(messages[:i], add_generation_prompt=True))),
  len(ids(render(messages[:i+1])))); both prefixes must be prefixes of the
  full rendering's ids (DataError otherwise: the template or tokenizer does not
  render conversations incrementally, and spans cannot be recovered exactly).
  """
  ids = _render(tokenizer, messages, where)
  mask = [0] * len(ids)
  for i, message in enumerate(messages):
    if message["role"] != ASSISTANT_ROLE:
      continue
    before = _render(tokenizer, messages[:i], where, add_generation_prompt=True)
    through = _render(tokenizer, messages[:i + 1], where)
    for prefix, what in ((before, "up to"), (through, "through")):
      if ids[:len(prefix)] != prefix:
        raise DataError(
            f"{where}: the chat template's tokens {what} message {i} are not a prefix of the whole conversation's "
            f"tokens, so assistant spans cannot be located exactly (template rewrites earlier turns, or the "
            f"tokenizer merges across the boundary)")
    mask[len(before):len(through)] = [1] * (len(through) - len(before))
  return ids, mask


def _leading_specials(tokenizer, text: str) -> list[int] | None:
  """The special tokens the tokenizer puts before `text`'s own ids (e.g. [BOS]); None if `text` has no ids."""
  with_specials = tokenizer.encode(text, add_special_tokens=True)
  bare = tokenizer.encode(text, add_special_tokens=False)
  if not bare:
    return None
  for lead in range(len(with_specials) - len(bare) + 1):
    if with_specials[lead:lead + len(bare)] == bare:
      return with_specials[:lead]
  raise DataError(f"tokenizer adds special tokens inside the text of {text[:40]!r}; cannot split prompt ids")


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
  """`prompt`'s ids after the leading special tokens the tokenizer adds (BOS), without trailing ones (EOS)."""
  lead = _leading_specials(tokenizer, prompt)
  if lead is None:  # An empty prompt: learn the leading specials from any text with ids.
    lead = next((x for x in map(functools.partial(_leading_specials, tokenizer), ("a", "0", "x y")) if x is not None),
                [])
  return list(lead) + list(tokenizer.encode(prompt, add_special_tokens=False))


def prompt_response_ids_and_mask(prompt: str, response: str, tokenizer) -> tuple[list[int], list[int]]:
  """(ids, mask) of `[BOS] prompt response EOS` with 1 on the response and its EOS."""
  eos = tokenizer.eos_token_id
  if eos is None:
    raise DataError(f"tokenizer from {getattr(tokenizer, 'source', '')!r} has no EOS token to end responses")
  prompt_ids = _prompt_ids(tokenizer, prompt)
  response_ids = list(tokenizer.encode(response, add_special_tokens=False)) + [eos]
  return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


def tokenize_record(record: Mapping, tokenizer, *, max_length: int, fields: Mapping[str, str] | None = None,
                    index: int | None = None, source: str | None = None) -> dict[str, np.ndarray] | None:
  """One record -> `{"input_ids": [L] int32, "loss_mask": [L] int32}` with L <= max_length, or None.

  The record shape is chosen by the first field present among `messages`,
  `prompt`, `text` (names remapped by `fields`, e.g. `{"prompt": "question",
  "response": "answer"}`). Truncation keeps the first `max_length` tokens.
  Returns None when no target survives (truncation removed them all, or a
  one-token text): the caller counts and reports these, never trains on them.
  DataError names the missing or malformed field, the record `index` and the
  `source` file when given.
  """
  if max_length < 2:
    raise DataError(f"max_length must be >= 2 (a target needs a token before it), got {max_length}")
  where = _where(index, source)
  if not isinstance(record, Mapping):
    raise DataError(f"{where}: expected a dict record, got {type(record).__name__}")
  names = _field_names(fields)
  if names["messages"] in record:
    messages = _check_messages(record[names["messages"]], names["messages"], where)
    ids, mask = chat_ids_and_mask(messages, tokenizer, where)
  elif names["prompt"] in record:
    prompt = _get_str(record, names["prompt"], where)
    response = _get_str(record, names["response"], where)
    ids, mask = prompt_response_ids_and_mask(prompt, response, tokenizer)
  elif names["text"] in record:
    ids = list(tokenizer.encode(_get_str(record, names["text"], where), add_special_tokens=True))
    mask = [1] * len(ids)
  else:
    raise DataError(f"{where}: missing field: expected {names['messages']!r}, {names['prompt']!r} + "
                    f"{names['response']!r}, or {names['text']!r} (present: {sorted(record)})")
  ids = np.asarray(ids[:max_length], np.int32)
  mask = np.asarray(mask[:max_length], np.int32)
  if len(mask):
    mask[0] = 0  # Nothing precedes the first token.
  if not mask.any():
    return None
  return {"input_ids": ids, "loss_mask": mask}


def tokenize_records(records: Sequence[Mapping], tokenizer, *, max_length: int,
                     fields: Mapping[str, str] | None = None, source: str | None = None
                     ) -> tuple[list[dict[str, np.ndarray]], int]:
  """`tokenize_record` over a list -> (kept examples, number dropped for having no target left)."""
  kept = []
  for i, record in enumerate(records):
    example = tokenize_record(record, tokenizer, max_length=max_length, fields=fields, index=i, source=source)
    if example is not None:
      kept.append(example)
  return kept, len(records) - len(kept)


def _lengths(examples: Sequence[Mapping], seq_len: int) -> list[int]:
  lengths = []
  for i, ex in enumerate(examples):
    n = len(ex["input_ids"])
    if len(ex["loss_mask"]) != n:
      raise DataError(f"example {i}: input_ids has {n} tokens but loss_mask has {len(ex['loss_mask'])}")
    if n > seq_len:
      raise DataError(f"example {i} has {n} tokens, more than seq_len={seq_len}; tokenize with max_length<=seq_len")
    lengths.append(n)
  return lengths


def pad_batch(examples: Sequence[Mapping], seq_len: int, pad_id: int,
              padding_side: str = "right") -> dict[str, np.ndarray]:
  """Examples (1-D `input_ids`, `loss_mask`) -> `input_ids`, `attention_mask`, `loss_mask`, each [B, seq_len] int32.

  Any other per-token array of an example (same length as `input_ids`, e.g.
  `ref_logp`) is padded alongside with zeros, keeping its dtype.

  `padding_side="left"` puts the real tokens at the end of each row.
  """
  if padding_side not in _SIDES:
    raise DataError(f"padding_side must be one of {_SIDES}, got {padding_side!r}")
  lengths = _lengths(examples, seq_len)
  batch = {"input_ids": np.full((len(examples), seq_len), pad_id, np.int32),
           "attention_mask": np.zeros((len(examples), seq_len), np.int32),
           "loss_mask": np.zeros((len(examples), seq_len), np.int32)}
  # Other per-token arrays (e.g. stored reference log-probs) pad the same way, with zeros.
  extra = [k for k in examples[0] if k not in ("input_ids", "loss_mask")] if examples else []
  for k in extra:
    batch[k] = np.zeros((len(examples), seq_len), np.asarray(examples[0][k]).dtype)
  for row, (ex, n) in enumerate(zip(examples, lengths)):
    span = slice(seq_len - n, seq_len) if padding_side == "left" else slice(0, n)
    batch["input_ids"][row, span] = ex["input_ids"]
    batch["attention_mask"][row, span] = 1
    batch["loss_mask"][row, span] = ex["loss_mask"]
    for k in extra:
      if len(ex[k]) != n:
        raise DataError(f"example {row}: {k} has {len(ex[k])} entries for {n} tokens")
      batch[k][row, span] = ex[k]
  return batch


def first_fit_row(fills: Sequence[int], length: int, seq_len: int) -> int | None:
  """The first row whose fill leaves room for `length` more tokens, or None."""
  for row, fill in enumerate(fills):
    if fill + length <= seq_len:
      return row
  return None


def first_fit(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
  """Greedy first-fit of example lengths into rows of `seq_len` -> each row's example indices, in input order."""
  rows, fills = [], []
  for i, n in enumerate(lengths):
    if n == 0:
      continue
    row = first_fit_row(fills, n, seq_len)
    if row is None:
      rows.append([])
      fills.append(0)
      row = len(rows) - 1
    rows[row].append(i)
    fills[row] += n
  return rows


def pack_examples(examples: Sequence[Mapping], seq_len: int, pad_id: int,
                  num_rows: int | None = None) -> dict[str, np.ndarray]:
  """Packs whole examples into rows by greedy first-fit (deterministic) -> a packed batch [R, seq_len].

  Example i goes to the first row with room for all of it (a new row if
  none); no example is split across rows. R is the number of rows used, or
  `num_rows` (extra rows all padding; DataError if the examples need more).
  Returns the contract's keys with `segment_ids` and `positions`; each
  segment's first token has loss_mask 0 (its prediction would come from the
  previous segment).
  """
  rows = first_fit(_lengths(examples, seq_len), seq_len)
  if num_rows is not None and len(rows) > num_rows:
    raise DataError(f"{len(examples)} examples need {len(rows)} rows of {seq_len} tokens, more than {num_rows}")
  shape = (len(rows) if num_rows is None else num_rows, seq_len)
  batch = {"input_ids": np.full(shape, pad_id, np.int32)}
  for key in ("attention_mask", "loss_mask", "segment_ids", "positions"):
    batch[key] = np.zeros(shape, np.int32)
  for r, members in enumerate(rows):
    start = 0
    for segment, i in enumerate(members, start=1):
      n = len(examples[i]["input_ids"])
      span = slice(start, start + n)
      batch["input_ids"][r, span] = examples[i]["input_ids"]
      batch["attention_mask"][r, span] = 1
      batch["loss_mask"][r, span] = examples[i]["loss_mask"]
      batch["loss_mask"][r, start] = 0
      batch["segment_ids"][r, span] = segment
      batch["positions"][r, span] = np.arange(n, dtype=np.int32)
      start += n
  return batch


def bucket_length(n: int, *, multiple: int = 16, buckets: Sequence[int] = ()) -> int:
  """The padded length for `n` tokens: the smallest of `buckets` >= n (n
  itself past the last one), or, without buckets, n rounded up to
  `multiple`. Padding variable-length scoring batches to few lengths keeps
  jitted functions from recompiling for every new length (training batches
  are always padded to `seq_len` and compile once)."""
  for b in sorted(buckets):
    if b >= n:
      return b
  if buckets:
    return n
  return -(-n // multiple) * multiple
