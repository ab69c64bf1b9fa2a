"""The training loop every method runs: resume, step, log, checkpoint, stop.

- Resumes automatically from the latest checkpoint of `checkpointer`
  (train state *and* data-iterator position), so a killed run restarted with
  the same command continues exactly where its last checkpoint left it.
- SIGTERM (preemption) finishes the current step, writes a checkpoint and
  returns with `preempted=True`.
- A non-finite loss stops the run with `NonFiniteLossError` naming the step;
  the bad state is never saved, so the last good checkpoint stays the latest.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np

from pragjax.train.checkpoint import Checkpointer
from pragjax.train.metrics import MetricWriter


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or inf; the message names the step."""


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int
  preempted: bool
  last_metrics: dict


class _SigtermFlag:
  """Records SIGTERM instead of dying (main thread only)."""

  def __init__(self):
    self.received = False
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _progress(total: int, initial: int, enabled: bool):
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=True)


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
    on_log: Callable[[int, dict], None] | None = None,
) -> LoopResult:
  """Trains until `num_steps` (a total, not an increment).

  Args:
    state: a fresh `TrainState` (also the restore template: structure,
      dtypes, shardings).
    step_fn: from `make_train_step`.
    data: iterator of process-local numpy batches with `get_state()` /
      `set_state()` (see `pragjax.data.pipeline`).
    to_device: local batch -> global device arrays (default `jnp.asarray`).
    flops_per_token, peak_flops: for MFU = achieved / (peak x devices).
  """
  start = 0
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(state)
    if data_state and hasattr(data, "set_state"):
      data.set_state(data_state)
    start = int(state.step)
  to_device = to_device or (lambda b: jax.tree.map(np.asarray, b))
  bar = _progress(num_steps, start, progress)
  step = start
  window_tokens, window_t0, acc, n_acc = 0, time.perf_counter(), {}, 0
  last: dict = {}
  preempted = False
  with _SigtermFlag() as sig:
    while step < num_steps:
      batch = next(data)
      tokens = int(np.sum(batch["attention_mask"])) * jax.process_count()
      state, metrics = step_fn(state, to_device(batch))
      step += 1
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not math.isfinite(metrics["loss"]):
        if checkpointer is not None:
          checkpointer.wait()
        where = "" if checkpointer is None else (
            f"; last good checkpoint: step {checkpointer.latest_step()} in {checkpointer.directory}")
        raise NonFiniteLossError(f"non-finite loss ({metrics['loss']}) at step {step}{where}")
      for k, v in metrics.items():
        acc[k] = acc.get(k, 0.0) + v
      n_acc += 1
      window_tokens += tokens
      if step % log_every == 0 or step == num_steps:
        dt = max(time.perf_counter() - window_t0, 1e-9)
        last = {k: v / n_acc for k, v in acc.items()}
        last["tokens_per_sec"] = window_tokens / dt
        if hasattr(data, "num_dropped"):  # records whose targets were all truncated away
          last["dropped_examples"] = float(data.num_dropped)
        if flops_per_token and peak_flops:
          last["mfu"] = last["tokens_per_sec"] * flops_per_token / (peak_flops * jax.device_count())
        if writer is not None:
          writer.write(step, last)
        if on_log is not None:
          on_log(step, last)
        if bar is not None:
          post = {"loss": f"{last['loss']:.4f}", "tok/s": f"{last['tokens_per_sec']:.0f}"}
          if "mfu" in last:
            post["mfu"] = f"{100 * last['mfu']:.1f}%"
          bar.set_postfix(post, refresh=False)
        window_tokens, window_t0, acc, n_acc = 0, time.perf_counter(), {}, 0
      if bar is not None:
        bar.update(1)
      data_state = data.get_state() if hasattr(data, "get_state") else None
      if checkpointer is not None:
        checkpointer.save(step, state, data_state, force=sig.received or step == num_steps)
      if sig.received:
        preempted = True
        break
  if checkpointer is not None:
    checkpointer.wait()
  if writer is not None:
    writer.flush()
  if bar is not None:
    bar.close()
  return LoopResult(state=state, step=step, preempted=preempted, last_metrics=last)
