"""Supervised fine-tuning: token-mean negative log-likelihood of targets."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from pragjax import ops


def sft_loss(token_logp: Float[Array, "B T"], target_mask: Array) -> tuple[Array, Array]:
  """`loss = -sum(m * logp) / sum(m)` over all target tokens of the batch.

  Args:
    token_logp: `[B, T]` log p(target token | prefix), float32.
    target_mask: `[B, T]` 1 where the token is a training target.
  Returns: `(loss, num_targets)`; the count lets gradient accumulation weight
    micro-batches so that it equals one full batch exactly.
  """
  m = jnp.asarray(target_mask, bool)
  n = jnp.sum(m).astype(jnp.float32)
  return -ops.masked_sum(token_logp, m, axis=None) / jnp.maximum(n, 1.0), n
