"""The C x C log-probability matrix `L[i, j] = log p(response j | constitution i, query)` in one forward.

`matrix_logprobs(graphdef, params, batch, reduction)` scores a `[B, C*C, T]`
batch (`pragjax.methods.sami.batches.collate`, or the training iterator) in one
`[B*C*C, T]` forward with the lean (chunked) token log-probs, so `[B, T, V]`
logits never exist (`pragjax.models.logprobs.group_sequence_logprobs`), and
reduces each sequence over its response mask: `mean` (per-token mean, the
paper) or `sum`. Prompt tokens, padding and EOS carry mask 0 and never count.

`score_groups` runs it jitted over many groups in fixed-size batches;
`score_pairs_one_by_one` is the plain reference (one sequence per forward,
no padding) that the tests and the benchmark compare against.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pragjax import ops
from pragjax.methods.sami import batches as batches_lib
from pragjax.models.logprobs import batch_token_logprobs, group_sequence_logprobs

REDUCTIONS = ("mean", "sum")


def check_reduction(reduction: str) -> str:
  if reduction not in REDUCTIONS:
    raise ValueError(f"sami.reduction must be one of {REDUCTIONS}, got {reduction!r}")
  return reduction


def reduce_tokens(token_logp: jax.Array, mask: jax.Array, reduction: str) -> jax.Array:
  """`[..., T-1]` token log-probs and `[..., T-1]` target mask -> sequence scores (mean or sum, float32)."""
  if check_reduction(reduction) == "mean":
    return ops.masked_mean(token_logp, mask)
  return ops.masked_sum(token_logp, mask)


def matrix_logprobs(graphdef: nnx.GraphDef, params, batch: Mapping[str, jax.Array], reduction: str,
                    *, chunk_size: int = 128) -> jax.Array:
  """`[B, C, C]` float32: `L[b, i, j]` = reduced log p(response j | prompt i) (module docstring)."""
  b, cc, _ = batch["input_ids"].shape
  c = int(round(cc ** 0.5))
  if c * c != cc:
    raise ValueError(f"SAMI batch must hold C*C sequences per query, got {cc}")
  scores = group_sequence_logprobs(graphdef, params, batch, reduction=check_reduction(reduction), chunk_size=chunk_size)
  return scores.reshape(b, c, c)


@functools.partial(jax.jit, static_argnames=("graphdef", "reduction"))
def _matrix_jit(graphdef, params, batch, reduction):
  return matrix_logprobs(graphdef, params, batch, reduction)


def score_groups(model, examples: Sequence[Mapping], *, pad_id: int, reduction: str = "mean", batch_size: int = 8,
                 length_bucket: int = 32) -> np.ndarray:
  """`[N, C, C]` matrices of `N` groups (`batches.make_example`), jitted, `batch_size` groups per forward."""
  graphdef, params = nnx.split(model)
  slots = max(int(e["num_slots"]) for e in examples)
  out = []
  for start in range(0, len(examples), batch_size):
    chunk = list(examples[start:start + batch_size])
    n = len(chunk)
    chunk += [chunk[-1]] * (batch_size - n)  # one compiled batch size
    batch = batches_lib.collate(chunk, pad_id=pad_id, length_bucket=length_bucket, num_slots=slots)
    batch = {k: jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "loss_mask")}
    out.append(np.asarray(_matrix_jit(graphdef, params, batch, reduction))[:n])
  return np.concatenate(out, axis=0)


@functools.partial(jax.jit, static_argnames=("graphdef", "reduction"))
def _one_sequence(graphdef, params, ids, mask, reduction):
  logp = batch_token_logprobs(graphdef, params, {"input_ids": ids, "attention_mask": jnp.ones_like(ids)})
  return reduce_tokens(logp, mask[:, 1:], reduction)[0]


def score_pairs_one_by_one(model, examples: Sequence[Mapping], *, reduction: str = "mean") -> np.ndarray:
  """The reference: every (constitution, response) sequence in its own unpadded forward -> `[N, C, C]`."""
  graphdef, params = nnx.split(model)
  out = []
  for e in examples:
    c = int(e["num_slots"])
    vals = [float(_one_sequence(graphdef, params, jnp.asarray(ids)[None], jnp.asarray(m)[None], reduction))
            for ids, m in e["sequences"]]
    out.append(np.asarray(vals, np.float32).reshape(c, c))
  return np.stack(out)
