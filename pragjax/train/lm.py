"""Glue between the model and the pure objectives: batch -> log-probs -> loss.

A batch follows the data contract of `pragjax.data` (`input_ids`,
`attention_mask`, `loss_mask`, optional `positions`/`segment_ids`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax import ops
from pragjax.objectives.sft import sft_loss


def batch_token_logprobs(graphdef: nnx.GraphDef, params, batch: dict) -> jax.Array:
  """`[B, T-1]` float32 log p(input_ids[:, t+1] | prefix) under `params`."""
  model = nnx.merge(graphdef, params)
  out = model(
      batch["input_ids"], batch.get("attention_mask"),
      positions=batch.get("positions"), segment_ids=batch.get("segment_ids"),
  )
  return ops.token_logprobs(out.logits, batch["input_ids"])


def make_sft_loss_fn(graphdef: nnx.GraphDef):
  """`loss_fn(params, batch, rng)` for SFT/pretraining on `loss_mask` targets."""

  def loss_fn(params, batch, rng):
    del rng
    logp = batch_token_logprobs(graphdef, params, batch)
    target = jnp.asarray(batch["loss_mask"])[:, 1:]
    loss, n = sft_loss(logp, target)
    return loss, {"loss_weight": n}

  return loss_fn
