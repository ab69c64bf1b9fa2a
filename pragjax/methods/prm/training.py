"""Training an implicit PRM with the one train step: loss functions on example groups.

`make_prm_loss_fn(graphdef, loss, beta)` is a `loss_fn(params, batch, rng)`
for `pragjax.train.make_train_step`; `make_ref_fn(graphdef)` is its frozen
reference pass (run inside the step on `state.ref_params`). Both read the
group batches of `pragjax.data.groups` (`input_ids [B, G, T]` ...) and reduce
them to sequence log-probs `[B, G]` (sum over `loss_mask` targets, one
`[B*G, T]` forward: `pragjax.models.logprobs.group_sequence_logprobs`). The
sequence log-ratio `d = policy - reference` feeds the pure losses of
`pragjax.objectives.preference`. `label` is `[B]` or, from the group
iterator, `[B, G]` (every sequence carries its group's label).

The run itself is `pragjax.train.runner.train_lm` with these functions, the
group iterator of `pragjax.data.groups` and the reference pass (see
`pragjax.methods.prm.recipe.train_prm`).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax import ops
from pragjax.methods.prm import data as prm_data
from pragjax.models.logprobs import group_sequence_logprobs
from pragjax.objectives import preference

__all__ = ["sequence_logprobs", "make_ref_fn", "make_prm_loss_fn", "chat_template_flag"]


def sequence_logprobs(graphdef: nnx.GraphDef, params, batch: Mapping[str, jax.Array]) -> jax.Array:
  """`[B, G]` float32 sum of log p(target tokens) over `loss_mask` for group batches `[B, G, T]`.

  Lean: the `[B*G, T, V]` logits are never materialised (`pragjax.models.logprobs`).
  """
  return group_sequence_logprobs(graphdef, params, batch, reduction="sum")


def make_ref_fn(graphdef: nnx.GraphDef):
  """`ref_fn(ref_params, batch) -> {"ref_seq_logp": [B, G]}` for `make_train_step`."""

  def ref_fn(ref_params, batch):
    return {"ref_seq_logp": sequence_logprobs(graphdef, ref_params, batch)}

  return ref_fn


def make_prm_loss_fn(graphdef: nnx.GraphDef, loss: str, beta: float, *, desirable_weight: float = 1.0,
                     undesirable_weight: float = 1.0):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` for implicit-PRM training with `loss` in `LOSSES`.

  Needs `batch["ref_seq_logp"]` (from `make_ref_fn`, or precomputed).
  Metrics: `reward_correct` / `reward_wrong` (mean beta*d of each side),
  `reward_accuracy` (pairs: beta*d_w > beta*d_l; CE/KTO: sign of beta*d
  agrees with label >= 0.5), and `kl` for KTO. Under gradient
  accumulation KTO's KL baseline is the micro-batch's.
  """
  if loss not in prm_data.LOSSES:
    raise ValueError(f"loss must be one of {prm_data.LOSSES}, got {loss!r}")

  def loss_fn(params, batch, rng):
    del rng
    d = sequence_logprobs(graphdef, params, batch) - batch["ref_seq_logp"]
    label = jnp.reshape(batch["label"], (d.shape[0], -1))[:, 0]  # [B] or [B, G] -> [B]
    metrics = {"loss_weight": jnp.asarray(d.shape[0], jnp.float32)}
    if loss in prm_data.PAIRWISE:
      fn = preference.dpo_loss if loss == "dpo" else preference.nca_loss
      value = fn(d[:, 0], d[:, 1], beta)
      metrics.update(reward_correct=jnp.mean(beta * d[:, 0]), reward_wrong=jnp.mean(beta * d[:, 1]),
                     reward_accuracy=jnp.mean((d[:, 0] > d[:, 1]).astype(jnp.float32)))
      return value, metrics
    own = d[:, 0]
    if loss == "ce":
      value = preference.ce_loss(own, label, beta)
    else:
      kl = preference.kto_kl_baseline(d[:, 1])
      value = preference.kto_loss(own, label, beta, kl, desirable_weight=desirable_weight,
                                  undesirable_weight=undesirable_weight)
      metrics["kl"] = kl
    good = label >= 0.5
    metrics.update(
        reward_correct=ops.masked_mean(beta * own, good, axis=0),
        reward_wrong=ops.masked_mean(beta * own, ~good, axis=0),
        reward_accuracy=jnp.mean(((own > 0) == good).astype(jnp.float32)))
    return value, metrics

  return loss_fn


def chat_template_flag(value: str) -> bool | None:
  """Config `prm.chat_template` -> `chat_template` argument: "" None (automatic), "on" True, "off" False."""
  flags = {"": None, "auto": None, "on": True, "off": False}
  if value not in flags:
    raise ValueError(f"prm.chat_template must be one of {sorted(flags)}, got {value!r}")
  return flags[value]
