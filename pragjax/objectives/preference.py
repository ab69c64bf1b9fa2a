"""Outcome and preference losses on sequence log-ratios (implicit reward models).

Every loss here takes sequence log-ratios

    d = log pi(y | x) - log pi_ref(y | x) = sum_t [log pi(y_t | y<t, x) - log pi_ref(y_t | y<t, x)]

summed over the response tokens, shape `[B]`, and treats `beta * d` as the
reward of the response (Yuan et al., 2024, "Free Process Rewards without
Process Labels"; the DPO parameterisation of a reward model). They know
nothing of models or tokens: the caller sums the token log-ratios.

Each returns the mean loss over the valid examples (`mask`, default all) as
a float32 scalar; `mask` also serves padding rows of a fixed-size batch.
`sigma` is the logistic function; every log-sigmoid is computed stably.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["ce_loss", "dpo_loss", "nca_loss", "kto_loss", "kto_kl_baseline"]


def _f32(x) -> Array:
  return jnp.asarray(x, jnp.float32)


def _mean(per_example: Array, mask) -> Array:
  """Mean of `per_example` [B] over `mask` (all if None); 0 when nothing is valid."""
  if mask is None:
    return jnp.mean(per_example)
  m = _f32(mask)
  return jnp.sum(per_example * m) / jnp.maximum(jnp.sum(m), 1.0)


def ce_loss(d: Float[Array, "B"], labels: Float[Array, "B"], beta: float, mask=None) -> Array:
  """Cross-entropy outcome loss (implicit PRM, CE variant).

      L = mean_b -[ l_b log sigma(beta d_b) + (1 - l_b) log(1 - sigma(beta d_b)) ]

  Args:
    d: `[B]` sequence log-ratios.
    labels: `[B]` response-level labels in [0, 1] (1 = correct; soft labels allowed).
    beta: reward scale.
    mask: optional `[B]` validity (padding rows 0).
  """
  z = beta * _f32(d)
  l = _f32(labels)
  per = -(l * jax.nn.log_sigmoid(z) + (1.0 - l) * jax.nn.log_sigmoid(-z))
  return _mean(per, mask)


def dpo_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None) -> Array:
  """DPO on (correct, incorrect) pairs of the same prompt.

      L = mean_b -log sigma(beta (d_w,b - d_l,b))

  Args:
    d_chosen, d_rejected: `[B]` sequence log-ratios of the preferred (w) and
      dispreferred (l) response of each pair.
  """
  z = beta * (_f32(d_chosen) - _f32(d_rejected))
  return _mean(-jax.nn.log_sigmoid(z), mask)


def nca_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None) -> Array:
  """NCA (noise-contrastive alignment, Chen et al. 2024) on pairs.

      L = mean_b [ -log sigma(beta d_w,b) - 0.5 log sigma(-beta d_w,b) - 0.5 log sigma(-beta d_l,b) ]
  """
  zw, zl = beta * _f32(d_chosen), beta * _f32(d_rejected)
  per = -jax.nn.log_sigmoid(zw) - 0.5 * jax.nn.log_sigmoid(-zw) - 0.5 * jax.nn.log_sigmoid(-zl)
  return _mean(per, mask)


def kto_kl_baseline(d_mismatched: Float[Array, "B"], mask=None) -> Array:
  """KTO's reference point: the batch mean of log-ratios of mismatched (x, y') pairs, clamped at 0.

      z_0 = max(0, mean_b d(x_b, y'_b)),   no gradient flows through it.
  """
  return jax.lax.stop_gradient(jnp.maximum(_mean(_f32(d_mismatched), mask), 0.0))


def kto_loss(d: Float[Array, "B"], labels: Float[Array, "B"], beta: float, kl, mask=None, *,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> Array:
  """KTO (Ethayarajh et al., 2024) on unpaired labelled responses.

      z_0 = stop_gradient(max(0, kl))
      L = mean_b [ l_b lambda_D (1 - sigma(beta (d_b - z_0))) + (1 - l_b) lambda_U (1 - sigma(beta (z_0 - d_b))) ]

  Args:
    d: `[B]` sequence log-ratios; labels: `[B]` 1 desirable, 0 undesirable.
    kl: scalar batch KL estimate (see `kto_kl_baseline`); clamped at 0 here too.
    desirable_weight, undesirable_weight: lambda_D, lambda_U.
  """
  z0 = jax.lax.stop_gradient(jnp.maximum(_f32(kl), 0.0))
  d, l = _f32(d), _f32(labels)
  good = desirable_weight * (1.0 - jax.nn.sigmoid(beta * (d - z0)))
  bad = undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z0 - d)))
  return _mean(l * good + (1.0 - l) * bad, mask)
