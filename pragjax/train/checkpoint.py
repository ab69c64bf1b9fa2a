"""Orbax checkpoints of the train state and the data iterator's position.

Each checkpoint step holds two items: `state` (the `TrainState` pytree,
sharded arrays written in parallel) and `data` (the JSON state of the data
iterator). Orbax writes into a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoint intact and
the incomplete one is ignored on restore.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Keep-last-N, every-`interval`-steps checkpoints under `directory`."""

  def __init__(self, directory: str, *, keep: int = 3, interval: int = 100, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.interval = interval
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=max(1, interval),
        enable_async_checkpointing=async_save,
        create=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None = None, *, force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); returns whether it did."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
    )
    return self.manager.save(step, args=args, force=force)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores `(state, data_state)`; `abstract_state` gives structure,
    dtypes and target shardings (e.g. `jax.eval_shape` output with
    `.sharding` set, or the live state itself)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()),
    )
    return out["state"], dict(out["data"] or {})

  def restore_raw(self, step: int | None = None) -> tuple[dict, dict]:
    """Restores a checkpoint as plain nested dicts of host numpy arrays,
    without knowing its tree structure or the mesh it was written on (for
    inspection on a CPU)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    path = os.path.join(self.directory, str(step))
    state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
    data = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
    return jax.device_get(state), dict(data or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
