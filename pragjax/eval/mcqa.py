"""Multiple-choice and pairwise evaluation by option likelihood (PUB, AltPrag, BIG-bench style).

Records. Every loader returns `Record`s: `id`, `task`, `prompt`, `options`
(the candidate continuations), `answer` (the index of the correct option, or
a list of target scores, one per option, where every option with the top
score is correct) and an optional `stem` (the question without its answer
cue, used by the letter mode; None = `prompt`).

- `load_bigbench(path)`: a BIG-bench JSON task (`task.json`, or a directory
  holding one) with `examples: [{input, target_scores: {option: score}}]`.
  The prompt is `task_prefix + example_input_prefix + input [+ choices] +
  example_output_prefix`, with BIG-bench's defaults ("", "\\nQ: ", "\\nA: ");
  `append_choices_to_input` (default true) appends `choice_prefix + option`
  for each option in file order (BIG-bench shuffles them with its own rng).
  Zero-shot only. A directory whose subdirectories hold `task.json` files is
  a task with subtasks: each becomes the task `parent/subtask`.
- `load_jsonl(path)` / `load_csv(path)`: `{prompt, options, answer}` per
  line/row (optional `id`, `stem`). `answer` is the option's index or its
  text; CSV options are one `options` column holding a JSON list, or columns
  `option_0 .. option_k` (trailing empty cells dropped). In CSV an answer
  equal to an option's text is that option, else a number is an index.
- `load_task(path)`: any of the above by its extension (a directory is a
  BIG-bench task); `subsample` keeps a seeded subset per task and
  `permute_options` shuffles each record's options (seeded).
Every bad record is a `DataError` naming the file, the line (or example
index) and the field.

Scoring (`score_records`). Each option's log-probability after its prompt,
for all options of all records at once, through `score_rows`: the (context,
option) rows are deduplicated, sorted by length, cut into batches of
`batch_size` rows padded to a few bucket lengths (one compilation per
bucket), sharded over the mesh's batch axes when a mesh is given, and scored
with the lean token log-prob path (`pragjax.models.logprobs`), which
projects chunk by chunk and never builds `[B, T, V]` logits; the per-token
float32 log-probs are summed on the host in float64. A pairwise comparison
is a record with two options. Modes:
- `sum`: `log p(option | prompt)`, summed over the option's tokens;
- `mean`: the same divided by the option's token count;
- `pmi`: `log p(option | prompt) - log p(option | neutral_prompt)`;
- `letter`: the options listed after the stem as "A. ...", "B. ..." and a
  cue ("Answer:"); the score of option i is `log p(letter_i | listing)`.
The prediction is the option with the highest score (the first on ties).

Tokenization (`continuation_ids`). The option's tokens are exactly those of
the concatenated text, never of the option tokenized alone: the prompt's
trailing spaces and tabs move onto the option (`"A: " + "yes"` is scored as
`" yes"` after `"A:"`, so every option of a prompt starts at the same
character and carries its own leading space), and `separator` (" ") joins a
prompt and an option that meet without whitespace (`"Answer:" + "yes"` ->
`"Answer: yes"`). The context is then the longest prefix of the tokens of
`prompt + option` that equals a prefix of the prompt's own tokens; the
option's tokens are the rest. With byte-level BPE or SentencePiece, whose
word tokens carry their leading space, the context is the prompt's own
tokens; where a tokenizer merges across the boundary, the option starts at
the first token that differs from the prompt's own tokenization (the merged
token). With `chat_template`
the prompt is the user turn of the tokenizer's template, rendered with the
generation prompt, and the option starts the assistant turn.

Metrics (`summarize`). Accuracy with a 95% Wilson interval per task, per
group of subtasks (`parent/...`) and overall: micro (all records pooled) and
macro (the mean of the task accuracies, with a normal-approximation interval
from the tasks' binomial variances), beside each task's chance rate (the mean
of `#correct options / #options`, i.e. `1 / #options` with one correct
option) and majority rate (the share of the most frequent correct label
string when every record of the task has the same option set, else of the
most frequent correct position).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import string
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pragjax import ops, paths
from pragjax.data import collate
from pragjax.data.errors import DataError
from pragjax.data.jsonl import JsonlSource
from pragjax.eval import batching
from pragjax.eval.tables import markdown_table

MODES = ("sum", "mean", "pmi", "letter")
LETTERS = string.ascii_uppercase
DEFAULT_NEUTRAL_PROMPT = "Answer:"
DEFAULT_LETTER_CUE = "Answer:"
DEFAULT_LETTER_FORMAT = "{letter}. {option}"
# Padded row lengths (at most 1.5x the longest row); past the last, multiples of 1024.
DEFAULT_BUCKETS = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
Z95 = 1.959963984540054  # Standard normal 97.5% quantile.
BIGBENCH_FILE = "task.json"
BIGBENCH_DEFAULTS = {"task_prefix": "", "example_input_prefix": "\nQ: ", "example_output_prefix": "\nA: ",
                     "choice_prefix": "\n  choice: "}
_MOVABLE = " \t"  # Trailing prompt characters that move onto the option.


@dataclasses.dataclass
class Record:
  """One multiple-choice item; `answer` is an option index or one target score per option."""
  id: str
  task: str
  prompt: str
  options: list[str]
  answer: int | list[float]
  stem: str | None = None

  def correct_options(self) -> list[int]:
    """Indices of the correct options (every option with the top target score)."""
    if isinstance(self.answer, int):
      return [self.answer]
    top = max(self.answer)
    return [i for i, s in enumerate(self.answer) if s == top]

  def is_correct(self, prediction: int) -> bool:
    return int(prediction) in self.correct_options()


# ----------------------------------------------------------------------------- loaders


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_options(options, where: str) -> list[str]:
  if not isinstance(options, list) or len(options) < 2:
    raise DataError(f"{where}: field 'options' must be a list of at least 2 strings, got {options!r:.80}")
  for i, o in enumerate(options):
    if not isinstance(o, str) or not o:
      raise DataError(f"{where}: field 'options[{i}]' must be a non-empty string, got {o!r:.60}")
  if len(set(options)) != len(options):
    dupes = sorted({o for o in options if options.count(o) > 1})
    raise DataError(f"{where}: field 'options' repeats {dupes!r:.80}")
  return list(options)


def _parse_answer(answer, options: list[str], where: str, *, text_first: bool = False) -> int | list[float]:
  """An index, an option's text, or a list of target scores -> an index or the scores."""
  if isinstance(answer, str):
    if answer in options:
      return options.index(answer)
    if text_first and answer.strip().lstrip("-").isdigit():
      answer = int(answer.strip())
    else:
      raise DataError(f"{where}: field 'answer' {answer!r:.60} is not one of the options {options!r:.120}")
  if isinstance(answer, list):
    if len(answer) != len(options) or not all(_is_number(s) for s in answer):
      raise DataError(f"{where}: field 'answer' as target scores must be {len(options)} numbers (one per option), "
                      f"got {answer!r:.80}")
    return [float(s) for s in answer]
  if isinstance(answer, bool) or not isinstance(answer, int):
    raise DataError(f"{where}: field 'answer' must be an option index, an option's text or a list of target "
                    f"scores, got {type(answer).__name__}")
  if not 0 <= answer < len(options):
    raise DataError(f"{where}: field 'answer' index {answer} is out of range for {len(options)} options")
  return answer


def _optional_str(obj: Mapping, name: str, where: str) -> str | None:
  value = obj.get(name)
  if value is None or value == "":
    return None
  if not isinstance(value, str):
    raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
  return value


def _record_from_fields(obj: Mapping, task: str, index: int, where: str, *, text_first: bool = False) -> Record:
  if "prompt" not in obj:
    raise DataError(f"{where}: missing field 'prompt' (present: {sorted(obj)})")
  if not isinstance(obj["prompt"], str):
    raise DataError(f"{where}: field 'prompt' must be a string, got {type(obj['prompt']).__name__}")
  for name in ("options", "answer"):
    if name not in obj:
      raise DataError(f"{where}: missing field {name!r} (present: {sorted(obj)})")
  options = _check_options(obj["options"], where)
  answer = _parse_answer(obj["answer"], options, where, text_first=text_first)
  rid = obj.get("id")
  if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
    raise DataError(f"{where}: field 'id' must be a string or an integer, got {type(rid).__name__}")
  return Record(id=f"{task}/{index}" if rid in (None, "") else str(rid), task=task, prompt=obj["prompt"],
                options=options, answer=answer, stem=_optional_str(obj, "stem", where))


def _task_name(path: str) -> str:
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def load_jsonl(path: str, *, task: str | None = None) -> list[Record]:
  """Records of a JSONL file of `{prompt, options, answer[, id, stem]}`; `task` defaults to the file's stem."""
  source = JsonlSource(path)
  task = task or _task_name(path)
  out = [_record_from_fields(source[i], task, i, f"{path}, line {source.line_number(i)}") for i in range(len(source))]
  if not out:
    raise DataError(f"{path}: no records")
  return out


def _csv_options(row: dict, option_columns: list[str], where: str) -> list:
  if "options" in row and row["options"] not in (None, ""):
    try:
      return json.loads(row["options"])
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: field 'options' must be a JSON list of strings ({e.msg} at column {e.colno})") from e
  cells = [row.get(c) or "" for c in option_columns]
  while cells and not cells[-1]:
    cells.pop()
  if "" in cells:
    raise DataError(f"{where}: field {option_columns[cells.index('')]!r} is empty but a later option column is not")
  return cells


def load_csv(path: str, *, task: str | None = None) -> list[Record]:
  """Records of a CSV file with columns `prompt`, `answer` and `options` (a JSON list) or `option_0..option_k`."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: CSV file not found")
  task = task or _task_name(path)
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    option_columns = sorted((c for c in columns if c.startswith("option_") and c[7:].isdigit()),
                            key=lambda c: int(c[7:]))
    for name in ("prompt", "answer"):
      if name not in columns:
        raise DataError(f"{path}, line 1: missing column {name!r} (header: {columns})")
    if "options" not in columns and not option_columns:
      raise DataError(f"{path}, line 1: missing column 'options' (a JSON list) or 'option_0', 'option_1', ... "
                      f"(header: {columns})")
    out, line = [], reader.line_num
    for i, row in enumerate(reader):
      where = f"{path}, line {line + 1}"
      line = reader.line_num
      if None in row:
        raise DataError(f"{where}: {len(row[None])} more cell(s) than the {len(columns)} header columns")
      obj = {k: v for k, v in row.items() if k in ("prompt", "answer", "id", "stem")}
      obj["options"] = _csv_options(row, option_columns, where)
      out.append(_record_from_fields(obj, task, i, where, text_first=True))
  if not out:
    raise DataError(f"{path}: no records")
  return out


def _read_json_object(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
  if not isinstance(data, dict):
    raise DataError(f"{path}: expected a JSON object (a BIG-bench task), got {type(data).__name__}")
  return data


def _bigbench_format(data: dict, path: str) -> dict:
  fmt = {}
  for key, default in BIGBENCH_DEFAULTS.items():
    value = data.get(key, default)
    if not isinstance(value, str):
      raise DataError(f"{path}: field {key!r} must be a string, got {type(value).__name__}")
    fmt[key] = value
  append = data.get("append_choices_to_input", True)
  if not isinstance(append, bool):
    raise DataError(f"{path}: field 'append_choices_to_input' must be true or false, got {append!r}")
  fmt["append_choices_to_input"] = append
  return fmt


def _bigbench_record(example, fmt: dict, task: str, index: int, where: str) -> Record:
  if not isinstance(example, dict):
    raise DataError(f"{where}: expected an object, got {type(example).__name__}")
  if not isinstance(example.get("input"), str):
    raise DataError(f"{where}: field 'input' must be a string, got "
                    f"{type(example.get('input')).__name__ if 'input' in example else 'nothing'}")
  scores = example.get("target_scores")
  if scores is None:
    raise DataError(f"{where}: missing field 'target_scores' (a generative example with only 'target'? only "
                    f"multiple-choice tasks are supported)")
  if not isinstance(scores, dict) or len(scores) < 2:
    raise DataError(f"{where}: field 'target_scores' must map at least 2 options to scores, got {scores!r:.80}")
  options = _check_options(list(scores), where)
  bad = [o for o, s in scores.items() if not _is_number(s)]
  if bad:
    raise DataError(f"{where}: field 'target_scores' gives {bad[0]!r:.40} the non-numeric score {scores[bad[0]]!r}")
  values = [float(scores[o]) for o in options]
  answer = values.index(max(values)) if values.count(max(values)) == 1 else values
  stem = fmt["task_prefix"] + fmt["example_input_prefix"] + example["input"]
  choices = "".join(fmt["choice_prefix"] + o for o in options) if fmt["append_choices_to_input"] else ""
  return Record(id=f"{task}/{index}", task=task, prompt=stem + choices + fmt["example_output_prefix"],
                options=options, answer=answer, stem=stem)


def _subtask_dirs(directory: str) -> list[str]:
  return sorted(d for d in os.listdir(directory) if os.path.isfile(os.path.join(directory, d, BIGBENCH_FILE)))


def load_bigbench(path: str, *, task: str | None = None) -> list[Record]:
  """Records of a BIG-bench JSON task: a `task.json` file, or a directory with one and/or subtask directories."""
  if os.path.isdir(path):
    directory, file = path, os.path.join(path, BIGBENCH_FILE)
    task = task or _task_name(path)
  else:
    directory, file = None, path
    task = task or (_task_name(os.path.dirname(os.path.abspath(path))) if os.path.basename(path) == BIGBENCH_FILE
                    else _task_name(path))
  subtasks = _subtask_dirs(directory) if directory else []
  out = []
  for sub in subtasks:
    out.extend(load_bigbench(os.path.join(directory, sub), task=f"{task}/{sub}"))
  if not os.path.isfile(file):
    if subtasks:
      return out
    raise DataError(f"{file}: not found; a BIG-bench task needs a {BIGBENCH_FILE} or subtask directories holding one")
  data = _read_json_object(file)
  examples = data.get("examples")
  if examples is None and subtasks:
    return out
  if not isinstance(examples, list) or not examples:
    raise DataError(f"{file}: field 'examples' must be a non-empty list (and the directory has no subtasks)")
  fmt = _bigbench_format(data, file)
  out.extend(_bigbench_record(e, fmt, task, i, f"{file}, examples[{i}]") for i, e in enumerate(examples))
  return out


def load_task(path: str, *, task: str | None = None) -> list[Record]:
  """Records of one task file or directory: `.jsonl`, `.csv`, else a BIG-bench task (`.json` or a directory)."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".jsonl":
    return load_jsonl(path, task=task)
  if ext == ".csv":
    return load_csv(path, task=task)
  if os.path.isdir(path) or ext == ".json":
    return load_bigbench(path, task=task)
  if not os.path.exists(path):
    raise DataError(f"{path}: task not found")
  raise DataError(f"{path}: unknown task format; expected a .jsonl, .csv or BIG-bench .json file or directory")


def subsample(records: Sequence[Record], max_per_task: int, seed: int = 0) -> list[Record]:
  """At most `max_per_task` records of each task (0 = all): a seeded random subset in the original order."""
  if max_per_task <= 0:
    return list(records)
  by_task: dict[str, list[int]] = {}
  for i, r in enumerate(records):
    by_task.setdefault(r.task, []).append(i)
  keep = []
  for k, (name, idx) in enumerate(sorted(by_task.items())):
    if len(idx) > max_per_task:
      idx = sorted(np.random.default_rng([seed, k]).permutation(idx)[:max_per_task].tolist())
    keep.extend(idx)
  return [records[i] for i in sorted(keep)]


def permute_options(records: Sequence[Record], seed: int) -> list[Record]:
  """Each record's options in a seeded random order (the answer follows its option).

  Likelihood scores do not depend on the order, but the letter mode and the
  majority-position rate do: in some files the correct option always comes
  first (BIG-bench `hhh_alignment`). The prompt is kept as it is.
  """
  out = []
  for i, r in enumerate(records):
    perm = np.random.default_rng([seed, i]).permutation(len(r.options)).tolist()
    answer = perm.index(r.answer) if isinstance(r.answer, int) else [r.answer[j] for j in perm]
    out.append(dataclasses.replace(r, options=[r.options[j] for j in perm], answer=answer))
  return out


# ----------------------------------------------------------------------------- tokenization


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
  n = min(len(a), len(b))
  for i in range(n):
    if a[i] != b[i]:
      return i
  return n


def leading_ids(tokenizer, chat_template: bool) -> list[int]:
  """The special tokens put before a prompt's text (BOS); none with a chat template (it writes its own)."""
  return [] if chat_template else collate._prompt_ids(tokenizer, "")  # pylint: disable=protected-access


def render_prompt(tokenizer, prompt: str, chat_template: bool) -> str:
  """`prompt`, or its rendering as the user turn of the chat template followed by the assistant's header."""
  if not chat_template:
    return prompt
  return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)


def continuation_ids(tokenizer, prompt: str, option: str, *, chat_template: bool = False, separator: str = " ",
                     lead: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
  """(context ids, option ids) whose concatenation is the tokenization of the joined text (module docstring).

  `lead` (default `leading_ids(tokenizer, chat_template)`) is prepended to
  both tokenizations. ValueError if the option or the context has no token.
  """
  lead = list(leading_ids(tokenizer, chat_template) if lead is None else lead)
  text = render_prompt(tokenizer, prompt, chat_template)
  head = text.rstrip(_MOVABLE)
  cont = text[len(head):] + option
  if head and cont and not head[-1].isspace() and not cont[0].isspace():
    cont = separator + cont
  ctx = lead + tokenizer.encode(head, add_special_tokens=False)
  full = lead + tokenizer.encode(head + cont, add_special_tokens=False)
  k = _lcp(ctx, full)
  if k == len(full):
    raise ValueError(f"option {option!r:.60} after prompt {prompt[-60:]!r} has no token of its own")
  if k == 0:
    raise ValueError(f"prompt {prompt[:60]!r} gives no context token before option {option!r:.60} (no BOS and an "
                     f"empty prompt?)")
  return full[:k], full[k:]


def letter_prompt(record: Record, *, cue: str = DEFAULT_LETTER_CUE, line_format: str = DEFAULT_LETTER_FORMAT) -> str:
  """The record's stem, its options as lettered lines ("A. ..."), and the cue."""
  if len(record.options) > len(LETTERS):
    raise ValueError(f"record {record.id}: {len(record.options)} options, more than the {len(LETTERS)} letters")
  lines = [line_format.format(letter=LETTERS[i], option=o) for i, o in enumerate(record.options)]
  stem = record.prompt if record.stem is None else record.stem
  return "\n".join([stem.rstrip()] + lines + [cue])


# ----------------------------------------------------------------------------- batched scoring


@functools.lru_cache(maxsize=16)
def _row_scorer(graphdef, chunk_size: int, out_sharding):
  """jit: (state, ids, mask, pos [B, K], targets [B, K]) -> float32 [B, K] log p(targets | prefix up to pos).

  Only the K scored positions of each row go through the output projection
  (gathered from the final hidden states), so a long prompt costs its
  transformer blocks but no vocabulary projection, and nothing `[B, T, V]`
  is built.
  """
  def fn(state, input_ids, attention_mask, pos, targets):
    model = nnx.merge(graphdef, state)
    hidden = model(input_ids, attention_mask, compute_logits=False).final_hidden
    h = jnp.take_along_axis(hidden, pos[..., None], axis=1)  # [B, K, D]
    return ops.chunked_token_logprobs(h, model.output_embedding(h.dtype), targets, chunk_size=chunk_size,
                                      softcap=model.config.final_logit_softcapping)

  return jax.jit(fn) if out_sharding is None else jax.jit(fn, out_shardings=out_sharding)


@functools.lru_cache(maxsize=16)
def _next_token_scorer(graphdef, out_sharding):
  """jit: (state, ids, mask, pos [B]) -> float32 [B, V] next-token log-probabilities after position `pos`."""
  def fn(state, input_ids, attention_mask, pos):
    model = nnx.merge(graphdef, state)
    hidden = model(input_ids, attention_mask, compute_logits=False).final_hidden
    h = jnp.take_along_axis(hidden, pos[:, None, None], axis=1)[:, 0]  # [B, D]
    logits = jnp.einsum("bd,dv->bv", h, model.output_embedding(h.dtype).astype(h.dtype),
                        preferred_element_type=jnp.float32)
    cap = model.config.final_logit_softcapping
    if cap is not None:
      logits = jnp.tanh(logits / cap) * cap
    return jax.nn.log_softmax(logits, axis=-1)

  return jax.jit(fn) if out_sharding is None else jax.jit(fn, out_shardings=out_sharding)


def _pad_rows(rows: Sequence[tuple[Sequence[int], int]], length: int, pad_id: int, side: str,
              k: int | None = None) -> dict:
  """`input_ids`, `attention_mask` `[B, length]` int32, and for each row's scored tail of `n` tokens the hidden
  positions that predict them and their ids, `pos`, `targets` `[B, k]` (k = the longest tail; unused slots point
  at position 0 and are masked by `valid`)."""
  k = k or max(n for _, n in rows)
  out = {name: np.zeros((len(rows), length), np.int32) for name in ("input_ids", "attention_mask")}
  out.update({name: np.zeros((len(rows), k), np.int32) for name in ("pos", "targets", "valid")})
  out["input_ids"][:] = pad_id
  for b, (ids, n) in enumerate(rows):
    start = length - len(ids) if side == "left" else 0
    out["input_ids"][b, start:start + len(ids)] = ids
    out["attention_mask"][b, start:start + len(ids)] = 1
    first = start + len(ids) - n  # the first scored token; the hidden state before it predicts it
    out["pos"][b, :n] = np.arange(first - 1, first - 1 + n)
    out["targets"][b, :n] = ids[len(ids) - n:]
    out["valid"][b, :n] = 1
  return out


def bucket(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The padded length of a batch whose longest row has `n` tokens."""
  if buckets and n <= max(buckets):
    return collate.bucket_length(n, buckets=buckets)
  return collate.bucket_length(n, multiple=1024)


def score_rows(model, rows: Sequence[tuple[Sequence[int], int]], *, pad_id: int, batch_size: int = 16, mesh=None,
               padding_side: str = "right", buckets: Sequence[int] = DEFAULT_BUCKETS, chunk_size: int = 128,
               progress: bool = False, desc: str = "mcqa") -> np.ndarray:
  """Sum of the log-probabilities of the last `n` tokens of each row `(ids, n)` -> float64 `[N]`.

  Rows whose scored tail is one token and that share everything before it
  (the letters of a lettered prompt, one-token options of one prompt) are
  answered by one forward pass of their shared prefix: its next-token
  log-probabilities give every candidate. The other rows are sorted by
  length (longest first) and cut into batches of `batch_size` rows by
  `pragjax.eval.batching.chunks` (rounded up to a multiple of the mesh's batch
  shards; the last batch is filled with copies of its last row), each padded
  on `padding_side` to `bucket(longest row)` tokens; only the scored positions
  go through the output projection. With a `mesh` (default: the current
  `jax.set_mesh` one), each batch is sharded over the mesh's batch axes (every
  process passes all rows) and the scores come back replicated. Positions
  follow the attention mask, so the padding side does not change a score.
  """
  if padding_side not in ("left", "right"):
    raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  for i, (ids, n) in enumerate(rows):
    if not 1 <= n < len(ids):
      raise ValueError(f"row {i}: scores {n} of its {len(ids)} tokens; needs 1 <= n < len(ids) (a context token)")
  mesh = batching.resolve_mesh(mesh)
  graphdef, state = nnx.split(model)
  replicated = None if mesh is None else NamedSharding(mesh, P())
  out = np.zeros((len(rows),), np.float64)

  groups: dict[tuple, list[int]] = {}  # shared prefix -> rows scoring one token after it
  for i, (ids, n) in enumerate(rows):
    if n == 1:
      groups.setdefault(tuple(ids[:-1]), []).append(i)
  singles = [i for g in groups.values() if len(g) == 1 for i in g]
  grouped = [g for g in groups.values() if len(g) > 1]
  rest = sorted([i for i, (_, n) in enumerate(rows) if n > 1] + singles, key=lambda i: -len(rows[i][0]))
  prefixes = sorted(grouped, key=lambda g: -len(rows[g[0]][0]))
  batches = [("rows", c) for c in batching.chunks(rest, batch_size, mesh=mesh)]
  batches += [("next", c) for c in batching.chunks(prefixes, batch_size, mesh=mesh)]
  bar = None
  if progress and jax.process_index() == 0:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(batches), desc=desc, unit="batch", dynamic_ncols=True)
  for kind, c in batches:
    if kind == "rows":
      chunk = [rows[i] for i in c.items]
      k = bucket(max(n for _, n in chunk), (1, 2, 4, 8, 16) + tuple(buckets))
      batch = _pad_rows(chunk, bucket(len(chunk[0][0]), buckets), pad_id, padding_side, k)
      fn = _row_scorer(graphdef, chunk_size, replicated)
      lp = fn(state, *batching.place([batch[name] for name in ("input_ids", "attention_mask", "pos", "targets")],
                                     mesh))
      sums = (np.asarray(lp, np.float64) * batch["valid"]).sum(axis=1)
      out[c.real] = sums[:c.n]
    else:
      chunk = [(list(rows[g[0]][0]), 1) for g in c.items]
      batch = _pad_rows(chunk, bucket(len(chunk[0][0]), buckets), pad_id, padding_side, 1)
      fn = _next_token_scorer(graphdef, replicated)
      lp = np.asarray(fn(state, *batching.place([batch["input_ids"], batch["attention_mask"], batch["pos"][:, 0]],
                                                mesh)), np.float64)
      for b, g in enumerate(c.real):
        for i in g:
          out[i] = lp[b, rows[i][0][-1]]
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  return out


def _fit(ctx: list[int], opt: list[int], n_lead: int, max_length: int, where: str) -> list[int]:
  """`ctx + opt`, the context cut from the left (after its `n_lead` leading specials) to `max_length` tokens."""
  if not max_length or len(ctx) + len(opt) <= max_length:
    return ctx + opt
  keep = max_length - len(opt) - n_lead
  if keep < 1:
    raise ValueError(f"{where}: the option alone has {len(opt)} tokens; max_length={max_length} leaves no context")
  return ctx[:n_lead] + ctx[len(ctx) - keep:] + opt


def _kinds(modes: Sequence[str]) -> list[str]:
  unknown = [m for m in modes if m not in MODES]
  if unknown or not modes:
    raise ValueError(f"unknown scoring mode(s) {unknown}; expected some of {MODES}")
  kinds = []
  if any(m in ("sum", "mean", "pmi") for m in modes):
    kinds.append("cond")
  if "pmi" in modes:
    kinds.append("neutral")
  if "letter" in modes:
    kinds.append("letter")
  return kinds


def score_records(model, tokenizer, records: Sequence[Record], *, modes: Sequence[str] = MODES,
                  neutral_prompt: str = DEFAULT_NEUTRAL_PROMPT, letter_cue: str = DEFAULT_LETTER_CUE,
                  letter_format: str = DEFAULT_LETTER_FORMAT, chat_template: bool = False, separator: str = " ",
                  max_length: int = 0, batch_size: int = 16, mesh=None, padding_side: str = "right",
                  buckets: Sequence[int] = DEFAULT_BUCKETS, progress: bool = False) -> dict[str, list[np.ndarray]]:
  """Option scores of every record under every mode: `{mode: [float64 [num_options] per record]}`.

  Every (prompt, option) row that any mode needs (conditional, after
  `neutral_prompt`, lettered) goes through one `score_rows` call; identical
  rows are scored once. `max_length` (0 = no limit) cuts long contexts from
  the left, keeping the leading special tokens.
  """
  kinds = _kinds(modes)
  lead = leading_ids(tokenizer, chat_template)
  letters = [LETTERS[i] for i in range(max(len(r.options) for r in records))] if records else []
  index: dict[tuple, int] = {}
  plan: dict[str, list[list[int]]] = {k: [] for k in kinds}
  for r in records:
    for kind in kinds:
      prompt = {"cond": r.prompt, "neutral": neutral_prompt}.get(kind)
      options = letters[:len(r.options)] if kind == "letter" else r.options
      if kind == "letter":
        prompt = letter_prompt(r, cue=letter_cue, line_format=letter_format)
      row_ids = []
      for o in options:
        ctx, opt = continuation_ids(tokenizer, prompt, o, chat_template=chat_template, separator=separator, lead=lead)
        ids = _fit(ctx, opt, len(lead), max_length, f"record {r.id}, option {o!r:.40}")
        row_ids.append(index.setdefault((tuple(ids), len(opt)), len(index)))
      plan[kind].append(row_ids)
  rows = list(index)
  sums = score_rows(model, rows, pad_id=tokenizer.pad_token_id or 0, batch_size=batch_size, mesh=mesh,
                    padding_side=padding_side, buckets=buckets, progress=progress)
  counts = np.asarray([n for _, n in rows], np.float64)
  out = {}
  for mode in modes:
    if mode == "sum":
      out[mode] = [sums[i] for i in plan["cond"]]
    elif mode == "mean":
      out[mode] = [sums[i] / counts[i] for i in plan["cond"]]
    elif mode == "pmi":
      out[mode] = [sums[i] - sums[j] for i, j in zip(plan["cond"], plan["neutral"])]
    else:
      out[mode] = [sums[i] for i in plan["letter"]]
  return out


def predictions(scores: Sequence[np.ndarray]) -> np.ndarray:
  """The highest-scoring option of each record (the first on ties), int `[N]`."""
  return np.asarray([int(np.argmax(s)) for s in scores], np.int64)


# ----------------------------------------------------------------------------- metrics


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion `k / n`; (nan, nan) for n = 0.

  `(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)` with `p = k/n`.
  """
  if n <= 0:
    return float("nan"), float("nan")
  if not 0 <= k <= n:
    raise ValueError(f"wilson_interval: k={k} outside 0..n={n}")
  p, z2 = k / n, z * z
  denom = 1.0 + z2 / n
  center = (p + z2 / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
  lo = 0.0 if k == 0 else max(0.0, center - half)  # exact ends where rounding would miss them
  hi = 1.0 if k == n else min(1.0, center + half)
  return lo, hi


def accuracy_stats(correct: Sequence[bool]) -> dict:
  """`n`, `correct`, `accuracy` and its 95% Wilson interval `ci_low`, `ci_high`."""
  n, k = len(correct), int(np.sum(correct))
  lo, hi = wilson_interval(k, n)
  return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi}


def chance_rate(records: Sequence[Record]) -> float:
  """Expected accuracy of a uniformly random pick: mean of `#correct options / #options`."""
  return float(np.mean([len(r.correct_options()) / len(r.options) for r in records]))


def majority_rate(records: Sequence[Record]) -> tuple[float, str]:
  """(share of the most frequent correct answer, "label" or "position").

  By label string when every record has the same set of options (yes/no,
  True/False), else by position; a record with several correct options
  counts its first.
  """
  same_labels = len({frozenset(r.options) for r in records}) == 1
  keys = [r.options[r.correct_options()[0]] if same_labels else r.correct_options()[0] for r in records]
  _, counts = np.unique(np.asarray(keys, dtype=object).astype(str), return_counts=True)
  return float(counts.max() / len(records)), "label" if same_labels else "position"


def _task_summary(records: Sequence[Record], preds: Mapping[str, np.ndarray]) -> dict:
  majority, by = majority_rate(records)
  sizes = [len(r.options) for r in records]
  return {"n": len(records), "options_min": min(sizes), "options_max": max(sizes), "chance": chance_rate(records),
          "majority": majority, "majority_by": by,
          "modes": {m: accuracy_stats([r.is_correct(p) for r, p in zip(records, ps)]) for m, ps in preds.items()}}


def macro_stats(task_stats: Sequence[dict], z: float = Z95) -> dict:
  """Mean of the task accuracies, with `mean +- z sqrt(sum_i p_i (1 - p_i) / n_i) / T` clipped to [0, 1]."""
  acc = np.asarray([s["accuracy"] for s in task_stats], np.float64)
  n = np.asarray([s["n"] for s in task_stats], np.float64)
  mean = float(acc.mean())
  half = z * math.sqrt(float(np.sum(acc * (1 - acc) / n))) / len(acc)
  return {"tasks": len(acc), "accuracy": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half)}


def summarize(records: Sequence[Record], scores: Mapping[str, Sequence[np.ndarray]]) -> dict:
  """Per-task, per-group (`parent/subtask`) and overall (micro, macro) accuracies of each mode's predictions."""
  if not records:
    raise ValueError("summarize: no records")
  preds = {m: predictions(s) for m, s in scores.items()}
  by_task: dict[str, list[int]] = {}
  for i, r in enumerate(records):
    by_task.setdefault(r.task, []).append(i)

  def part(idx):
    return _task_summary([records[i] for i in idx], {m: p[idx] for m, p in preds.items()})

  tasks = {t: part(np.asarray(idx)) for t, idx in by_task.items()}
  groups: dict[str, list[int]] = {}
  for t, idx in by_task.items():
    if "/" in t:
      groups.setdefault(t.split("/", 1)[0], []).extend(idx)
  return {
      "tasks": tasks,
      "groups": {g: part(np.asarray(sorted(idx))) for g, idx in groups.items()},
      "overall": {
          "n": len(records),
          "chance_micro": chance_rate(records),
          "majority_micro": float(sum(t["majority"] * t["n"] for t in tasks.values()) / len(records)),
          "chance_macro": float(np.mean([t["chance"] for t in tasks.values()])),
          "majority_macro": float(np.mean([t["majority"] for t in tasks.values()])),
          "micro": {m: accuracy_stats([r.is_correct(q) for r, q in zip(records, p)]) for m, p in preds.items()},
          "macro": {m: macro_stats([t["modes"][m] for t in tasks.values()]) for m in preds},
      },
  }


def _cell(s: dict) -> str:
  return f"{s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def format_table(summary: dict, modes: Sequence[str]) -> str:
  """A markdown table: task, n, options, chance, majority, accuracy [95% CI] per mode; then groups, micro, macro."""
  def row(name, s):
    opts = str(s["options_min"]) if s["options_min"] == s["options_max"] else f"{s['options_min']}-{s['options_max']}"
    return [name, s["n"], opts, f"{s['chance']:.3f}", f"{s['majority']:.3f}"] + [_cell(s["modes"][m]) for m in modes]

  rows = [row(t, s) for t, s in summary["tasks"].items()]
  rows += [row(f"{g} (all)", s) for g, s in summary["groups"].items()]
  o = summary["overall"]
  rows.append(["**micro**", o["n"], "", f"{o['chance_micro']:.3f}", f"{o['majority_micro']:.3f}"]
              + [_cell(o["micro"][m]) for m in modes])
  rows.append([f"**macro** ({len(summary['tasks'])} tasks)", "", "", f"{o['chance_macro']:.3f}",
               f"{o['majority_macro']:.3f}"] + [_cell(o["macro"][m]) for m in modes])
  return markdown_table(rows, ["task", "n", "options", "chance", "majority", *modes],
                        align=["", ">", ">", ">", ">"] + [""] * len(modes))


def examples_table(records: Sequence[Record], scores: Mapping[str, Sequence[np.ndarray]]) -> list[dict]:
  """One JSON-ready row per record: id, task, correct options, and each mode's prediction and option scores."""
  return [{"id": r.id, "task": r.task, "correct": r.correct_options(),
           **{m: {"prediction": int(np.argmax(s[i])), "scores": [float(x) for x in s[i]]} for m, s in scores.items()}}
          for i, r in enumerate(records)]


def plot_summary(summary: dict, modes: Sequence[str], path: str, title: str = "") -> str:
  """PNG: per task, each mode's accuracy with its 95% interval, beside the task's chance and majority rates."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  tasks = list(summary["tasks"])
  x = np.arange(len(tasks))
  width = 0.8 / max(1, len(modes))
  fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) + 2), 4.2))
  for j, m in enumerate(modes):
    stats = [summary["tasks"][t]["modes"][m] for t in tasks]
    acc = np.asarray([s["accuracy"] for s in stats])
    err = np.asarray([[a - s["ci_low"] for a, s in zip(acc, stats)], [s["ci_high"] - a for a, s in zip(acc, stats)]])
    ax.bar(x - 0.4 + width * (j + 0.5), acc, width, yerr=err, capsize=2, label=m)
  for i, t in enumerate(tasks):
    ax.hlines(summary["tasks"][t]["chance"], i - 0.45, i + 0.45, colors="k", linestyles="--",
              label="chance" if i == 0 else None)
    ax.hlines(summary["tasks"][t]["majority"], i - 0.45, i + 0.45, colors="r", linestyles=":",
              label="majority class" if i == 0 else None)
  ax.set_xticks(x, [t.replace("hhh_alignment/", "hhh/") for t in tasks], rotation=30, ha="right", fontsize=8)
  ax.set(ylabel="accuracy (95% Wilson CI)", ylim=(0, 1.05), title=title or "multiple-choice accuracy per task")
  ax.legend(fontsize=7, ncol=3)
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path
