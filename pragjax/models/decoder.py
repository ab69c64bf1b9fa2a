"""The NNX decoder family: llama, mistral, mixtral, qwen2, gemma, gemma2.

One `Decoder` class covers every family; `ModelConfig` switches the family
details (biases, norms with (1 + w), embedding scaling, soft-capping,
sliding-window layers, sparse MoE).

Parameter layout (kernels are stored input-major, `[in, ..., out]`):

  embed              [V, D]          ("vocab", "embed")
  layers[i].self_attn.q_proj  [D, N, H]   ("embed", "heads", None)
                      k_proj  [D, K, H]   ("embed", "kv_heads", None)
                      v_proj  [D, K, H]   ("embed", "kv_heads", None)
                      o_proj  [N, H, D]   ("heads", None, "embed")
  layers[i].mlp.gate_proj     [D, I]      ("embed", "mlp")   (MoE: [E, D, I])
                up_proj       [D, I]      ("embed", "mlp")   (MoE: [E, D, I])
                down_proj     [I, D]      ("mlp", "embed")   (MoE: [E, I, D])
  norm / *_layernorm.scale    [D]         ("norm",)
  lm_head            [D, V]          ("embed", "vocab")  (absent when tied)

Every Param carries its logical axes as the metadata field `logical_axes`;
`pragjax.sharding` maps them onto mesh axes.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from pragjax.models.attention import attention, cached_attention, full_cached_attention, make_attention_mask
from pragjax.models.config import ModelConfig
from pragjax.ops import positions_from_mask


def _act(name: str):
  if name == "silu":
    return jax.nn.silu
  if name == "gelu_pytorch_tanh":
    return lambda x: jax.nn.gelu(x, approximate=True)
  return lambda x: jax.nn.gelu(x, approximate=False)


def _param(rngs: nnx.Rngs, shape, axes, dtype, std=0.02) -> nnx.Param:
  value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(value.astype(dtype), logical_axes=tuple(axes))


def _zeros(shape, axes, dtype) -> nnx.Param:
  return nnx.Param(jnp.zeros(shape, dtype), logical_axes=tuple(axes))


@flax.struct.dataclass
class KVCache:
  """Per-layer keys/values plus the bookkeeping attention needs.

  `k[i]`, `v[i]`: `[B, K, S, H]` (heads before slots: the layout the decode step's matmuls read);
  `positions`, `valid`: `[B, S]`; `index`: next free slot (scalar int32). `init` rounds S up to a
  multiple of `config.decode_block`; the extra slots stay invalid.
  """

  k: tuple[Array, ...]
  v: tuple[Array, ...]
  positions: Array
  valid: Array
  index: Array

  @classmethod
  def init(cls, config: ModelConfig, batch: int, length: int, dtype=None) -> "KVCache":
    dtype = dtype or jnp.dtype(config.dtype)
    length = -(-length // config.decode_block) * config.decode_block
    shape = (batch, config.num_key_value_heads, length, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_hidden_layers))
    return cls(
        k=zeros,
        v=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_hidden_layers)),
        positions=jnp.zeros((batch, length), jnp.int32),
        valid=jnp.zeros((batch, length), bool),
        index=jnp.zeros((), jnp.int32),
    )


@flax.struct.dataclass
class DecoderOutput:
  """What a forward pass returns.

  logits: `[B, T, V]` float32 (None when `compute_logits=False`).
  hidden_states: exactly Hugging Face's `output_hidden_states`: element 0 is
    the embedding output (Gemma: already times sqrt(D)), elements 1..L-1 the
    raw outputs of blocks 0..L-2, and the last element the *final norm
    applied to* block L-1's output. None unless requested.
  block_outputs: the raw residual-stream output of every block `[L x
    [B, T, D]]` (what a forward hook on a block sees; probes read these).
    None unless requested.
  final_hidden: the final-normed last hidden state `[B, T, D]` (the input of
    the output projection), always set.
  cache: the updated KV cache when one was passed in.
  """

  logits: Array | None
  hidden_states: tuple[Array, ...] | None
  block_outputs: tuple[Array, ...] | None
  final_hidden: Array
  cache: KVCache | None = None


class RMSNorm(nnx.Module):
  """RMSNorm; `offset=1` gives Gemma's `x * (1 + w)` (weights start at 0)."""

  def __init__(self, dim: int, eps: float, offset: float, param_dtype):
    self.eps = eps
    self.offset = offset
    init = jnp.zeros if offset else jnp.ones
    self.scale = nnx.Param(init((dim,), param_dtype), logical_axes=("norm",))

  def __call__(self, x):
    dtype = x.dtype
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    w = self.scale[...]
    if self.offset:
      return (y * (self.offset + w.astype(jnp.float32))).astype(dtype)
    return w.astype(dtype) * y.astype(dtype)


def rope_cos_sin(inv_freq: np.ndarray, positions: Int[Array, "B T"]):
  """cos/sin tables `[B, T, H]` in float32 (halves duplicated, HF layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Float[Array, "B T N H"], cos, sin):
  h = x.shape[-1] // 2
  xf = x.astype(jnp.float32)
  rot = jnp.concatenate([-xf[..., h:], xf[..., :h]], axis=-1)
  return (xf * cos[:, :, None] + rot * sin[:, :, None]).astype(x.dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, layer_idx: int, rngs: nnx.Rngs):
    d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    pd = jnp.dtype(cfg.param_dtype)
    self.cfg = cfg
    self.sliding_window = (
        cfg.sliding_window if cfg.layer_types[layer_idx] == "sliding_attention" else None
    )
    self.q_proj = _param(rngs, (d, n, h), ("embed", "heads", None), pd)
    self.k_proj = _param(rngs, (d, k, h), ("embed", "kv_heads", None), pd)
    self.v_proj = _param(rngs, (d, k, h), ("embed", "kv_heads", None), pd)
    self.o_proj = _param(rngs, (n, h, d), ("heads", None, "embed"), pd)
    if cfg.qkv_bias:
      self.q_bias = _zeros((n, h), ("heads", None), pd)
      self.k_bias = _zeros((k, h), ("kv_heads", None), pd)
      self.v_bias = _zeros((k, h), ("kv_heads", None), pd)
    if cfg.o_bias:
      self.o_bias = _zeros((d,), ("embed",), pd)

  def __call__(self, x, cos, sin, ctx: dict, layer_cache=None):
    cfg = self.cfg
    dt = x.dtype
    q = jnp.einsum("btd,dnh->btnh", x, self.q_proj[...].astype(dt))
    k = jnp.einsum("btd,dkh->btkh", x, self.k_proj[...].astype(dt))
    v = jnp.einsum("btd,dkh->btkh", x, self.v_proj[...].astype(dt))
    if cfg.qkv_bias:
      q = q + self.q_bias[...].astype(dt)
      k = k + self.k_bias[...].astype(dt)
      v = v + self.v_bias[...].astype(dt)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    mask = ctx["sliding_mask"] if self.sliding_window is not None else ctx["full_mask"]
    new_cache = None
    decoding = layer_cache is not None and not ctx.get("prefill", False)
    if layer_cache is not None:
      ck, cv = layer_cache
      idx = ctx["cache_index"]
      ck = jax.lax.dynamic_update_slice_in_dim(ck, k.transpose(0, 2, 1, 3).astype(ck.dtype), idx, axis=2)
      cv = jax.lax.dynamic_update_slice_in_dim(cv, v.transpose(0, 2, 1, 3).astype(cv.dtype), idx, axis=2)
      new_cache = (ck, cv)
    if decoding:
      if cfg.decode_attention == "blocked":
        o = cached_attention(q, ck.astype(dt), cv.astype(dt), mask, idx + x.shape[1], scale=cfg.attention_scale,
                             softcap=cfg.attn_logit_softcapping, block=cfg.decode_block)
      else:
        o = full_cached_attention(q, ck.astype(dt), cv.astype(dt), mask, scale=cfg.attention_scale,
                                  softcap=cfg.attn_logit_softcapping)
    else:  # no cache, or a prefill into an empty one: the new tokens attend among themselves (training path)
      impl, chunk = cfg.attention_impl, cfg.attention_chunk
      if impl is None and jax.default_backend() == "cpu":
        impl, chunk = "causal_blocks", cfg.attention_block  # no fused kernel on CPU: skip the upper triangle
      elif impl == "causal_blocks":
        chunk = cfg.attention_block
      o = attention(
          q, k, v, mask,
          scale=cfg.attention_scale,
          softcap=cfg.attn_logit_softcapping,
          implementation=impl,
          chunk_size=chunk,
      )
    out = jnp.einsum("btnh,nhd->btd", o, self.o_proj[...].astype(dt))
    if cfg.o_bias:
      out = out + self.o_bias[...].astype(dt)
    return out, new_cache


class MLP(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, i = cfg.hidden_size, cfg.intermediate_size
    pd = jnp.dtype(cfg.param_dtype)
    self.act = cfg.hidden_act
    self.bias = cfg.mlp_bias
    self.gate_proj = _param(rngs, (d, i), ("embed", "mlp"), pd)
    self.up_proj = _param(rngs, (d, i), ("embed", "mlp"), pd)
    self.down_proj = _param(rngs, (i, d), ("mlp", "embed"), pd)
    if cfg.mlp_bias:
      self.gate_bias = _zeros((i,), ("mlp",), pd)
      self.up_bias = _zeros((i,), ("mlp",), pd)
      self.down_bias = _zeros((d,), ("embed",), pd)

  def __call__(self, x):
    dt = x.dtype
    g = x @ self.gate_proj[...].astype(dt)
    u = x @ self.up_proj[...].astype(dt)
    if self.bias:
      g, u = g + self.gate_bias[...].astype(dt), u + self.up_bias[...].astype(dt)
    y = (_act(self.act)(g) * u) @ self.down_proj[...].astype(dt)
    if self.bias:
      y = y + self.down_bias[...].astype(dt)
    return y


class SparseMoE(nnx.Module):
  """Top-k routed experts (Mixtral): softmax over all router logits, keep the
  top k, renormalise (= softmax over the selected logits); no token dropping.

  `moe_impl="ragged"` sorts token-expert pairs by expert and runs grouped
  matmuls (`jax.lax.ragged_dot`), so compute is k/E of the dense path;
  `"dense"` runs every expert on every token and weights by the (mostly zero)
  combine matrix, which is simple and exact but E/k times the work.
  """

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, i, e = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts
    pd = jnp.dtype(cfg.param_dtype)
    self.cfg = cfg
    self.router = _param(rngs, (d, e), ("embed", None), pd)
    self.gate_proj = _param(rngs, (e, d, i), ("expert", "embed", "mlp"), pd)
    self.up_proj = _param(rngs, (e, d, i), ("expert", "embed", "mlp"), pd)
    self.down_proj = _param(rngs, (e, i, d), ("expert", "mlp", "embed"), pd)

  def __call__(self, x):
    cfg = self.cfg
    b, t, d = x.shape
    dt = x.dtype
    xs = x.reshape(b * t, d)
    logits = xs @ self.router[...].astype(dt)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    w, idx = jax.lax.top_k(probs, cfg.num_experts_per_tok)
    w = (w / jnp.sum(w, axis=-1, keepdims=True)).astype(dt)
    act = _act(cfg.hidden_act)
    gate, up, down = (p[...].astype(dt) for p in (self.gate_proj, self.up_proj, self.down_proj))
    if cfg.moe_impl == "dense":
      combine = jnp.zeros((b * t, cfg.num_local_experts), dt)
      combine = combine.at[jnp.arange(b * t)[:, None], idx].set(w)
      h = act(jnp.einsum("nd,edi->nei", xs, gate)) * jnp.einsum("nd,edi->nei", xs, up)
      y = jnp.einsum("nei,eid,ne->nd", h, down, combine)
      return y.reshape(b, t, d)
    k = cfg.num_experts_per_tok
    flat = idx.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    tokens = order // k
    xg = xs[tokens]
    sizes = jnp.bincount(flat, length=cfg.num_local_experts).astype(jnp.int32)
    h = act(jax.lax.ragged_dot(xg, gate, sizes)) * jax.lax.ragged_dot(xg, up, sizes)
    yg = jax.lax.ragged_dot(h, down, sizes)
    y = jnp.zeros_like(yg).at[order].set(yg).reshape(b * t, k, d)
    y = jnp.sum(y * w[..., None], axis=1)
    return y.reshape(b, t, d)


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, layer_idx: int, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    norm = lambda: RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.norm_offset, pd)
    self.post_norms = cfg.post_norms
    self.input_layernorm = norm()
    self.self_attn = Attention(cfg, layer_idx, rngs)
    self.post_attention_layernorm = norm()
    if cfg.post_norms:
      self.pre_feedforward_layernorm = norm()
      self.post_feedforward_layernorm = norm()
    self.mlp = SparseMoE(cfg, rngs) if cfg.is_moe else MLP(cfg, rngs)

  def __call__(self, x, cos, sin, ctx, layer_cache=None):
    h, new_cache = self.self_attn(self.input_layernorm(x), cos, sin, ctx, layer_cache)
    if self.post_norms:
      x = x + self.post_attention_layernorm(h)
      x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
    else:
      x = x + h
      x = x + self.mlp(self.post_attention_layernorm(x))
    return x, new_cache


class Decoder(nnx.Module):
  """Causal LM: token ids -> logits (and, on request, hidden states)."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    cfg = config
    pd = jnp.dtype(cfg.param_dtype)
    self.config = cfg
    self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd)
    self.layers = nnx.List([Block(cfg, i, rngs) for i in range(cfg.num_hidden_layers)])
    self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.norm_offset, pd)
    if not cfg.tie_word_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pd)

  def output_embedding(self, dtype=None) -> Float[Array, "D V"]:
    """The output projection `[D, V]` (the transposed embedding when tied)."""
    w = self.embed[...].T if self.config.tie_word_embeddings else self.lm_head[...]
    return w.astype(dtype or self.config.dtype)

  def logits_from_hidden(self, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
    """float32 logits from final-normed hidden states (soft-capped if set)."""
    logits = (h @ self.output_embedding(h.dtype)).astype(jnp.float32)
    cap = self.config.final_logit_softcapping
    if cap is not None:
      logits = jnp.tanh(logits / cap) * cap
    return logits

  def __call__(
      self,
      input_ids: Int[Array, "B T"],
      attention_mask: Int[Array, "B T"] | None = None,
      *,
      positions: Int[Array, "B T"] | None = None,
      segment_ids: Int[Array, "B T"] | None = None,
      output_hidden_states: bool = False,
      output_block_outputs: bool = False,
      compute_logits: bool = True,
      cache: KVCache | None = None,
      prefill: bool = False,
  ) -> DecoderOutput:
    """Forward pass.

    Args:
      input_ids: `[B, T]` token ids.
      attention_mask: `[B, T]` 1 for real tokens, 0 for padding (left or
        right). Default: all ones.
      positions: `[B, T]`; default `clip(cumsum(mask) - 1, 0)` (as HF
        `generate`), or, with a cache, continuing from the cache.
      segment_ids: `[B, T]` for packed sequences: tokens attend only within
        their segment (pass restarted `positions` too).
      output_hidden_states: also return HF-style hidden states.
      output_block_outputs: also return every block's raw output.
      compute_logits: False skips the `[B, T, V]` projection.
      cache: a `KVCache`; the new keys/values are written at `cache.index`.
      prefill: the cache is empty (index 0): the new tokens attend among
        themselves by the cache-free (training) attention path, and their
        keys/values fill the cache's first slots.
    """
    cfg = self.config
    dt = jnp.dtype(cfg.dtype)
    input_ids = jnp.asarray(input_ids)
    b, t = input_ids.shape
    if attention_mask is None:
      attention_mask = jnp.ones((b, t), jnp.int32)
    valid = jnp.asarray(attention_mask).astype(bool)
    if positions is None:
      if cache is None:
        positions = positions_from_mask(attention_mask)
      else:
        start = jnp.sum(cache.valid, axis=1, dtype=jnp.int32)[:, None]
        positions = start + jnp.maximum(jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, 0)
    positions = positions.astype(jnp.int32)

    if cache is None:
      q_slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      k_slots, k_pos, k_valid = q_slots, positions, valid
      new_index = None
    else:
      idx = cache.index
      q_slots = jnp.broadcast_to(idx + jnp.arange(t, dtype=jnp.int32), (b, t))
      k_pos = jax.lax.dynamic_update_slice_in_dim(cache.positions, positions, idx, axis=1)
      k_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, valid, idx, axis=1)
      s = k_pos.shape[1]
      k_slots = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
      new_index = idx + t
    # a prefill attends within the new tokens, as a cache-free pass does
    m_slots, m_pos, m_valid = (q_slots, positions, valid) if prefill else (k_slots, k_pos, k_valid)
    full = make_attention_mask(
        q_slots, m_slots, m_valid, q_segments=segment_ids, k_segments=segment_ids
    )
    ctx: dict[str, Any] = {"full_mask": full, "sliding_mask": None, "prefill": prefill}
    if "sliding_attention" in cfg.layer_types:
      ctx["sliding_mask"] = make_attention_mask(
          q_slots, m_slots, m_valid,
          q_positions=positions, k_positions=m_pos,
          sliding_window=cfg.sliding_window,
          q_segments=segment_ids, k_segments=segment_ids,
      )
    if cache is not None:
      ctx["cache_index"] = cache.index

    x = jnp.take(self.embed[...], input_ids, axis=0).astype(dt)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(cfg.hidden_size**0.5, dt)
    emb = x
    cos, sin = rope_cos_sin(cfg.inv_freq(), positions)

    new_k, new_v = [], []
    if cache is None:
      keep = output_hidden_states or output_block_outputs
      x, blocks = _run_blocks(self.layers, cfg, x, cos, sin, ctx, keep_outputs=keep)
    else:  # decoding: unrolled, each layer reads and writes its own cache slots
      blocks = []
      for i, layer in enumerate(self.layers):
        x, lc = layer(x, cos, sin, ctx, (cache.k[i], cache.v[i]))
        blocks.append(x)
        new_k.append(lc[0])
        new_v.append(lc[1])
    h = self.norm(x)

    hidden = None
    if output_hidden_states:
      hidden = (emb, *blocks[:-1], h)
    new_cache = None
    if cache is not None:
      new_cache = KVCache(
          k=tuple(new_k), v=tuple(new_v), positions=k_pos, valid=k_valid, index=new_index
      )
    return DecoderOutput(
        logits=self.logits_from_hidden(h) if compute_logits else None,
        hidden_states=hidden,
        block_outputs=tuple(blocks) if output_block_outputs else None,
        final_hidden=h,
        cache=new_cache,
    )


def remat_policy(name: str):
  """The `jax.checkpoint` policy of a `ModelConfig.remat` value (None for "full": keep nothing)."""
  if name == "full":
    return None
  return getattr(jax.checkpoint_policies, name)


def scan_period(layers) -> int | None:
  """The smallest p dividing the layer count such that layer i and layer i + p have the same structure
  (graph definition: layer type, MoE or not), so the blocks can run as a scan over L / p groups of p
  layers; None when no such p < L exists (then the blocks run unrolled)."""
  defs = [nnx.graphdef(layer) for layer in layers]
  n = len(defs)
  for p in range(1, n):
    if n % p == 0 and all(defs[i] == defs[i % p] for i in range(n)):
      return p
  return None


def _run_blocks(layers, cfg: ModelConfig, x, cos, sin, ctx, *, keep_outputs: bool):
  """The cache-free pass through every block -> (final block output, every block's output or ()).

  `cfg.scan_layers`: one `lax.scan` over groups of `scan_period` layers whose parameters are stacked on the
  fly (the stored layout stays one module per layer; the backward pass un-stacks the gradients).
  `cfg.remat`: each group (or, unrolled, each block) under `jax.checkpoint` with that policy."""
  def apply(graphdef, state, h):
    return nnx.merge(graphdef, state)(h, cos, sin, ctx, None)[0]

  if cfg.remat != "none":
    apply = jax.checkpoint(apply, policy=remat_policy(cfg.remat), static_argnums=(0,))
  period = scan_period(layers) if cfg.scan_layers else None
  if period is None:
    outs = []
    for layer in layers:
      if cfg.remat == "none":
        x = layer(x, cos, sin, ctx, None)[0]
      else:
        x = apply(*nnx.split(layer), x)
      outs.append(x)
    return x, tuple(outs) if keep_outputs else ()
  groups = len(layers) // period
  graphdefs = [nnx.graphdef(layers[j]) for j in range(period)]
  stacked = [jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(layers[g * period + j]) for g in range(groups)])
             for j in range(period)]

  def body(h, states):
    outs = []
    for j in range(period):
      h = apply(graphdefs[j], states[j], h)
      outs.append(h)
    return h, tuple(outs) if keep_outputs else None

  x, ys = jax.lax.scan(body, x, stacked)
  if not keep_outputs:
    return x, ()
  return x, tuple(ys[i % period][i // period] for i in range(len(layers)))
