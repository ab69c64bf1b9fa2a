"""Outcome and preference losses on sequence log-ratios (implicit reward models).

Every loss here takes sequence log-ratios

    d = log pi(y | x) - log pi_ref(y | x) = sum_t [log pi(y_t | y<t, x) - log pi_ref(y_t | y<t, x)]

summed over the response tokens, shape `[B]` (a caller may pass per-token means
instead: the algebra is the same), and treats `beta * d` as the
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

__all__ = ["ce_loss", "dpo_loss", "nca_loss", "kto_loss", "kto_kl_baseline", "ipo_loss", "cdpo_loss", "robust_dpo_loss",
           "sppo_hard_loss", "hinge_loss", "PAIR_LOSSES", "pair_loss"]


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


# -- the DPO family: one line of algebra on the pair's margin h = d_w - d_l -----------------------------------------


def _margin(d_chosen, d_rejected) -> Array:
  return _f32(d_chosen) - _f32(d_rejected)


def ipo_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None) -> Array:
  """IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences", Eq. 17).

      h_b = d_w,b - d_l,b
      L = mean_b (h_b - 1 / (2 beta))^2

  `beta` is the paper's regulariser tau: the loss regresses the margin onto
  1/(2 tau) instead of pushing it to infinity. The paper writes h with
  sequence log-ratios; pass per-token means for the length-normalised form.
  """
  h = _margin(d_chosen, d_rejected)
  return _mean(jnp.square(h - 1.0 / (2.0 * beta)), mask)


def cdpo_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None, *,
              label_smoothing: float = 0.0) -> Array:
  """Conservative DPO (Mitchell, 2023, "A note on DPO with noisy preferences"): DPO with label smoothing.

      h_b = d_w,b - d_l,b
      L = mean_b [ -(1 - eps) log sigma(beta h_b) - eps log sigma(-beta h_b) ]

  `eps = label_smoothing` in [0, 0.5] is the assumed probability that a
  pair's label is flipped; eps = 0 is DPO.
  """
  z = beta * _margin(d_chosen, d_rejected)
  eps = float(label_smoothing)
  return _mean(-(1.0 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z), mask)


def robust_dpo_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None, *,
                    label_smoothing: float = 0.0) -> Array:
  """Robust DPO (Chowdhury et al., 2024, "Provably Robust DPO"): the unbiased loss under label flips with rate eps.

      l(h) = -log sigma(beta h),   h_b = d_w,b - d_l,b
      L = mean_b [ (1 - eps) l(h_b) - eps l(-h_b) ] / (1 - 2 eps)

  Its expectation over flipped labels is the DPO loss on clean labels.
  `eps = label_smoothing` must lie in [0, 0.5) (ValueError otherwise).
  """
  eps = float(label_smoothing)
  if not 0.0 <= eps < 0.5:
    raise ValueError(f"robust DPO needs label_smoothing in [0, 0.5), got {eps}")
  z = beta * _margin(d_chosen, d_rejected)
  per = ((1.0 - eps) * -jax.nn.log_sigmoid(z) - eps * -jax.nn.log_sigmoid(-z)) / (1.0 - 2.0 * eps)
  return _mean(per, mask)


def sppo_hard_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None) -> Array:
  """SPPO with hard labels (Wu et al., 2024, "Self-Play Preference Optimization", Eq. 4.7, eta = 1/beta).

  SPPO regresses each response's log-ratio onto eta (P(y > pi_t | x) - 1/2);
  with the hard estimate P = 1 for the chosen and 0 for the rejected response:

      L = mean_b [ (d_w,b - 1 / (2 beta))^2 + (d_l,b + 1 / (2 beta))^2 ]
  """
  half = 1.0 / (2.0 * beta)
  per = jnp.square(_f32(d_chosen) - half) + jnp.square(_f32(d_rejected) + half)
  return _mean(per, mask)


def hinge_loss(d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None) -> Array:
  """Hinge on the reward margin (SLiC-HF, Zhao et al., 2023, with the reference log-ratios of RSO, Liu et al., 2024).

      h_b = d_w,b - d_l,b
      L = mean_b max(0, 1 - beta h_b)

  A pair stops contributing once its reward margin beta h reaches 1.
  """
  return _mean(jax.nn.relu(1.0 - beta * _margin(d_chosen, d_rejected)), mask)


# Pairwise losses by name: fn(d_chosen [B], d_rejected [B], beta, mask) -> scalar. cdpo and robust also take
# label_smoothing (see `pair_loss`).
PAIR_LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss, "cdpo": cdpo_loss, "robust": robust_dpo_loss,
               "sppo_hard": sppo_hard_loss, "hinge": hinge_loss, "nca": nca_loss}
_SMOOTHED = ("cdpo", "robust")


def pair_loss(name: str, d_chosen: Float[Array, "B"], d_rejected: Float[Array, "B"], beta: float, mask=None, *,
              label_smoothing: float = 0.0) -> Array:
  """The pairwise loss `name` (a key of `PAIR_LOSSES`) on sequence log-ratios; `label_smoothing` is eps of cdpo and
  robust and must be 0 for the others (ValueError: a smoothing the loss would ignore is a mistake)."""
  if name not in PAIR_LOSSES:
    raise ValueError(f"unknown pairwise loss {name!r}; expected one of {sorted(PAIR_LOSSES)}")
  if name in _SMOOTHED:
    return PAIR_LOSSES[name](d_chosen, d_rejected, beta, mask, label_smoothing=label_smoothing)
  if label_smoothing:
    raise ValueError(f"label_smoothing={label_smoothing} applies to {_SMOOTHED} only, not to {name!r}")
  return PAIR_LOSSES[name](d_chosen, d_rejected, beta, mask)
