"""The training loop every method runs: resume, step, log, checkpoint, stop.

- Resumes automatically from the newest checkpoint of `checkpointer` that
  restores with finite values (train state *and* data-iterator position;
  newer ones that do not are reported and set aside, see
  `pragjax.train.checkpoint`), so a killed run restarted with the same
  command continues exactly where its last checkpoint left it. Rows of
  `metrics.jsonl` after the resumed step are dropped first (they are
  replayed), and a checkpoint past `num_steps` is an error, not a silent no-op.
- Metrics stay on the device. Each step's metrics (device scalars) are kept
  in a window and fetched with one `jax.device_get` every `log_every` steps
  (and at the last step, and on preemption), when the window's mean is
  written as one row; the host never waits for a step in between, so it
  prepares the next batch while the device computes. Tokens per second come
  from the host batches' `attention_mask`.
- Finite check: a step whose loss, gradient norm, update norm or new
  parameters hold a NaN or inf (the step's `finite` metric, computed on
  device) stops the run with `NonFiniteLossError` naming that step and the
  last checkpoint. The flags of the steps since the last check are read
  (one small fetch) before every checkpoint save (periodic, forced by
  SIGTERM or at the last step) and before evaluators run, and with every
  row: no state at or after a non-finite step is ever saved, so every
  checkpoint on disk is finite, even when the bad step lies between saves.
- Ahead-of-time compile: a jitted `step_fn` is lowered and compiled on the
  first batch's shapes (`pragjax.train.step.AheadOfTimeStep`, its shardings
  and donation kept); the compile time and `memory_analysis()` (argument,
  output, aliased and temporary bytes per device) are logged as one line
  (printed too with `progress`) and written to `WORKDIR/compile.json`
  (`writer.write_json`; rewritten by each start of the run). Batches of
  other shapes run through the jitted function as before.
- Profiling: `profile_steps=(first, last)` writes a `jax.profiler` trace of
  those steps (1-based, inclusive) to `profile_dir`.
- SIGTERM (preemption) finishes the current step, writes a checkpoint and
  returns with `preempted=True`.
- Evaluators (`evaluators`, every `eval_every` steps and at the last step)
  see the step and the new state and return metrics, written prefixed
  `eval/`. Early stopping: `stop_when()` is asked after each evaluation; True
  ends the run there with a checkpoint and `stopped_early=True`.
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
from pragjax.train.step import AheadOfTimeStep

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
  stopped_early: bool = False  # `stop_when` ended the run before num_steps


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


def _nonfinite_message(step: int, metrics: Mapping[str, float]) -> str:
  bad = [f"{k} ({float(metrics[k])})" for k in ("loss", "grad_norm", "update_norm")
         if k in metrics and not math.isfinite(float(metrics[k]))]
  what = bad[0] if bad else "parameters after the update"
  return f"non-finite {what} at step {step}" + (f" (also: {', '.join(bad[1:])})" if bad[1:] else "")


def _raise_nonfinite(bad_step: int, metrics: Mapping[str, float], step: int,
                     checkpointer: Checkpointer | None) -> None:
  """Raises `NonFiniteLossError` for step `bad_step` (detected at step `step`), after the in-flight save."""
  _finish_save(checkpointer, None)
  unsaved = f"the state of step {step} was not saved" if bad_step == step else (
      f"no state of steps {bad_step}-{step} was saved")
  raise NonFiniteLossError(f"{_nonfinite_message(bad_step, metrics)}; {unsaved}; {_where(checkpointer)}")


def _check_rows(window: Sequence[tuple[int, Any]], rows: Sequence[Mapping[str, float]], step: int,
                checkpointer: Checkpointer | None) -> None:
  """Raises for the first fetched row of `window` whose `finite` flag is 0."""
  for (s, _), row in zip(window, rows):
    if not row.get("finite", 1.0):
      _raise_nonfinite(s, row, step, checkpointer)


def _check_flags(pending: Sequence[tuple[int, Any]], step: int, checkpointer: Checkpointer | None) -> None:
  """Reads only the `finite` flags of `pending` (step, device metrics) and raises for the first that is 0."""
  pending = [(s, m) for s, m in pending if "finite" in m]
  for (s, m), flag in zip(pending, jax.device_get([m["finite"] for _, m in pending])):
    if not flag:
      _raise_nonfinite(s, jax.device_get(m), step, checkpointer)


def _fetch(window: Sequence[tuple[int, Any]]) -> list[dict[str, float]]:
  """The window's device metrics as host floats, in one `device_get`."""
  return [{k: float(v) for k, v in m.items()} for m in jax.device_get([m for _, m in window])]


def _mib(n: int) -> str:
  return f"{n / 2**20:,.1f} MiB"


def compile_line(report: Mapping[str, Any]) -> str:
  """One line for the ahead-of-time compile report of `AheadOfTimeStep`."""
  shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in report["batch_shapes"].items())
  line = f"train step compiled in {report['lower_s'] + report['compile_s']:.1f} s " \
         f"(lower {report['lower_s']:.1f} s, compile {report['compile_s']:.1f} s) for batch {shapes}; "
  mem = report.get("memory")
  if not mem or "total_bytes" not in mem:
    return line + f"memory analysis not available on this backend ({report.get('backend')})"
  return line + (f"memory per device: arguments {_mib(mem['argument_size_in_bytes'])}, outputs "
                 f"{_mib(mem['output_size_in_bytes'])} ({_mib(mem['alias_size_in_bytes'])} of them in donated "
                 f"arguments), temporaries {_mib(mem['temp_size_in_bytes'])}, total {_mib(mem['total_bytes'])}")


class _Trace:
  """A `jax.profiler` trace of steps `first..last` (1-based, inclusive) into `directory`."""

  def __init__(self, steps: tuple[int, int] | None, directory: str | None):
    if steps is not None and directory is None:
      raise ValueError("profile_steps needs a profile_dir")
    self.steps, self.directory, self.active = steps, directory, False

  def before(self, step: int) -> None:
    """Called before step `step` runs: starts the trace at the first traced step (or the first step run)."""
    if self.steps is not None and not self.active and self.steps[0] <= step <= self.steps[1]:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def annotate(self, step: int):
    return jax.profiler.StepTraceAnnotation("train", step_num=step) if self.active else contextlib.nullcontext()

  def after(self, step: int, outputs: Any) -> None:
    """Called after step `step` was dispatched: at the last traced step, waits for it and writes the trace."""
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(outputs)
      self.stop()
      self.steps = None

  def stop(self) -> None:
    if self.active:
      self.active = False
      jax.profiler.stop_trace()


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
    profile_steps: tuple[int, int] | None = None,
    profile_dir: str | None = None,
    before_batch: Callable[[Any], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> LoopResult:
  """Trains until `num_steps` (a total, not an increment). See the module docstring.

  Args:
    state: a fresh `TrainState` (also the restore template: structure,
      dtypes, shardings).
    step_fn: from `make_train_step` (its `finite` metric gates checkpoints); a
      jitted one is compiled ahead of time on the first batch.
    data: iterator of process-local numpy batches with `get_state()` /
      `set_state()` (see `pragjax.data.pipeline`).
    to_device: local batch -> global device arrays (default `jnp.asarray`).
    log_every: steps per metrics row (and per host fetch of the metrics).
    flops_per_token, peak_flops: for MFU = achieved / (peak x devices).
    evaluators: `evaluator(step, state) -> {name: float}`, run every
      `eval_every` steps (0 = only at the last step) after the step's update.
    steps_flag: how the user sets `num_steps`, e.g. `--config.train.steps=100` (for the message when the
      checkpoint is past it).
    profile_steps, profile_dir: trace steps `first..last` (inclusive) with `jax.profiler` into `profile_dir`.
    before_batch: called with the current state before each `next(data)` (a data source that samples from the
      policy being trained reads the parameters there, `pragjax.train.rollout`).
    stop_when: asked after each evaluation (early stopping on an evaluator's metric); True saves a checkpoint
      and returns with `stopped_early=True`.

  A data source with a `metrics()` method (e.g. the rollout source's reward and lengths) adds its values to
  every metrics row.
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
  aot = AheadOfTimeStep(step_fn) if hasattr(step_fn, "lower") else None
  call = aot or step_fn
  trace = _Trace(profile_steps, profile_dir)
  bar = _progress(num_steps, start, progress)
  step = start
  window: list[tuple[int, Any]] = []  # (step, device metrics) since the last row
  checked = 0  # how many of `window` have had their finite flag read
  window_tokens, window_t0 = 0, time.perf_counter()
  last: dict = writer.last_logged() if (writer is not None and start == num_steps) else {}
  preempted = stopped_early = False
  error: BaseException | None = None
  try:
    with _Signals() as sig:
      while step < num_steps:
        if before_batch is not None:
          before_batch(state)
        batch = next(data)
        tokens = int(np.sum(batch["attention_mask"])) * jax.process_count()
        trace.before(step + 1)
        with trace.annotate(step + 1):
          state, metrics = call(state, to_device(batch))
        step += 1
        trace.after(step, metrics)
        if aot is not None and aot.report is not None and step == start + 1:
          _report_compile(aot.report, writer, bar)
        window.append((step, metrics))
        window_tokens += tokens
        final = step == num_steps
        stop = sig.received  # read once: the save below is forced exactly when this step ends the run
        eval_due = bool(evaluators) and (final or bool(eval_every and step % eval_every == 0))
        save_due = checkpointer is not None and (stop or final or checkpointer.manager.should_save(step))
        logged = step % log_every == 0 or final or stop
        if logged:
          rows = _fetch(window)
          _check_rows(window, rows, step, checkpointer)
        elif eval_due or save_due:
          _check_flags(window[checked:], step, checkpointer)
          checked = len(window)
        evaluated = {}
        if eval_due:
          for evaluator in evaluators:
            evaluated.update({f"eval/{k}": float(v) for k, v in evaluator(step, state).items()})
          if stop_when is not None and not final and stop_when():
            stopped_early = True
            save_due = checkpointer is not None
        if logged:
          dt = max(time.perf_counter() - window_t0, 1e-9)
          acc: dict[str, float] = {}
          for row in rows:
            for k, v in row.items():
              if k != "finite":
                acc[k] = acc.get(k, 0.0) + v
          last = {k: v / len(rows) for k, v in acc.items()}
          last["tokens_per_sec"] = window_tokens / dt
          if hasattr(data, "num_dropped"):  # records whose targets were all truncated away
            last["dropped_examples"] = float(data.num_dropped)
          if hasattr(data, "metrics"):
            last.update(data.metrics())
          if flops_per_token and peak_flops:
            last["mfu"] = last["tokens_per_sec"] * flops_per_token / (peak_flops * jax.device_count())
          last.update(evaluated)
          if writer is not None:
            writer.write(step, last)
          if bar is not None:
            post = {"loss": f"{last['loss']:.4f}", "tok/s": f"{last['tokens_per_sec']:.0f}"}
            if "mfu" in last:
              post["mfu"] = f"{100 * last['mfu']:.1f}%"
            for key, name in (("rollout/reward", "reward"), ("rollout/accuracy", "acc"), ("kl", "kl"),
                              ("clip_fraction", "clip")):
              if key in last:
                post[name] = f"{last[key]:.3f}"
            bar.set_postfix(post, refresh=False)
          window, checked, window_tokens, window_t0 = [], 0, 0, time.perf_counter()
        elif evaluated:
          last.update(evaluated)
          if writer is not None:
            writer.write(step, evaluated)
        if bar is not None:
          bar.update(1)
        if save_due:
          data_state = data.get_state() if hasattr(data, "get_state") else None
          with sig.critical():
            checkpointer.save(step, state, data_state, force=True)  # due: periodic (orbax's policy) or forced
        if stop:
          preempted = True
          break
        if stopped_early:
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
    trace.stop()
    _finish_save(checkpointer, error)
    if writer is not None:
      writer.flush()
    if bar is not None:
      bar.close()
  return LoopResult(state=state, step=step, preempted=preempted, last_metrics=last, resumed_from=start,
                    skipped_checkpoints=skipped, stopped_early=stopped_early)


def _report_compile(report: Mapping[str, Any], writer: MetricWriter | None, bar) -> None:
  """The ahead-of-time compile line: logged, printed (with a progress bar, process 0), and `compile.json`."""
  line = compile_line(report)
  log.info(line)
  if bar is not None:
    bar.write(line)
  if writer is not None:
    writer.write_json("compile.json", dict(report))
