"""The training loop every method runs: resume, step, log, checkpoint, stop.

- Resumes automatically from the newest checkpoint of `checkpointer` that
  restores with finite values (train state *and* data-iterator position;
  newer ones that do not are reported and set aside, see
  `pragjax.train.checkpoint`), so a killed run restarted with the same
  command continues exactly where its last checkpoint left it. Rows of
  `metrics.jsonl` after the resumed step are dropped first (they are
  replayed), and a checkpoint past `num_steps` is an error, not a silent no-op.
- Finite check: a step whose loss, gradient norm, update norm or new
  parameters hold a NaN or inf (the step's `finite` metric, computed on
  device) stops the run with `NonFiniteLossError` naming the step and the last
  checkpoint; that state is never saved, so every checkpoint on disk is finite.
- SIGTERM (preemption) finishes the current step, writes a checkpoint and
  returns with `preempted=True`.
- Evaluators (`evaluators`, every `eval_every` steps and at the last step)
  see the step and the new state and return metrics, written prefixed
  `eval/`.
- Any other exit (an exception, Ctrl-C = `TrainingInterrupted`, a failing
  evaluator) first waits for the checkpoint being written to be
  finalised; the exception gets a note naming the step reached and the last
  checkpoint. Ctrl-C while a save is being started is held until the save is
  handed to the background writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from pragjax.train.checkpoint import Checkpointer
from pragjax.train.metrics import MetricWriter

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """A step produced a NaN or inf (loss, norms or parameters); the message names the step."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during training; the message names the step and the last checkpoint."""


class ResumeError(RuntimeError):
  """The workdir's checkpoint cannot continue this run (e.g. it is past the requested steps)."""


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int
  preempted: bool
  last_metrics: dict
  resumed_from: int = 0
  skipped_checkpoints: list = dataclasses.field(default_factory=list)  # (step, reason) that did not restore


class _Signals:
  """SIGTERM: recorded (stop after this step). SIGINT: KeyboardInterrupt, held while inside `critical()`.

  Installed from the main thread only (elsewhere Python's defaults stay)."""

  def __init__(self):
    self.received = False
    self._old: dict = {}
    self._critical = False
    self._pending_int = False

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._term)
      if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._int)
    return self

  def _term(self, signum, frame):
    del signum, frame
    self.received = True

  def _int(self, signum, frame):
    del signum, frame
    if self._critical:
      self._pending_int = True
    else:
      raise KeyboardInterrupt

  @contextlib.contextmanager
  def critical(self):
    self._critical = True
    try:
      yield
    finally:
      self._critical = False
    if self._pending_int:
      self._pending_int = False
      raise KeyboardInterrupt

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _progress(total: int, initial: int, enabled: bool):
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=True)


def _where(checkpointer: Checkpointer | None) -> str:
  if checkpointer is None:
    return "no checkpointer"
  latest = checkpointer.latest_step()
  if latest is None:
    return f"no checkpoint yet in {checkpointer.directory}"
  return f"last good checkpoint: step {latest} in {checkpointer.directory}"


def _nonfinite_message(step: int, metrics: dict) -> str:
  bad = [f"{k} ({metrics[k]})" for k in ("loss", "grad_norm", "update_norm") if not math.isfinite(metrics[k])]
  what = bad[0] if bad else "parameters after the update"
  return f"non-finite {what} at step {step}" + (f" (also: {', '.join(bad[1:])})" if bad[1:] else "")


def _finish_save(checkpointer: Checkpointer | None, error: BaseException | None) -> None:
  """Waits for the in-flight save; a failure there is raised, or noted on `error` if one is propagating."""
  if checkpointer is None:
    return
  try:
    checkpointer.wait()
  except Exception as e:  # noqa: BLE001
    if error is None:
      raise
    error.add_note(f"(the checkpoint being written could not be finalised either: {type(e).__name__}: {e})")


def _restore(state, data, checkpointer: Checkpointer | None):
  """(state, start step, skipped checkpoints) after resuming from `checkpointer` (if it holds a step)."""
  if checkpointer is None:
    return state, 0, []
  restored = checkpointer.restore_latest(state)
  if restored is None:
    return state, 0, []
  for step, why in restored.skipped:
    log.warning("checkpoint step %d in %s did not restore (%s); set aside, resuming from step %d",
                step, checkpointer.directory, why, restored.step)
  if restored.data_state and hasattr(data, "set_state"):
    data.set_state(restored.data_state)
  return restored.state, int(restored.state.step), restored.skipped


def run(
    state: Any,
    step_fn: Callable[[Any, dict], tuple[Any, dict]],
    data: Iterator[dict],
    *,
    num_steps: int,
    checkpointer: Checkpointer | None = None,
    writer: MetricWriter | None = None,
    to_device: Callable[[dict], dict] | None = None,
    log_every: int = 10,
    flops_per_token: float | None = None,
    peak_flops: float | None = None,
    progress: bool = True,
    steps_flag: str | None = None,
    evaluators: Sequence[Callable[[int, Any], Mapping[str, float]]] = (),
    eval_every: int = 0,
) -> LoopResult:
  """Trains until `num_steps` (a total, not an increment).

  Args:
    state: a fresh `TrainState` (also the restore template: structure,
      dtypes, shardings).
    step_fn: from `make_train_step` (its `finite` metric gates checkpoints).
    data: iterator of process-local numpy batches with `get_state()` /
      `set_state()` (see `pragjax.data.pipeline`).
    to_device: local batch -> global device arrays (default `jnp.asarray`).
    flops_per_token, peak_flops: for MFU = achieved / (peak x devices).
    evaluators: `evaluator(step, state) -> {name: float}`, run every
      `eval_every` steps (0 = only at the last step) after the step's update.
    steps_flag: how the user sets `num_steps`, e.g. `--config.train.steps=100` (for the message when the
      checkpoint is past it).
  """
  if num_steps < 1 or log_every < 1:
    raise ValueError(f"num_steps={num_steps} and log_every={log_every} must be >= 1")
  state, start, skipped = _restore(state, data, checkpointer)
  if start > num_steps:
    raise ResumeError(
        f"{checkpointer.directory} holds a checkpoint at step {start}, past the {num_steps} steps of this run "
        f"({steps_flag or f'num_steps={num_steps}'}): raise it to continue that run, or use another --workdir "
        f"to start afresh")
  if writer is not None:
    writer.truncate_after(start)
  to_device = to_device or (lambda b: jax.tree.map(np.asarray, b))
  bar = _progress(num_steps, start, progress)
  step = start
  window_tokens, window_t0, acc, n_acc = 0, time.perf_counter(), {}, 0
  last: dict = writer.last_logged() if (writer is not None and start == num_steps) else {}
  preempted = False
  error: BaseException | None = None
  try:
    with _Signals() as sig:
      while step < num_steps:
        batch = next(data)
        tokens = int(np.sum(batch["attention_mask"])) * jax.process_count()
        state, metrics = step_fn(state, to_device(batch))
        step += 1
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not metrics.pop("finite", 1.0):
          _finish_save(checkpointer, None)
          raise NonFiniteLossError(f"{_nonfinite_message(step, metrics)}; the state of step {step} was not "
                                   f"saved; {_where(checkpointer)}")
        for k, v in metrics.items():
          acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        window_tokens += tokens
        evaluated = {}
        if evaluators and (step == num_steps or (eval_every and step % eval_every == 0)):
          for evaluator in evaluators:
            evaluated.update({f"eval/{k}": float(v) for k, v in evaluator(step, state).items()})
        logged = step % log_every == 0 or step == num_steps
        if logged:
          dt = max(time.perf_counter() - window_t0, 1e-9)
          last = {k: v / n_acc for k, v in acc.items()}
          last["tokens_per_sec"] = window_tokens / dt
          if hasattr(data, "num_dropped"):  # records whose targets were all truncated away
            last["dropped_examples"] = float(data.num_dropped)
          if flops_per_token and peak_flops:
            last["mfu"] = last["tokens_per_sec"] * flops_per_token / (peak_flops * jax.device_count())
          last.update(evaluated)
          if writer is not None:
            writer.write(step, last)
          if bar is not None:
            post = {"loss": f"{last['loss']:.4f}", "tok/s": f"{last['tokens_per_sec']:.0f}"}
            if "mfu" in last:
              post["mfu"] = f"{100 * last['mfu']:.1f}%"
            bar.set_postfix(post, refresh=False)
          window_tokens, window_t0, acc, n_acc = 0, time.perf_counter(), {}, 0
        if evaluated and not logged:
          last.update(evaluated)
          if writer is not None:
            writer.write(step, evaluated)
        if bar is not None:
          bar.update(1)
        data_state = data.get_state() if hasattr(data, "get_state") else None
        if checkpointer is not None:
          with sig.critical():
            checkpointer.save(step, state, data_state, force=sig.received or step == num_steps)
        if sig.received:
          preempted = True
          break
  except NonFiniteLossError as e:
    error = e
    raise
  except KeyboardInterrupt as e:
    error = e
    _finish_save(checkpointer, e)
    raise TrainingInterrupted(f"interrupted at step {step}; {_where(checkpointer)}; rerun the same command to "
                              f"resume") from None
  except BaseException as e:
    error = e
    _finish_save(checkpointer, e)
    e.add_note(f"(training stopped at step {step}; {_where(checkpointer)}; rerun the same command to resume)")
    raise
  finally:
    _finish_save(checkpointer, error)
    if writer is not None:
      writer.flush()
    if bar is not None:
      bar.close()
  return LoopResult(state=state, step=step, preempted=preempted, last_metrics=last, resumed_from=start,
                    skipped_checkpoints=skipped)
