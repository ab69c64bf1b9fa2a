"""Batched inference on the host: one chunking rule for every caller.

N inputs are cut, in order, into chunks of `rows` rows, where `rows` is
`batch_size` rounded up to a multiple of the mesh's batch shards (the mesh's
`batch` axes, `data` x `fsdp`, of the mesh passed, else of the one that
`jax.set_mesh` made current; 1 without a mesh). Every chunk, the last one
too, has exactly `rows` rows: the last is filled with padding rows whose
outputs are dropped, so one compiled batch shape serves every chunk (per
token-length bucket where a caller pads tokens per chunk). Padding rows are
`pad_value` (zeros, pad ids) for arrays (`map_batches`) and copies of the
chunk's last item for item lists (`chunks`); either way they never change a
real row's output, since rows do not interact.

One exception, which a caller asks for by name: with `shrink=True`, inputs that fit in one
chunk (N <= batch_size) form a chunk of N rows (rounded up to the shards)
instead of `rows`. It is for callers whose `batch_size` is a memory cap and
whose padding rows would cost real work (a sampled response per row); a short
input then compiles its own shape.

With a mesh of more than one batch shard, each chunk is placed sharded over
the batch axes (`place`; every process passes the whole chunk, as every
process runs the same loop over all N inputs) and outputs come back as numpy
on every process (`fetch` gathers what one process cannot address). The
rounding moves chunk boundaries when `batch_size` is not a multiple of the
shards, and with them a sampler's per-chunk keys (`fold_in(rng, chunk.start)`).

- `map_batches(fn, inputs, batch_size=)`: `inputs` a pytree of arrays with a
  common leading axis N (a dict of `[N, ...]` arrays, one array, a tuple);
  `fn(chunk) -> pytree of [rows, ...] arrays`; returns the outputs
  concatenated, `[N, ...]`, padding rows dropped.
- `chunks(items, batch_size)`: for callers that build each chunk's batch
  themselves (tokenize, collate): yields `Chunk(start, items, n)` with
  `items` padded to `rows` and `n` real ones.
- `pad_rows`, `place`, `fetch`, `chunk_rows`, `batch_shards`: the pieces.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pragjax import sharding as sharding_lib

T = TypeVar("T")


def resolve_mesh(mesh: Mesh | None = None) -> Mesh | None:
  """`mesh`, else the mesh of the enclosing `jax.set_mesh` (None outside one)."""
  if mesh is not None:
    return mesh
  current = jax.sharding.get_mesh()
  return None if current.empty else current


def _batch_axes(mesh: Mesh | None, rules=sharding_lib.DEFAULT_RULES) -> tuple[str, ...]:
  """The mesh axes of the `batch` rule that the mesh has with more than one device."""
  if mesh is None:
    return ()
  target = dict(rules).get("batch")
  names = () if target is None else (target,) if isinstance(target, str) else tuple(target)
  return tuple(n for n in names if n in mesh.shape and mesh.shape[n] > 1)


def batch_shards(mesh: Mesh | None = None) -> int:
  """How many shards the batch axis of an inference batch is split into (1 without a mesh)."""
  mesh = resolve_mesh(mesh)
  return math.prod(mesh.shape[a] for a in _batch_axes(mesh)) if mesh is not None else 1


def chunk_rows(batch_size: int, mesh: Mesh | None = None) -> int:
  """Rows of every chunk: `batch_size` rounded up to a multiple of `batch_shards(mesh)`."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  shards = batch_shards(mesh)
  return -(-int(batch_size) // shards) * shards


def _rows(n: int, batch_size: int, mesh, shrink: bool) -> int:
  rows = chunk_rows(batch_size, mesh)
  if shrink and 0 < n <= batch_size:
    rows = chunk_rows(n, mesh)
  return rows


def pad_rows(tree: Any, rows: int, pad_value: float | Mapping[str, float] = 0) -> Any:
  """Each array of `tree` (leading axis n <= rows) extended to `rows` rows filled with `pad_value`.

  `pad_value` is one number, or, for a dict of arrays, a number per key
  (missing keys get 0), e.g. `{"input_ids": pad_id}`.
  """

  def pad(path, x):
    x = np.asarray(x)
    if x.shape[0] > rows:
      raise ValueError(f"pad_rows: {x.shape[0]} rows, more than {rows}")
    if x.shape[0] == rows:
      return x
    value = pad_value
    if isinstance(pad_value, Mapping):
      key = path[0].key if path and isinstance(path[0], jax.tree_util.DictKey) else None
      value = pad_value.get(key, 0)
    fill = np.full((rows - x.shape[0],) + x.shape[1:], value, x.dtype)
    return np.concatenate([x, fill])

  return jax.tree_util.tree_map_with_path(pad, tree)


def place(tree: Any, mesh: Mesh | None = None) -> Any:
  """Host arrays -> device arrays: sharded over the mesh's batch axes when it has more than one batch shard
  (leading axis divisible by `batch_shards`; every process passes the whole array), else `jnp.asarray`."""
  mesh = resolve_mesh(mesh)
  axes = _batch_axes(mesh)
  if not axes:
    return jax.tree.map(jnp.asarray, tree)
  sharding = NamedSharding(mesh, P(axes[0] if len(axes) == 1 else axes))

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def fetch(tree: Any) -> Any:
  """Device arrays -> numpy on every process (an array sharded over other processes' devices is gathered)."""

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(get, tree)


@dataclasses.dataclass(frozen=True)
class Chunk(Generic[T]):
  """One chunk of a `chunks` loop: `items[:n]` are `all_items[start:start + n]`, the rest copies of the last."""
  start: int
  items: list[T]
  n: int

  @property
  def real(self) -> list[T]:
    return self.items[:self.n]

  @property
  def rows(self) -> int:
    return len(self.items)


def chunks(items: Sequence[T], batch_size: int, *, mesh: Mesh | None = None, shrink: bool = False
           ) -> Iterator[Chunk[T]]:
  """`items` in order, in chunks of `chunk_rows(batch_size, mesh)` items (module docstring); no chunk when empty."""
  n = len(items)
  rows = _rows(n, batch_size, mesh, shrink)
  for start in range(0, n, rows):
    real = list(items[start:start + rows])
    yield Chunk(start, real + [real[-1]] * (rows - len(real)), len(real))


def _num_rows(tree) -> int:
  sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
  if len(sizes) != 1:
    raise ValueError(f"map_batches: inputs need one common leading axis, got sizes {sorted(sizes)}")
  return sizes.pop()


def map_batches(fn: Callable[[Any], Any], inputs: Any, *, batch_size: int, mesh: Mesh | None = None,
                pad_value: float | Mapping[str, float] = 0, shrink: bool = False) -> Any:
  """`fn` over `inputs` in chunks (module docstring) -> its outputs concatenated, padding rows dropped, as numpy.

  Args:
    fn: `chunk -> pytree of [rows, ...] arrays`, `chunk` the structure of
      `inputs` with `rows` rows, on the device (jit it: every chunk has the
      same shape). For empty inputs it is only traced (`jax.eval_shape`), to
      give `[0, ...]` outputs of the right structure and dtypes.
    inputs: a pytree of arrays with a common leading axis N.
    batch_size: rows per chunk, before rounding up to the mesh's batch shards.
    mesh: shards each chunk over its batch axes; default the current mesh.
    pad_value: the value of padding rows (per key for a dict; `pad_rows`).
    shrink: a lone chunk of N <= batch_size rows is not padded (module docstring).
  """
  mesh = resolve_mesh(mesh)
  n = _num_rows(inputs)
  rows = _rows(n, batch_size, mesh, shrink)
  host = jax.tree.map(np.asarray, inputs)
  if n == 0:
    spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows,) + x.shape[1:], x.dtype), host)
    return jax.tree.map(lambda s: np.zeros((0,) + s.shape[1:], s.dtype), jax.eval_shape(fn, spec))
  parts, pending = [], None
  for start in range(0, n, rows):
    chunk = pad_rows(jax.tree.map(lambda x, s=start: x[s:s + rows], host), rows, pad_value)
    out = fn(place(chunk, mesh))  # dispatched before the previous chunk is fetched: the host does not wait
    if pending is not None:
      parts.append(_take(*pending))
    pending = (out, min(rows, n - start))
  parts.append(_take(*pending))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def _take(out, k: int):
  return jax.tree.map(lambda x: x[:k], fetch(out))
