"""FLOP counts for MFU, and a measured matmul peak for machines without a
published one (CPUs)."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from pragjax.models.config import ModelConfig


def dense_params(cfg: ModelConfig) -> int:
  """Matmul parameters touched per token (MoE: only the active experts)."""
  d, h = cfg.hidden_size, cfg.head_dim
  attn = d * h * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
  mlp = 3 * d * cfg.intermediate_size
  if cfg.is_moe:
    mlp = mlp * cfg.num_experts_per_tok + d * cfg.num_local_experts
  return cfg.num_hidden_layers * (attn + mlp) + d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Forward + backward FLOPs per token: 6 x matmul params + causal attention
  (QK^T and PV: 2 matmuls x 2 flops x T/2 average keys x N x H, times 3)."""
  attn = 6.0 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
  return 6.0 * dense_params(cfg) + attn


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  return train_flops_per_token(cfg, seq_len) / 3.0


@functools.lru_cache(maxsize=None)
def measured_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of the fastest of `repeats` `n x n` matmuls on the default device
  (a peak is a best case: the minimum time, not the median). Cached per process."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2.0 * n**3 / float(np.min(times))


# Published dense bf16/fp16 peaks (FLOP/s) per chip, for MFU on accelerators.
PEAK_FLOPS_BF16 = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12,
    "TPU v4": 275e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v6 lite": 918e12,
}


def device_peak_flops(dtype: str = "float32") -> float:
  """Per-device peak: the published bf16 figure for known accelerators when
  computing in bf16/fp16 (SXM parts; a PCIe H100 peaks lower), otherwise a
  measured matmul peak in `dtype`."""
  kind = jax.devices()[0].device_kind
  if jnp.dtype(dtype) in (jnp.dtype("bfloat16"), jnp.dtype("float16")):
    for name, peak in PEAK_FLOPS_BF16.items():
      if name.lower() in kind.lower():
        return peak
  return measured_matmul_peak(jnp.dtype(dtype).name)
