"""GGUF checkpoints in: `load_gguf` and `gguf_model_config`.

A GGUF file (llama.cpp's format, v2/v3) holds the config as metadata and the
weights as tensors, often block-quantized. `load_gguf` builds the
`ModelConfig` from the metadata, then reads one tensor at a time,
dequantizes it to float32 with the `gguf` package, undoes what llama.cpp's
converter did to it, and places it straight into its sharding through the
same path as `load_hf` (`hf_io.build_model`), so the host holds one dense
tensor at a time.

What the converter does, and what is undone here (facts of the format):
- Families. GGUF architecture `llama` covers Llama, Mistral (named so in
  `general.name`) and Mixtral (`llama.expert_count` > 0); `qwen2`, `gemma`,
  `gemma2` are their own architectures.
- q/k row permutation. For the `llama` architecture the converter reorders
  the rows of each head of `attn_q` / `attn_k` from HF's rotate-half RoPE
  layout into interleaved pairs (`reshape(heads, 2, h/2, d).swapaxes(1, 2)`);
  `_unpermute` inverts it. Without that the model gives plausible log-probs
  but broken text. `qwen2` and `gemma*` are stored unpermuted.
- Gemma norms. Gemma and Gemma-2 compute `x * (1 + w)`; the converter stores
  `1 + w`, so 1 is subtracted from every `*norm.weight` here.
- Tied embeddings: no `output.weight` tensor.
- Llama-3 RoPE scaling is not metadata but a `rope_freqs.weight` tensor of
  per-frequency divisors; it is matched against the llama3 rule (factor =
  its largest entry, low/high frequency factors 1 and 4, original context
  8192 or context_length / factor) and rejected if no candidate fits.
- Gemma-2's attention scale (`query_pre_attn_scalar`) is not stored; llama.cpp
  uses head_dim, except hidden/heads for the 46-block (27B) model, and so
  does this reader (override with `query_pre_attn_scalar=`).
- Mixtral experts: merged `ffn_{gate,up,down}_exps` tensors `[E, out, in]`
  or older per-expert `ffn_{gate,up,down}.{j}` tensors; router `ffn_gate_inp`.
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pragjax import sharding as sharding_lib
from pragjax.models.config import ModelConfig, RopeScaling
from pragjax.models.decoder import Decoder
from pragjax.models.gguf_file import GGUFError, GGUFFile
from pragjax.models.hf_io import build_model, hf_tensor_specs

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma", "gemma2")
_PERMUTED = ("llama", "mistral")  # architectures whose converter permutes q/k rows
_GEMMA = ("gemma", "gemma2")


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation for `heads` heads (rows = heads * head_dim)."""
  half = w.shape[0] // heads // 2
  return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_candidates(context: int, factor: float):
  """Llama-3 scalings with this largest factor: the published frequency factors and original contexts."""
  for orig in sorted({8192, max(1, int(round(context / factor)))}):
    yield RopeScaling("llama3", factor=factor, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=orig)


def _rope_scaling(gf: GGUFFile, arch: str, theta: float, head_dim: int, context: int) -> dict | None:
  """HF `rope_parameters` extras from the rope metadata or the `rope_freqs` tensor."""
  kind = gf.get(f"{arch}.rope.scaling.type", "none")
  if "rope_freqs.weight" in gf:
    divisors = gf.tensor("rope_freqs.weight").astype(np.float64)
    if divisors.shape != (head_dim // 2,):
      raise GGUFError(f"{gf.path}: tensor 'rope_freqs.weight' has shape {divisors.shape}, expected "
                      f"({head_dim // 2},) (head_dim / 2)")
    factor = float(divisors.max())
    base = ModelConfig(head_dim=head_dim, rope_theta=theta).inv_freq()
    for rs in _llama3_candidates(context, factor):
      got = ModelConfig(head_dim=head_dim, rope_theta=theta, rope_scaling=rs).inv_freq()
      if np.allclose(base / got, divisors, rtol=1e-4):
        return dict(rope_type="llama3", factor=rs.factor, low_freq_factor=rs.low_freq_factor,
                    high_freq_factor=rs.high_freq_factor,
                    original_max_position_embeddings=rs.original_max_position_embeddings)
    raise GGUFError(f"{gf.path}: tensor 'rope_freqs.weight' does not match Llama-3 RoPE scaling with factor "
                    f"{factor}, frequency factors 1/4 and original context 8192 or {context}/{factor}; "
                    f"expected one of those (other per-frequency RoPE factors are not supported)")
  if kind in ("none", ""):
    return None
  if kind == "linear":
    return dict(rope_type="linear", factor=float(gf.require(f"{arch}.rope.scaling.factor")))
  raise GGUFError(f"{gf.path}: metadata {arch}.rope.scaling.type = {kind!r} is not supported; expected "
                  f"'none', 'linear' or a Llama-3 'rope_freqs.weight' tensor")


def _family(gf: GGUFFile) -> tuple[str, str]:
  """(GGUF architecture, pragjax model_type)."""
  arch = gf.require("general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise GGUFError(f"{gf.path}: general.architecture = {arch!r} is not supported; expected one of "
                    f"{', '.join(SUPPORTED_ARCHITECTURES)} (Mistral and Mixtral files use 'llama')")
  if arch in ("llama", "mistral"):
    if int(gf.get(f"{arch}.expert_count", 0) or 0) > 0:
      return arch, "mixtral"
    name = str(gf.get("general.name", "") or "").lower()
    return arch, "mistral" if (arch == "mistral" or "mistral" in name) else "llama"
  return arch, arch


def gguf_model_config(gf: GGUFFile, **overrides) -> ModelConfig:
  """The `ModelConfig` of GGUF file `gf` (metadata, plus tensor presence for ties and biases)."""
  arch, model_type = _family(gf)

  def need(key):
    return gf.require(f"{arch}.{key}")

  hidden = int(need("embedding_length"))
  heads = int(need("attention.head_count"))
  kv = int(gf.get(f"{arch}.attention.head_count_kv", heads) or heads)
  head_dim = int(gf.get(f"{arch}.attention.key_length", 0) or gf.get(f"{arch}.rope.dimension_count", 0)
                 or hidden // heads)
  layers = int(need("block_count"))
  context = int(gf.get(f"{arch}.context_length", 2048))
  theta = float(gf.get(f"{arch}.rope.freq_base", 10000.0))
  if "token_embd.weight" not in gf:
    raise GGUFError(f"{gf.path}: tensor 'token_embd.weight' is missing")
  vocab = gf.shape("token_embd.weight")[0]
  d: dict[str, Any] = dict(
      model_type=model_type, vocab_size=vocab, hidden_size=hidden,
      intermediate_size=int(need("feed_forward_length")), num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
      rms_norm_eps=float(gf.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
      max_position_embeddings=context, tie_word_embeddings="output.weight" not in gf,
      rope_parameters=dict(rope_theta=theta, rope_type="default"),
      bos_token_id=gf.get("tokenizer.ggml.bos_token_id"), eos_token_id=gf.get("tokenizer.ggml.eos_token_id"),
      pad_token_id=gf.get("tokenizer.ggml.padding_token_id"),
  )
  scaling = _rope_scaling(gf, arch, theta, head_dim, context)
  if scaling:
    d["rope_parameters"] = dict(rope_theta=theta, **scaling)
  window = gf.get(f"{arch}.attention.sliding_window")
  if model_type in _GEMMA:
    d["hidden_act"] = "gelu_pytorch_tanh"  # the only activation llama.cpp runs for these families
  if model_type == "mistral":
    d["sliding_window"] = int(window) if window else None
  if model_type == "mixtral":
    d["num_local_experts"] = int(need("expert_count"))
    d["num_experts_per_tok"] = int(need("expert_used_count"))
    d["sliding_window"] = int(window) if window else None
  if model_type == "gemma2":
    d["sliding_window"] = int(window) if window else 4096
    d["attn_logit_softcapping"] = gf.get("gemma2.attn_logit_softcapping")
    d["final_logit_softcapping"] = gf.get("gemma2.final_logit_softcapping")
    d["query_pre_attn_scalar"] = hidden // heads if layers == 46 else head_dim
  if "query_pre_attn_scalar" in overrides:  # not stored in GGUF files
    d["query_pre_attn_scalar"] = overrides.pop("query_pre_attn_scalar")
  if model_type == "qwen2" and "blk.0.attn_q.bias" not in gf:
    raise GGUFError(f"{gf.path}: tensor 'blk.0.attn_q.bias' is missing (qwen2 has q/k/v biases)")
  return ModelConfig.from_hf(d, source=gf.path, **overrides)


_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)$")
_ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
_MLP = {"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
_EXPERT = {"w1": "ffn_gate", "w3": "ffn_up", "w2": "ffn_down"}


def gguf_tensor_name(hf_name: str, cfg: ModelConfig) -> tuple[str, int | None]:
  """(GGUF tensor name, expert index or None) holding HF tensor `hf_name`."""
  top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}
  if hf_name in top:
    return top[hf_name], None
  m = _LAYER.match(hf_name)
  if not m:
    raise GGUFError(f"no GGUF name for tensor {hf_name!r}")
  b, rest = f"blk.{m.group(1)}.", m.group(2)
  norms = {"input_layernorm.weight": "attn_norm.weight",
           "post_attention_layernorm.weight": "post_attention_norm.weight" if cfg.post_norms else "ffn_norm.weight",
           "pre_feedforward_layernorm.weight": "ffn_norm.weight",
           "post_feedforward_layernorm.weight": "post_ffw_norm.weight"}
  if rest in norms:
    return b + norms[rest], None
  parts = rest.split(".")
  if parts[0] == "self_attn":
    return f"{b}{_ATTN[parts[1]]}.{parts[2]}", None
  if parts[0] == "mlp":
    return f"{b}{_MLP[parts[1]]}.{parts[2]}", None
  if parts[0] == "block_sparse_moe":
    if parts[1] == "gate":
      return b + "ffn_gate_inp.weight", None
    return f"{b}{_EXPERT[parts[3]]}_exps.weight", int(parts[2])
  raise GGUFError(f"no GGUF name for tensor {hf_name!r}")


class _Reader:
  """HF-layout tensors out of a GGUF file, undoing the converter's transforms."""

  def __init__(self, gf: GGUFFile, cfg: ModelConfig, arch: str):
    self.gf, self.cfg, self.arch = gf, cfg, arch
    self._cached: tuple[str, np.ndarray] | None = None  # the last merged expert tensor

  def _expert(self, name: str, j: int) -> np.ndarray:
    gf = self.gf
    if name in gf:
      if self._cached is None or self._cached[0] != name:
        self._cached = None  # drop the previous layer's experts before reading the next
        self._cached = (name, gf.tensor(name))
      return self._cached[1][j]
    per = name.replace("_exps.weight", f".{j}.weight")
    if per in gf:
      return gf.tensor(per)
    raise GGUFError(f"{gf.path}: tensor {name!r} (or per-expert {per!r}) is missing for "
                    f"{self.cfg.num_local_experts} experts")

  def __call__(self, hf_name: str) -> np.ndarray:
    gname, j = gguf_tensor_name(hf_name, self.cfg)
    x = self._expert(gname, j) if j is not None else self.gf.tensor(gname)
    cfg = self.cfg
    if self.arch in _PERMUTED and gname.endswith((".attn_q.weight", ".attn_k.weight")):
      x = _unpermute(x, cfg.num_attention_heads if ".attn_q." in gname else cfg.num_key_value_heads)
    if self.arch in _GEMMA and gname.endswith("norm.weight"):
      x = x - 1.0
    return x


def _check_tensors(gf: GGUFFile, cfg: ModelConfig) -> None:
  """Every tensor the model needs is present with its HF shape (named in the error otherwise)."""
  for s in hf_tensor_specs(cfg):
    for hf_name in s.hf_names:
      gname, j = gguf_tensor_name(hf_name, cfg)
      if j is not None:
        if gname in gf:
          shape = gf.shape(gname)
          want = (cfg.num_local_experts,) + s.hf_shape
        else:
          gname = gname.replace("_exps.weight", f".{j}.weight")
          shape, want = (gf.shape(gname) if gname in gf else None), s.hf_shape
      else:
        shape, want = (gf.shape(gname) if gname in gf else None), s.hf_shape
      if shape is None:
        raise GGUFError(f"{gf.path}: tensor {gname!r} is missing (needed for {hf_name} of a "
                        f"{cfg.num_hidden_layers}-block {cfg.model_type} model)")
      if tuple(shape) != tuple(want):
        raise GGUFError(f"{gf.path}: tensor {gname!r} has shape {tuple(shape)}, expected {tuple(want)}")


def load_gguf(
    path: str,
    *,
    dtype=None,
    param_dtype=None,
    mesh: Mesh | None = None,
    rules=sharding_lib.DEFAULT_RULES,
    **config_overrides,
) -> tuple[Decoder, ModelConfig]:
  """Loads a GGUF file into an NNX `Decoder`, dequantizing one tensor at a time.

  Args:
    path: a `.gguf` file, or an open `GGUFFile` (families llama, mistral, mixtral, qwen2, gemma,
      gemma2; any tensor type the `gguf` package dequantizes: F32, F16, BF16,
      Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K, IQ*).
    dtype: compute dtype (default: `param_dtype`).
    param_dtype: storage dtype (default float32: dequantized values are float32).
    mesh: place parameters onto this mesh by their logical axes; default: the
      first local device.
    rules: logical-axis rules for `mesh`.
    **config_overrides: other `ModelConfig` fields (e.g. `attention_impl`,
      `query_pre_attn_scalar` for Gemma-2).

  Returns: `(model, config)`.
  Raises: `GGUFError` naming the file and the tensor or key for an unsupported
    architecture or tensor type, a missing or mis-shaped tensor, or a
    truncated file.
  """
  gf = path if isinstance(path, GGUFFile) else GGUFFile(path)
  param_dtype = jnp.dtype(param_dtype or "float32").name
  dtype = jnp.dtype(dtype or param_dtype).name
  cfg = gguf_model_config(gf, dtype=dtype, param_dtype=param_dtype, **config_overrides)
  _check_tensors(gf, cfg)
  arch, _ = _family(gf)
  model = build_model(cfg, _Reader(gf, cfg, arch), mesh=mesh, rules=rules)
  return model, cfg



def gguf_to_hf(path: str, out_dir: str, *, dtype: str = "float32") -> dict:
  """Writes GGUF file `path` as an HF checkpoint directory `out_dir` (weights in `dtype`, tokenizer files).

  `config.json` + `model.safetensors` (dequantized, un-permuted) and
  `tokenizer.json` + `tokenizer_config.json` (special tokens, chat template):
  what `load_hf`, `Tokenizer.from_dir` and transformers' `from_pretrained`
  read. Returns a summary (source, out, model_type, parameters, dtype, seconds).
  """
  import time  # pylint: disable=g-import-not-at-top

  from flax import nnx  # pylint: disable=g-import-not-at-top

  from pragjax.models.hf_io import save_hf  # pylint: disable=g-import-not-at-top
  from pragjax.models.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  gf = GGUFFile(path)
  model, cfg = load_gguf(gf)
  tok = Tokenizer.from_gguf(gf)
  save_hf(model, cfg, out_dir, dtype=dtype)
  tok.save(out_dir)
  n = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
  return dict(source=gf.path, out=out_dir, model_type=cfg.model_type, parameters=n, dtype=dtype,
              seconds=time.perf_counter() - t0)
