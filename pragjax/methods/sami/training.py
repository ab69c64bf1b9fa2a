"""SAMI training with the one train step: the loss function on C x C batches.

`make_sami_loss_fn(graphdef, reduction)` is a `loss_fn(params, batch, rng)`
for `pragjax.train.make_train_step`: it scores the `[B, C*C, T]` batch into
`[B, C, C]` (`scoring.matrix_logprobs`, one forward) and returns
`sami_loss(L, response_mask=slot_mask)`. Metrics: `mi_bound` (log C - loss),
`diag_margin` (mean diagonal minus mean off-diagonal score) and
`loss_weight` (queries in the batch, so gradient accumulation equals one
batch exactly: the loss is a mean over queries).

One training pass is `pragjax.train.runner.train_lm` with this loss and the
group iterator of `pragjax.methods.sami.batches` (see `pragjax.methods.sami.recipe.train_pass`).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from pragjax.objectives.sami import mi_lower_bound, sami_loss
from pragjax.methods.sami import scoring


def make_sami_loss_fn(graphdef: nnx.GraphDef, reduction: str = "mean"):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` (module docstring)."""
  scoring.check_reduction(reduction)

  def loss_fn(params, batch, rng):
    del rng
    L = scoring.matrix_logprobs(graphdef, params, batch, reduction)
    slots = batch["slot_mask"]
    loss = sami_loss(L, response_mask=slots)
    m = jnp.asarray(slots, bool)
    pair = (m[:, :, None] & m[:, None, :]).astype(jnp.float32)
    eye = jnp.eye(L.shape[-1], dtype=jnp.float32)
    diag = jnp.sum(L * eye * pair) / jnp.maximum(jnp.sum(eye * pair), 1.0)
    off = jnp.sum(L * (1 - eye) * pair) / jnp.maximum(jnp.sum((1 - eye) * pair), 1.0)
    metrics = {"mi_bound": mi_lower_bound(L, response_mask=slots), "diag_margin": diag - off,
               "loss_weight": jnp.sum(jnp.any(m, axis=-1)).astype(jnp.float32)}
    return loss, metrics

  return loss_fn
