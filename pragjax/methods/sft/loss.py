"""Glue between the model and the pure objectives: batch -> log-probs -> loss.

The log-prob functions live in `pragjax.models.logprobs` (re-exported here).

A batch follows the data contract of `pragjax.data` (`input_ids`,
`attention_mask`, `loss_mask`, optional `positions`/`segment_ids`).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from pragjax.models.logprobs import batch_token_logprobs, model_token_logprobs
from pragjax.objectives.sft import sft_loss

__all__ = ["batch_token_logprobs", "model_token_logprobs", "make_sft_loss_fn"]


def make_sft_loss_fn(graphdef: nnx.GraphDef, *, lean: bool = True, chunk_size: int = 128):
  """`loss_fn(params, batch, rng)` for SFT/pretraining on `loss_mask` targets."""

  def loss_fn(params, batch, rng):
    del rng
    logp = batch_token_logprobs(graphdef, params, batch, lean=lean, chunk_size=chunk_size)
    target = jnp.asarray(batch["loss_mask"])[:, 1:]
    loss, n = sft_loss(logp, target)
    return loss, {"loss_weight": n}

  return loss_fn
