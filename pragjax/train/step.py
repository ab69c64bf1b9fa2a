"""One train step for every method.

`make_train_step(loss_fn, optimizer, ...)` turns any
`loss_fn(params, batch, rng) -> (loss, metrics)` into a jitted, sharded step
`(state, batch) -> (state, metrics)` that donates the state. Methods differ
only in `loss_fn` and their data, never in this step.

Gradient accumulation splits the batch's leading axis into `accum_steps`
micro-batches and runs them under `lax.scan`. When `metrics` carries a
`"loss_weight"` (e.g. the number of target tokens), micro-batch gradients are
averaged with those weights, so accumulation equals one full batch exactly for
token-mean losses; otherwise micro-batches weigh equally.

A frozen reference model can be evaluated inside the step: pass
`ref_fn(ref_params, batch) -> dict` and keep `state.ref_params`; its outputs
are merged into the batch under `stop_gradient` before `loss_fn` sees it. To
precompute them in a separate pass instead, call `ref_fn` over the data
beforehand and leave `state.ref_params = None`.

`AheadOfTimeStep(step)` compiles the jitted step ahead of time on the first
batch's shapes (`step.lower(state, batch).compile()`, with the jit's own
shardings and donation) and records how long that took and what
`memory_analysis()` says the step needs per device; the loop runs it and
reports both before step 1 finishes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pragjax.train.state import TrainState

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def _split_micro(batch: dict, k: int) -> dict:
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by accum_steps={k}")
    return x.reshape((k, x.shape[0] // k) + x.shape[1:])
  return jax.tree.map(split, batch)


def _all_finite(*trees) -> jax.Array:
  """1.0 if every inexact entry of `trees` is finite, else 0.0 (float32 scalar)."""
  leaves = [x for x in jax.tree.leaves(trees) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  flags = jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])
  return jnp.all(flags).astype(jnp.float32)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    accum_steps: int = 1,
    ref_fn: Callable[[Any, dict], dict] | None = None,
    state_shardings: Any = None,
    batch_shardings: Any = None,
    donate: bool = True,
    jit: bool = True,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Builds the train step. See the module docstring.

  Args:
    loss_fn: `(params, batch, rng) -> (scalar loss, metrics dict)`.
    optimizer: an optax transformation (see `pragjax.optim.make_optimizer`).
    accum_steps: micro-batches per step (lax.scan).
    ref_fn: optional frozen-reference pass, `(ref_params, batch) -> dict`.
    state_shardings / batch_shardings: for `jax.jit` in/out shardings.
    donate: donate the incoming state's buffers.
    jit: False returns the plain Python function (for tests and tracing).
  Returns: `step(state, batch) -> (new_state, metrics)`; metrics always has
    `loss`, `grad_norm`, `update_norm`, `finite` and the `loss_fn` metrics
    (averaged over micro-batches), all float32 scalars. `finite` is 1.0 when
    the loss, both norms and every new parameter are finite (one fused
    reduction over the parameters, on device), else 0.0: the loop never
    checkpoints a state whose step had `finite == 0`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one(params, batch, rng):
    (loss, metrics), grads = grad_fn(params, batch, rng)
    metrics = dict(metrics)
    weight = jnp.asarray(metrics.pop("loss_weight", 1.0), jnp.float32)
    return loss, metrics, grads, weight

  def step(state: TrainState, batch: dict):
    rng, sub = jax.random.split(state.rng)
    if ref_fn is not None and state.ref_params is not None:
      batch = {**batch, **jax.lax.stop_gradient(ref_fn(state.ref_params, batch))}
    if accum_steps == 1:
      loss, metrics, grads, _ = one(state.params, batch, sub)
    else:
      micro = _split_micro(batch, accum_steps)
      keys = jax.random.split(sub, accum_steps)

      def body(carry, xs):
        g_acc, l_acc, m_acc, w_acc = carry
        mb, key = xs
        loss, metrics, grads, w = one(state.params, mb, key)
        g_acc = jax.tree.map(lambda a, g: a + w * g, g_acc, grads)
        m_acc = jax.tree.map(lambda a, m: a + w * m, m_acc, metrics)
        return (g_acc, l_acc + w * loss, m_acc, w_acc + w), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      _, m_shape, _, _ = jax.eval_shape(one, state.params, jax.tree.map(lambda x: x[0], micro), keys[0])
      m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), m_shape)
      init = (zeros, jnp.zeros((), jnp.float32), m0, jnp.zeros((), jnp.float32))
      (g, l, m, w), _ = jax.lax.scan(body, init, (micro, keys))
      grads = jax.tree.map(lambda x: x / w, g)
      loss, metrics = l / w, jax.tree.map(lambda x: x / w, m)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    metrics.update(
        loss=jnp.asarray(loss, jnp.float32),
        grad_norm=optax.global_norm(grads),
        update_norm=optax.global_norm(updates),
    )
    metrics["finite"] = _all_finite(metrics["loss"], metrics["grad_norm"], metrics["update_norm"], params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
    return new_state, metrics

  if not jit:
    return step
  kwargs = {}
  if state_shardings is not None:
    kwargs["in_shardings"] = (state_shardings, batch_shardings)
    kwargs["out_shardings"] = (state_shardings, None)
  return jax.jit(step, donate_argnums=(0,) if donate else (), **kwargs)


MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                 "generated_code_size_in_bytes")


def _signature(batch) -> tuple:
  """What a compiled executable is specific to: tree structure, shapes, dtypes and shardings of `batch`."""
  leaves, treedef = jax.tree.flatten(batch)
  return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x))), getattr(x, "sharding", None))
                        for x in leaves)


def memory_report(compiled) -> dict[str, int] | None:
  """`compiled.memory_analysis()` as `{field: bytes}` (per device), plus `total_bytes` = arguments + outputs +
  temporaries - aliased (outputs written into donated arguments); None where the backend gives no analysis."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 -- some backends raise instead of returning None
    return None
  if stats is None:
    return None
  out = {k: int(getattr(stats, k)) for k in MEMORY_FIELDS if getattr(stats, k, None) is not None}
  if not all(k in out for k in MEMORY_FIELDS[:4]):
    return out or None
  out["total_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"] + out["temp_size_in_bytes"]
                        - out["alias_size_in_bytes"])
  return out


class AheadOfTimeStep:
  """A jitted step (`make_train_step`) compiled ahead of time on the first call's batch shapes.

  The first call lowers and compiles `step_fn` for its `(state, batch)` (the
  jit's in/out shardings and donation are kept: they belong to the lowering)
  and keeps `report`: `lower_s`, `compile_s`, the batch shapes and
  `memory_report(compiled)`. Later calls whose batch has the same structure,
  shapes, dtypes and shardings run the compiled executable. A batch of other
  shapes (length buckets, groups of varying size) goes to `step_fn` itself,
  which compiles and caches each new shape as a jitted function always does,
  so variable-shape methods behave as before; `other_shapes` counts them.
  """

  def __init__(self, step_fn: Callable):
    if not hasattr(step_fn, "lower"):
      raise TypeError("AheadOfTimeStep needs a jax.jit function (make_train_step(..., jit=True))")
    self.step_fn = step_fn
    self.report: dict[str, Any] | None = None
    self.other_shapes: set = set()
    self._compiled = None
    self._signature = None

  def __call__(self, state, batch):
    signature = _signature(batch)
    if self._compiled is None:
      t0 = time.perf_counter()
      lowered = self.step_fn.lower(state, batch)
      t1 = time.perf_counter()
      self._compiled = lowered.compile()
      t2 = time.perf_counter()
      self._signature = signature
      self.report = {
          "lower_s": t1 - t0, "compile_s": t2 - t1,
          "batch_shapes": {"/".join(str(getattr(k, "key", k)) for k in path): list(np.shape(x))
                           for path, x in jax.tree_util.tree_leaves_with_path(batch)},
          "memory": memory_report(self._compiled),
          "backend": jax.default_backend(), "devices": jax.device_count(),
      }
    if signature == self._signature:
      return self._compiled(state, batch)
    self.other_shapes.add(signature)
    return self.step_fn(state, batch)
