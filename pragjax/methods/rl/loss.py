"""The policy-gradient loss builder on rollout batches (`pragjax.train.rollout` batch contract).

`make_pg_loss_fn(graphdef, ...)` is a `loss_fn(params, batch, rng)` for
`pragjax.train.make_train_step`: one forward over the `[n, T]` rows gives the
log-prob of every token given its prefix (`logp [n, T-1]`, target t+1 at
column t); the sampling pass's `old_logp` and the `loss_mask` are shifted the
same way; on the first step of a rollout (`on_policy`) the old log-probs are
the current ones with the gradient stopped, so the ratio is exactly 1 and the
clipped objective is REINFORCE with the advantage; then
`pragjax.objectives.rl.policy_gradient_loss`. With `kl_coef > 0` the frozen
reference's log-probs come from `make_ref_fn` inside the step.

A batch with an `sft` row flag (ReLIFT's rollout source) whose rows are
fine-tuning rows (any flag 1) takes the token-mean NLL of its targets
instead, `-sum_t m_t logp_t / sum_t m_t` (no clip, no KL): the demonstration
step; the metric `sft_step` is 1 on such a step.

Metrics: the loss's (clip fraction, KL, ratio, ...) and the rows' mean
reward, accuracy and response length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax.models.logprobs import batch_token_logprobs
from pragjax.objectives.rl import policy_gradient_loss
from pragjax.train.rollout import SFT_KEY

__all__ = ["REF_KEY", "make_ref_fn", "make_pg_loss_fn"]

REF_KEY = "ref_logp"


def make_ref_fn(graphdef: nnx.GraphDef, *, lean: bool = True, chunk_size: int = 128):
  """`ref_fn(ref_params, batch) -> {"ref_logp": [n, T-1]}` (the frozen reference's token log-probs)."""

  def ref_fn(ref_params, batch):
    return {REF_KEY: batch_token_logprobs(graphdef, ref_params, batch, lean=lean, chunk_size=chunk_size)}

  return ref_fn


def make_pg_loss_fn(graphdef: nnx.GraphDef, *, clip_low: float = 0.2, clip_high: float = 0.2, kl_coef: float = 0.0,
                    normalize: str = "sequence", max_len: int | None = None, lean: bool = True,
                    chunk_size: int = 128):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` (module docstring)."""

  def loss_fn(params, batch, rng):
    del rng
    logp = batch_token_logprobs(graphdef, params, batch, lean=lean, chunk_size=chunk_size)
    mask = jnp.asarray(batch["loss_mask"])[:, 1:]
    old = jnp.asarray(batch["old_logp"], jnp.float32)[:, 1:]
    on_policy = jnp.asarray(batch["on_policy"])[:, None] > 0
    old = jnp.where(on_policy, jax.lax.stop_gradient(logp), old)
    ref = batch.get(REF_KEY) if kl_coef else None
    loss, metrics = policy_gradient_loss(logp, old, batch["advantages"], mask, ref_logp=ref, clip_low=clip_low,
                                         clip_high=clip_high, kl_coef=kl_coef, normalize=normalize, max_len=max_len)
    metrics = dict(metrics)
    if SFT_KEY in batch:
      is_sft = jnp.max(jnp.asarray(batch[SFT_KEY], jnp.float32)) > 0
      m = mask.astype(jnp.float32)
      nll = -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)
      loss = jnp.where(is_sft, nll, loss)
      metrics["sft_step"] = is_sft.astype(jnp.float32)
    correct = jnp.asarray(batch["correct"], jnp.float32)
    known = correct >= 0
    metrics.update(
        reward=jnp.mean(jnp.asarray(batch["reward"], jnp.float32)),
        accuracy=jnp.sum(jnp.where(known, correct, 0.0)) / jnp.maximum(jnp.sum(known), 1),
        response_length=jnp.mean(jnp.asarray(batch["response_length"], jnp.float32)))
    return loss, metrics

  return loss_fn
