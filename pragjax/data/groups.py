"""Groups of token sequences -> `[B, G, T]` batches, and the one checkpointable group iterator.

A group is what one training example becomes when a method scores several
sequences together: a preference pair (chosen, rejected), a KTO response and
its mismatched KL response, SAMI's C x C (constitution, response) grid. A
group is a sequence of at most G sequences; a sequence is a mapping with
`input_ids` and `loss_mask` (int `[T_i]`), optionally more per-token arrays
of the same length (e.g. `step_end`) and per-sequence scalars (e.g. `label`);
`None` in a group is an empty slot.

Batch contract of `collate_groups` (numpy):

- `input_ids [B, G, T] int32` (pad = `pad_id`), `attention_mask [B, G, T]
  int32` (1 = real token), `loss_mask [B, G, T] int32` (1 where token t is a
  target, as in `pragjax.data.collate`), every other per-token key `[B, G, T]`
  (int32, or float32 when given as floats; 0 on padding), right-padded;
- every per-sequence scalar `[B, G]` (float32 when given as floats, else
  int32; 0 in empty slots);
- `slot_mask [B, G] int32`: 1 on real sequences. Empty slots (a group shorter
  than G, or None) are all-padding rows with attention 0.

`GroupIterator` draws the examples in a seeded order (a new permutation
`np.random.default_rng([seed, epoch])` per epoch, epochs concatenated into one
stream), tokenizes each into a group (`tokenize(example) -> list | None`;
None drops the example: skipped, counted once in `num_dropped`), fills global
batches of `global_batch_size` kept groups, and yields process p's contiguous
rows `[p*b, (p+1)*b)` of every global batch (b = global / process count). Every
process reads (and tokenizes) the whole global stream, so the processes agree
on which groups are dropped and on T, and the concatenation of the process
batches in process order is the 1-process batch exactly, drops included.

T is `seq_len` when given, else the longest sequence of the global batch
rounded up to `pad_to_multiple_of` (at least 2). `length_bucket = k > 0`
reads k global batches of kept groups at a time, sorts them by length (the
longest sequence of each group; stable), cuts them into k batches of similar
lengths and shuffles the order of those k batches (seeded): fewer padded
tokens at the same randomness across windows of k batches.

Checkpointing. `get_state()` is a JSON-serialisable dict: the stream position
of the current window, the batches of it already given, the counts and the
settings that fix the order; `set_state` on an iterator over the same
examples with the same settings resumes with exactly the batches that would
have come next, whatever the process count (the state does not depend on it).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from pragjax.data.errors import DataError

__all__ = ["collate_groups", "GroupIterator"]

_DERIVED = ("attention_mask", "slot_mask")
_REQUIRED = ("input_ids", "loss_mask")


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _is_float(value) -> bool:
  return np.issubdtype(np.asarray(value).dtype, np.floating)


def collate_groups(groups: Sequence[Sequence[Mapping[str, Any] | None]], *, group_size: int, pad_id: int = 0,
                   seq_len: int | None = None, pad_to_multiple_of: int = 16) -> dict[str, np.ndarray]:
  """B groups of at most `group_size` sequences -> right-padded `[B, G, T]` / `[B, G]` arrays (module docstring).

  T = `seq_len` if given (a longer sequence is a DataError, a ValueError,
  naming its group and slot), else the longest sequence rounded up to
  `pad_to_multiple_of` (at least 2 tokens: one target).
  """
  if group_size < 1:
    raise DataError(f"group_size must be >= 1, got {group_size}")
  if pad_to_multiple_of < 1:
    raise DataError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
  if not len(groups):
    raise DataError("collate_groups needs at least one group")
  tokens: dict[str, bool] = {}  # per-token key -> float
  scalars: dict[str, bool] = {}  # per-sequence key -> float
  keys, longest = None, 0
  for i, group in enumerate(groups):
    if len(group) > group_size:
      raise DataError(f"group {i} has {len(group)} sequences, more than group_size={group_size}")
    for j, seq in enumerate(group):
      if seq is None:
        continue
      where = f"group {i}, slot {j}"
      if not isinstance(seq, Mapping):
        raise DataError(f"{where}: a sequence must be a mapping with 'input_ids' and 'loss_mask', got "
                        f"{type(seq).__name__}")
      if keys is None:
        keys = set(seq)
        missing = [k for k in _REQUIRED if k not in keys]
        if missing:
          raise DataError(f"{where}: missing {missing} (present: {sorted(keys)})")
        reserved = [k for k in _DERIVED if k in keys]
        if reserved:
          raise DataError(f"{where}: {reserved} are derived by collate_groups, not given")
      elif set(seq) != keys:
        raise DataError(f"{where}: keys {sorted(seq)} differ from the first sequence's {sorted(keys)}")
      n = len(seq["input_ids"])
      for k, v in seq.items():
        v = np.asarray(v)
        if v.ndim == 0:
          if k in tokens:
            raise DataError(f"{where}: {k!r} is a scalar here but per-token elsewhere")
          scalars[k] = scalars.get(k, False) or _is_float(v)
        elif v.ndim == 1:
          if k in scalars:
            raise DataError(f"{where}: {k!r} is per-token here but a scalar elsewhere")
          if len(v) != n:
            raise DataError(f"{where}: {k!r} has {len(v)} entries, input_ids {n}")
          tokens[k] = tokens.get(k, False) or (k not in _REQUIRED and _is_float(v))
        else:
          raise DataError(f"{where}: {k!r} must be a scalar or 1-D, got shape {v.shape}")
      if seq_len is not None and n > seq_len:
        raise DataError(f"{where}: {n} tokens, more than seq_len={seq_len}")
      longest = max(longest, n)
  t = int(seq_len) if seq_len is not None else _round_up(max(longest, 2), pad_to_multiple_of)
  b, g = len(groups), group_size
  batch = {k: np.full((b, g, t), pad_id if k == "input_ids" else 0, np.float32 if is_f else np.int32)
           for k, is_f in tokens.items()}
  batch.setdefault("input_ids", np.full((b, g, t), pad_id, np.int32))
  batch.setdefault("loss_mask", np.zeros((b, g, t), np.int32))
  batch["attention_mask"] = np.zeros((b, g, t), np.int32)
  batch.update({k: np.zeros((b, g), np.float32 if is_f else np.int32) for k, is_f in scalars.items()})
  batch["slot_mask"] = np.zeros((b, g), np.int32)
  for i, group in enumerate(groups):
    for j, seq in enumerate(group):
      if seq is None:
        continue
      n = len(seq["input_ids"])
      batch["attention_mask"][i, j, :n] = 1
      batch["slot_mask"][i, j] = 1
      for k, v in seq.items():
        if k in scalars:
          batch[k][i, j] = v
        else:
          batch[k][i, j, :n] = v
  return batch


def _resolve_processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  process_index = jax.process_index() if process_index is None else int(process_index)
  process_count = jax.process_count() if process_count is None else int(process_count)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} must lie in [0, process_count={process_count})")
  return process_index, process_count


def _group_length(group: Sequence[Mapping | None]) -> int:
  return max((len(s["input_ids"]) for s in group if s is not None), default=0)


class GroupIterator:
  """Process-local batches of example groups with `get_state` / `set_state` (module docstring).

  `tokenize(example)`: the example's group (a list of at most `group_size`
  sequence mappings, see `collate_groups`) or None to drop it. `num_epochs`
  None repeats forever; with a number, the last partial global batch is left
  out and the iteration ends. Process index and count default to JAX's.
  """

  def __init__(self, examples: Sequence[Any], tokenize: Callable[[Any], Sequence[Mapping | None] | None], *,
               global_batch_size: int, group_size: int, seq_len: int | None = None, pad_id: int = 0,
               seed: int = 0, shuffle: bool = True, process_index: int | None = None,
               process_count: int | None = None, length_bucket: int = 0, pad_to_multiple_of: int = 16,
               num_epochs: int | None = None):
    self._process_index, self._process_count = _resolve_processes(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % self._process_count:
      raise DataError(f"train.batch_size (global_batch_size={global_batch_size}) must be a positive multiple of "
                      f"the process count {self._process_count}: every process takes an equal share of each batch")
    for name, value, low in (("group_size", group_size, 1), ("length_bucket", length_bucket, 0),
                             ("pad_to_multiple_of", pad_to_multiple_of, 1)):
      if int(value) < low:
        raise DataError(f"{name} must be >= {low}, got {value}")
    if seq_len is not None and seq_len < 2:
      raise DataError(f"seq_len must be None (the batch's longest) or >= 2, got {seq_len}")
    if num_epochs is not None and num_epochs < 1:
      raise DataError(f"num_epochs must be None (forever) or >= 1, got {num_epochs}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    n = len(examples)
    if n == 0 or (num_epochs is not None and n * num_epochs < global_batch_size):
      raise DataError(f"{n} examples x {num_epochs} epochs are fewer than one global batch of {global_batch_size}")
    self._examples, self._tokenize = examples, tokenize
    self._global, self._local = int(global_batch_size), int(global_batch_size) // self._process_count
    self._group_size, self._seq_len, self._pad_id = int(group_size), seq_len, pad_id
    self._multiple, self._bucket = int(pad_to_multiple_of), int(length_bucket)
    self._seed, self._shuffle = int(seed), bool(shuffle)
    self._end = None if num_epochs is None else n * int(num_epochs)
    self._layout = {"num_examples": n, "global_batch_size": self._global, "group_size": self._group_size,
                    "seed": self._seed, "shuffle": self._shuffle, "length_bucket": self._bucket,
                    "num_epochs": num_epochs}
    self._order_cache: tuple[int, np.ndarray] | None = None
    self._dropped: set[int] = set()  # examples known to drop (a cache: not part of the state)
    self._num_dropped = 0
    self._num_batches = 0
    self._position = 0  # stream position of the current window's first example
    self._window: list[list] | None = None  # the current window's global batches of groups
    self._window_end = 0
    self._done = 0  # batches of the current window already given

  @property
  def num_dropped(self) -> int:
    """Examples whose `tokenize` returned None so far (each counted once, on its first epoch)."""
    return self._num_dropped

  @property
  def num_batches(self) -> int:
    return self._num_batches

  def _order(self, epoch: int) -> np.ndarray:
    if self._order_cache is None or self._order_cache[0] != epoch:
      n = self._layout["num_examples"]
      order = np.random.default_rng([self._seed, epoch]).permutation(n) if self._shuffle else np.arange(n)
      self._order_cache = (epoch, order)
    return self._order_cache[1]

  def _group(self, index: int, count: bool, epoch: int):
    """The group of example `index`, or None (dropped; counted if `count` and this is its first epoch)."""
    if index in self._dropped:
      return None
    try:
      group = self._tokenize(self._examples[index])
    except DataError as e:
      raise DataError(f"example {index}: {e}") from e
    if group is None:
      self._dropped.add(index)
      if count and epoch == 0:
        self._num_dropped += 1
      if len(self._dropped) == self._layout["num_examples"]:
        raise DataError(f"every training example was dropped by tokenization ({len(self._dropped)} of them); "
                        "is seq_len shorter than the prompts and responses?")
      return None
    if len(group) > self._group_size:
      raise DataError(f"example {index}: {len(group)} sequences, more than group_size={self._group_size}")
    if self._seq_len is not None:
      for j, seq in enumerate(group):
        if seq is not None and len(seq["input_ids"]) > self._seq_len:
          raise DataError(f"example {index}, slot {j}: {len(seq['input_ids'])} tokens, more than "
                          f"seq_len={self._seq_len}")
    return list(group)

  def _read_window(self, start: int, count: bool) -> tuple[list[list], int]:
    """(global batches of the window starting at stream position `start`, the position after it)."""
    n, want = self._layout["num_examples"], max(self._bucket, 1) * self._global
    groups, position = [], start
    while len(groups) < want and (self._end is None or position < self._end):
      epoch, k = divmod(position, n)
      position += 1
      group = self._group(int(self._order(epoch)[k]), count, epoch)
      if group is not None:
        groups.append(group)
    full = len(groups) // self._global
    if self._bucket > 0:
      lengths = np.asarray([_group_length(g) for g in groups[:full * self._global]], np.int64)
      groups = [groups[i] for i in np.argsort(lengths, kind="stable")]
    batches = [groups[i * self._global:(i + 1) * self._global] for i in range(full)]
    if self._bucket > 0 and self._shuffle and full > 1:
      order = np.random.default_rng([self._seed, start, 1]).permutation(full)
      batches = [batches[i] for i in order]
    return batches, position

  def __iter__(self) -> "GroupIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._window is None or self._done == len(self._window):
      if self._window is not None:
        self._position, self._done = self._window_end, 0
      self._window, self._window_end = self._read_window(self._position, count=True)
      if not self._window:  # the end of a finite stream: stay there
        self._window, self._position = None, self._window_end
        raise StopIteration
    groups = self._window[self._done]
    self._done += 1
    self._num_batches += 1
    t = self._seq_len or _round_up(max(max(_group_length(g) for g in groups), 2), self._multiple)
    p = self._process_index
    return collate_groups(groups[p * self._local:(p + 1) * self._local], group_size=self._group_size,
                          pad_id=self._pad_id, seq_len=t)

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable; `set_state` of it resumes after the last batch given."""
    position, done = self._position, self._done
    if self._window is not None and done == len(self._window):
      position, done = self._window_end, 0
    return {"position": int(position), "batches_done": int(done), "num_dropped": self._num_dropped,
            "num_batches": self._num_batches, "layout": dict(self._layout)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues after the batch at which `state` was taken (an iterator with the same examples and settings)."""
    state = json.loads(json.dumps(state))  # the same types whether or not the state went through a file
    if "position" not in state:
      raise DataError(f"iterator state with keys {sorted(state)} was not written by pragjax.data.groups."
                      "GroupIterator (an older iterator?); start this run afresh in a new workdir")
    saved = state.get("layout", {})
    expected = json.loads(json.dumps(self._layout))
    if saved != expected:
      diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
      raise DataError(f"iterator state was saved with other settings (saved, current): {diff}")
    self._position, self._done = int(state["position"]), int(state["batches_done"])
    self._num_dropped, self._num_batches = int(state["num_dropped"]), int(state["num_batches"])
    self._window = None
    if self._done:  # mid-window: read the window again (its drops are already in num_dropped)
      self._window, self._window_end = self._read_window(self._position, count=False)
      if self._done > len(self._window):
        raise DataError(f"iterator state: {self._done} batches given of a window of {len(self._window)}")
