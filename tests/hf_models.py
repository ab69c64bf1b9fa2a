"""Tiny random Hugging Face checkpoints, one per family, built with torch.

Weights are drawn with a larger std than HF's init (0.02) so that logits are
far from uniform and parity tests have something to compare.
"""

from __future__ import annotations

import os

import numpy as np

VOCAB = 512

FAMILIES = {
    "llama": dict(model_type="llama"),
    "llama3_rope": dict(
        model_type="llama",
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "llama_linear_rope": dict(
        model_type="llama", rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    ),
    "mistral": dict(model_type="mistral", sliding_window=4),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2),
    "qwen2": dict(model_type="qwen2"),
    "qwen2_tied": dict(model_type="qwen2", tie_word_embeddings=True),
    "gemma": dict(model_type="gemma"),
    "gemma2": dict(
        model_type="gemma2", sliding_window=4, query_pre_attn_scalar=12,
        attn_logit_softcapping=2.0, final_logit_softcapping=5.0,
    ),
}


def make_hf_checkpoint(name: str, directory: str, *, seed: int = 0, std: float = 0.2) -> str:
  """Builds family `name` with transformers, saves it under `directory/name`."""
  import torch
  from transformers import AutoConfig, AutoModelForCausalLM

  kw = dict(FAMILIES[name])
  mt = kw.pop("model_type")
  cfg = AutoConfig.for_model(
      mt, vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
      pad_token_id=0, bos_token_id=1, eos_token_id=2, **kw,
  )
  torch.manual_seed(seed)
  model = AutoModelForCausalLM.from_config(cfg)
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, std)
  path = os.path.join(directory, name)
  model.save_pretrained(path)
  return path


def load_torch(path: str):
  import torch
  from transformers import AutoModelForCausalLM

  torch.set_num_threads(2)
  return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def padded_batch(seed: int = 0, t: int = 12):
  """Ids and mask with a left-padded, a right-padded and an unpadded row."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, VOCAB, size=(3, t)).astype(np.int64)
  mask = np.ones((3, t), np.int64)
  mask[0, :4] = 0  # left padding
  mask[1, t - 5:] = 0  # right padding
  ids[mask == 0] = 0
  return ids, mask


def torch_forward(model, ids, mask):
  """HF forward with explicit positions derived from the mask."""
  import torch

  pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
  with torch.no_grad():
    out = model(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
        position_ids=torch.tensor(pos), output_hidden_states=True,
    )
  return out.logits.float().numpy(), [h.float().numpy() for h in out.hidden_states]
