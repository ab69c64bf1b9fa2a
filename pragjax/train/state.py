"""The train state: one pytree that checkpoints, shards and donates as a unit."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from pragjax import sharding as sharding_lib
from pragjax.optim.factory import path_parts


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; params: `nnx.State` of the trained model's Params;
  opt_state: optax state; rng: raw uint32[2] key (checkpoint-friendly);
  ref_params: frozen reference parameters (or None) for objectives that need a
  reference model evaluated inside the step."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ref_params: Any = None


def init_train_state(model: nnx.Module, optimizer: optax.GradientTransformation, *, seed: int = 0,
                     ref_model: nnx.Module | None = None) -> tuple[nnx.GraphDef, TrainState]:
  """Splits `model` into a graphdef and a fresh `TrainState`.

  The state holds the model's own parameter arrays (no copy, so no extra
  memory). The train step donates the state, so after the first step the
  original `model` object's arrays are deleted: rebuild the trained model
  with `nnx.merge(graphdef, state.params)` (as `runner.train_lm` does), or
  copy the parameters first if the original is still needed.
  """
  graphdef, params = nnx.split(model, nnx.Param)
  ref = nnx.state(ref_model, nnx.Param) if ref_model is not None else None
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
      rng=jax.random.PRNGKey(seed), ref_params=ref,
  )
  return graphdef, state


def state_shardings(state: TrainState, mesh, rules=sharding_lib.DEFAULT_RULES):
  """Shardings for every leaf of `state`: parameters by their logical axes,
  optimizer moments like the parameter they belong to (matched by shape and
  path suffix), scalars and keys replicated."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  replicated = NamedSharding(mesh, P())
  param_sh = sharding_lib.param_shardings(state.params, mesh, rules)
  by_path = {}
  for path, sh in jax.tree_util.tree_leaves_with_path(param_sh):
    by_path[path_parts(path)] = sh
  shapes = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    shapes[path_parts(path)] = leaf.shape

  def opt_leaf(path, leaf):
    key = path_parts(path)
    for n in range(len(key)):
      suffix = key[n:]
      if suffix in by_path and getattr(leaf, "shape", None) == shapes[suffix]:
        return by_path[suffix]
    return replicated

  opt_sh = jax.tree_util.tree_map_with_path(opt_leaf, state.opt_state)
  ref_sh = None
  if state.ref_params is not None:
    ref_sh = sharding_lib.param_shardings(state.ref_params, mesh, rules)
  return TrainState(step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated, ref_params=ref_sh)

