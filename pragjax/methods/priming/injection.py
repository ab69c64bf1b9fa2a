"""The injection protocol: ordinary training in which one new sample replaces one element of every batch.

For each new sample, a run starts from the same train state (parameters and
optimizer moments after `warmup` steps of ordinary training on the background
data), takes `S` steps of the one train step on background batches whose row
`inject_row` is replaced by the sample, and is scored at the end. Every run
of one call sees the same background batches (a paired design: variants
differ only in their optimizer or sample).

Runs are independent, so `make_injection_runner` vmaps a `lax.scan` of `S`
train steps over a chunk of samples and jits it once: one compilation serves
every chunk, every sample and, for a given optimizer, every call. The runner
scores inside the same jitted function (a function of the start and final
parameters, e.g. keyword log-probabilities), so the chunk's final parameters never leave
the device.

Rows follow the data contract of `pragjax.data` in its packed form
(`input_ids`, `attention_mask`, `loss_mask`, `segment_ids`, `positions`;
`[.., T]` int32), built by `pragjax.data.collate.pack_examples`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pragjax.data.collate import pack_examples, tokenize_record
from pragjax.train.state import TrainState
from pragjax.train.step import make_train_step

ROW_KEYS = ("input_ids", "attention_mask", "loss_mask", "segment_ids", "positions")


def document_rows(tokenizer, texts: Sequence[str], seq_len: int, *, packing: bool = True) -> dict[str, np.ndarray]:
  """Documents as `[BOS] text EOS` records with loss on text + EOS -> rows `[R, seq_len]`.

  `packing=True` packs several documents per row (first fit, no document split
  across rows); False gives one document per row. Documents longer than
  `seq_len` are truncated; a document with no target left is an error.
  """
  examples = []
  for i, text in enumerate(texts):
    ex = tokenize_record({"prompt": "", "response": text}, tokenizer, max_length=seq_len, index=i)
    if ex is None:
      raise ValueError(f"document {i} ({text[:60]!r}) has no training target within seq_len={seq_len}")
    examples.append(ex)
  if packing:
    return pack_examples(examples, seq_len, tokenizer.pad_token_id or 0)
  rows = [pack_examples([ex], seq_len, tokenizer.pad_token_id or 0, num_rows=1) for ex in examples]
  return {k: np.concatenate([r[k] for r in rows]) for k in ROW_KEYS}


def background_batches(rows: Mapping[str, np.ndarray], num_batches: int, batch_size: int,
                       rng: np.random.Generator) -> dict[str, np.ndarray]:
  """`num_batches` batches of `batch_size` rows -> `[num_batches, batch_size, T]`.

  Rows are drawn without replacement from a random permutation, then from a
  fresh one when they run out.
  """
  total = num_batches * batch_size
  n = rows["input_ids"].shape[0]
  order = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
  return {k: np.asarray(rows[k])[order].reshape(num_batches, batch_size, -1) for k in ROW_KEYS}


def inject(batches: Mapping[str, jax.Array], row: Mapping[str, jax.Array], position: int = 0) -> dict:
  """`batches` (`[S, B, T]`) with element `position` of every batch replaced by `row` (`[T]`)."""
  return {k: jnp.asarray(batches[k]).at[:, position].set(jnp.asarray(row[k])) for k in ROW_KEYS}


def split_batches(batches: Mapping[str, np.ndarray], first: int) -> tuple[dict, dict]:
  """The first `first` batches (e.g. a warm-up) and the rest."""
  return ({k: v[:first] for k, v in batches.items()}, {k: v[first:] for k, v in batches.items()})


def make_train_scan(loss_fn, optimizer: optax.GradientTransformation):
  """`run(state, batches) -> (state, metrics [S])`: `lax.scan` of the one train step over `[S, ...]` batches."""
  step = make_train_step(loss_fn, optimizer, jit=False, donate=False)

  def run(state: TrainState, batches: Mapping[str, jax.Array]):
    return jax.lax.scan(step, state, dict(batches))

  return run


def extend_opt_state(opt_state: Any, extras: Sequence[optax.GradientTransformation], params) -> tuple:
  """The state of `optax.chain(base, *extras)` from a trained `base` state and fresh extras."""
  return (opt_state, *[t.init(params) for t in extras])


def make_injection_runner(loss_fn, optimizer: optax.GradientTransformation,
                          score_fn: Callable[[Any, Any], jax.Array], *, inject_row: int = 0):
  """A jitted `run(state, batches, rows, score_inputs) -> scores [N, ...]`.

  Args:
    loss_fn: `(params, batch, rng) -> (loss, metrics)` (e.g. `make_sft_loss_fn`).
    optimizer: the transformation whose state `state.opt_state` holds.
    score_fn: `(start_params, final_params, score_input) -> array`, evaluated
      at the end of each run with that run's slice of `score_inputs` (the
      start parameters let it score e.g. a pruned whole-run delta).
    inject_row: the batch element the sample replaces.
  The returned function takes `state` (one `TrainState`, shared by the runs),
  `batches` (`[S, B, T]` background batches, shared), `rows` (`[N, T]`, the
  sample of each run) and `score_inputs` (a pytree with leading axis N), and
  returns each run's `score_fn`, stacked `[N, ...]`.
  """
  train = make_train_scan(loss_fn, optimizer)

  def one(state, batches, row, score_input):
    final, _ = train(state, inject(batches, row, inject_row))
    return score_fn(state.params, final.params, score_input)

  return jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0)))


def run_chunked(runner, state: TrainState, batches: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray],
                score_inputs: Any, *, chunk: int, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """`runner` over the N samples in chunks of `chunk` (the last one padded by repeating row 0), as numpy.

  `progress(done, total)` is called after each chunk.
  """
  n = rows["input_ids"].shape[0]
  batches = jax.tree.map(jnp.asarray, dict(batches))
  outs = []
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    idx = np.arange(start, start + chunk)
    idx = np.where(idx < stop, idx, start)
    take = lambda x: jnp.asarray(np.asarray(x)[idx])
    out = runner(state, batches, {k: take(rows[k]) for k in ROW_KEYS}, jax.tree.map(take, score_inputs))
    outs.append(np.asarray(out)[:stop - start])
    if progress is not None:
      progress(stop, n)
  return np.concatenate(outs) if outs else np.zeros((0,))
