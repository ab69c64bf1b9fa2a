"""SAMI: the symmetric InfoNCE bound on the mutual information between constitutions and responses.

Franken et al. (2024), "Self-Supervised Alignment with Mutual Information".
For one query x, C constitutions c_1..c_C and one response y_j sampled under
each c_j, the scores

    L[i, j] = log p(y_j | c_i, x)        (reduced over the response tokens by the caller:
                                          per-token mean, as the paper, or sum)

form a C x C matrix whose diagonal holds each response under its own
constitution. The loss is the symmetric InfoNCE objective with the diagonal
as target, no temperature and no reference model:

    row_i    = -log( exp L[i, i] / sum_j exp L[i, j] )     (which response is c_i's)
    col_j    = -log( exp L[j, j] / sum_i exp L[i, j] )     (which constitution produced y_j)
    loss(x)  = 0.5 * ( mean_i row_i + mean_j col_j )

averaged over the queries of a batch. `log C - loss(x)` is a lower bound on
I(y; c | x) (InfoNCE), so `mi_lower_bound = log C - loss`, averaged the same way.

Both functions are pure functions of arrays (float32 whatever the input dtype).
`response_mask` marks the real slots of a padded matrix (a query with fewer
than C constitution/response pairs): masked rows and columns are excluded from
every softmax and every mean, C becomes the number of real slots of that query,
and a query with no real slot contributes nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["sami_loss", "mi_lower_bound", "per_query_loss"]


def _as_batch(logp, response_mask):
  """`[C, C]` or `[B, C, C]` -> (`[B, C, C]` float32, `[B, C]` bool, whether a batch axis was given)."""
  x = jnp.asarray(logp, jnp.float32)
  if x.ndim not in (2, 3) or x.shape[-1] != x.shape[-2]:
    raise ValueError(f"logp must be [C, C] or [B, C, C] (square), got shape {x.shape}")
  batched = x.ndim == 3
  if not batched:
    x = x[None]
  b, c, _ = x.shape
  if response_mask is None:
    m = jnp.ones((b, c), bool)
  else:
    m = jnp.asarray(response_mask, bool)
    allowed = ((c,), (b, c)) if batched else ((c,),)
    if m.shape not in allowed:
      raise ValueError(f"response_mask must have shape {' or '.join(map(str, allowed))} for logp of shape "
                       f"{tuple(jnp.shape(logp))}, got {m.shape}")
    m = jnp.broadcast_to(m, (b, c))
  return x, m, batched


def per_query_loss(logp: Float[Array, "*B C C"], *, response_mask=None) -> tuple[Array, Array]:
  """Per-query SAMI loss and number of real slots: (`[B]` float32, `[B]` float32) (B = 1 without a batch axis)."""
  x, m, _ = _as_batch(logp, response_mask)
  pair = m[:, :, None] & m[:, None, :]
  neg = jnp.finfo(jnp.float32).min
  masked = jnp.where(pair, x, neg)
  diag = jnp.diagonal(x, axis1=-2, axis2=-1)
  row = jax.nn.logsumexp(masked, axis=-1) - diag  # [B, C]: CE of row i over responses j
  col = jax.nn.logsumexp(masked, axis=-2) - diag  # [B, C]: CE of column j over constitutions i
  n = jnp.sum(m, axis=-1).astype(jnp.float32)
  mean = lambda v: jnp.sum(jnp.where(m, v, 0.0), axis=-1) / jnp.maximum(n, 1.0)
  return 0.5 * (mean(row) + mean(col)), n


def sami_loss(logp: Float[Array, "*B C C"], *, response_mask=None) -> Array:
  """The symmetric InfoNCE loss (module docstring), a float32 scalar averaged over queries.

  Args:
    logp: `[C, C]` or `[B, C, C]`; `logp[..., i, j]` = log-probability of
      response j under constitution i, already reduced over tokens.
    response_mask: optional `[C]` or `[B, C]`, true on real slots.
  """
  loss, n = per_query_loss(logp, response_mask=response_mask)
  real = (n > 0).astype(jnp.float32)
  return jnp.sum(loss * real) / jnp.maximum(jnp.sum(real), 1.0)


def mi_lower_bound(logp: Float[Array, "*B C C"], *, response_mask=None) -> Array:
  """`log C - loss`, the InfoNCE lower bound on I(y; c | x) in nats, averaged over queries (float32 scalar)."""
  loss, n = per_query_loss(logp, response_mask=response_mask)
  real = (n > 0).astype(jnp.float32)
  bound = jnp.log(jnp.maximum(n, 1.0)) - loss
  return jnp.sum(bound * real) / jnp.maximum(jnp.sum(real), 1.0)
