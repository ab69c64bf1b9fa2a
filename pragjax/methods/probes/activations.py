"""Activation bags: the residual stream of every token of every statement, streamed to disk in float16.

`collect_bags(model, tokenizer, texts, layers, out_dir)` runs the model over
the statements (optionally wrapped in its chat template as one user turn) in
length-sorted, jitted batches and writes, for every chosen layer l, the raw
output of block l (`DecoderOutput.block_outputs[l]`, what a forward hook on
the block sees; not HF's `hidden_states`, whose last element is final-normed)
at every non-pad token. Only one batch of activations is ever in memory.

On-disk layout (plain numpy files, readable without pragjax):

  out_dir/meta.json        format, layers, hidden_size, num_bags, num_tokens,
                           dtype, model, chat_template, any caller metadata;
                           written last, so its presence marks a complete store
  out_dir/offsets.npy      [num_bags + 1] int64: bag i is rows offsets[i]:offsets[i+1]
  out_dir/token_ids.npy    [num_tokens] int32
  out_dir/layer_LLL.npy    [num_tokens, hidden_size] float16 (one per layer)

`BagStore(out_dir)` reads it back lazily (memory-mapped): `store.bags(layer,
indices)` gives dense, right-padded bags [B, T, D] and their mask [B, T].

`entity_disjoint_split` assigns whole groups (entities) to test, calibration
and train, so that no entity is shared across splits.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pragjax.eval import batching
from pragjax.models import Decoder
from pragjax.models.tokenizer import Tokenizer

FORMAT = "pragjax-bags-v1"
META_FILE = "meta.json"
OFFSETS_FILE = "offsets.npy"
TOKENS_FILE = "token_ids.npy"


def layer_file(layer: int) -> str:
  return f"layer_{layer:03d}.npy"


class BagStoreError(ValueError):
  pass


def statement_token_ids(tokenizer: Tokenizer, texts: Sequence[str], *, chat_template: bool = False) -> list[list[int]]:
  """Token ids of each statement: `encode(text)` (with the tokenizer's special tokens), or, with
  `chat_template`, the template's rendering of one user turn holding the text (its own special tokens)."""
  if not chat_template:
    return [tokenizer.encode(t) for t in texts]
  return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=True) for t in texts]


class BagWriter:
  """Pre-allocates the store's files for known bag lengths and fills them batch by batch."""

  def __init__(self, out_dir: str, layers: Sequence[int], lengths: Sequence[int], hidden_size: int,
               token_ids: Sequence[Sequence[int]] | None = None, dtype=np.float16):
    self.out_dir, self.layers = out_dir, tuple(int(l) for l in layers)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, META_FILE)):
      os.remove(os.path.join(out_dir, META_FILE))  # Incomplete until close().
    self.offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, np.int64))])
    self.dtype = np.dtype(dtype)
    self.hidden_size = int(hidden_size)
    np.save(os.path.join(out_dir, OFFSETS_FILE), self.offsets)
    ids = np.zeros((int(self.offsets[-1]),), np.int32)
    if token_ids is not None:
      ids = np.concatenate([np.asarray(t, np.int32) for t in token_ids]) if len(token_ids) else ids
      if ids.shape[0] != self.offsets[-1]:
        raise BagStoreError(f"token_ids hold {ids.shape[0]} tokens, lengths {self.offsets[-1]}")
    np.save(os.path.join(out_dir, TOKENS_FILE), ids)
    self.arrays = {l: np.lib.format.open_memmap(os.path.join(out_dir, layer_file(l)), mode="w+", dtype=self.dtype,
                                                shape=(int(self.offsets[-1]), self.hidden_size)) for l in self.layers}
    self.written = np.zeros(len(lengths), bool)

  def write(self, bag_indices: Sequence[int], activations: np.ndarray, mask: np.ndarray) -> None:
    """Stores bags `bag_indices` from `activations` [L, B, T, D] (layers in `self.layers` order) at mask [B, T]."""
    activations, mask = np.asarray(activations), np.asarray(mask, bool)
    for row, i in enumerate(bag_indices):
      start, end = self.offsets[i], self.offsets[i + 1]
      real = np.flatnonzero(mask[row])
      if real.size != end - start:
        raise BagStoreError(f"bag {i}: {real.size} real tokens, expected {end - start}")
      for k, l in enumerate(self.layers):
        self.arrays[l][start:end] = activations[k, row, real].astype(self.dtype)
      self.written[i] = True

  def close(self, meta: Mapping[str, Any] | None = None) -> None:
    """Flushes the arrays and writes meta.json (after checking every bag was written)."""
    if not self.written.all():
      raise BagStoreError(f"{int((~self.written).sum())} bag(s) were never written")
    for a in self.arrays.values():
      a.flush()
    info = {"format": FORMAT, "layers": list(self.layers), "hidden_size": self.hidden_size,
            "num_bags": int(len(self.offsets) - 1), "num_tokens": int(self.offsets[-1]), "dtype": self.dtype.name,
            **dict(meta or {})}
    with open(os.path.join(self.out_dir, META_FILE), "w", encoding="utf-8") as f:
      json.dump(info, f, indent=2)
    self.arrays = {}


@functools.partial(jax.jit, static_argnames=("graphdef", "layers", "dtype"))
def block_outputs(graphdef, state, ids, mask, layers: tuple[int, ...], dtype=jnp.float16):
  """[len(layers), B, T, D]: raw outputs of the chosen blocks, cast to `dtype` on the device."""
  model: Decoder = nnx.merge(graphdef, state)
  out = model(ids, mask, output_block_outputs=True, compute_logits=False)
  return jnp.stack([out.block_outputs[l] for l in layers]).astype(dtype)


def collect_bags(model: Decoder, tokenizer: Tokenizer, texts: Sequence[str], layers: Sequence[int], out_dir: str, *,
                 batch_size: int = 32, chat_template: bool = False, pad_to_multiple_of: int = 16,
                 meta: Mapping[str, Any] | None = None, progress=None) -> "BagStore":
  """Runs `model` over `texts` and writes the bags of `layers` to `out_dir` (see the module docstring).

  Batches hold statements of similar length (sorted), padded on the right to
  a multiple of `pad_to_multiple_of`; batches come from
  `pragjax.eval.batching.chunks` (sharded over the current mesh's batch axes),
  a short last batch filled with copies of its last (longest) row, so every
  batch has the same shape per length bucket.
  """
  num_layers = model.config.num_hidden_layers
  layers = tuple(int(l) for l in layers)
  bad = [l for l in layers if not 0 <= l < num_layers]
  if bad or not layers:
    raise ValueError(f"layers must be block indices in 0..{num_layers - 1}, got {list(layers)}")
  ids = statement_token_ids(tokenizer, texts, chat_template=chat_template)
  lengths = [len(t) for t in ids]
  if min(lengths, default=1) == 0:
    raise ValueError(f"statement {lengths.index(0)} has no tokens")
  writer = BagWriter(out_dir, layers, lengths, model.config.hidden_size, token_ids=ids)
  graphdef, state = nnx.split(model)
  pad_id = tokenizer.pad_token_id or 0
  order = [int(i) for i in np.argsort(lengths, kind="stable")]
  for chunk in batching.chunks(order, batch_size):
    t = -(-max(lengths[i] for i in chunk.items) // pad_to_multiple_of) * pad_to_multiple_of
    batch = np.full((chunk.rows, t), pad_id, np.int32)
    mask = np.zeros((chunk.rows, t), np.int32)
    for r, i in enumerate(chunk.items):
      batch[r, :lengths[i]] = ids[i]
      mask[r, :lengths[i]] = 1
    acts = batching.fetch(block_outputs(graphdef, state, *batching.place((batch, mask)), layers))
    writer.write(chunk.real, acts[:, :chunk.n], mask[:chunk.n])
    if progress is not None:
      progress(chunk.start + chunk.n, len(order))
  writer.close({"chat_template": bool(chat_template), **dict(meta or {})})
  return BagStore(out_dir)


class BagStore:
  """Lazy reader of a store written by `BagWriter` (memory-mapped layer files)."""

  def __init__(self, out_dir: str):
    path = os.path.join(out_dir, META_FILE)
    if not os.path.isfile(path):
      raise BagStoreError(f"{out_dir}: no {META_FILE}; not a bag store or an incomplete one (collection interrupted)")
    with open(path, encoding="utf-8") as f:
      self.meta = json.load(f)
    if self.meta.get("format") != FORMAT:
      raise BagStoreError(f"{path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
    self.out_dir = out_dir
    self.offsets = np.load(os.path.join(out_dir, OFFSETS_FILE))
    self.layers = tuple(self.meta["layers"])
    self._arrays: dict[int, np.ndarray] = {}

  @property
  def num_bags(self) -> int:
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def token_ids(self) -> np.ndarray:
    """[num_tokens] int32 (bag i: rows offsets[i]:offsets[i+1])."""
    return np.load(os.path.join(self.out_dir, TOKENS_FILE), mmap_mode="r")

  def layer(self, layer: int) -> np.ndarray:
    """[num_tokens, D] memory-mapped activations of `layer`."""
    if layer not in self.layers:
      raise BagStoreError(f"layer {layer} not in the store (layers {list(self.layers)})")
    if layer not in self._arrays:
      self._arrays[layer] = np.load(os.path.join(self.out_dir, layer_file(layer)), mmap_mode="r")
    return self._arrays[layer]

  def bags(self, layer: int, indices: Sequence[int] | None = None, *, dtype=np.float32,
           pad_to_multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Dense bags of `indices` (default all): (bags [B, T, D] `dtype`, mask [B, T] bool), right-padded with zeros."""
    idx = np.arange(self.num_bags) if indices is None else np.asarray(indices, np.int64)
    lengths = self.lengths[idx]
    t = int(lengths.max(initial=1))
    t = -(-t // pad_to_multiple_of) * pad_to_multiple_of
    src = self.layer(layer)
    out = np.zeros((len(idx), t, src.shape[1]), dtype)
    mask = np.arange(t)[None, :] < lengths[:, None]
    for r, i in enumerate(idx):
      out[r, :lengths[r]] = src[self.offsets[i]:self.offsets[i + 1]]
    return out, mask


def entity_disjoint_split(groups: Sequence[str], *, test_fraction: float = 0.25, calibration_fraction: float = 0.25,
                          seed: int = 0) -> dict[str, np.ndarray]:
  """Statement indices of `train`, `calibration` and `test`, with every group (entity) in exactly one split.

  Groups are shuffled (seeded) and taken whole into test until it holds at
  least `test_fraction` of the statements, then into calibration until it
  holds `calibration_fraction` of the remaining ones; the rest is train.
  """
  if not (0 < test_fraction < 1 and 0 <= calibration_fraction < 1):
    raise ValueError(f"need 0 < test_fraction < 1 and 0 <= calibration_fraction < 1, got "
                     f"{test_fraction}, {calibration_fraction}")
  groups = np.asarray([str(g) for g in groups])
  names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(names))
  n = len(groups)
  split_of = np.empty(len(names), np.int64)
  n_test = n_cal = 0
  for g in order:
    if n_test < test_fraction * n:
      split_of[g], n_test = 0, n_test + counts[g]
    elif n_cal < calibration_fraction * (n - n_test):
      split_of[g], n_cal = 1, n_cal + counts[g]
    else:
      split_of[g] = 2
  s = split_of[inverse]
  return {"train": np.flatnonzero(s == 2), "calibration": np.flatnonzero(s == 1), "test": np.flatnonzero(s == 0)}
