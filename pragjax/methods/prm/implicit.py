"""Implicit process rewards: token, step and solution scores from a log-ratio reward model.

An implicit PRM (Yuan et al., 2024) is a causal LM `pi` trained as an outcome
reward model whose reward is `r(y) = beta * log pi(y) / pi_ref(y)`; process
rewards then come for free:

    token reward   r_t = beta * (log pi(y_t | y<t) - log pi_ref(y_t | y<t))   on response tokens, 0 elsewhere
    q_t            = sum_{s <= t} r_s                                          (cumulative reward)
    step k         ends at token e_k (the last token of the step, its separator included)
    accumulative   R_k = q(e_k)
    single         R_k = q(e_k) - q(e_{k-1}),  with q(e_{-1}) = 0 (the response start)
    solution score min / sum / last / mean of R_k over the valid steps

Index convention: every `[B, T]` array here is aligned with `input_ids`, so
position t refers to token t (`aligned_token_logprobs` puts log p(token t |
tokens < t) at t and 0 at t = 0). `step_end [B, K]` holds indices into the
same axis; `step_mask [B, K]` marks the real steps (padding steps are 0).

`token_rewards`, `step_rewards` and `aggregate` are pure functions of arrays;
`make_scorer` builds the one jitted pass that runs the policy and the
reference on a batch of solutions and returns all of the above.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from pragjax import ops
from pragjax.models.logprobs import batch_token_logprobs

MODES = ("single", "accumulative")
AGGREGATIONS = ("min", "sum", "last", "mean")

__all__ = ["MODES", "AGGREGATIONS", "aligned_token_logprobs", "token_rewards", "step_rewards", "aggregate",
           "make_scorer", "score"]


def aligned_token_logprobs(logits: Float[Array, "B T V"], input_ids: Int[Array, "B T"]) -> Float[Array, "B T"]:
  """`out[b, t] = log p(input_ids[b, t] | input_ids[b, :t])` for t >= 1, `out[b, 0] = 0`; float32 `[B, T]`."""
  lp = ops.token_logprobs(logits, input_ids)
  return jnp.pad(lp, ((0, 0), (1, 0)))


def token_rewards(policy_logp: Float[Array, "B T"], ref_logp: Float[Array, "B T"],
                  response_mask: Bool[Array, "B T"], beta: float) -> Float[Array, "B T"]:
  """`r[b, t] = beta * (policy_logp[b, t] - ref_logp[b, t])` where `response_mask[b, t]`, else 0; float32 `[B, T]`."""
  return beta * ops.log_ratio(policy_logp, ref_logp, response_mask)


def _check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"step reward mode must be one of {MODES}, got {mode!r}")
  return mode


def step_rewards(token_rewards: Float[Array, "B T"], step_end: Int[Array, "B K"], step_mask: Bool[Array, "B K"],
                 mode: str = "single") -> Float[Array, "B K"]:
  """Step rewards from token rewards; float32 `[B, K]`, 0 on padding steps.

  With `q = cumsum(token_rewards, axis=-1)`:
    accumulative: `R[b, k] = q[b, step_end[b, k]]`;
    single:       `R[b, k] = q[b, step_end[b, k]] - q[b, step_end[b, j]]` with j the previous
                  valid step (`q = 0` before the first: the response start, since token
                  rewards are 0 outside the response).
  Padding steps (`step_mask` 0) may hold any index; valid steps need not be a prefix.
  """
  _check_mode(mode)
  r = jnp.asarray(token_rewards, jnp.float32)
  m = jnp.asarray(step_mask, bool)
  t = r.shape[-1]
  q = jnp.cumsum(r, axis=-1)
  ends = jnp.clip(jnp.asarray(step_end, jnp.int32), 0, max(t - 1, 0))
  acc = jnp.where(m, jnp.take_along_axis(q, ends, axis=-1), 0.0)
  if mode == "accumulative":
    return acc
  k = acc.shape[-1]
  last_valid = jax.lax.cummax(jnp.where(m, jnp.arange(k), -1), axis=m.ndim - 1)
  prev_idx = jnp.pad(last_valid, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
  prev = jnp.where(prev_idx >= 0, jnp.take_along_axis(acc, jnp.maximum(prev_idx, 0), axis=-1), 0.0)
  return jnp.where(m, acc - prev, 0.0)


def aggregate(step_rewards: Float[Array, "B K"], step_mask: Bool[Array, "B K"], how: str = "min") -> Float[Array, "B"]:
  """Solution score from step rewards over the valid steps only; float32 `[B]`.

  `min`, `sum`, `mean` over valid steps; `last`: the valid step with the largest
  index. A solution with no valid step scores 0 under every rule.
  """
  if how not in AGGREGATIONS:
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
  x = jnp.asarray(step_rewards, jnp.float32)
  m = jnp.asarray(step_mask, bool)
  any_valid = jnp.any(m, axis=-1)
  if how == "min":
    out = jnp.min(jnp.where(m, x, jnp.inf), axis=-1)
    return jnp.where(any_valid, out, 0.0)
  if how == "sum":
    return ops.masked_sum(x, m)
  if how == "mean":
    return ops.masked_mean(x, m)
  k = x.shape[-1]
  last = jnp.max(jnp.where(m, jnp.arange(k), 0), axis=-1)
  out = jnp.take_along_axis(x, last[:, None], axis=-1)[:, 0]
  return jnp.where(any_valid, out, 0.0)


def score(policy_logp: Float[Array, "B T"], ref_logp: Float[Array, "B T"], batch: dict, beta: float) -> dict:
  """Everything an implicit PRM gives for a batch, from aligned token log-probs.

  `batch` holds `response_mask [B, T]`, `step_end [B, K]`, `step_mask [B, K]`.
  Returns float32 `token_rewards [B, T]`, `outcome [B]` (= beta * d, the ORM
  reward), `single`/`accumulative` step rewards `[B, K]`, and
  `{mode}_{how}` solution scores `[B]` for every mode and aggregation.
  """
  r = token_rewards(policy_logp, ref_logp, batch["response_mask"], beta)
  out = {"token_rewards": r, "outcome": jnp.sum(r, axis=-1)}
  for mode in MODES:
    steps = step_rewards(r, batch["step_end"], batch["step_mask"], mode)
    out[mode] = steps
    for how in AGGREGATIONS:
      out[f"{mode}_{how}"] = aggregate(steps, batch["step_mask"], how)
  return out


def _logp(graphdef: nnx.GraphDef, params, batch: dict) -> Array:
  """Aligned `[B, T]` log-probs by the lean path (never `[B, T, V]` logits)."""
  lp = batch_token_logprobs(graphdef, params, {k: batch[k] for k in ("input_ids", "attention_mask")})
  return jnp.pad(lp, ((0, 0), (1, 0)))


def make_scorer(graphdef: nnx.GraphDef, beta: float) -> Callable[[object, object, dict], dict]:
  """`scorer(policy_params, ref_params, batch) -> score(...)` as one jitted pass through both models.

  `batch`: `input_ids`, `attention_mask`, `response_mask` `[B, T]`; `step_end`,
  `step_mask` `[B, K]` (see `pragjax.methods.prm.steps.collate_solutions`). Policy and
  reference share `graphdef` (same architecture); their parameters are
  separate arguments so either may be swapped without recompiling.
  """

  @jax.jit
  def scorer(policy_params, ref_params, batch):
    return score(_logp(graphdef, policy_params, batch), _logp(graphdef, ref_params, batch), batch, beta)

  return scorer
