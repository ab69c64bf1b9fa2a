"""Reference log-prob store: a frozen reference model's per-token log-probs,
computed once per (model, tokenizer, data) and reused across runs.

Objectives with a reference model (DPO, implicit PRM, KTO, ...) need
`log pi_ref(token | prefix)` for every training token. Keeping the reference
model in memory doubles the parameters held; recomputing it every epoch
doubles the forward passes. The store computes it once, writes it to disk in
shards, and serves it by record index, so the training run never loads the
reference model.

Layout of a store directory:
  manifest.json      fingerprints, number of records, shard table
  values-NNNNN.npy   float32 values of consecutive records, concatenated
  offsets.npy        int64 [num_records + 1] start of each record in the
                     concatenation (a record dropped by tokenisation has
                     length 0)

Record i's array has the length of its tokenised `input_ids`; entry t (t >= 1)
is `log p_ref(input_ids[t] | input_ids[:t])`, entry 0 is 0, so it pads and
slices exactly like `input_ids` (`pad_batch` pads it with zeros).

Fingerprints: the model's is a SHA-256 of every parameter's bytes (gathered
leaf by leaf to the host; independent of the mesh), the tokenizer's of its
serialised JSON, the data's of the records' canonical JSON (or a JSONL file's
bytes) plus the tokenisation settings. Opening a store with different
fingerprints raises `StaleReferenceError` naming what changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from pragjax.data.collate import bucket_length, pad_batch
from pragjax.models.logprobs import batch_token_logprobs

MANIFEST = "manifest.json"
REF_KEY = "ref_logp"


class StaleReferenceError(RuntimeError):
  """The store was built for another model, tokenizer or dataset."""


def model_fingerprint(params) -> str:
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda x: jax.tree_util.keystr(x[0])):
    arr = np.asarray(jax.device_get(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str((arr.dtype, arr.shape)).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
  backend = getattr(tokenizer, "backend", tokenizer)
  return hashlib.sha256(backend.to_str().encode()).hexdigest()


def _json_default(x):
  """Arrays by value (`str` of a numpy array elides the middle of long ones), anything else by `str`."""
  return x.tolist() if hasattr(x, "tolist") else str(x)


def data_fingerprint(source, **settings) -> str:
  h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  path = getattr(source, "path", None)
  if path is not None and os.path.exists(path):
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  else:
    for i in range(len(source)):
      h.update(json.dumps(source[i], sort_keys=True, default=_json_default).encode())
  return h.hexdigest()


@functools.partial(jax.jit, static_argnums=0)
def _score(graphdef: nnx.GraphDef, params, batch) -> jax.Array:
  """The reference's token log-probs, compiled once per (graphdef, shape): stores built one after another
  (train and eval sets, rebuilds) reuse the compilation."""
  return batch_token_logprobs(graphdef, params, batch)


class ReferenceStore:

  def __init__(self, directory: str, manifest: Mapping[str, Any]):
    self.directory = directory
    self.manifest = dict(manifest)
    self.offsets = np.load(os.path.join(directory, "offsets.npy"))
    self._shards = [np.load(os.path.join(directory, s["file"]), mmap_mode="r") for s in manifest["shards"]]
    self._starts = np.array([s["start"] for s in manifest["shards"]], np.int64)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, i: int) -> np.ndarray:
    lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
    k = int(np.searchsorted(self._starts, lo, side="right") - 1) if hi > lo else 0
    start = int(self._starts[k]) if len(self._starts) else 0
    if hi == lo:
      return np.zeros((0,), np.float32)
    return np.asarray(self._shards[k][lo - start:hi - start], np.float32)

  # -- building and opening ----------------------------------------------

  @classmethod
  def open(cls, directory: str, fingerprint: Mapping[str, str]) -> "ReferenceStore":
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
      raise FileNotFoundError(f"no reference store at {directory} (missing {MANIFEST})")
    with open(path) as f:
      manifest = json.load(f)
    changed = [k for k in ("model", "tokenizer", "data") if manifest["fingerprint"].get(k) != fingerprint.get(k)]
    if changed:
      raise StaleReferenceError(
          f"reference store {directory} was built for another {', '.join(changed)} "
          f"(stored {', '.join(k + '=' + manifest['fingerprint'].get(k, '?')[:12] for k in changed)}; "
          f"now {', '.join(k + '=' + fingerprint.get(k, '?')[:12] for k in changed)}); "
          "rebuild it (delete the directory or pass rebuild=True)")
    return cls(directory, manifest)

  @classmethod
  def build(cls, directory: str, graphdef: nnx.GraphDef, params, examples: Sequence[Mapping | None], *,
            fingerprint: Mapping[str, str], batch_size: int = 8, pad_id: int = 0,
            shard_tokens: int = 1 << 24, bucket_multiple: int = 64) -> "ReferenceStore":
    """Scores `examples` (tokenised records, None for dropped ones) with the
    reference `params` and writes the store. Only process 0 writes."""
    score = functools.partial(_score, graphdef)
    order = [i for i, e in enumerate(examples) if e is not None]
    per_record: dict[int, np.ndarray] = {}
    for s in range(0, len(order), batch_size):
      idx = order[s:s + batch_size]
      exs = [examples[i] for i in idx]
      length = bucket_length(max(len(e["input_ids"]) for e in exs), multiple=bucket_multiple)
      batch = pad_batch(exs + [exs[-1]] * (batch_size - len(exs)), length, pad_id)
      logp = np.asarray(score(params, {k: batch[k] for k in ("input_ids", "attention_mask")}))
      for row, i in enumerate(idx):
        n = len(examples[i]["input_ids"])
        per_record[i] = np.concatenate([[0.0], logp[row, :n - 1]]).astype(np.float32)
    offsets = np.zeros(len(examples) + 1, np.int64)
    for i in range(len(examples)):
      offsets[i + 1] = offsets[i] + (len(per_record[i]) if i in per_record else 0)
    # Shards end at record boundaries, so every record lies in one shard.
    groups: list[list[int]] = [[]]
    size = 0
    for i in order:
      if groups[-1] and size + len(per_record[i]) > shard_tokens:
        groups.append([])
        size = 0
      groups[-1].append(i)
      size += len(per_record[i])
    if jax.process_index() == 0:
      os.makedirs(directory, exist_ok=True)
      shards = []
      for k, group in enumerate(groups):
        name = f"values-{k:05d}.npy"
        vals = np.concatenate([per_record[i] for i in group]) if group else np.zeros((0,), np.float32)
        np.save(os.path.join(directory, name), vals)
        shards.append({"file": name, "start": int(offsets[group[0]]) if group else 0})
      np.save(os.path.join(directory, "offsets.npy"), offsets)
      manifest = {"fingerprint": dict(fingerprint), "num_records": len(examples), "shards": shards,
                  "num_tokens": int(offsets[-1])}
      tmp = os.path.join(directory, MANIFEST + ".tmp")
      with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
      os.replace(tmp, os.path.join(directory, MANIFEST))  # the manifest last: a complete store
    with open(os.path.join(directory, MANIFEST)) as f:
      return cls(directory, json.load(f))

  @classmethod
  def open_or_build(cls, directory: str, fingerprint: Mapping[str, str], build_fn: Callable[[], "ReferenceStore"],
                    *, rebuild: bool = False) -> tuple["ReferenceStore", bool]:
    """Reuses a matching store, else builds one. Returns (store, built)."""
    if not rebuild and os.path.exists(os.path.join(directory, MANIFEST)):
      return cls.open(directory, fingerprint), False
    return build_fn(), True

  # -- training ------------------------------------------------------------

  def attach(self, source):
    """A source whose record i carries its reference log-probs (`_ref_logp`)."""
    return _WithReference(source, self)


class _WithReference:

  def __init__(self, source, store: ReferenceStore):
    if len(source) != len(store):
      raise StaleReferenceError(f"data has {len(source)} records, the reference store {len(store)}")
    self.source, self.store = source, store
    self.path = getattr(source, "path", None)
    if hasattr(source, "line_number"):
      self.line_number = source.line_number

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = dict(self.source[i])
    record["_" + REF_KEY] = self.store[i]
    return record


def with_reference(tokenize_fn):
  """Wraps `tokenize_fn(record)` to copy the record's stored reference
  log-probs into the example as `ref_logp` (same length as `input_ids`)."""

  def fn(record):
    ref = record["_" + REF_KEY]
    example = tokenize_fn({k: v for k, v in record.items() if k != "_" + REF_KEY})
    if example is None:
      return None
    if len(ref) != len(example["input_ids"]):
      raise StaleReferenceError(
          f"stored reference has {len(ref)} tokens, tokenisation gives {len(example['input_ids'])}")
    return {**example, REF_KEY: ref}

  return fn
