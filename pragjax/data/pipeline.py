"""Training input pipeline on grain: shuffle, shard per process, tokenize, pad or pack, checkpoint.

`make_train_iterator` builds

  grain.MapDataset.source(source)
    .map_with_index(...)               # keep each record's source index for error messages
    .shuffle(seed=mixed(seed))         # a new permutation each epoch
    .repeat(num_epochs)                # None: forever
    -> this process's slice of every global batch of records
    .map(tokenize_fn)                  # record -> example or None (dropped)
    .to_iter_dataset(read_options, allow_nones=True)

and wraps the grain iterator in a `TrainIterator` that groups examples into
local batches (`pad_batch`, or `pack_examples` with first-fit over `local
batch` rows), counts dropped records, and checkpoints.

Process slices. The global record stream is cut into chunks of
`global_batch_size` records; process p of P takes records
[p*b, (p+1)*b) of every chunk (b = global_batch_size / P). When nothing is
dropped and packing is off, concatenating the P local batches in process
order gives exactly the batch a single process would produce. A process whose
slice has dropped records (or, with packing, packs differently) fills its
local batch from its own later records, so batches stay full and
deterministic for a given process count, but differ from the 1-process ones.
With packing, `global_batch_size` counts packed rows.

Checkpointing. `it.get_state()` is a JSON-serialisable dict taken at the last
batch boundary; `it.set_state(state)` on an iterator built with the same
arguments resumes with exactly the batches the uninterrupted iterator would
have produced next (grain re-reads from the saved record index; with packing
the record that did not fit in the last batch is re-read).

Grain notes (0.2.18): `MapDataset.shuffle` seeds epoch e with `seed + e`, so
seeds s and s+1 would give identical orders one epoch apart; the seed is
mixed through `np.random.SeedSequence` first. `to_iter_dataset()` silently
drops None elements unless `allow_nones=True`; that is used here to count
them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from typing import Any, Callable, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pragjax.data.collate import first_fit_row, pack_examples, pad_batch
from pragjax.data.errors import DataError

_EMPTY = {"input_ids": np.zeros((0,), np.int32), "loss_mask": np.zeros((0,), np.int32)}


def mixed_seed(seed: int) -> int:
  """A uint32 shuffle seed drawn from `seed` (grain seeds epoch e with seed + e; mixing decorrelates nearby seeds)."""
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f"seed must be a non-negative integer, got {seed!r}")
  return int(np.random.SeedSequence(int(seed)).generate_state(1, np.uint32)[0])


class ProcessSliceMapDataset(grain.MapDataset):
  """Process `p`'s slice of every chunk of `global_batch_size` elements of `parent`.

  Element j maps to parent element (j // b) * B + p * b + j % b, with B the
  global batch size and b = B / process_count. A trailing partial chunk is
  left out, so every process has the same number of elements.
  """

  def __init__(self, parent: grain.MapDataset, *, global_batch_size: int, process_index: int, process_count: int):
    super().__init__(parent)
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local
    self._length = (len(parent) // global_batch_size) * self._local

  def __len__(self) -> int:
    return self._length

  def _parent_index(self, index: int) -> int:
    chunk, within = divmod(index, self._local)
    return chunk * self._global + self._offset + within

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._parent_index(index)]

  def _getitems(self, indices: Sequence[int]):
    return self._parent._getitems([self._parent_index(i) for i in indices])  # pylint: disable=protected-access

  def __str__(self) -> str:
    return f"ProcessSliceMapDataset(local={self._local}, offset={self._offset}, global={self._global})"


@dataclasses.dataclass(frozen=True)
class _Layout:
  """What a saved state must agree with to be restored."""
  global_batch_size: int
  local_batch_size: int
  seq_len: int
  seed: int
  shuffle: bool
  packing: bool
  num_epochs: int | None
  process_index: int
  process_count: int


class TrainIterator:
  """Local batches (dicts of int32 numpy arrays [local_batch_size, seq_len]) with `get_state`/`set_state`.

  `num_dropped` counts the records whose tokenize_fn returned None, so far.
  The last batch of a finite stream is completed with all-padding rows.
  """

  def __init__(self, dataset: grain.IterDataset, layout: _Layout, *, pad_id: int, padding_side: str):
    self._dataset = dataset
    self._layout = layout
    self._pad_id = pad_id
    self._padding_side = padding_side
    self._it = iter(dataset)
    self._pending = None  # Packing: (grain state before it, example) read but left for the next batch.
    self._num_dropped = 0
    self._num_batches = 0
    self._exhausted = False
    self._state = self._snapshot(self._it.get_state())

  @property
  def num_dropped(self) -> int:
    return self._num_dropped

  @property
  def num_batches(self) -> int:
    return self._num_batches

  def _snapshot(self, grain_state) -> dict[str, Any]:
    return {"grain": copy.deepcopy(grain_state), "num_dropped": self._num_dropped,
            "num_batches": self._num_batches, "layout": dataclasses.asdict(self._layout)}

  def get_state(self) -> dict[str, Any]:
    """The state at the last batch boundary (JSON-serialisable)."""
    return copy.deepcopy(self._state)

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes after the batch at which `state` was taken (from an iterator with the same arguments)."""
    state = json.loads(json.dumps(state))  # Same types whether or not the state went through a file.
    expected = json.loads(json.dumps(dataclasses.asdict(self._layout)))
    if state.get("layout") != expected:
      diff = {k: (state.get("layout", {}).get(k), v) for k, v in expected.items()
              if state.get("layout", {}).get(k) != v}
      raise DataError(f"iterator state was saved with other settings (saved, current): {diff}")
    self._it.set_state(state["grain"])
    self._pending = None
    self._exhausted = False
    self._num_dropped = int(state["num_dropped"])
    self._num_batches = int(state["num_batches"])
    self._state = self._snapshot(self._it.get_state())

  def __iter__(self) -> "TrainIterator":
    return self

  def _read(self):
    """(grain state before the example, example); skips and counts None examples; StopIteration at the end."""
    while True:
      before = self._it.get_state()
      example = next(self._it)
      if example is not None:
        return before, example
      self._num_dropped += 1

  def _next_padded(self) -> dict[str, np.ndarray]:
    examples = []
    try:
      while len(examples) < self._layout.local_batch_size:
        examples.append(self._read()[1])
    except StopIteration:
      self._exhausted = True
      if not examples:
        raise
      examples += [_EMPTY] * (self._layout.local_batch_size - len(examples))
    batch = pad_batch(examples, self._layout.seq_len, self._pad_id, self._padding_side)
    self._num_batches += 1
    self._state = self._snapshot(self._it.get_state())
    return batch

  def _next_packed(self) -> dict[str, np.ndarray]:
    rows, seq_len = self._layout.local_batch_size, self._layout.seq_len
    examples, fills = [], []
    while True:
      if self._pending is not None:
        before, example = self._pending
        self._pending = None
      else:
        try:
          before, example = self._read()
        except StopIteration:
          self._exhausted = True
          if not examples:
            raise
          end_state = self._it.get_state()
          break
      n = len(example["input_ids"])
      if n > seq_len:
        raise DataError(f"an example has {n} tokens, more than seq_len={seq_len}; tokenize with max_length<=seq_len")
      row = first_fit_row(fills, n, seq_len)
      if row is None and len(fills) == rows:
        self._pending = (before, example)
        end_state = before
        break
      if row is None:
        fills.append(0)
        row = len(fills) - 1
      fills[row] += n
      examples.append(example)
    batch = pack_examples(examples, seq_len, self._pad_id, num_rows=rows)
    self._num_batches += 1
    self._state = self._snapshot(end_state)
    return batch

  def __next__(self) -> dict[str, np.ndarray]:
    if self._exhausted and self._pending is None:
      raise StopIteration
    return self._next_packed() if self._layout.packing else self._next_padded()

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def _with_index(index: int, record: Any) -> tuple[int, Any]:
  return index, record


def _describe(source, index: int) -> str:
  """Where record `index` of `source` comes from, for error messages."""
  if hasattr(source, "path") and hasattr(source, "line_number"):
    return f"{source.path}, line {source.line_number(index)} (record {index})"
  return f"source record {index}"


def _tokenize_indexed(tokenize_fn, source, item: tuple[int, Any]):
  """`tokenize_fn(record)`, with DataErrors prefixed by where the record comes from."""
  index, record = item
  try:
    return tokenize_fn(record)
  except DataError as e:
    raise DataError(f"{_describe(source, index)}: {e}") from e


def _resolve_processes(process_index, process_count) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else int(process_index)
  process_count = jax.process_count() if process_count is None else int(process_count)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} must lie in [0, process_count={process_count})")
  return process_index, process_count


def make_train_iterator(source, tokenize_fn: Callable[[Any], Mapping[str, np.ndarray] | None], *,
                        global_batch_size: int, seq_len: int, seed: int, shuffle: bool = True,
                        packing: bool = False, num_epochs: int | None = None, process_index: int | None = None,
                        process_count: int | None = None, pad_id: int, padding_side: str = "right",
                        read_options: grain.ReadOptions | None = None) -> TrainIterator:
  """A checkpointable iterator over this process's local batches [global_batch_size / process_count, seq_len].

  `source`: a random-access source (`JsonlSource`, a tfds data source, a list).
  `tokenize_fn(record)`: an example (1-D `input_ids`, `loss_mask`, at most
  `seq_len` long) or None to drop the record, e.g.
  `functools.partial(tokenize_record, tokenizer=tok, max_length=seq_len)`.
  Process index and count default to JAX's. See the module docstring for how
  records are split between processes and how packing fills rows.
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  if global_batch_size < 1 or global_batch_size % process_count:
    raise DataError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                    f"process_count={process_count}")
  if seq_len < 2:
    raise DataError(f"seq_len must be >= 2, got {seq_len}")
  if padding_side not in ("left", "right"):
    raise DataError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
  if num_epochs is not None and num_epochs < 1:
    raise DataError(f"num_epochs must be None (forever) or >= 1, got {num_epochs}")
  n = len(source)
  if n == 0 or (num_epochs is not None and n * num_epochs < global_batch_size):
    raise DataError(f"source has {n} records x {num_epochs} epochs, fewer than one global batch of "
                    f"{global_batch_size} records")
  layout = _Layout(global_batch_size=global_batch_size, local_batch_size=global_batch_size // process_count,
                   seq_len=seq_len, seed=int(seed), shuffle=shuffle, packing=packing, num_epochs=num_epochs,
                   process_index=process_index, process_count=process_count)
  ds = grain.MapDataset.source(source).map_with_index(_with_index)
  if shuffle:
    ds = ds.shuffle(seed=mixed_seed(seed))
  ds = ds.repeat(num_epochs)
  ds = ProcessSliceMapDataset(ds, global_batch_size=global_batch_size, process_index=process_index,
                              process_count=process_count)
  ds = ds.map(functools.partial(_tokenize_indexed, tokenize_fn, source))
  iter_ds = ds.to_iter_dataset(read_options, allow_nones=True)
  return TrainIterator(iter_ds, layout, pad_id=pad_id, padding_side=padding_side)


def to_global_arrays(local_batch: Mapping[str, np.ndarray], mesh: Mesh,
                     batch_axes: Sequence[str] = ("data", "fsdp")) -> dict[str, jax.Array]:
  """This process's rows -> global `jax.Array`s sharded as `NamedSharding(mesh, P(batch_axes))`.

  Each leaf [b, ...] becomes [b * (processes holding distinct rows), ...],
  its first dimension split over the mesh axes `batch_axes`.
  """
  batch_axes = tuple(batch_axes)
  missing = [a for a in batch_axes if a not in mesh.axis_names]
  if missing:
    raise DataError(f"batch_axes {batch_axes}: {missing} not in the mesh axes {mesh.axis_names}")
  shards = math.prod(mesh.shape[a] for a in batch_axes)
  sharding = NamedSharding(mesh, P(batch_axes))
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    rows = value.shape[0] * jax.process_count()
    if rows % shards:
      raise DataError(f"{key}: global batch of {rows} rows ({value.shape[0]} per process) is not divisible by "
                      f"the {shards} shards of mesh axes {batch_axes}")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
