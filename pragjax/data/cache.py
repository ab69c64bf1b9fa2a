"""One result cache: a slow result (sampled solutions, scores of a run) kept beside a run and reused by a rerun.

  samples = cached(workdir, "train_samples", key={"model": config.model.to_dict(), "world": ...},
                   inputs_fingerprint=fingerprint(prompts), compute=lambda: sample(...))

An entry is one file, `DIR/NAME.npz` for arrays (one array or a dict of
arrays) or `DIR/NAME.json` for any JSON value, holding the value and its
metadata: `key` (the full config section(s) that determine the result, as
JSON) and `fingerprint` (a sha256 of the inputs, `fingerprint(...)`). A read
is a hit only when both equal the caller's; otherwise the entry is stale and
is recomputed and replaced (one line says which key fields differ). An
unreadable file (truncated, not an entry) is reported in one line and
recomputed. `DIR` is a local path or a URI (`pragjax.paths`), and writes are
atomic (`pragjax.paths.write_bytes`), so a kill mid-write never leaves a
half entry.

Several processes: every process reads the entry, or computes the value
when there is no valid one (a cached computation is deterministic, so they
all get the same value, and collective computations stay in step); only
process 0 writes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from typing import Any, Callable, Mapping

import jax
import numpy as np

from pragjax import paths

FORMAT = "pragjax-cache-v1"
_META = "__meta__"
_VALUE = "__value__"


def _json_default(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return dataclasses.asdict(x)
  if callable(getattr(x, "to_dict", None)):  # an ml_collections ConfigDict section
    return x.to_dict()
  raise TypeError(f"cannot fingerprint or store a {type(x).__name__} as JSON")


def _canonical(value) -> str:
  return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def fingerprint(*parts) -> str:
  """sha256 (hex) of `parts`: arrays by dtype, shape and bytes; anything else by its canonical JSON (sorted keys;
  numpy values, dataclasses and config sections as their contents). TypeError for anything else."""
  h = hashlib.sha256()
  for part in parts:
    if isinstance(part, (np.ndarray, jax.Array)):
      a = np.ascontiguousarray(np.asarray(part))
      h.update(f"array:{a.dtype.str}:{a.shape}:".encode())
      h.update(a.tobytes())
    else:
      h.update(b"json:" + _canonical(part).encode())
    h.update(b"\x00")
  return h.hexdigest()


def _is_arrays(value) -> bool:
  if isinstance(value, np.ndarray):
    return True
  return isinstance(value, Mapping) and bool(value) and all(
      isinstance(k, str) and k not in (_META, _VALUE) and isinstance(v, np.ndarray) for k, v in value.items())


def _flat(d, prefix=""):
  if not isinstance(d, Mapping):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def _diff(saved, key) -> list[str]:
  a, b = _flat(saved), _flat(key)
  return sorted(k for k in set(a) | set(b) if a.get(k, None) != b.get(k, None) or (k in a) != (k in b))


def _read(path: str):
  """(meta, value) of an entry, None when absent; raises on an unreadable file."""
  p = paths.resolve(path)
  if not p.exists():
    return None
  data = p.read_bytes()
  if path.endswith(".npz"):
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      meta = json.loads(str(z[_META]))
      arrays = {k: np.asarray(z[k]) for k in z.files if k != _META}
    value = arrays[_VALUE] if set(arrays) == {_VALUE} else arrays
  else:
    meta = json.loads(data.decode("utf-8"))
    value = meta.get("value") if isinstance(meta, Mapping) else None
  if not isinstance(meta, Mapping) or meta.get("format") != FORMAT or "key" not in meta:
    raise ValueError(f"not a {FORMAT} entry")
  return meta, value


def _write(directory, name: str, meta: dict, value) -> str:
  if _is_arrays(value):
    path = paths.join(directory, f"{name}.npz")
    arrays = {_VALUE: value} if isinstance(value, np.ndarray) else dict(value)
    buf = io.BytesIO()
    np.savez(buf, **{_META: np.asarray(_canonical(meta))}, **arrays)
    data = buf.getvalue()
  else:
    path = paths.join(directory, f"{name}.json")
    data = _canonical({**meta, "value": value}).encode("utf-8")
  if jax.process_index() == 0:
    paths.write_bytes(path, data)
  return path


def cached(directory, name: str, *, key: Mapping[str, Any], inputs_fingerprint: str = "",
           compute: Callable[[], Any], log: Callable[[str], None] | None = print) -> Any:
  """The value of entry `name` under `directory` if its key and fingerprint match, else `compute()`, stored.

  Args:
    directory: a local directory or a URI.
    name: the entry's file name, without extension.
    key: the full config section(s) that determine the result (JSON-able;
      compared after a JSON round trip, so tuples equal lists).
    inputs_fingerprint: `fingerprint(...)` of the inputs the result is computed from.
    compute: `() -> np.ndarray | dict[str, np.ndarray] | JSON value`.
    log: receives one line on a hit, a stale entry or an unreadable file (process 0 only); None: silent.
  Returns the value as stored: arrays as numpy, JSON values as JSON (tuples as lists).
  """
  key = json.loads(_canonical(dict(key)))
  say = log if log is not None and jax.process_index() == 0 else (lambda _: None)
  for ext in (".npz", ".json"):
    path = paths.join(directory, f"{name}{ext}")
    try:
      entry = _read(path)
    except Exception as e:  # pylint: disable=broad-except
      say(f"cache: {path} is unreadable ({type(e).__name__}: {str(e)[:200]}); recomputing")
      continue
    if entry is None:
      continue
    meta, value = entry
    if meta["key"] == key and meta.get("fingerprint", "") == inputs_fingerprint:
      say(f"cache: reusing {path}")
      return value
    why = [f"key: {', '.join(_diff(meta['key'], key)[:8])}"] if meta["key"] != key else []
    if meta.get("fingerprint", "") != inputs_fingerprint:
      why.append("inputs differ")
    say(f"cache: {path} is stale ({'; '.join(why)}); recomputing")
  value = compute()
  meta = {"format": FORMAT, "name": name, "key": key, "fingerprint": inputs_fingerprint}
  path = _write(directory, name, meta, value)
  if not path.endswith(".npz"):
    value = json.loads(_canonical(value))  # as a hit would return it
  return value
