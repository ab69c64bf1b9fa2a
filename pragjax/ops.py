"""Shared numerics: token log-probabilities, masked reductions, log-ratios.

Every function here computes in float32 whatever the dtype of its inputs, so
that losses built on top of them do not depend on the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, Bool

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
