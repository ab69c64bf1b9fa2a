"""The one attention function of the decoder family, and its masks.

Every attention call in pragjax goes through `attention`. It dispatches to
`jax.nn.dot_product_attention` (XLA on CPU/TPU, cuDNN selectable on GPU) or,
when logits must be soft-capped (Gemma-2) or `implementation="explicit"`,
to an explicit einsum path with the same masks and float32 softmax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def make_attention_mask(
    q_slots: Int[Array, "B T"],
    k_slots: Int[Array, "B S"],
    k_valid: Bool[Array, "B S"],
    *,
    q_positions: Int[Array, "B T"] | None = None,
    k_positions: Int[Array, "B S"] | None = None,
    sliding_window: int | None = None,
    q_segments: Int[Array, "B T"] | None = None,
    k_segments: Int[Array, "B S"] | None = None,
) -> Bool[Array, "B 1 T S"]:
  """Causal + padding (+ sliding-window, + segment) mask.

  Causality is by slot (index in the sequence or KV cache). The sliding
  window is by position: key k is visible to query q iff
  `pos(q) - pos(k) < sliding_window` (the window counts the query itself),
  which equals the slot rule for contiguous tokens and stays right when the
  cache holds padding between prompt and generated tokens.
  """
  m = (k_slots[:, None, :] <= q_slots[:, :, None]) & k_valid[:, None, :].astype(bool)
  if sliding_window is not None:
    assert q_positions is not None and k_positions is not None
    m &= (q_positions[:, :, None] - k_positions[:, None, :]) < sliding_window
  if q_segments is not None:
    m &= q_segments[:, :, None] == k_segments[:, None, :]
  return m[:, None, :, :]


def attention(
    q: Float[Array, "B T N H"],
    k: Float[Array, "B S K H"],
    v: Float[Array, "B S K H"],
    mask: Bool[Array, "B 1 T S"],
    *,
    scale: float,
    softcap: float | None = None,
    implementation: str | None = None,
    chunk_size: int = 512,
) -> Float[Array, "B T N H"]:
  """Multi-head attention with grouped KV heads (GQA/MQA: N % K == 0).

  Args:
    implementation: None or "xla" (XLA kernel), "cudnn" (GPU fused kernel),
      "explicit" (einsum path; forced when `softcap` is set) or "chunked"
      (the explicit path over blocks of `chunk_size` queries, rematerialised
      in the backward pass: memory O(chunk_size x S) instead of O(T x S) for
      the scores, for long sequences where no fused kernel exists, e.g. CPU)
      or "causal_blocks" (queries in blocks of `chunk_size`, each against
      only the keys at or before its last slot: skips the masked upper
      triangle; valid only when queries and keys are the same slots, i.e.
      a forward pass without a KV cache).
  """
  if implementation == "chunked":
    return _chunked(q, k, v, mask, scale, softcap, chunk_size)
  if implementation == "causal_blocks":
    return _causal_blocks(q, k, v, mask, scale, softcap, chunk_size)
  if softcap is None and implementation != "explicit":
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, scale=scale, implementation=implementation
    )
  return _explicit(q, k, v, mask, scale, softcap)


def _explicit(q, k, v, mask, scale, softcap):
  b, t, n, h = q.shape
  kh = k.shape[2]
  qg = q.reshape(b, t, kh, n // kh, h)
  s = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32)
  s = s * scale
  if softcap is not None:
    s = jnp.tanh(s / softcap) * softcap
  s = jnp.where(mask[:, :, None], s, _MASKED)
  p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
  o = jnp.einsum("bkgts,bskh->btkgh", p, v)
  return o.reshape(b, t, n, h)


def _chunked(q, k, v, mask, scale, softcap, chunk_size):
  b, t, n, h = q.shape
  c = max(1, min(chunk_size, t))
  pad = (-t) % c
  if pad:  # padded query rows are fully masked; their outputs are dropped
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad), (0, 0)))
  nb = (t + pad) // c
  qs = q.reshape(b, nb, c, n, h).swapaxes(0, 1)
  ms = mask.reshape(b, 1, nb, c, mask.shape[-1]).transpose(2, 0, 1, 3, 4)
  block = jax.checkpoint(lambda args: _explicit(args[0], k, v, args[1], scale, softcap))
  out = jax.lax.map(block, (qs, ms))
  return out.swapaxes(0, 1).reshape(b, t + pad, n, h)[:, :t]


def _causal_blocks(q, k, v, mask, scale, softcap, block):
  t = q.shape[1]
  if k.shape[1] != t:
    raise ValueError("causal_blocks attention needs queries and keys at the same slots (no KV cache)")
  outs = []
  for start in range(0, t, block):
    end = min(start + block, t)
    qb, mb = q[:, start:end], mask[:, :, start:end, :end]
    if softcap is None:
      outs.append(jax.nn.dot_product_attention(qb, k[:, :end], v[:, :end], mask=mb, scale=scale))
    else:
      outs.append(_explicit(qb, k[:, :end], v[:, :end], mb, scale, softcap))
  return jnp.concatenate(outs, axis=1)


def cached_attention(
    q: Float[Array, "B T N H"],
    k: Float[Array, "B K S H"],
    v: Float[Array, "B K S H"],
    mask: Bool[Array, "B 1 T S"],
    filled: Int[Array, ""],
    *,
    scale: float,
    softcap: float | None = None,
    block: int = 64,
) -> Float[Array, "B T N H"]:
  """Attention of new queries against a KV cache in the decode layout `[B, K, S, H]`, reading only the
  first `ceil(filled / block)` blocks of `block` slots (S must be a multiple of `block`).

  A loop over blocks with a running (online) softmax in float32: per block the scores
  `s = scale * q k^T` (soft-capped if set), masked; `m' = max(m, max s)`, `l' = l e^(m - m') + sum e^(s - m')`,
  `acc' = acc e^(m - m') + e^(s - m') v`; the output is `acc / l`. Equal to the softmax over every slot
  under `mask` as long as no unmasked key sits at or beyond slot `filled`. The keys are read in the layout
  they are stored in (no transpose per step)."""
  b, t, n, h = q.shape
  kh, s_len = k.shape[1], k.shape[2]
  if s_len % block:
    raise ValueError(f"cache length {s_len} is not a multiple of the decode block {block}")
  g = n // kh
  qg = q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * t, h)  # rows ordered (g, t)

  def body(j, carry):
    m, l, acc = carry
    kb = jax.lax.dynamic_slice_in_dim(k, j * block, block, axis=2)
    vb = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=2)
    mb = jnp.tile(jax.lax.dynamic_slice_in_dim(mask, j * block, block, axis=3), (1, 1, g, 1))  # [B, 1, G*T, Bk]
    sc = jnp.einsum("bkqh,bksh->bkqs", qg, kb, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
      sc = jnp.tanh(sc / softcap) * softcap
    sc = jnp.where(mb, sc, _MASKED)
    m_new = jnp.maximum(m, jnp.max(sc, axis=-1))
    p = jnp.where(mb, jnp.exp(sc - m_new[..., None]), 0.0)
    corr = jnp.exp(m - m_new)
    l = l * corr + jnp.sum(p, axis=-1)
    acc = acc * corr[..., None] + jnp.einsum("bkqs,bksh->bkqh", p.astype(v.dtype), vb,
                                             preferred_element_type=jnp.float32)
    return m_new, l, acc

  init = (jnp.full((b, kh, g * t), _MASKED, jnp.float32), jnp.zeros((b, kh, g * t), jnp.float32),
          jnp.zeros((b, kh, g * t, h), jnp.float32))
  blocks = (jnp.asarray(filled, jnp.int32) + block - 1) // block
  _, l, acc = jax.lax.fori_loop(0, blocks, body, init)
  o = (acc / jnp.maximum(l, jnp.finfo(jnp.float32).tiny)[..., None]).astype(q.dtype)
  return o.reshape(b, kh, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def full_cached_attention(q, k, v, mask, *, scale: float, softcap: float | None = None):
  """`cached_attention` over every slot of a `[B, K, S, H]` cache (no block skipping)."""
  return _explicit(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, scale, softcap)
