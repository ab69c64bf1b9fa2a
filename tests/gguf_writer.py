"""Writes tiny GGUF files from tiny HF checkpoints, laid out as llama.cpp's converter lays them out.

Independent of `pragjax.models.gguf_io`: tensor names come from the `gguf`
package's own HF -> GGUF name map, and the converter's transforms are written
out here from the format's description (q/k rows permuted for the llama
architecture, Gemma norms stored as 1 + w, Llama-3 RoPE factors as a
`rope_freqs` tensor, Mixtral experts merged into `[E, out, in]` tensors).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

ARCH = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "gemma": "gemma",
        "gemma2": "gemma2"}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_factors(rp: dict, head_dim: int) -> np.ndarray:
  base = rp["rope_theta"]
  freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp[
      "original_max_position_embeddings"]
  out = []
  for f in freqs:
    wavelen = 2 * math.pi / f
    if wavelen < old / hi:
      out.append(1.0)
    elif wavelen > old / lo:
      out.append(factor)
    else:
      smooth = (old / wavelen - lo) / (hi - lo)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def hf_to_gguf(hf_dir: str, out_path: str, *, qtype: str | None = None, name: str = "tiny", skip=(),
               as_int32=(), tokenizer=None) -> str:
  """Converts the tiny HF checkpoint in `hf_dir` to `out_path`; matrices stored as `qtype` (None: F32).

  `skip`: GGUF tensor names left out; `as_int32`: GGUF tensor names stored as I32 (for error tests);
  `tokenizer`: a byte-level BPE `pragjax` Tokenizer (GPT-2 pre-tokenizer) written as the file's vocabulary
  (default: a placeholder vocabulary of the model's size).
  """
  import gguf
  from safetensors.numpy import load_file

  cfg = json.load(open(os.path.join(hf_dir, "config.json")))
  mt = cfg["model_type"]
  arch = ARCH[mt]
  tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
  n_layers = cfg["num_hidden_layers"]
  heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
  head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
  rp = cfg.get("rope_parameters") or {"rope_theta": cfg.get("rope_theta", 10000.0)}
  name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)

  w = gguf.GGUFWriter(out_path, arch=arch)
  w.add_name(f"{name} {'mistral' if mt == 'mistral' else ''}".strip())
  w.add_block_count(n_layers)
  w.add_context_length(cfg["max_position_embeddings"])
  w.add_embedding_length(cfg["hidden_size"])
  w.add_feed_forward_length(cfg["intermediate_size"])
  w.add_head_count(heads)
  w.add_head_count_kv(kv)
  w.add_key_length(head_dim)
  w.add_value_length(head_dim)
  w.add_rope_freq_base(float(rp["rope_theta"]))
  w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
  w.add_vocab_size(cfg["vocab_size"])
  if rp.get("rope_type") == "linear":
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(float(rp["factor"]))
  if cfg.get("sliding_window") and mt in ("mistral", "gemma2"):
    w.add_sliding_window(int(cfg["sliding_window"]))
  if mt == "mixtral":
    w.add_expert_count(cfg["num_local_experts"])
    w.add_expert_used_count(cfg["num_experts_per_tok"])
  if mt == "gemma2":
    w.add_attn_logit_softcapping(float(cfg["attn_logit_softcapping"]))
    w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
  w.add_bos_token_id(cfg.get("bos_token_id", 1))
  w.add_eos_token_id(cfg.get("eos_token_id", 2))
  if tokenizer is None:  # A placeholder byte-level vocabulary, so that readers which insist on one find it.
    toks, types, merges, pre = [f"t{i}" for i in range(cfg["vocab_size"])], None, [], "default"
  else:
    backend = json.loads(tokenizer.backend.to_str())
    vocab = backend["model"]["vocab"]
    toks = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
      toks[i] = t
    special = {a["id"] for a in backend["added_tokens"] if a["special"]}
    toks += [f"<unused{i}>" for i in range(len(toks), cfg["vocab_size"])]
    types = [3 if i in special else 5 if t.startswith("<unused") else 1 for i, t in enumerate(toks)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    pre = "gpt2"
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<s>assistant: {% endif %}")
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre(pre)
  w.add_token_list(toks)
  w.add_token_types(types or [1] * len(toks))
  w.add_token_merges(merges)

  def put(gname: str, x: np.ndarray):
    x = np.ascontiguousarray(x, np.float32)
    if gname in skip:
      return
    if gname in as_int32:
      w.add_tensor(gname, x.astype(np.int32))
    elif qtype is None or x.ndim == 1:
      w.add_tensor(gname, x)
    else:
      qt = gguf.GGMLQuantizationType[qtype]
      q = gguf.quants.quantize(x, qt)
      w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=qt)

  experts: dict[str, dict[int, np.ndarray]] = {}
  for hf_name, x in tensors.items():
    x = x.astype(np.float32)
    if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
      continue
    if arch == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
      x = _permute(x, heads)
    if arch == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
      x = _permute(x, kv)
    if mt in ("gemma", "gemma2") and hf_name.endswith("norm.weight"):
      x = x + 1.0
    if ".block_sparse_moe.experts." in hf_name:  # model.layers.L.block_sparse_moe.experts.J.wK.weight
      parts = hf_name.split(".")
      merged = ".".join(parts[:5] + parts[6:7])  # ...experts.wK
      experts.setdefault(merged, {})[int(parts[5])] = x
      continue
    gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if gname is None:
      raise KeyError(f"gguf has no name for {hf_name}")
    put(gname, x)
  for merged, per in experts.items():
    gname = name_map.get_name(merged, try_suffixes=(".weight",))
    if gname is None:
      raise KeyError(f"gguf has no name for {merged}")
    put(gname + ".weight" if not gname.endswith(".weight") else gname, np.stack([per[j] for j in sorted(per)]))
  if rp.get("rope_type") == "llama3":
    w.add_tensor("rope_freqs.weight", _llama3_factors(rp, head_dim))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return out_path
