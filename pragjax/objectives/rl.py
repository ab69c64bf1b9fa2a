"""Online RL on sampled groups: group-relative advantages and the clipped policy-gradient loss.

For a prompt x, G responses o_1..o_G are sampled from the policy as it was at
sampling time (pi_old) and scored with rewards r_1..r_G. The responses of B
prompts lie consecutively in one batch of N = B * G rows.

Advantages (`group_advantages`), one per response, constant over its tokens:

    baseline "mean"           b_i = mean_j r_j                       (GRPO, Dr. GRPO, DAPO)
    baseline "leave_one_out"  b_i = mean_{j != i} r_j                (RLOO, Ahmadian et al., 2024)
    scale "std"               A_i = (r_i - b_i) / (std_j(r_j) + eps)  (GRPO, Shao et al., 2024)
    scale "none"              A_i =  r_i - b_i                       (Dr. GRPO, Liu et al., 2025; RLOO)

Clipped surrogate (`policy_gradient_loss`), per response token t of row i, with
`rho_it = exp(logp_theta(o_it) - logp_old(o_it))`:

    J_it = min(rho_it A_i, clip(rho_it, 1 - eps_lo, 1 + eps_hi) A_i) - beta KL_it
    KL_it = exp(ref_it - logp_it) - (ref_it - logp_it) - 1          (k3 estimator, >= 0)

and the loss is `-J` reduced over the masked tokens by one of three
normalisers (see `policy_gradient_loss`). With a single update per batch
(old = theta, K = 1) rho = 1 and the gradient is REINFORCE's,
`-grad sum_t A_i logp_it`, under the same normaliser.

Both functions are pure functions of arrays, computed in float32 whatever the
input dtype; gradients flow through `logp` only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["BASELINES", "SCALES", "NORMALIZERS", "group_advantages", "policy_gradient_loss"]

BASELINES = ("mean", "leave_one_out")
SCALES = ("std", "none")
NORMALIZERS = ("sequence", "token", "constant")


def _f32(x) -> Array:
  return jnp.asarray(x, jnp.float32)


def group_advantages(rewards: Float[Array, "BG"], *, group_size: int, scale: str = "std", baseline: str = "mean",
                     eps: float = 1e-6, std_ddof: int = 1) -> Float[Array, "BG"]:
  """Group-relative advantages of N = B * G responses (module docstring).

      A_i = (r_i - b_i) / (std_j(r_j) + eps)     scale "std"
      A_i =  r_i - b_i                           scale "none"

  with `b_i = mean_j r_j` (baseline "mean") or `b_i = mean_{j != i} r_j`
  (baseline "leave_one_out", which equals `G / (G - 1) (r_i - mean_j r_j)`);
  means and std run over the G responses of i's group.

  The std is the sample std with `std_ddof = 1` by default, as TRL's GRPO
  (`trl.trainer.utils.nanstd` applies Bessel's correction, as torch's
  `.std()`); `std_ddof=0` gives the population std. TRL's eps is 1e-4.
  A group whose rewards are all equal gets advantages 0 under either scale.

  Args:
    rewards: `[B * G]` rewards, the G responses of each prompt consecutive.
    group_size: G; must divide `len(rewards)` (ValueError otherwise).
    scale: "std" or "none".
    baseline: "mean" or "leave_one_out" (needs G >= 2).
    eps: added to the std before dividing.
    std_ddof: delta degrees of freedom of the std (needs G > std_ddof).
  Returns: `[B * G]` float32 advantages.
  """
  r = _f32(rewards)
  if r.ndim != 1:
    raise ValueError(f"rewards must be 1-D [B * G], got shape {r.shape}")
  if scale not in SCALES:
    raise ValueError(f"unknown scale {scale!r}; expected one of {SCALES}")
  if baseline not in BASELINES:
    raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
  g = int(group_size)
  if g < 1 or r.shape[0] % g:
    raise ValueError(f"group_size={group_size} must be a positive divisor of the number of rewards ({r.shape[0]})")
  if baseline == "leave_one_out" and g < 2:
    raise ValueError(f"the leave-one-out baseline needs group_size >= 2, got {g}")
  if scale == "std" and g <= std_ddof:
    raise ValueError(f"the std with std_ddof={std_ddof} needs group_size > {std_ddof}, got {g}")
  grouped = r.reshape(-1, g)
  mean = jnp.mean(grouped, axis=-1, keepdims=True)
  if baseline == "mean":
    adv = grouped - mean
  else:
    adv = grouped - (jnp.sum(grouped, axis=-1, keepdims=True) - grouped) / (g - 1)
  if scale == "std":
    adv = adv / (jnp.std(grouped, axis=-1, ddof=std_ddof, keepdims=True) + eps)
  return adv.reshape(-1)


def policy_gradient_loss(logp: Float[Array, "N T"], old_logp: Float[Array, "N T"], advantages: Float[Array, "N"],
                         mask: Array, *, ref_logp: Float[Array, "N T"] | None = None, clip_low: float = 0.2,
                         clip_high: float = 0.2, kl_coef: float = 0.0, normalize: str = "sequence",
                         max_len: int | None = None, entropy: Float[Array, "N T"] | None = None
                         ) -> tuple[Array, dict[str, Array]]:
  """The clipped policy-gradient loss of GRPO / Dr. GRPO / DAPO (module docstring), `(loss, metrics)`.

  Per masked token, `l_it = -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A) + kl_coef KL_it`, reduced by

      "sequence"  (GRPO)      mean over the rows with at least one masked token of  sum_t m_it l_it / sum_t m_it
      "token"     (DAPO)      sum_it m_it l_it / sum_it m_it
      "constant"  (Dr. GRPO)  sum_it m_it l_it / (N * max_len)

  Rows without any masked token contribute nothing under every normaliser
  (no NaN; "sequence" leaves them out of its mean, as padding rows of a
  fixed-size batch); a batch without any masked token has loss 0.

  Conventions against TRL 1.16's `GRPOTrainer._compute_loss`
  (`trl/trainer/grpo_trainer.py`): its "grpo" divides the sum of per-row
  means by N, all rows, here by the number of non-empty rows (the same when
  no row is empty); its "dr_grpo" divides by `N * max_completion_length`,
  which is "constant" with `max_len = max_completion_length` (the paper's
  constant normaliser, not the padded T); its "dapo" (and "bnpo" on one
  process without accumulation) is "token". Like TRL, the KL term is k3 on
  the current policy (gradient through logp), without importance weight.

  `metrics["loss_weight"]` is the normaliser's count (non-empty rows,
  masked tokens, N), so that `pragjax.train.make_train_step`'s weighted
  accumulation equals one full batch exactly.

  Args:
    logp: `[N, T]` log-probs of the sampled tokens under the policy being trained.
    old_logp: `[N, T]` the same under the sampling policy (no gradient).
    advantages: `[N]` one per response, broadcast over its tokens (no gradient).
    mask: `[N, T]` 1 on response tokens.
    ref_logp: optional `[N, T]` reference log-probs (no gradient); required when `kl_coef != 0`.
    clip_low, clip_high: eps_lo, eps_hi (DAPO's clip-higher: 0.2, 0.28).
    kl_coef: beta.
    normalize: "sequence", "token" or "constant".
    max_len: the constant normaliser's length (required for "constant").
    entropy: optional `[N, T]` per-token policy entropy, reported only (no gradient, not in the loss).
  Returns: `(loss, metrics)`: float32 scalar, and a dict of float32 scalars:
    `clip_fraction` (masked tokens where the clipped term is the active one, i.e.
    `rho > 1 + clip_high` with A > 0 or `rho < 1 - clip_low` with A < 0),
    `clip_low_fraction`, `clip_high_fraction` (its two sides), `kl` (masked mean of
    k3; 0 without ref_logp), `ratio_mean` (masked mean of rho), `advantage_mean`,
    `advantage_std` (population std over the non-empty rows), `entropy` (masked
    mean; only when given) and `loss_weight`.
  """
  if normalize not in NORMALIZERS:
    raise ValueError(f"unknown normalize {normalize!r}; expected one of {NORMALIZERS}")
  if normalize == "constant" and (max_len is None or max_len <= 0):
    raise ValueError(f"normalize='constant' needs a positive max_len (the constant normaliser), got {max_len}")
  if kl_coef and ref_logp is None:
    raise ValueError(f"kl_coef={kl_coef} needs ref_logp")
  lp = _f32(logp)
  if lp.ndim != 2:
    raise ValueError(f"logp must be [N, T], got shape {lp.shape}")
  n, _ = lp.shape
  named = {"old_logp": old_logp, "mask": mask, "ref_logp": ref_logp, "entropy": entropy}
  for name, x in named.items():
    if x is not None and jnp.shape(x) != lp.shape:
      raise ValueError(f"{name} must have the shape of logp {lp.shape}, got {jnp.shape(x)}")
  if jnp.shape(advantages) != (n,):
    raise ValueError(f"advantages must be [N] = ({n},), got shape {jnp.shape(advantages)}")

  sg = jax.lax.stop_gradient
  m = jnp.asarray(mask, bool)
  mf = m.astype(jnp.float32)
  adv = sg(_f32(advantages))
  a = adv[:, None]
  ratio = jnp.exp(jnp.where(m, lp - sg(_f32(old_logp)), 0.0))  # 1 off the mask: no overflow from padding
  unclipped = ratio * a
  clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * a
  per_token = -jnp.minimum(unclipped, clipped)
  if ref_logp is not None:
    d = jnp.where(m, sg(_f32(ref_logp)) - lp, 0.0)
    kl = jnp.exp(d) - d - 1.0
    if kl_coef:
      per_token = per_token + kl_coef * kl
  else:
    kl = jnp.zeros_like(lp)
  per_token = jnp.where(m, per_token, 0.0)

  row_tokens = jnp.sum(mf, axis=-1)
  rows = (row_tokens > 0).astype(jnp.float32)
  n_rows, n_tokens = jnp.sum(rows), jnp.sum(mf)
  if normalize == "sequence":
    per_row = jnp.sum(per_token, axis=-1) / jnp.maximum(row_tokens, 1.0)
    loss, weight = jnp.sum(per_row * rows) / jnp.maximum(n_rows, 1.0), n_rows
  elif normalize == "token":
    loss, weight = jnp.sum(per_token) / jnp.maximum(n_tokens, 1.0), n_tokens
  else:
    loss, weight = jnp.sum(per_token) / (n * float(max_len)), jnp.asarray(n, jnp.float32)

  def token_mean(x):
    return sg(jnp.sum(jnp.where(m, _f32(x), 0.0)) / jnp.maximum(n_tokens, 1.0))

  low = (ratio < 1.0 - clip_low) & (a < 0)
  high = (ratio > 1.0 + clip_high) & (a > 0)
  adv_mean = jnp.sum(adv * rows) / jnp.maximum(n_rows, 1.0)
  adv_var = jnp.sum(jnp.square(adv - adv_mean) * rows) / jnp.maximum(n_rows, 1.0)
  metrics = {"clip_fraction": token_mean(low | high), "clip_low_fraction": token_mean(low),
             "clip_high_fraction": token_mean(high), "kl": token_mean(kl), "ratio_mean": token_mean(ratio),
             "advantage_mean": adv_mean, "advantage_std": jnp.sqrt(adv_var), "loss_weight": weight}
  if entropy is not None:
    metrics["entropy"] = token_mean(entropy)
  return loss, metrics
