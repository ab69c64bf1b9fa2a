"""Checks that run before any model is loaded: the config's numbers, and the training data file.

`check_config(config)` is the one validation pass of every entry point that
trains (and of `runner.train_lm` itself). It checks the common sections
(`train`, `optim`, `mesh`; see `experiments/configs/common.py`) plus any
`extra` rules an entry point adds for its own sections, and raises one
`ConfigError` listing every bad field as the flag that sets it:

  --config.train.log_every=0: must be >= 1
  --config.train.batch_size=12: must be divisible by the 8 batch shards of the mesh (data=1 x fsdp=8)

`validate_data_file(path)` reads a JSONL training file once and checks that
every line is a JSON object of one of the record shapes `tokenize_record`
understands (`pragjax.data.collate`): `messages`, `prompt` + `response`, or
`text`, with string values. A bad line then costs seconds, not the training
that comes before it.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from pragjax.data.errors import DataError
from pragjax.data.jsonl import parse_line

Rule = tuple[str, Callable[[Any], str | None]]


class ConfigError(ValueError):
  """Config values out of range; the message names each flag."""


def _int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def parse_profile_steps(value: str) -> tuple[int, int] | None:
  """`train.profile_steps` -> (first, last) step traced, 1-based and inclusive; None when off.

  "" = off; "A:B" = steps A to B; "N" = N steps from step 3 (after the compiling first step and one more).
  Raises ValueError naming the format otherwise."""
  text = str(value).strip()
  if not text:
    return None
  try:
    if ":" in text:
      first, last = (int(p) for p in text.split(":"))
    else:
      count = int(text)
      first, last = 3, 2 + count
  except ValueError:
    raise ValueError(f"must be '' (off), 'FIRST:LAST' (steps, inclusive) or a count N (N steps from step 3), "
                     f"got {value!r}") from None
  if first < 1 or last < first:
    raise ValueError(f"must name steps 1 <= FIRST <= LAST (or a count >= 1), got {value!r}")
  return first, last


def profile_steps_problem(value) -> str | None:
  if not isinstance(value, str):
    return f"must be a string such as '5:8' or '3', got {type(value).__name__}"
  try:
    parse_profile_steps(value)
  except ValueError as e:
    return str(e)
  return None


def at_least(lo: int) -> Callable[[Any], str | None]:
  """An integer >= lo."""
  def check(v):
    if not _int(v):
      return f"must be an integer, got {type(v).__name__}"
    return None if v >= lo else f"must be >= {lo}"
  return check


def positive_real(v) -> str | None:
  if not _real(v) or not math.isfinite(v):
    return "must be a finite number"
  return None if v > 0 else "must be > 0"


def in_range(lo: float, hi: float, *, hi_open: bool = True) -> Callable[[Any], str | None]:
  """A finite number in [lo, hi) (or [lo, hi] with hi_open=False)."""
  def check(v):
    if not _real(v) or not math.isfinite(v):
      return "must be a finite number"
    ok = lo <= v < hi if hi_open else lo <= v <= hi
    return None if ok else f"must lie in [{lo}, {hi}{')' if hi_open else ']'}"
  return check


def non_negative_real(v) -> str | None:
  if not _real(v) or not math.isfinite(v):
    return "must be a finite number"
  return None if v >= 0 else "must be >= 0"


TRAIN_RULES: tuple[Rule, ...] = (
    ("train.steps", at_least(1)),
    ("train.batch_size", at_least(1)),
    ("train.seq_len", at_least(2)),
    ("train.accum_steps", at_least(1)),
    ("train.log_every", at_least(1)),
    ("train.checkpoint_every", at_least(1)),
    ("train.keep_checkpoints", at_least(1)),
    ("train.epochs", at_least(1)),
    ("train.length_bucket", at_least(0)),
    ("train.eval_every", at_least(0)),
    ("train.eval_batches", at_least(0)),
    ("train.profile_steps", profile_steps_problem),
)

OPTIM_RULES: tuple[Rule, ...] = (
    ("optim.lr", positive_real),
    ("optim.warmup_steps", at_least(0)),
    ("optim.total_steps", at_least(0)),
    ("optim.end_lr_factor", non_negative_real),
    ("optim.weight_decay", non_negative_real),
    ("optim.clip_norm", non_negative_real),
    ("optim.eps", positive_real),
    ("optim.b1", in_range(0.0, 1.0)),
    ("optim.b2", in_range(0.0, 1.0)),
    ("optim.decay", in_range(0.0, 1.0)),
    ("optim.momentum", in_range(0.0, 1.0)),
    ("optim.ignore_topk", in_range(0.0, 1.0)),
    ("optim.ignore_topk_sample_size", at_least(1)),
)

DATA_RULES: tuple[Rule, ...] = (
    ("data.validate_max_mb", non_negative_real),
    ("data.eval_path", lambda v: None if isinstance(v, str) else f"must be a path (a string), got {type(v).__name__}"),
)


def _get(config, dotted: str):
  """The value at `a.b.c`, or a sentinel when a section or field is absent."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return _MISSING
    node = node[part]
  return node


_MISSING = object()


def _flag(name: str, value) -> str:
  return f"--config.{name}={value!r}" if isinstance(value, str) else f"--config.{name}={value}"


def _mesh_errors(config, batch_size) -> list[str]:
  """The mesh section builds on the visible devices, and the batch divides over its batch shards."""
  mesh_cfg = _get(config, "mesh")
  if mesh_cfg is _MISSING:
    return []
  import jax

  from pragjax import sharding as sharding_lib

  try:
    mesh = sharding_lib.mesh_from_config(dict(mesh_cfg))
  except ValueError as e:
    fields = " ".join(_flag(f"mesh.{k}", v) for k, v in dict(mesh_cfg).items())
    return [f"{fields}: {e}"]
  if not _int(batch_size) or batch_size < 1:
    return []
  axes = dict(sharding_lib.DEFAULT_RULES)["batch"]  # the mesh axes `batch_sharding` splits the batch over
  axes = [a for a in ((axes,) if isinstance(axes, str) else axes or ()) if a in mesh.shape]
  shards = math.prod(mesh.shape[a] for a in axes)
  errors = []
  if batch_size % shards:
    layout = " x ".join(f"{a}={mesh.shape[a]}" for a in axes)
    errors.append(f"{_flag('train.batch_size', batch_size)}: must be divisible by the {shards} batch shards of "
                  f"the mesh ({layout}; set by --config.mesh.*)")
  if batch_size % jax.process_count():
    errors.append(f"{_flag('train.batch_size', batch_size)}: must be divisible by the {jax.process_count()} "
                  f"processes")
  return errors


SECTIONS = ("train", "optim", "data", "mesh")


def check_config(config, *, derived: Sequence[str] = (), extra: Iterable[Rule] = (),
                 sections: Sequence[str] = SECTIONS) -> None:
  """Raises `ConfigError` listing every out-of-range field (see the module docstring).

  Args:
    config: the entry point's ConfigDict; absent sections and fields are skipped.
    derived: fields (e.g. `"train.steps"`) for which 0 means "derived by the entry point" (e.g. from
      `train.epochs`).
    extra: the entry point's own `(field, check)` rules; a check returns None or what is wrong.
    sections: the common sections the entry point uses (`mesh`: the mesh builds on the visible devices
      and, with `train`, divides `train.batch_size`).
  """
  errors = []
  rules = [r for r in (*TRAIN_RULES, *OPTIM_RULES, *DATA_RULES) if r[0].split(".")[0] in sections]
  for name, check in (*rules, *extra):
    value = _get(config, name)
    if value is _MISSING or (name in derived and value == 0):
      continue
    problem = check(value)
    if problem:
      tail = " (or 0: derived)" if name in derived else ""
      errors.append(f"{_flag(name, value)}: {problem}{tail}")
  batch, accum = _get(config, "train.batch_size"), _get(config, "train.accum_steps")
  if "train" not in sections:
    batch = _MISSING
  if _int(batch) and _int(accum) and batch >= 1 and accum >= 1 and batch % accum:
    errors.append(f"{_flag('train.batch_size', batch)}: must be divisible by --config.train.accum_steps={accum} "
                  f"(micro-batches of equal size)")
  if "mesh" in sections:
    errors.extend(_mesh_errors(config, batch if batch is not _MISSING else None))
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


# -- training data --------------------------------------------------------------------------------------------


def _record_problem(record: Mapping) -> str | None:
  """What keeps `record` from being a training record (see the module docstring), or None."""
  if "messages" in record:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
      return "field 'messages' must be a non-empty list of {role, content} messages"
    for i, m in enumerate(messages):
      if not isinstance(m, dict):
        return f"messages[{i}] must be an object, got {type(m).__name__}"
      for key in ("role", "content"):
        if not isinstance(m.get(key), str):
          return f"field messages[{i}].{key} must be a string" if key in m else f"missing field messages[{i}].{key}"
    if not any(m["role"] == "assistant" for m in messages):
      return "messages has no 'assistant' message, so nothing to train on"
    return None
  names = ("prompt", "response") if "prompt" in record else ("text",) if "text" in record else ()
  if not names:
    return f"missing field: expected 'messages', 'prompt' + 'response', or 'text' (present: {sorted(record)})"
  for name in names:
    if name not in record:
      return f"missing field {name!r} (present: {sorted(record)})"
    if not isinstance(record[name], str):
      return f"field {name!r} must be a string, got {type(record[name]).__name__}"
  return None


def validate_data_file(path: str) -> int:
  """Checks every line of the JSONL training file `path` in one pass -> the record count.

  Raises `DataError` naming the file and the 1-based line of the first bad line.
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: JSONL file not found")
  count = 0
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
      if not raw.strip():
        continue
      problem = _record_problem(parse_line(raw, path, lineno))
      if problem:
        raise DataError(f"{path}, line {lineno}: {problem}")
      count += 1
  if not count:
    raise DataError(f"{path}: no records (the file is empty)")
  return count


def maybe_validate_data(data_cfg: Mapping[str, Any]) -> int | None:
  """`validate_data_file(data.train_path)` (and of `data.eval_path` when set) when `data.validate` is on and
  the file is at most `data.validate_max_mb` MiB (0 = any size); the training file's record count, None when
  skipped."""
  if not data_cfg.get("validate", True):
    return None
  limit = float(data_cfg.get("validate_max_mb", 256))
  counts = []
  for path in (data_cfg.get("train_path") or "", data_cfg.get("eval_path") or ""):
    if not path or (limit and os.path.isfile(path) and os.path.getsize(path) > limit * 2**20):
      counts.append(None)
    else:
      counts.append(validate_data_file(path))
  return counts[0]
