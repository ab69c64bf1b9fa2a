"""Reading GGUF files (v2/v3): metadata, tensor table, dequantized tensors.

A thin layer over the `gguf` package's memory-mapped reader that turns its
failures into `GGUFError`s naming the file, the tensor or key, and what was
expected:

- a truncated file is found before any tensor is read: each tensor's byte
  range is checked against the file size, and the first tensor that does not
  fit is named with the bytes it needs and the bytes the file has;
- a tensor type the `gguf` package cannot dequantize is named with its type.

Shapes are numpy (row-major) shapes: GGUF stores dimensions fastest-first
(`ne[0]` is the row length), so a `[rows, cols]` matrix of a Hugging Face
checkpoint keeps its HF shape here. `tensor(name)` dequantizes one tensor to
float32 at a time, so a caller holds at most one dense tensor beyond what it
keeps.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class GGUFError(ValueError):
  """A GGUF file that cannot be read as asked; the message names the file and what was expected."""


def _gguf():
  try:
    import gguf  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - gguf is a core dependency
    raise GGUFError("reading GGUF files needs the `gguf` package (pip install gguf==0.19.0)") from e
  return gguf


# Tensor types whose data `gguf.quants.dequantize` (or a plain view) turns into floats.
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


class GGUFFile:
  """One GGUF file: `metadata` (key -> Python value), tensor names, shapes, types and data."""

  def __init__(self, path: str):
    gguf = _gguf()
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise GGUFError(f"{self.path}: no such GGUF file")
    size = os.path.getsize(self.path)
    with open(self.path, "rb") as f:
      magic = f.read(4)
    if magic != b"GGUF":
      raise GGUFError(f"{self.path}: not a GGUF file (expected the magic bytes b'GGUF', found {magic!r})")
    outer = self

    class _CheckedReader(gguf.GGUFReader):
      """Checks every tensor's type and byte range before the reader maps it."""

      def _build_tensors(self, start_offs, fields):
        for field in fields:
          _, name_data, _, dims, raw_dtype, offset = field.parts
          name = bytes(name_data).decode("utf-8", errors="replace")
          try:
            qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
          except ValueError:
            raise GGUFError(f"{outer.path}: tensor {name!r} has unknown ggml type id {int(raw_dtype[0])}; expected "
                            f"one of the types the gguf package knows") from None
          block, type_size = gguf.GGML_QUANT_SIZES[qtype]
          n = int(np.prod(dims.astype(np.int64)))
          if n % block:
            raise GGUFError(f"{outer.path}: tensor {name!r} ({qtype.name}) has {n} elements, not a multiple of its "
                            f"block size {block}")
          end = int(start_offs + offset[0]) + n * type_size // block
          if end > size:
            raise GGUFError(f"{outer.path}: truncated: tensor {name!r} ({qtype.name}, shape "
                            f"{tuple(reversed(dims.tolist()))}) needs bytes up to {end}, the file has {size}")
        return super()._build_tensors(start_offs, fields)

    try:
      self._reader = _CheckedReader(self.path)
    except GGUFError:
      raise
    except (ValueError, IndexError, KeyError, OverflowError) as e:
      raise GGUFError(f"{self.path}: cannot parse the GGUF header (truncated or corrupt? {e})") from e
    self.metadata: dict[str, Any] = {}
    for key, field in self._reader.fields.items():
      if key.startswith("GGUF."):
        continue
      try:
        self.metadata[key] = field.contents()
      except Exception as e:  # pylint: disable=broad-except
        raise GGUFError(f"{self.path}: metadata key {key!r} cannot be decoded ({e})") from e
    self._tensors = {t.name: t for t in self._reader.tensors}
    self.version = int(self._reader.fields["GGUF.version"].contents())

  # -- metadata ------------------------------------------------------------

  def get(self, key: str, default=None):
    return self.metadata.get(key, default)

  def require(self, key: str):
    """The value of metadata `key`; a GGUFError naming the key when absent."""
    if key not in self.metadata:
      raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
    return self.metadata[key]

  # -- tensors -------------------------------------------------------------

  @property
  def tensor_names(self) -> list[str]:
    return list(self._tensors)

  def __contains__(self, name: str) -> bool:
    return name in self._tensors

  def _info(self, name: str):
    if name not in self._tensors:
      raise GGUFError(f"{self.path}: tensor {name!r} is missing")
    return self._tensors[name]

  def shape(self, name: str) -> tuple[int, ...]:
    """Row-major shape (GGUF's dimensions reversed)."""
    return tuple(int(d) for d in reversed(self._info(name).shape.tolist()))

  def tensor_type(self, name: str) -> str:
    return self._info(name).tensor_type.name

  def raw(self, name: str) -> np.ndarray:
    """The tensor's stored data (a memory map; quantized types as uint8 blocks)."""
    return self._info(name).data

  def tensor(self, name: str) -> np.ndarray:
    """The tensor dequantized to a float32 numpy array of `shape(name)`."""
    gguf = _gguf()
    t = self._info(name)
    kind = t.tensor_type.name
    try:
      if kind in ("F32", "F16", "F64"):
        out = np.asarray(t.data, dtype=np.float32)
      else:
        out = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
    except NotImplementedError as e:
      raise GGUFError(f"{self.path}: tensor {name!r} has type {kind}, which the gguf package cannot dequantize "
                      f"({e}); expected F32, F16, BF16 or a block-quantized type such as Q8_0, Q4_K, Q6_K") from e
    shape = self.shape(name)
    if out.shape != shape:
      out = out.reshape(shape)
    return out
