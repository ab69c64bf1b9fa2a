"""Minimal safetensors reader/writer over numpy (bfloat16 via ml_dtypes).

The reader parses only the JSON header up front and reads one tensor's bytes
at a time with positioned reads, so loading a checkpoint never holds more
than one source tensor on the host beyond what has already been placed on
devices. The writer streams tensor by tensor the same way.

File format: 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
  pass


def _check_entry(path: str, name: str, e, data_size: int) -> None:
  """One header entry: dtype, shape and `data_offsets` consistent with each other and the file's size."""
  where = f"{path}: tensor {name!r}"
  if not isinstance(e, dict):
    raise SafetensorsError(f"{where}: header entry must be an object, got {type(e).__name__}")
  for key in ("dtype", "shape", "data_offsets"):
    if key not in e:
      raise SafetensorsError(f"{where}: header entry has no {key!r} (has: {sorted(e)})")
  shape, offsets = e["shape"], e["data_offsets"]
  if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
    raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
  if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
      or not 0 <= offsets[0] <= offsets[1]):
    raise SafetensorsError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}")
  if offsets[1] > data_size:
    raise SafetensorsError(f"{where}: data_offsets {offsets} end past the {data_size} bytes of tensor data "
                           f"(truncated file?)")
  if e["dtype"] in _DTYPES:
    need = int(np.prod(shape, dtype=np.int64)) * _DTYPES[e["dtype"]].itemsize
    if offsets[1] - offsets[0] != need:
      raise SafetensorsError(f"{where}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, but shape "
                             f"{shape} of {e['dtype']} needs {need}")


class SafetensorsFile:
  """Lazy view of one `.safetensors` file: header now (checked against the file size), bytes on demand."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    try:
      with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
          raise SafetensorsError(f"{path}: truncated file (no header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
          raise SafetensorsError(f"{path}: header length {n} exceeds the file's {size} bytes (not a safetensors "
                                 f"file, or truncated)")
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise SafetensorsError(f"{path}: corrupt safetensors header: {e}") from e
    if not isinstance(header, dict):
      raise SafetensorsError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    self.metadata = header.pop("__metadata__", {}) or {}
    self.entries = header
    self.data_start = 8 + n
    for name, e in header.items():
      _check_entry(path, name, e, size - self.data_start)

  def keys(self) -> list[str]:
    return list(self.entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self.entries[name]["shape"])

  def dtype(self, name: str) -> np.dtype:
    code = self.entries[name]["dtype"]
    if code not in _DTYPES:
      raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {code}")
    return _DTYPES[code]

  def read(self, name: str) -> np.ndarray:
    """Reads one tensor (a fresh host array)."""
    e = self.entries[name]
    begin, end = e["data_offsets"]
    dtype = self.dtype(name)
    count = (end - begin) // dtype.itemsize
    with open(self.path, "rb") as f:
      f.seek(self.data_start + begin)
      arr = np.fromfile(f, dtype=dtype, count=count)
    if arr.size != count:
      raise SafetensorsError(f"{self.path}: tensor {name!r} is truncated")
    return arr.reshape(e["shape"])


def write_file(
    path: str,
    tensors: Iterable[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]],
    metadata: Mapping[str, str] | None = None,
) -> int:
  """Writes a safetensors file streaming one tensor at a time.

  Args:
    tensors: `(name, shape, dtype, get)` where `get()` returns the array;
      shapes and dtypes are needed first to write the header.
  Returns: bytes of tensor data written.
  """
  tensors = list(tensors)
  header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
  offset = 0
  for name, shape, dtype, _ in tensors:
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name, shape, dtype, get in tensors:
      arr = np.ascontiguousarray(get(), dtype=np.dtype(dtype))
      if tuple(arr.shape) != tuple(shape):
        raise SafetensorsError(f"{name}: shape {arr.shape} != declared {tuple(shape)}")
      arr.tofile(f)
  os.replace(tmp, path)
  return offset


def dtype_name(dtype) -> str:
  return _NAMES[np.dtype(dtype)]
