"""Host overhead of the training loop per step: metrics fetched every step vs once per 50 steps.

The toy SFT setup (`experiments/configs/sft.py:toy`: the built-in arithmetic
model, freshly generated arithmetic records, batch 16 x 128, AdamW) trained
by `pragjax.train.loop.run` for `--steps` steps, with `log_every=1` and
`log_every=50`, progress off, no checkpointer (saves are their own cost),
a `MetricWriter` (metrics.jsonl + TensorBoard) in a temporary directory. Each
run starts from a fresh copy of the same initial state and a fresh iterator.
Besides the loop:

  bare step   the same jitted step on the same batches, already on the
              device, in a plain Python loop with one block at the end:
              what the device needs per step (plus dispatch)
  data only   `next(iterator)` + `to_global_arrays` alone: the host's
              batch preparation, which the loop overlaps with the device
              only when it does not wait for each step's metrics

With `--old-rev REV` (default: the commit before the change) the loop of
that revision (`git show REV:pragjax/train/loop.py`, which fetched every
step's metrics to the host whatever `log_every`) runs in the same rounds,
so before and after are measured side by side.

Per-step time of a loop run = (time from the `next()` of step W + 1 to the
return of `run`) / (steps - W), with W the larger `log_every` (50): at step
W every variant has just waited for the device (the new loop fetched its
first window, the old one fetches every step), so the timed span is the
steady state of steps W+1..steps, without the compile (ahead of time in the
new loop) or the first executions. Variants alternate within each round;
medians over rounds, and paired ratios (median over rounds of a / b within
the round).

  python benchmarks/loop_overhead.py                       # 200 steps, 5 rounds, shapes 16x128 and 2x96
  python benchmarks/loop_overhead.py --quick               # 80 steps, 2 rounds
  python benchmarks/loop_overhead.py --out benchmarks/results/loop_overhead.json
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401  (sets sys.path and JAX_PLATFORMS first)
import jax
import jax.numpy as jnp
from common import ROOT, load_snapshot, machine_info, markdown_table, summary, write_json

OLD_REV = "0aea673"  # the loop before metrics stayed on the device


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--shapes", default="16x128,2x96",
                 help="comma-separated BATCHxSEQ; the toy config's is 16x128, a small one shows the host's share")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--log-every", type=int, nargs=2, default=[1, 50], metavar=("FEW", "MANY"))
  p.add_argument("--old-rev", default=OLD_REV, help="git revision of the old loop ('' = skip it)")
  p.add_argument("--quick", action="store_true", help="smoke test: 80 steps, 2 rounds")
  p.add_argument("--out", default=None, help="write results JSON here")
  args = p.parse_args(argv)
  if args.quick:
    args.steps, args.repeats = 80, 2
  if args.steps <= max(args.log_every):
    p.error(f"--steps={args.steps} must exceed the larger --log-every ({max(args.log_every)}): the timed span "
            f"starts after it")
  return args


def load_old_loop(rev: str):
  """The module `pragjax/train/loop.py` as of git revision `rev`, or None if git cannot show it."""
  try:
    text = subprocess.run(["git", "show", f"{rev}:pragjax/train/loop.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    print(f"old loop at {rev!r} not available ({e}); skipping the before rows")
    return None
  path = os.path.join(tempfile.mkdtemp(prefix="pragjax_old_loop_"), "old_loop.py")
  with open(path, "w") as f:
    f.write(text)
  spec = importlib.util.spec_from_file_location("pragjax_old_loop", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


class Setup:
  """The toy SFT run's pieces, built once: model, initial state, jitted step, iterator factory."""

  def __init__(self, batch_size: int, seq_len: int):
    from experiments.configs import sft as sft_configs
    from pragjax import sharding as sharding_lib
    from pragjax.data.collate import tokenize_record
    from pragjax.data.pipeline import make_train_iterator, to_global_arrays
    from pragjax.methods.sft import recipe as sft
    from pragjax.optim import make_optimizer
    from pragjax.train import init_train_state, make_train_step, runner, state_shardings

    config = sft_configs.get_config("toy")
    config.train.update(batch_size=batch_size, seq_len=seq_len)
    self.config = config
    tc = config.train
    self.mesh = sharding_lib.mesh_from_config(dict(config.mesh))
    with jax.set_mesh(self.mesh):
      loaded = runner.load_model(dict(config.model), self.mesh)
      tok = loaded.tokenizer
      tx = make_optimizer(dict(config.optim, total_steps=1000))
      graphdef, state = init_train_state(loaded.model, tx, seed=config.seed)
      self.shardings = state_shardings(state, self.mesh)
      self.state0 = jax.device_put(state, self.shardings)
      self.step_fn = make_train_step(sft.method().loss(graphdef), tx, state_shardings=self.shardings,
                                     batch_shardings=sharding_lib.batch_sharding(self.mesh))
    records = sft.toy_records(config)
    self.make_data = lambda: make_train_iterator(
        records, functools.partial(tokenize_record, tokenizer=tok, max_length=tc.seq_len),
        global_batch_size=tc.batch_size, seq_len=tc.seq_len, seed=config.seed, pad_id=tok.pad_token_id)
    self.to_device = functools.partial(to_global_arrays, mesh=self.mesh)
    self.params = sum(x.size for x in jax.tree.leaves(self.state0.params))

  def fresh_state(self):
    return jax.block_until_ready(jax.tree.map(jnp.copy, self.state0))


class Clocked:
  """Wraps an iterator; `t_start` = when batch number `start_at` (1-based) was asked for."""

  def __init__(self, data, start_at: int):
    self.data, self.start_at, self.calls, self.t_start = data, start_at, 0, None

  def __iter__(self):
    return self

  def __next__(self):
    self.calls += 1
    if self.calls == self.start_at:
      self.t_start = time.perf_counter()
    return next(self.data)

  def get_state(self):
    return self.data.get_state()

  def set_state(self, state):
    self.data.set_state(state)

  @property
  def num_dropped(self):
    return self.data.num_dropped


def loop_run(setup: Setup, loop_module, log_every: int, steps: int, warm: int) -> float:
  """Seconds per step of `loop_module.run` over steps `warm + 1..steps` (see the module docstring)."""
  from pragjax.train.metrics import MetricWriter

  state = setup.fresh_state()
  data = Clocked(setup.make_data(), warm + 1)
  with tempfile.TemporaryDirectory(prefix="pragjax_loop_bench_") as d, jax.set_mesh(setup.mesh):
    writer = MetricWriter(d)
    result = loop_module.run(state, setup.step_fn, data, num_steps=steps, writer=writer,
                             to_device=setup.to_device, log_every=log_every, progress=False)
    t_end = time.perf_counter()
    writer.close()
  assert result.step == steps
  return (t_end - data.t_start) / (steps - warm)


def bare_steps(setup: Setup, steps: int) -> float:
  """Seconds per step of the jitted step alone on batches already on the device."""
  data = setup.make_data()
  with jax.set_mesh(setup.mesh):
    batches = [setup.to_device(next(data)) for _ in range(steps)]
    state = setup.fresh_state()
    state, metrics = setup.step_fn(state, batches[0])
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for b in batches[1:]:
      state, metrics = setup.step_fn(state, b)
    jax.block_until_ready((state, metrics))
  return (time.perf_counter() - t0) / (steps - 1)


def data_only(setup: Setup, steps: int) -> float:
  """Seconds per batch of the host pipeline: next() + to_global_arrays."""
  data = setup.make_data()
  with jax.set_mesh(setup.mesh):
    setup.to_device(next(data))
    t0 = time.perf_counter()
    for _ in range(steps - 1):
      jax.block_until_ready(setup.to_device(next(data)))
  return (time.perf_counter() - t0) / (steps - 1)


def main(argv=None):
  args = parse_args(argv)
  from pragjax.train import loop as new_loop

  info = machine_info()
  old_loop = load_old_loop(args.old_rev) if args.old_rev else None
  few, many = args.log_every
  old = f"old ({args.old_rev})"
  variants = {}
  setups = {}
  for shape in args.shapes.split(","):
    b, t = (int(x) for x in shape.split("x"))
    setup = setups[shape] = Setup(b, t)
    timed = functools.partial(loop_run, setup, steps=args.steps, warm=many)
    for log_every in (few, many):
      variants[(shape, f"new, log_every={log_every}")] = functools.partial(timed, new_loop, log_every)
    for log_every in (few, many) if old_loop is not None else ():
      variants[(shape, f"{old}, log_every={log_every}")] = functools.partial(timed, old_loop, log_every)
    variants[(shape, "bare step (batches on device)")] = functools.partial(bare_steps, setup, args.steps)
    variants[(shape, "data only (next + to_device)")] = functools.partial(data_only, setup, args.steps)

  before = load_snapshot()
  loads = [before["load1"]]
  for fn in variants.values():  # warm-up round: compiles, first-touch costs
    fn()
  times: dict[tuple, list[float]] = {k: [] for k in variants}
  for _ in range(args.repeats):
    for k, fn in variants.items():
      times[k].append(fn())
    loads.append(load_snapshot()["load1"])
  after = load_snapshot()

  def paired(a: tuple, b: tuple) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))

  stats = {k: summary(v) for k, v in times.items()}
  rows, ratios = [], {}
  for shape in setups:
    bare = stats[(shape, "bare step (batches on device)")]["median_s"]
    ref = (shape, f"new, log_every={many}")
    for (sh, name), st in stats.items():
      if sh != shape:
        continue
      is_loop = name.startswith(("new", "old"))
      rows.append([shape, name, f"{st['median_s'] * 1e3:.2f} [{st['min_s'] * 1e3:.2f}]",
                   f"{(st['median_s'] - bare) * 1e3:+.2f}" if is_loop else "",
                   f"{paired((sh, name), ref):.3f}x" if is_loop else ""])
    r = {f"new {few}/{many}": paired((shape, f"new, log_every={few}"), ref)}
    if old_loop is not None:
      r.update({f"old {few}/{many}": paired((shape, f"{old}, log_every={few}"), (shape, f"{old}, log_every={many}")),
                f"old/new at log_every={few}": paired((shape, f"{old}, log_every={few}"),
                                                      (shape, f"new, log_every={few}")),
                f"old/new at log_every={many}": paired((shape, f"{old}, log_every={many}"), ref)})
    ratios[shape] = r

  setup = next(iter(setups.values()))
  print(f"# loop_overhead  ({info['date']}, {info['processor']}, {info['cpu_count']} cores, jax {info['jax']} "
        f"{info['jax_backend']}, {jax.device_count()} device(s))")
  print(f"toy SFT: built-in arithmetic model ({setup.params / 1e6:.2f} M parameters), AdamW, {args.steps} steps per "
        f"run (steps {many + 1}-{args.steps} timed), median of {args.repeats} interleaved rounds (after one warm-up "
        f"round)\n")
  print(markdown_table(["B x T", "variant", "ms/step median [min]", "overhead vs bare step, ms",
                        f"paired / new, log_every={many}"], rows))
  for shape, r in ratios.items():
    print(f"\n{shape} paired ratios (median over rounds): " + ", ".join(f"{k} {v:.3f}x" for k, v in r.items()))
  print(f"\nmachine load (1-min average): {before['load1']:.2f} before, {after['load1']:.2f} after, "
        f"max {max(loads):.2f} between rounds; steal {after['steal_s'] - before['steal_s']:.1f} s during the run")
  write_json(args.out, {
      "benchmark": "loop_overhead", "machine": info, "args": vars(args),
      "times_s": {f"{k[0]} | {k[1]}": v for k, v in times.items()},
      "stats": {f"{k[0]} | {k[1]}": v for k, v in stats.items()}, "paired_ratios": ratios,
      "params": setup.params, "load": {"before": before, "after": after, "rounds": loads}})


if __name__ == "__main__":
  main()
