"""The DPO-family loss builder and its frozen-reference pass, on `[B, 2, T]` pair batches.

Batch contract (from `pragjax.data.groups`, slot 0 chosen, slot 1 rejected):
`input_ids`, `attention_mask`, `loss_mask` `[B, 2, T]` int32 (`loss_mask` 1 on
the response targets), optional `slot_mask [B, 2]` (a pair counts only when
both slots are real), and `ref_seq_logp [B, 2]` float32: the reference's
sequence log-probs, either precomputed (the reference store) or merged into
the batch by `make_ref_fn` inside the step.

`make_dpo_loss_fn(graphdef, loss=..., beta=...)` is a `loss_fn(params, batch,
rng)` for `pragjax.train.make_train_step`: one policy forward over the `2B`
sequences, sequence log-probs `lp [B, 2]` (sum over the response tokens, or
the per-token mean with `reduction="mean"`), log-ratios
`d = lp - ref_seq_logp`, and the pure loss `pragjax.objectives.preference.pair_loss`
on `d[:, 0]`, `d[:, 1]`. Log-softmax and every reduction run in float32.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax.models.logprobs import group_sequence_logprobs
from pragjax.objectives import preference

__all__ = ["REF_KEY", "REDUCTIONS", "LOSSES", "sequence_logprobs", "make_ref_fn", "make_dpo_loss_fn", "pair_mask",
           "preference_accuracy"]

REF_KEY = "ref_seq_logp"
REDUCTIONS = ("sum", "mean")
LOSSES = tuple(preference.PAIR_LOSSES)


def _check_reduction(reduction: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def sequence_logprobs(graphdef: nnx.GraphDef, params, batch: Mapping[str, jax.Array], *, reduction: str = "sum",
                      lean: bool = True, chunk_size: int = 128) -> jax.Array:
  """`[B, G]` float32 log p(response) of group batches `[B, G, T]`: the sum (or mean) over `loss_mask` targets.

  One forward of the flattened `[B*G, T]` rows (`pragjax.models.logprobs.group_sequence_logprobs`); lean (no
  `[B*G, T, V]` logits) unless `lean=False`.
  """
  _check_reduction(reduction)
  return group_sequence_logprobs(graphdef, params, batch, reduction=reduction, lean=lean, chunk_size=chunk_size)


def preference_accuracy(chosen: jax.Array, rejected: jax.Array) -> jax.Array:
  """Per pair: 1 where chosen > rejected, 1/2 on a tie, else 0 (float32)."""
  return jnp.where(chosen > rejected, 1.0, jnp.where(chosen == rejected, 0.5, 0.0)).astype(jnp.float32)


def pair_mask(batch: Mapping[str, jax.Array]) -> jax.Array:
  """`[B]` float32: 1 for a pair whose two slots are real (all when the batch has no `slot_mask`)."""
  if "slot_mask" not in batch:
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
  return jnp.all(batch["slot_mask"] > 0, axis=-1).astype(jnp.float32)


def make_ref_fn(graphdef: nnx.GraphDef, *, reduction: str = "sum", lean: bool = True, chunk_size: int = 128):
  """`ref_fn(ref_params, batch) -> {"ref_seq_logp": [B, 2]}` for `make_train_step` (the in-step reference)."""
  _check_reduction(reduction)

  def ref_fn(ref_params, batch):
    return {REF_KEY: sequence_logprobs(graphdef, ref_params, batch, reduction=reduction, lean=lean,
                                       chunk_size=chunk_size)}

  return ref_fn


def make_dpo_loss_fn(graphdef: nnx.GraphDef, *, loss: str = "dpo", beta: float = 0.1, label_smoothing: float = 0.0,
                     reduction: str = "sum", lean: bool = True, chunk_size: int = 128):
  """`loss_fn(params, batch, rng) -> (loss, metrics)`: the pairwise loss `loss` (a key of
  `pragjax.objectives.preference.PAIR_LOSSES`) on the batch's log-ratios.

  Metrics (means over the valid pairs): `reward_chosen`, `reward_rejected`
  (beta d of each side), `reward_margin` (beta (d_w - d_l)), `reward_accuracy`
  (share with d_w > d_l, ties counted 1/2: exactly 0.5 at the first step,
  where the policy is the reference and every d is 0), `logp_chosen`, `logp_rejected` (the policy's
  sequence log-probs), and `loss_weight` = the number of valid pairs, so
  that gradient accumulation weighs micro-batches by their pairs.
  """
  if loss not in preference.PAIR_LOSSES:
    raise ValueError(f"dpo.loss must be one of {LOSSES}, got {loss!r}")
  if not beta > 0:
    raise ValueError(f"dpo.beta must be > 0, got {beta}")
  _check_reduction(reduction)
  if loss not in ("cdpo", "robust") and label_smoothing:
    raise ValueError(f"dpo.label_smoothing={label_smoothing} applies to the cdpo and robust losses, not {loss!r}")

  def loss_fn(params, batch, rng):
    del rng
    lp = sequence_logprobs(graphdef, params, batch, reduction=reduction, lean=lean, chunk_size=chunk_size)
    d = lp - jnp.asarray(batch[REF_KEY], jnp.float32)
    mask = pair_mask(batch)
    value = preference.pair_loss(loss, d[:, 0], d[:, 1], beta, mask, label_smoothing=label_smoothing)
    mean = lambda x: jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    metrics = {
        "loss_weight": jnp.sum(mask),
        "reward_chosen": mean(beta * d[:, 0]), "reward_rejected": mean(beta * d[:, 1]),
        "reward_margin": mean(beta * (d[:, 0] - d[:, 1])),
        "reward_accuracy": mean(preference_accuracy(d[:, 0], d[:, 1])),
        "logp_chosen": mean(lp[:, 0]), "logp_rejected": mean(lp[:, 1]),
    }
    return value, metrics

  return loss_fn
