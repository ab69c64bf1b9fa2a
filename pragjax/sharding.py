"""Meshes and logical-axis rules.

A mesh has three named axes, `data`, `fsdp` and `tensor` (all
`AxisType.Auto`). Parameters carry logical axis names (`embed`, `mlp`,
`heads`, `kv_heads`, `vocab`, `expert`, `norm`); `rules` map each logical name
to a mesh axis (or None = replicated). The defaults give FSDP over `fsdp` on
the model dimension and Megatron-style tensor parallelism over `tensor`:

  embed -> fsdp, mlp/heads/kv_heads/vocab -> tensor, expert/norm -> None,
  batch -> (data, fsdp)

A dimension that a mesh axis does not divide is replicated instead (e.g. 4
KV heads on tensor=8), and a mesh axis is never used twice in one spec.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("expert", None),
    ("norm", None),
)


def make_mesh(
    data: int = 1,
    fsdp: int = -1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
  """A `(data, fsdp, tensor)` mesh over `devices` (default: all devices).

  One axis may be -1: it takes whatever the others leave.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices are not divisible by {known} (mesh {shape})")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(
        f"mesh data={shape[0]} x fsdp={shape[1]} x tensor={shape[2]} needs"
        f" {int(np.prod(shape))} devices, have {len(devices)}"
    )
  return jax.make_mesh(
      tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices
  )


def mesh_from_config(cfg: Mapping[str, Any] | None) -> Mesh:
  """`make_mesh(**cfg)` for a config section `{data, fsdp, tensor}`."""
  cfg = dict(cfg or {})
  unknown = set(cfg) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh field(s) {sorted(unknown)}; expected {MESH_AXES}")
  return make_mesh(**cfg)


def logical_to_spec(
    axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
) -> P:
  """Maps logical axis names to a `PartitionSpec` under `rules`."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(axes):
    target = table.get(name) if name is not None else None
    names = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    names = tuple(n for n in names if n not in used)
    if mesh is not None:
      names = tuple(n for n in names if mesh.shape[n] > 1)
      size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
      if shape is not None and shape[i] % size:
        names = ()
    used.update(names)
    out.append(None if not names else names[0] if len(names) == 1 else names)
  return P(*out)


def variable_sharding(var: nnx.Variable, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
  """The `NamedSharding` of one NNX variable from its `logical_axes` metadata."""
  axes = var.get_metadata().get("logical_axes")
  if axes is None:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, logical_to_spec(axes, var.shape, mesh, rules))


def param_shardings(state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """A pytree of `NamedSharding`s with the structure of `state`."""
  return jax.tree.map(
      lambda v: variable_sharding(v, mesh, rules), state,
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )


def shard_model(model: nnx.Module, mesh: Mesh, rules=DEFAULT_RULES) -> nnx.Module:
  """Moves every parameter of `model` onto `mesh` by its logical axes (in place)."""
  state = nnx.state(model)
  pure = jax.tree.map(
      lambda v: jax.device_put(v[...], variable_sharding(v, mesh, rules)),
      state,
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  nnx.update(model, pure)
  return model


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
  """Sharding of any `[batch, ...]` array: the leading axis over the `batch`
  rule's mesh axes, the rest replicated (valid for every rank >= 1)."""
  return NamedSharding(mesh, logical_to_spec(("batch",), None, mesh, rules))
