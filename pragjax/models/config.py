"""Model configuration: one frozen dataclass for the whole decoder family.

`ModelConfig.from_hf(dict)` reads a Hugging Face `config.json` in either the
transformers-4 layout (`rope_theta`, `rope_scaling`) or the transformers-5
layout (`rope_parameters`); `to_hf()` writes one that both read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
SUPPORTED_ACTIVATIONS = ("silu", "gelu_pytorch_tanh", "gelu")
LAYER_TYPES = ("full_attention", "sliding_attention")
# `remat` values: none (keep every activation), full (keep only each block's input), or a
# `jax.checkpoint_policies` name (which intermediates of a block are kept for the backward pass).
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "everything_saveable")

_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
}


class ConfigError(ValueError):
  """A config.json that pragjax cannot represent faithfully."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling (`rope_type` in {"linear", "llama3"})."""

  rope_type: str
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything the NNX decoder needs; hashable, so usable as a static arg.

  Family switches (`norm_offset`, `scale_embeddings`, `post_norms`, soft-caps,
  biases, MoE) are plain fields so that one module class serves every family;
  `from_hf` sets them from `model_type`.
  """

  model_type: str = "llama"
  vocab_size: int = 4096
  hidden_size: int = 256
  intermediate_size: int = 688
  num_hidden_layers: int = 4
  num_attention_heads: int = 8
  num_key_value_heads: int = 4
  head_dim: int = 32
  hidden_act: str = "silu"
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  layer_types: tuple[str, ...] = ()
  sliding_window: int | None = None
  num_local_experts: int = 0
  num_experts_per_tok: int = 2
  attn_logit_softcapping: float | None = None
  final_logit_softcapping: float | None = None
  query_pre_attn_scalar: float | None = None
  norm_offset: float = 0.0
  scale_embeddings: bool = False
  post_norms: bool = False
  bos_token_id: int | None = None
  eos_token_id: tuple[int, ...] = ()
  pad_token_id: int | None = None
  # Numerics and kernels (not part of the HF file).
  dtype: str = "float32"
  param_dtype: str = "float32"
  # None: "causal_blocks" for cache-free passes on CPU, else XLA; or one of
  # "xla", "cudnn", "explicit", "chunked", "causal_blocks" (see attention.py).
  attention_impl: str | None = None
  attention_chunk: int = 512  # query block for "chunked"
  attention_block: int = 64  # query block for "causal_blocks"
  # Attention against a KV cache (decoding): "blocked" reads only the cache blocks of `decode_block`
  # slots that hold tokens (cost grows with the filled length, not the preallocated one); "full"
  # attends over every slot under the mask (the reference the benchmark compares against).
  decode_attention: str = "blocked"
  decode_block: int = 64
  moe_impl: str = "ragged"  # "ragged" (grouped matmul) or "dense"
  # Cache-free passes (training, scoring): run the blocks as one `lax.scan` over
  # layer groups (one compiled block body instead of L unrolled copies; the
  # parameter layout, checkpoints and HF files are unchanged), and rematerialise
  # each block's activations in the backward pass by a `jax.checkpoint` policy
  # (REMAT_POLICIES). Decoding with a KV cache always runs unrolled.
  scan_layers: bool = False
  remat: str = "none"
  # Keys of the source config.json that pragjax does not interpret, kept so
  # that save_hf writes them back. Excluded from hashing and equality.
  hf_extra: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, hash=False, repr=False
  )

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ConfigError(
          f"unsupported model_type {self.model_type!r}; supported:"
          f" {', '.join(SUPPORTED_MODEL_TYPES)}"
      )
    if self.hidden_act not in SUPPORTED_ACTIVATIONS:
      raise ConfigError(
          f"unsupported activation {self.hidden_act!r}; supported:"
          f" {', '.join(SUPPORTED_ACTIVATIONS)}"
      )
    if self.num_attention_heads % self.num_key_value_heads:
      raise ConfigError(
          f"num_attention_heads={self.num_attention_heads} is not a multiple"
          f" of num_key_value_heads={self.num_key_value_heads}"
      )
    if not self.layer_types:
      object.__setattr__(
          self, "layer_types", ("full_attention",) * self.num_hidden_layers
      )
    if len(self.layer_types) != self.num_hidden_layers:
      raise ConfigError(
          f"layer_types has {len(self.layer_types)} entries for"
          f" {self.num_hidden_layers} layers"
      )
    for t in self.layer_types:
      if t not in LAYER_TYPES:
        raise ConfigError(f"unsupported layer type {t!r}; supported: {LAYER_TYPES}")
    if "sliding_attention" in self.layer_types and not self.sliding_window:
      raise ConfigError("sliding_attention layers need a sliding_window")
    if self.attention_impl not in (None, "xla", "cudnn", "explicit", "chunked", "causal_blocks"):
      raise ConfigError(
          f"attention_impl={self.attention_impl!r}; expected None, 'xla',"
          " 'cudnn', 'explicit', 'chunked' or 'causal_blocks'"
      )
    if self.decode_attention not in ("blocked", "full"):
      raise ConfigError(f"decode_attention={self.decode_attention!r}; expected 'blocked' or 'full'")
    if self.decode_block < 1:
      raise ConfigError(f"decode_block={self.decode_block}; expected >= 1")
    if self.remat not in REMAT_POLICIES:
      raise ConfigError(f"remat={self.remat!r}; expected one of {', '.join(REMAT_POLICIES)}")
    if self.moe_impl not in ("ragged", "dense"):
      raise ConfigError(f"moe_impl={self.moe_impl!r}; expected 'ragged' or 'dense'")
    if isinstance(self.eos_token_id, int):
      object.__setattr__(self, "eos_token_id", (self.eos_token_id,))

  # -- derived -------------------------------------------------------------
  @property
  def is_moe(self) -> bool:
    return self.num_local_experts > 0

  @property
  def attention_scale(self) -> float:
    if self.query_pre_attn_scalar is not None:
      return float(self.query_pre_attn_scalar) ** -0.5
    return float(self.head_dim) ** -0.5

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def inv_freq(self) -> np.ndarray:
    """RoPE inverse frequencies `[head_dim // 2]` (float64), scaling applied."""
    h = self.head_dim
    inv = 1.0 / (self.rope_theta ** (np.arange(0, h, 2, dtype=np.float64) / h))
    rs = self.rope_scaling
    if rs is None or rs.rope_type == "default":
      return inv
    if rs.rope_type == "linear":
      return inv / rs.factor
    if rs.rope_type == "llama3":
      low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
      high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
      wavelen = 2 * np.pi / inv
      out = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
      smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
          rs.high_freq_factor - rs.low_freq_factor
      )
      smoothed = (1 - smooth) * out / rs.factor + smooth * out
      is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
      return np.where(is_medium, smoothed, out)
    raise ConfigError(f"unsupported rope_type {rs.rope_type!r}")

  # -- Hugging Face config.json ---------------------------------------------
  @classmethod
  def from_hf(cls, d: Mapping[str, Any], *, source: str = "config.json", **overrides) -> "ModelConfig":
    """Builds a config from a parsed HF `config.json` (either layout)."""
    d = dict(d)
    mt = d.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
      raise ConfigError(
          f"{source}: unsupported model_type {mt!r}; supported:"
          f" {', '.join(SUPPORTED_MODEL_TYPES)}"
      )

    def need(key):
      if key not in d:
        raise ConfigError(f"{source}: missing required key {key!r} for model_type {mt!r}")
      return d[key]

    hidden = int(need("hidden_size"))
    heads = int(need("num_attention_heads"))
    kv = int(d.get("num_key_value_heads") or heads)
    head_dim = int(d.get("head_dim") or hidden // heads)
    layers = int(need("num_hidden_layers"))
    act = d.get("hidden_activation") or d.get("hidden_act") or "silu"
    if mt in ("gemma", "gemma2") and act == "gelu":
      act = "gelu_pytorch_tanh"  # what HF itself runs for these families

    rope_params = d.get("rope_parameters") or {}
    if rope_params and not isinstance(next(iter(rope_params.values())), (int, float, str, type(None))):
      raise ConfigError(f"{source}: per-layer-type rope_parameters are not supported")
    theta = rope_params.get("rope_theta", d.get("rope_theta", 10000.0))
    scaling_d = None
    if rope_params.get("rope_type", "default") != "default":
      scaling_d = rope_params
    elif d.get("rope_scaling"):
      scaling_d = d["rope_scaling"]
    rope_scaling = None
    if scaling_d is not None:
      rt = scaling_d.get("rope_type", scaling_d.get("type", "default"))
      if rt not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"{source}: unsupported rope_type {rt!r}; supported:"
            f" {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
      if rt != "default":
        kw = dict(rope_type=rt, factor=float(scaling_d.get("factor", 1.0)))
        if rt == "llama3":
          kw.update(
              low_freq_factor=float(scaling_d["low_freq_factor"]),
              high_freq_factor=float(scaling_d["high_freq_factor"]),
              original_max_position_embeddings=int(scaling_d["original_max_position_embeddings"]),
          )
        rope_scaling = RopeScaling(**kw)

    sliding = d.get("sliding_window")
    layer_types = d.get("layer_types")
    if mt in ("mistral", "mixtral"):
      layer_types = layer_types or (
          ["sliding_attention" if sliding else "full_attention"] * layers
      )
    elif mt == "qwen2":
      if not layer_types:
        use = bool(d.get("use_sliding_window", False)) and sliding
        mwl = int(d.get("max_window_layers", layers))
        layer_types = [
            "sliding_attention" if use and i >= mwl else "full_attention"
            for i in range(layers)
        ]
    elif mt == "gemma2":
      layer_types = layer_types or [
          "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)
      ]
    else:
      layer_types = layer_types or ["full_attention"] * layers

    eos = d.get("eos_token_id")
    eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
    attn_bias = bool(d.get("attention_bias", False))
    known = dict(
        model_type=mt,
        vocab_size=int(need("vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(need("intermediate_size")),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        hidden_act=act,
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        rope_scaling=rope_scaling,
        max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(
            d.get("tie_word_embeddings", mt in ("gemma", "gemma2"))
        ),
        qkv_bias=True if mt == "qwen2" else attn_bias,
        o_bias=False if mt == "qwen2" else attn_bias,
        mlp_bias=bool(d.get("mlp_bias", False)),
        layer_types=tuple(layer_types),
        sliding_window=int(sliding) if sliding else None,
        num_local_experts=int(d.get("num_local_experts", 0)) if mt == "mixtral" else 0,
        num_experts_per_tok=int(d.get("num_experts_per_tok", 2)),
        attn_logit_softcapping=d.get("attn_logit_softcapping") if mt == "gemma2" else None,
        final_logit_softcapping=d.get("final_logit_softcapping") if mt == "gemma2" else None,
        query_pre_attn_scalar=d.get("query_pre_attn_scalar") if mt == "gemma2" else None,
        norm_offset=1.0 if mt in ("gemma", "gemma2") else 0.0,
        scale_embeddings=mt in ("gemma", "gemma2"),
        post_norms=mt == "gemma2",
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=eos,
        pad_token_id=d.get("pad_token_id"),
    )
    if mt == "mixtral" and known["num_local_experts"] <= 0:
      raise ConfigError(f"{source}: mixtral needs num_local_experts > 0")
    known.update(overrides)
    return cls(**known, hf_extra=d)

  @classmethod
  def from_json_file(cls, path: str, **overrides) -> "ModelConfig":
    try:
      with open(path) as f:
        d = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
    return cls.from_hf(d, source=path, **overrides)

  def to_hf(self) -> dict[str, Any]:
    """A `config.json` dict readable by transformers 4 and 5."""
    d = {k: v for k, v in self.hf_extra.items()}
    for k in ("rope_scaling", "rope_parameters", "torch_dtype", "transformers_version"):
      d.pop(k, None)
    rope = {"rope_theta": self.rope_theta, "rope_type": "default"}
    if self.rope_scaling is not None:
      rs = self.rope_scaling
      rope.update(rope_type=rs.rope_type, factor=rs.factor)
      if rs.rope_type == "llama3":
        rope.update(
            low_freq_factor=rs.low_freq_factor,
            high_freq_factor=rs.high_freq_factor,
            original_max_position_embeddings=rs.original_max_position_embeddings,
        )
    d.update(
        architectures=[_ARCHITECTURES[self.model_type]],
        model_type=self.model_type,
        vocab_size=self.vocab_size,
        hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_hidden_layers,
        num_attention_heads=self.num_attention_heads,
        num_key_value_heads=self.num_key_value_heads,
        head_dim=self.head_dim,
        rms_norm_eps=self.rms_norm_eps,
        max_position_embeddings=self.max_position_embeddings,
        tie_word_embeddings=self.tie_word_embeddings,
        rope_parameters=rope,
        rope_theta=self.rope_theta,
        dtype=self.param_dtype,
    )
    if self.model_type in ("gemma", "gemma2"):
      d["hidden_activation"] = self.hidden_act
      d["hidden_act"] = self.hidden_act
    else:
      d["hidden_act"] = self.hidden_act
    if self.model_type in ("llama", "gemma", "gemma2"):
      d["attention_bias"] = self.qkv_bias
    if self.model_type == "llama":
      d["mlp_bias"] = self.mlp_bias
    if self.model_type != "llama" and self.model_type != "gemma":
      d["sliding_window"] = self.sliding_window
    if self.model_type in ("qwen2", "gemma2"):
      d["layer_types"] = list(self.layer_types)
      if self.model_type == "qwen2":
        d["use_sliding_window"] = "sliding_attention" in self.layer_types
        if "sliding_attention" in self.layer_types:
          d["max_window_layers"] = self.layer_types.index("sliding_attention")
    if self.model_type == "mixtral":
      d.update(num_local_experts=self.num_local_experts, num_experts_per_tok=self.num_experts_per_tok)
    if self.model_type == "gemma2":
      d.update(
          attn_logit_softcapping=self.attn_logit_softcapping,
          final_logit_softcapping=self.final_logit_softcapping,
          query_pre_attn_scalar=self.query_pre_attn_scalar,
      )
    for k in ("bos_token_id", "pad_token_id"):
      if getattr(self, k) is not None:
        d[k] = getattr(self, k)
    if self.eos_token_id:
      d["eos_token_id"] = (
          self.eos_token_id[0] if len(self.eos_token_id) == 1 else list(self.eos_token_id)
      )
    return d

  def save(self, directory: str) -> None:
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(self.to_hf(), f, indent=2, sort_keys=True)
