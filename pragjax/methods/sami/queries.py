"""Queries (e.g. Reddit posts to summarise) from JSONL or JSON files, and a stable held-out split.

Accepted files: JSONL with one object per line (`field` holds the query), a
JSON list of such objects or of strings, or a JSON object of columns
(`{field: {"0": ..., "1": ...}}`, as the paper's response files store them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

from pragjax.data.errors import DataError


def load_queries(path: str, field: str = "query") -> list[str]:
  """Query strings of `path` (module docstring), in file order; DataError names the file and record."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except OSError as e:
    raise DataError(f"cannot read queries file {path}: {e.strerror or e}") from e
  if path.endswith(".jsonl"):
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise DataError(f"{path}, line {n}: not valid JSON ({e.msg})") from e
  else:
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(data, dict):
      if field not in data:
        raise DataError(f"{path}: no column {field!r} (columns: {sorted(data)}); set data.query_field")
      col = data[field]
      records = [{field: col[k]} for k in sorted(col, key=lambda x: (len(str(x)), str(x)))] if isinstance(col, dict) \
          else [{field: v} for v in col]
    elif isinstance(data, list):
      records = [r if isinstance(r, dict) else {field: r} for r in data]
    else:
      raise DataError(f"{path}: expected a JSON list or object of columns, got {type(data).__name__}")
  out = []
  for n, r in enumerate(records):
    value = r.get(field) if isinstance(r, dict) else None
    if not isinstance(value, str) or not value.strip():
      raise DataError(f"{path}, record {n}: field {field!r} must be a non-empty string (present: "
                      f"{sorted(r) if isinstance(r, dict) else type(r).__name__})")
    out.append(value)
  if not out:
    raise DataError(f"{path}: no queries")
  return out


def is_heldout(query: str, buckets: int) -> bool:
  """A stable split: the query's hash is 0 mod `buckets`."""
  return int.from_bytes(hashlib.sha1(query.encode("utf-8")).digest()[:8], "big") % buckets == 0


def split(queries: Sequence[str], buckets: int) -> tuple[list[str], list[str]]:
  """(training, held-out) queries by `is_heldout`."""
  train = [q for q in queries if not is_heldout(q, buckets)]
  held = [q for q in queries if is_heldout(q, buckets)]
  return train, held
