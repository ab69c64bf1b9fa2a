"""Orbax checkpoints of the train state and the data iterator's position.

Each checkpoint step holds two items: `state` (the `TrainState` pytree,
sharded arrays written in parallel) and `data` (the JSON state of the data
iterator). Orbax writes a step into a temporary directory and renames it when
complete (object stores: writes in place), and in both cases writes its commit
marker `commit_success.txt` into the step last: a step is complete only when
that marker exists, so a run killed mid-save leaves the previous checkpoint
intact and the incomplete one is never restored.

`restore_latest` restores the newest step that restores *and* holds only
finite values; newer steps that fail (no commit marker, a missing or garbled
metadata file, a truncated tensor file, NaN or inf in the state) are reported
with the reason and set aside as `<step>.unreadable` (kept for inspection,
ignored by orbax), so the resumed run can write those steps again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from pragjax import paths

COMMIT_MARKER = "commit_success.txt"  # orbax's (orbax.checkpoint._src.path.atomicity_types.COMMIT_SUCCESS_FILE)
ASIDE_SUFFIX = ".unreadable"

log = logging.getLogger(__name__)


class CheckpointRestoreError(RuntimeError):
  """No checkpoint in the directory restores; the message lists each step and why."""


@dataclasses.dataclass
class Restored:
  """What `restore_latest` found: the state and data-iterator state of `step`, and the newer steps that
  did not restore as `(step, reason)` (already set aside)."""

  state: Any
  data_state: dict
  step: int
  skipped: list[tuple[int, str]]


def _reason(e: BaseException, limit: int = 300) -> str:
  text = " ".join(str(e).split())
  text = text if len(text) <= limit else text[:limit] + " ..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def nonfinite_leaves(tree: Any) -> list[str]:
  """Paths of the floating-point leaves of `tree` that hold a NaN or inf (one jitted reduction per leaf)."""
  leaves = [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return []
  flags = jax.device_get(jax.jit(lambda xs: [jnp.all(jnp.isfinite(x)) for x in xs])([x for _, x in leaves]))
  return [name for (name, _), ok in zip(leaves, flags) if not ok]


@contextlib.contextmanager
def _quiet_closed_event_loop():
  """A restore that fails inside tensorstore leaves callbacks aimed at orbax's closed event loop; each
  reports `RuntimeError: Event loop is closed` as an unraisable exception. The failure itself is reported
  (with its real cause), so those echoes are dropped while restores are tried."""
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
      previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    sys.unraisablehook = previous


class Checkpointer:
  """Keep-last-N, every-`interval`-steps checkpoints under `directory` (a local path or an epath URI)."""

  def __init__(self, directory, *, keep: int = 3, interval: int = 100, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"keep={keep}: at least one checkpoint must be kept to resume from")
    self.path = paths.resolve(directory)
    self.directory = str(self.path)
    self.interval = interval
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_interval_steps=max(1, interval),
        enable_async_checkpointing=async_save,
        create=True,
    )
    self.manager = ocp.CheckpointManager(self.path, options=options)

  def step_dir(self, step: int) -> epath.Path:
    return self.path / str(step)

  def is_complete(self, step: int) -> bool:
    """Whether orbax's commit marker exists in step `step`."""
    return (self.step_dir(step) / COMMIT_MARKER).exists()

  def steps(self) -> list[int]:
    """Complete steps, oldest first."""
    return sorted(s for s in self.manager.all_steps() if self.is_complete(s))

  def latest_step(self) -> int | None:
    """The newest complete step (None if there is none)."""
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, data_state: dict | None = None, *, force: bool = False) -> bool:
    """Saves if `step` is on the interval (or `force`); returns whether it did."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
    )
    return self.manager.save(step, args=args, force=force)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores `(state, data_state)` of `step` (default: the latest complete one); `abstract_state`
    gives structure, dtypes and target shardings (e.g. `jax.eval_shape` output with `.sharding` set, or
    the live state itself)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()),
    )
    return out["state"], dict(out["data"] or {})

  def _try_restore(self, abstract_state: Any, step: int) -> tuple[Any, dict]:
    if not self.is_complete(step):
      raise CheckpointRestoreError(f"no commit marker ({COMMIT_MARKER}): its save never finished")
    state, data_state = self.restore(abstract_state, step)
    bad = nonfinite_leaves(state)
    if bad:
      raise CheckpointRestoreError(f"non-finite values in {len(bad)} array(s), e.g. {bad[0]}")
    return state, data_state

  def restore_latest(self, abstract_state: Any) -> Restored | None:
    """The newest step that restores with finite values (see the module docstring); None if the directory
    holds no step. Raises `CheckpointRestoreError` listing every step and its reason when none restores
    (nothing is set aside then: e.g. a changed model config fails them all)."""
    failed: list[tuple[int, str]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        with _quiet_closed_event_loop():
          state, data_state = self._try_restore(abstract_state, step)
      except Exception as e:  # noqa: BLE001 -- any failure means: try the previous step
        failed.append((step, _reason(e)))
        continue
      self._set_aside([s for s, _ in failed])
      return Restored(state, data_state, step, failed)
    if failed:
      listing = "\n".join(f"  step {s} ({self.step_dir(s)}): {why}" for s, why in failed)
      raise CheckpointRestoreError(
          f"no checkpoint in {self.directory} restores:\n{listing}\n"
          f"if the model or optimizer config changed since they were written, use another --workdir")
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames each step directory to `<step>.unreadable[.k]` (process 0), so the step can be written again."""
    if not steps:
      return
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      for step in steps:
        src = self.step_dir(step)
        dst, k = self.path / f"{step}{ASIDE_SUFFIX}", 1
        while dst.exists():
          dst, k = self.path / f"{step}{ASIDE_SUFFIX}.{k}", k + 1
        src.rename(dst)
        log.warning("set aside %s as %s", src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("pragjax_checkpoint_set_aside")
    self.manager.reload()

  def restore_raw(self, step: int | None = None) -> tuple[dict, dict]:
    """Restores a checkpoint as plain nested dicts of host numpy arrays,
    without knowing its tree structure or the mesh it was written on (for
    inspection on a CPU)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    with ocp.StandardCheckpointer() as reader:
      state = reader.restore(self.step_dir(step) / "state")
    data = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
    return jax.device_get(state), dict(data or {})

  def wait(self) -> None:
    """Blocks until the in-flight save (if any) is finalised (commit marker written)."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
