"""JSON Lines files: one JSON object per line; blank lines are skipped, line numbers stay true.

- `JsonlSource(path)`: a grain random-access source. It indexes the byte
  offsets of the non-blank lines once (three int64 arrays, no parsed records
  in memory) and parses line `i` when asked for record `i`.
- `read_jsonl(path)`: every record, parsed and checked eagerly.
- `validate_jsonl(path, required_fields)`: every record has every field.
- `write_json(path, value)`: one JSON document (reports, caches), written by
  process 0 only and atomically (a kill mid-write never leaves a truncated file).

Every failure is a `DataError` naming the file and the 1-based line number
(`data.jsonl, line 3: invalid JSON (Expecting value at column 1)`).
"""

from __future__ import annotations

import json
import operator
import os
from typing import Iterator, Sequence

import jax
import numpy as np

from pragjax import paths
from pragjax.data.errors import DataError

_BOM = b"\xef\xbb\xbf"


def _where(path: str, lineno: int) -> str:
  return f"{path}, line {lineno}"


def parse_line(raw: bytes, path: str, lineno: int) -> dict:
  """The JSON object on one line (bytes, newline optional); DataError naming `path` and `lineno` otherwise."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{_where(path, lineno)}: not UTF-8 ({e})") from e
  try:
    record = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{_where(path, lineno)}: invalid JSON ({e.msg} at column {e.colno})") from e
  if not isinstance(record, dict):
    raise DataError(f"{_where(path, lineno)}: expected a JSON object, got {type(record).__name__} "
                    f"({text.strip()[:60]!r})")
  return record


def _index_lines(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(starts, ends, line numbers) of the non-blank lines of `path`; each int64 [N], ends exclude the newline."""
  starts, ends, linenos = [], [], []
  offset = 0
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      skip = len(_BOM) if lineno == 1 and raw.startswith(_BOM) else 0
      if raw[skip:].strip():
        starts.append(offset + skip)
        ends.append(offset + len(raw.rstrip(b"\r\n")))
        linenos.append(lineno)
      offset += len(raw)
  return (np.asarray(starts, np.int64), np.asarray(ends, np.int64), np.asarray(linenos, np.int64))


def _iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
  """(1-based line number, raw bytes) of each non-blank line."""
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if lineno == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
      if raw.strip():
        yield lineno, raw


def _check_path(path) -> str:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: JSONL file not found")
  return path


class JsonlSource:
  """Random access to the records of a JSONL file (grain `RandomAccessDataSource`).

  `len(src)` is the number of non-blank lines; `src[i]` parses the i-th of them
  (raising DataError with its true line number if it is not a JSON object).
  Reads use `os.pread`, so threads may share one source; pickling (grain
  worker processes) reopens the file on first access.
  """

  def __init__(self, path):
    self.path = _check_path(path)
    self._starts, self._ends, self._linenos = _index_lines(self.path)
    self._fd = None
    self._pid = None

  def __len__(self) -> int:
    return len(self._starts)

  def line_number(self, index: int) -> int:
    """The 1-based line number in the file of record `index`."""
    return int(self._linenos[self._check_index(index)])

  def _check_index(self, index) -> int:
    i = operator.index(index)
    if not -len(self) <= i < len(self):
      raise IndexError(f"{self.path}: record index {i} out of range for {len(self)} records")
    return i % len(self)

  def _file(self) -> int:
    if self._fd is None or self._pid != os.getpid():
      self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
    return self._fd

  def __getitem__(self, index) -> dict:
    i = self._check_index(index)
    start, end = int(self._starts[i]), int(self._ends[i])
    raw = os.pread(self._file(), end - start, start)
    return parse_line(raw, self.path, int(self._linenos[i]))

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_fd"] = state["_pid"] = None
    return state

  def __del__(self):
    if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
      os.close(self._fd)

  def __repr__(self) -> str:
    return f"JsonlSource({self.path!r}, records={len(self)})"


def read_jsonl(path) -> list[dict]:
  """Every record of a JSONL file, parsed now; DataError naming file and line for the first bad line."""
  path = _check_path(path)
  return [parse_line(raw, path, lineno) for lineno, raw in _iter_lines(path)]


def validate_jsonl(path, required_fields: Sequence[str]) -> int:
  """Checks that every line is a JSON object holding every field in `required_fields` -> the record count.

  Raises DataError naming the file, the line and the first missing field.
  """
  if isinstance(required_fields, str):
    required_fields = (required_fields,)
  path = _check_path(path)
  count = 0
  for lineno, raw in _iter_lines(path):
    record = parse_line(raw, path, lineno)
    missing = [f for f in required_fields if f not in record]
    if missing:
      raise DataError(f"{_where(path, lineno)}: missing field {missing[0]!r} (required: {list(required_fields)}; "
                      f"present: {sorted(record)})")
    count += 1
  return count


def write_json(path: str, value, *, indent: int | None = None, default=float) -> None:
  """Writes `value` as one JSON document at `path`, a local path or a URI (process 0 only; atomic:
  `pragjax.paths.write_text`)."""
  if jax.process_index() != 0:
    return
  paths.write_text(path, json.dumps(value, indent=indent, default=default))
