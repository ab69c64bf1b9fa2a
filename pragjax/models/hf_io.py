"""Hugging Face checkpoint I/O: `load_hf` and `save_hf`.

`load_hf` reads `config.json` and `model.safetensors` (or the shards listed in
`model.safetensors.index.json`) one tensor at a time and places each straight
into its target sharding with `jax.make_array_from_callback`, so every host
holds at most one source tensor beyond its own shards. `save_hf` writes the
same layout back (sharded above `max_shard_bytes`, with the index file).

The name table `hf_tensor_specs(config)` is the one place that knows how HF
names and shapes map onto the NNX parameter tree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from pragjax import sharding as sharding_lib
from pragjax.models.config import ModelConfig
from pragjax.models.decoder import Decoder
from pragjax.models.safetensors_io import SafetensorsFile, write_file

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some checkpoints carry that hold no learned weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
  """A checkpoint directory that does not match its config."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One NNX parameter and the HF tensor(s) it comes from.

  `hf_names` has one name, or E names stacked on a new leading axis (MoE).
  `hf_shape` is the shape of each HF tensor; `to_ours` maps one HF tensor to
  our layout (per expert for stacked params) and `to_hf` back.
  """

  path: tuple
  hf_names: tuple[str, ...]
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _ident(x):
  return x


def _t(x):
  return x.T


def hf_tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
  """The full HF <-> NNX parameter table for `cfg`."""
  d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
  i_, v_ = cfg.intermediate_size, cfg.vocab_size
  specs = [TensorSpec(("embed",), ("model.embed_tokens.weight",), (v_, d), _ident, _ident)]

  def lin_in(heads):  # HF [heads*h, d] -> ours [d, heads, h]
    return (lambda x: x.T.reshape(d, heads, h)), (lambda y: y.reshape(d, heads * h).T)

  def norm(path, name):
    specs.append(TensorSpec(path + ("scale",), (name,), (d,), _ident, _ident))

  for li in range(cfg.num_hidden_layers):
    pre = f"model.layers.{li}."
    lp = ("layers", li)
    a = lp + ("self_attn",)
    for proj, heads in (("q_proj", n), ("k_proj", k), ("v_proj", k)):
      fo, fh = lin_in(heads)
      specs.append(TensorSpec(a + (proj,), (f"{pre}self_attn.{proj}.weight",), (heads * h, d), fo, fh))
      if cfg.qkv_bias:
        specs.append(TensorSpec(
            a + (proj[0] + "_bias",), (f"{pre}self_attn.{proj}.bias",), (heads * h,),
            (lambda x, heads=heads: x.reshape(heads, h)), (lambda y, heads=heads: y.reshape(heads * h)),
        ))
    specs.append(TensorSpec(
        a + ("o_proj",), (f"{pre}self_attn.o_proj.weight",), (d, n * h),
        lambda x: x.T.reshape(n, h, d), lambda y: y.reshape(n * h, d).T,
    ))
    if cfg.o_bias:
      specs.append(TensorSpec(a + ("o_bias",), (f"{pre}self_attn.o_proj.bias",), (d,), _ident, _ident))
    norm(lp + ("input_layernorm",), f"{pre}input_layernorm.weight")
    norm(lp + ("post_attention_layernorm",), f"{pre}post_attention_layernorm.weight")
    if cfg.post_norms:
      norm(lp + ("pre_feedforward_layernorm",), f"{pre}pre_feedforward_layernorm.weight")
      norm(lp + ("post_feedforward_layernorm",), f"{pre}post_feedforward_layernorm.weight")
    m = lp + ("mlp",)
    if cfg.is_moe:
      moe = f"{pre}block_sparse_moe."
      e = cfg.num_local_experts
      specs.append(TensorSpec(m + ("router",), (moe + "gate.weight",), (e, d), _t, _t))
      for ours, w, shape in (("gate_proj", "w1", (i_, d)), ("up_proj", "w3", (i_, d)), ("down_proj", "w2", (d, i_))):
        names = tuple(f"{moe}experts.{j}.{w}.weight" for j in range(e))
        specs.append(TensorSpec(m + (ours,), names, shape, _t, _t))
    else:
      for ours, shape in (("gate_proj", (i_, d)), ("up_proj", (i_, d)), ("down_proj", (d, i_))):
        specs.append(TensorSpec(m + (ours,), (f"{pre}mlp.{ours}.weight",), shape, _t, _t))
        if cfg.mlp_bias:
          specs.append(TensorSpec(
              m + (ours.split("_")[0] + "_bias",), (f"{pre}mlp.{ours}.bias",), (shape[0],), _ident, _ident
          ))
  norm(("norm",), "model.norm.weight")
  if not cfg.tie_word_embeddings:
    specs.append(TensorSpec(("lm_head",), ("lm_head.weight",), (v_, d), _t, _t))
  return specs


# -- reading ---------------------------------------------------------------


def _open_checkpoint(path: str) -> dict[str, SafetensorsFile]:
  """Maps every tensor name to the (lazily opened) file that holds it."""
  index = os.path.join(path, INDEX_FILE)
  single = os.path.join(path, SINGLE_FILE)
  files: dict[str, SafetensorsFile] = {}
  where: dict[str, SafetensorsFile] = {}
  if os.path.exists(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({e})") from e
    for name, fname in weight_map.items():
      fpath = os.path.join(path, fname)
      if fname not in files:
        if not os.path.exists(fpath):
          raise CheckpointError(f"{index}: lists {fname}, which is missing from {path}")
        files[fname] = SafetensorsFile(fpath)
      if name not in files[fname].entries:
        raise CheckpointError(f"{index}: maps {name!r} to {fname}, which does not contain it")
      where[name] = files[fname]
  elif os.path.exists(single):
    sf = SafetensorsFile(single)
    where = {name: sf for name in sf.keys()}
  else:
    raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} found")
  return where


def _checkpoint_dtype(cfg_dict: dict) -> str | None:
  dt = cfg_dict.get("dtype") or cfg_dict.get("torch_dtype")
  return dt if dt in ("float32", "bfloat16", "float16") else None


def load_hf(
    path: str,
    *,
    dtype=None,
    param_dtype=None,
    mesh: Mesh | None = None,
    rules=sharding_lib.DEFAULT_RULES,
    **config_overrides,
) -> tuple[Decoder, ModelConfig]:
  """Loads a Hugging Face checkpoint directory into an NNX `Decoder`.

  Args:
    path: directory with `config.json` and `model.safetensors` or sharded
      `model-*.safetensors` + `model.safetensors.index.json`.
    dtype: compute dtype (default: `param_dtype`).
    param_dtype: storage dtype (default: the checkpoint's `dtype` /
      `torch_dtype`, else float32).
    mesh: place parameters onto this mesh by their logical axes (see
      `pragjax.sharding`); default: the first local device.
    rules: logical-axis rules for `mesh`.
    **config_overrides: other `ModelConfig` fields (e.g. `attention_impl`).

  Returns: `(model, config)`.
  Raises: `ConfigError` for unsupported configs; `CheckpointError` naming the
    tensor for missing, unexpected or mis-shaped tensors.
  """
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise CheckpointError(f"{path}: no config.json")
  try:
    with open(cfg_path) as f:
      raw = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
  param_dtype = jnp.dtype(param_dtype or _checkpoint_dtype(raw) or "float32").name
  dtype = jnp.dtype(dtype or param_dtype).name
  cfg = ModelConfig.from_hf(raw, source=cfg_path, dtype=dtype, param_dtype=param_dtype, **config_overrides)
  where = _open_checkpoint(path)
  specs = hf_tensor_specs(cfg)

  expected = {name for s in specs for name in s.hf_names}
  missing = sorted(expected - set(where))
  if missing:
    raise CheckpointError(
        f"{path}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        f" ({len(missing)} in all) for model_type={cfg.model_type}"
    )
  unexpected = sorted(
      n for n in set(where) - expected
      if not n.endswith(_IGNORED_SUFFIXES) and not (cfg.tie_word_embeddings and n == "lm_head.weight")
  )
  if unexpected:
    raise CheckpointError(
        f"{path}: unexpected tensor(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        f" ({len(unexpected)} in all) for model_type={cfg.model_type}"
    )
  for s in specs:
    for name in s.hf_names:
      found = where[name].shape(name)
      if found != s.hf_shape:
        raise CheckpointError(
            f"{where[name].path}: tensor {name!r} has shape {found}, expected {s.hf_shape}"
        )

  return build_model(cfg, lambda name: where[name].read(name), mesh=mesh, rules=rules), cfg


def build_model(
    cfg: ModelConfig,
    read: Callable[[str], np.ndarray],
    *,
    mesh: Mesh | None = None,
    rules=sharding_lib.DEFAULT_RULES,
) -> Decoder:
  """A `Decoder` whose parameters are read tensor by tensor and placed straight into their shardings.

  `read(hf_name)` returns one tensor in Hugging Face layout (any float dtype);
  it is converted to our layout and `cfg.param_dtype`, placed with
  `jax.make_array_from_callback` (onto `mesh` by the logical axes, else the
  first local device) and dropped, so the host holds one source tensor at a
  time. Shared by `load_hf` (safetensors) and `load_gguf`.
  """
  abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)
  flat_abs = {tuple(p): v for p, v in nnx.to_flat_state(abs_state)}
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  pd = np.dtype(jnp.dtype(cfg.param_dtype))
  values: dict[tuple, jax.Array] = {}
  for s in hf_tensor_specs(cfg):
    if len(s.hf_names) == 1:
      host = s.to_ours(read(s.hf_names[0]))
    else:
      host = np.stack([s.to_ours(read(nm)) for nm in s.hf_names])
    host = np.asarray(host).astype(pd, copy=False)
    var = flat_abs[s.path]
    if tuple(var.shape) != host.shape:  # guards the spec table itself
      raise CheckpointError(f"{s.path}: built shape {host.shape}, model expects {var.shape}")
    sh = sharding_lib.variable_sharding(var, mesh, rules) if mesh is not None else device
    values[s.path] = jax.make_array_from_callback(host.shape, sh, lambda idx, a=host: a[idx])
    del host
  pure = {}
  for p, arr in values.items():
    node = pure
    for key in p[:-1]:
      node = node.setdefault(key, {})
    node[p[-1]] = arr
  nnx.replace_by_pure_dict(abs_state, pure)
  return nnx.merge(graphdef, abs_state)


# -- writing ---------------------------------------------------------------


def _host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def save_hf(
    model: Decoder,
    config: ModelConfig | None = None,
    path: str = "",
    *,
    max_shard_bytes: int = 4 * 2**30,
    dtype=None,
) -> None:
  """Writes `config.json` + safetensors in Hugging Face layout.

  Above `max_shard_bytes` of tensor data the weights are split into
  `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`.
  In a multi-process run every process must call this (arrays are gathered);
  only process 0 writes.

  Args:
    dtype: storage dtype of the written tensors (default: parameter dtype).
  """
  config = config or model.config
  if not path:
    raise ValueError("save_hf needs a target directory")
  flat = {tuple(p): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  specs = hf_tensor_specs(config)
  entries = []
  for s in specs:
    var = flat[s.path]
    arr_dtype = np.dtype(jnp.dtype(dtype)) if dtype else np.dtype(var[...].dtype)
    if len(s.hf_names) == 1:
      entries.append((s.hf_names[0], s.hf_shape, arr_dtype, s, None))
    else:
      for j, nm in enumerate(s.hf_names):
        entries.append((nm, s.hf_shape, arr_dtype, s, j))
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(path, exist_ok=True)

  cache: dict[tuple, np.ndarray] = {}

  def getter(s: TensorSpec, j):
    def get():
      if s.path not in cache:
        cache.clear()
        cache[s.path] = _host(flat[s.path][...])
      a = cache[s.path]
      return s.to_hf(a if j is None else a[j])
    return get

  shards: list[list] = [[]]
  size = 0
  for e in entries:
    nbytes = int(np.prod(e[1])) * e[2].itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(e)
    size += nbytes
  if not writer:
    for s in specs:  # take part in the collective gathers
      _host(flat[s.path][...])
    return
  total = 0
  weight_map = {}
  names = (
      [SINGLE_FILE] if len(shards) == 1
      else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  )
  for fname, shard in zip(names, shards):
    total += write_file(
        os.path.join(path, fname),
        [(nm, shape, dt, getter(s, j)) for nm, shape, dt, s, j in shard],
    )
    weight_map.update({e[0]: fname for e in shard})
  if len(shards) > 1:
    with open(os.path.join(path, INDEX_FILE), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  elif os.path.exists(os.path.join(path, INDEX_FILE)):
    os.remove(os.path.join(path, INDEX_FILE))
  out_cfg = config.replace(param_dtype=np.dtype(entries[0][2]).name) if entries else config
  out_cfg.save(path)
