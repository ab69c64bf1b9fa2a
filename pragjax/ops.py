"""Shared numerics: token log-probabilities, masked reductions, log-ratios.

Every function here computes in float32 whatever the dtype of its inputs, so
that losses built on top of them do not depend on the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = [
    "token_logprobs",
    "masked_sum",
    "masked_mean",
    "log_ratio",
    "positions_from_mask",
]


def token_logprobs(
    logits: Float[Array, "B T V"], input_ids: Int[Array, "B T"]
) -> Float[Array, "B T-1"]:
  """Log-probability of each next token under the model.

  Returns `out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, : t + 1])`,
  shape `[B, T - 1]`, computed with a float32 log-sum-exp.
  """
  logits = jnp.asarray(logits)[:, :-1].astype(jnp.float32)
  targets = jnp.asarray(input_ids)[:, 1:]
  lse = jax.nn.logsumexp(logits, axis=-1)
  chosen = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return chosen - lse


def masked_sum(x: Float[Array, "*B T"], mask: Array, axis: int = -1) -> Array:
  """Sum of `x` over `axis` where `mask` is true, in float32."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.sum(jnp.where(jnp.asarray(mask, bool), x, 0.0), axis=axis)


def masked_mean(
    x: Float[Array, "*B T"], mask: Array, axis: int = -1
) -> Array:
  """Mean of `x` over `axis` where `mask` is true, in float32.

  A row with an empty mask gives 0 (not NaN).
  """
  m = jnp.asarray(mask, bool)
  count = jnp.sum(m, axis=axis).astype(jnp.float32)
  return masked_sum(x, m, axis) / jnp.maximum(count, 1.0)


def log_ratio(
    policy_logp: Float[Array, "*B T"],
    ref_logp: Float[Array, "*B T"],
    mask: Bool[Array, "*B T"] | None = None,
) -> Array:
  """`policy_logp - ref_logp` in float32, zero where `mask` is false."""
  d = jnp.asarray(policy_logp, jnp.float32) - jnp.asarray(ref_logp, jnp.float32)
  if mask is None:
    return d
  return jnp.where(jnp.asarray(mask, bool), d, 0.0)


def positions_from_mask(attention_mask: Int[Array, "B T"]) -> Int[Array, "B T"]:
  """Token positions as Hugging Face `generate` derives them from a mask.

  `clip(cumsum(mask) - 1, 0)`: the first real token is position 0 whatever
  the padding side; padding positions are clipped to 0 (their outputs are
  never compared or used).
  """
  m = jnp.asarray(attention_mask, jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0)


def chunked_token_logprobs(
    hidden: Float[Array, "B T D"],
    weight: Float[Array, "D V"],
    targets: Int[Array, "B T"],
    *,
    chunk_size: int = 128,
    softcap: float | None = None,
) -> Float[Array, "B T"]:
  """`log softmax(hidden @ weight)[targets]` without materialising `[B, T, V]`.

  The sequence is cut into chunks of `chunk_size` positions; each chunk's
  logits `[B, chunk, V]` are computed, reduced to the target's log-probability
  with a float32 log-sum-exp, and dropped. The chunk function is
  rematerialised (`jax.checkpoint`), so the backward pass recomputes one
  chunk's logits at a time too: peak memory holds one chunk of logits instead
  of all of them. Values and gradients equal the full-logits path.

  Args:
    hidden: final-normed hidden states (the input of the output projection).
    weight: the output projection `[D, V]` (transposed embedding when tied).
    targets: the token whose log-probability is wanted at each position
      (e.g. `input_ids[:, 1:]` aligned with `hidden[:, :-1]`).
    softcap: final-logit soft-capping (`tanh(x / c) * c`, Gemma-2).
  Returns: `[B, T]` float32.
  """
  b, t, d = hidden.shape
  c = max(1, min(chunk_size, t))
  pad = (-t) % c
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  n = (t + pad) // c
  hs = hidden.reshape(b, n, c, d).swapaxes(0, 1)
  ts = targets.reshape(b, n, c).swapaxes(0, 1)

  @jax.checkpoint
  def one(args):
    h, tgt = args
    logits = jnp.einsum("bcd,dv->bcv", h, weight.astype(h.dtype), preferred_element_type=jnp.float32)
    if softcap is not None:
      logits = jnp.tanh(logits / softcap) * softcap
    lse = jax.nn.logsumexp(logits, axis=-1)
    chosen = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0]
    return chosen - lse

  out = jax.lax.map(one, (hs, ts))
  return out.swapaxes(0, 1).reshape(b, n * c)[:, :t]
