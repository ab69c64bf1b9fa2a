"""End-to-end runs of `experiments.sft` in subprocesses: exact resume after
SIGKILL (also at random points: during a save, a step, the export), checkpoint
on SIGTERM, Ctrl-C, stop on NaN, one run per workdir, clear errors for bad
input, printed last."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx

from pragjax.models import Decoder, ModelConfig, save_hf
from pragjax.toyworld import arithmetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  tok = arithmetic.tokenizer()
  cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    eos_token_id=(tok.eos_token_id,), pad_token_id=tok.pad_token_id)
  model_dir = str(root / "model")
  save_hf(Decoder(cfg, rngs=nnx.Rngs(0)), cfg, model_dir)
  tok.save(model_dir)
  data = str(root / "train.jsonl")
  problems = arithmetic.training_problems(np.random.default_rng(0), 200)
  with open(data, "w") as f:
    for p in problems:
      f.write(json.dumps({"prompt": p.prompt, "response": p.solution}) + "\n")
  return {"root": root, "model": model_dir, "data": data}


def _cmd(setup, workdir, *extra, module="experiments.sft"):
  return [
      sys.executable, "-m", module, "--config=experiments/configs/sft.py:toy",
      f"--workdir={workdir}", f"--config.model.path={setup['model']}",
      f"--config.data.train_path={setup['data']}", "--config.train.steps=12",
      "--config.train.batch_size=8", "--config.train.seq_len=96", "--config.train.checkpoint_every=2",
      "--config.train.keep_checkpoints=10", "--config.train.progress=False", "--config.world.eval_problems=0",
      "--config.optim.lr=3e-3", *extra,
  ]


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _run(cmd, timeout=300):
  return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(x) for x in os.listdir(d) if x.isdigit())


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return len(open(path).readlines()) if os.path.exists(path) else 0


def _start_and_signal(cmd, sig, ready, timeout=300):
  p = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  t0 = time.time()
  while not ready():
    if p.poll() is not None:
      raise AssertionError("run ended before it could be signalled:\n" + p.stdout.read()[-3000:])
    if time.time() - t0 > timeout:
      p.kill()
      raise AssertionError("timed out waiting for a checkpoint")
    time.sleep(0.05)
  p.send_signal(sig)
  out, _ = p.communicate(timeout=timeout)
  return p.returncode, out


def _weights(workdir):
  with open(os.path.join(workdir, "hf", "model.safetensors"), "rb") as f:
    return f.read()


@pytest.fixture(scope="module")
def uninterrupted(setup):
  """The workdir of the run every interrupted one must end equal to."""
  ref = str(setup["root"] / "uninterrupted")
  r = _run(_cmd(setup, ref))
  assert r.returncode == 0, r.stderr[-3000:]
  return ref


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_equal(setup, uninterrupted):
  ref = uninterrupted
  killed = str(setup["root"] / "killed")
  code, _ = _start_and_signal(_cmd(setup, killed), signal.SIGKILL, lambda: max(_steps(killed), default=0) >= 4)
  assert code == -signal.SIGKILL
  assert not os.path.exists(os.path.join(killed, "hf"))
  r = _run(_cmd(setup, killed))
  assert r.returncode == 0, r.stderr[-3000:]
  assert _weights(killed) == _weights(ref)
  rows = [json.loads(line) for line in open(os.path.join(killed, "metrics.jsonl"))]
  assert rows[-1]["step"] == 12


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_exits_cleanly(setup):
  workdir = str(setup["root"] / "preempted")
  # No periodic checkpoints: the one that exists afterwards is SIGTERM's.
  code, out = _start_and_signal(
      _cmd(setup, workdir, "--config.train.checkpoint_every=1000", "--config.train.log_every=1"),
      signal.SIGTERM, lambda: _logged_steps(workdir) >= 2)
  assert code == 0, out[-3000:]
  assert "preempted at step" in out
  step = int(out.split("preempted at step")[1].split(";")[0])
  assert step in _steps(workdir) and step < 12


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(setup):
  workdir = str(setup["root"] / "nan")
  r = _run(_cmd(setup, workdir, "--nan_step=5", "--config.train.async_checkpoint=False", module="tests.train.nan_sft"))
  assert r.returncode != 0
  assert "non-finite loss (nan) at step 5" in r.stderr
  assert max(_steps(workdir)) == 4


def test_malformed_jsonl_names_file_and_line(setup, tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "b"}\n{not json\n')
  r = _run(_cmd(setup, str(tmp_path / "w"), f"--config.data.train_path={bad}"))
  assert r.returncode != 0
  assert "bad.jsonl" in r.stderr and "line 3" in r.stderr


def test_unknown_config_field_is_an_error(setup, tmp_path):
  r = _run(_cmd(setup, str(tmp_path / "w"), "--config.train.stepz=3"))
  assert r.returncode != 0
  assert "stepz" in r.stderr


def test_unwritable_workdir_is_an_error(setup, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  r = _run(_cmd(setup, str(blocker / "sub")))
  assert r.returncode != 0
  assert "is not writable" in r.stderr and str(blocker) in r.stderr


def test_truncated_away_examples_are_reported_not_trained(setup, tmp_path, capsys):
  from experiments.configs import sft as sft_configs
  from pragjax.methods.sft import recipe as sft
  from pragjax.train import read_metrics, runner

  config = sft_configs.get_config("toy")
  config.model.path = setup["model"]
  config.runtime.compilation_cache_dir = ""
  config.train.update(steps=2, batch_size=8, seq_len=40, log_every=1, progress=False, export_hf=False)
  records = [{"prompt": "a=1,b=2;c=a+b;c?\n" * 3, "response": "c=1+2=3\n#3\n"},  # prompt alone > 40 tokens
             {"prompt": "a=1,b=2;c=a+b;c?\n", "response": "c=1+2=3\n#3\n"}] * 4
  result, _ = runner.train_lm(config, str(tmp_path / "w"), sft.method(), records=records)
  assert result.step == 2
  rows = read_metrics(str(tmp_path / "w"))
  assert rows[-1]["dropped_examples"] >= 4
  assert "were skipped (not trained on)" in capsys.readouterr().out


def _last_lines(text: str, n: int = 2) -> str:
  return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


def _tmp_checkpoints(workdir) -> list[str]:
  d = os.path.join(workdir, "checkpoints")
  return [n for n in os.listdir(d) if "orbax-checkpoint-tmp" in n] if os.path.isdir(d) else []


def _assert_checkpoints_readable_and_finite(workdir):
  from pragjax.train.checkpoint import Checkpointer

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=100, interval=1, async_save=False)
  for step in ckpt.steps():
    state, data_state = ckpt.restore_raw(step)
    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(state["params"])]
    assert leaves and all(np.all(np.isfinite(x)) for x in leaves), f"checkpoint {step} of {workdir} is not finite"
    assert data_state, f"checkpoint {step} of {workdir} has no data-iterator state"
  ckpt.close()


def _start(cmd):
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(p, ready, timeout=300, poll=0.002) -> bool:
  """Waits until `ready()`; False if the run `p` ended first."""
  t0 = time.time()
  while not ready():
    if p.poll() is not None:
      return False
    assert time.time() - t0 < timeout, "timed out waiting on the run"
    time.sleep(poll)
  return True


def _newest(workdir) -> int:
  return max(_steps(workdir), default=0)


@pytest.mark.slow
def test_kills_at_random_points_then_reruns_end_equal_and_every_checkpoint_is_good(setup, uninterrupted):
  """The same command run until it finishes, interrupted by: SIGKILL while a checkpoint is being written,
  SIGKILL at a random time during the steps, Ctrl-C (while it is paused, a second run on the workdir is
  refused), SIGKILL while the trained model is exported. After each, every checkpoint on disk restores
  and is finite; at the end the weights equal the uninterrupted run's and each step is logged once."""
  rng = random.Random(19)
  workdir = str(setup["root"] / "faults")
  cmd = _cmd(setup, workdir, "--config.train.log_every=1")
  lock = os.path.join(workdir, ".pragjax.lock")

  p = _start(cmd)
  assert _wait_for(p, lambda: bool(_tmp_checkpoints(workdir))), "no save caught in progress"
  p.kill()
  p.communicate(timeout=60)
  _assert_checkpoints_readable_and_finite(workdir)
  assert os.path.exists(lock)  # left behind by the killed run: stale, so the rerun takes it over

  p = _start(cmd)
  resumed = _newest(workdir)
  assert _wait_for(p, lambda: _newest(workdir) > resumed), "the rerun wrote no checkpoint"
  time.sleep(rng.uniform(0.0, 0.5))
  assert p.poll() is None, "the run ended before the random kill"
  p.kill()
  p.communicate(timeout=60)
  _assert_checkpoints_readable_and_finite(workdir)

  p = _start(cmd)
  resumed = _newest(workdir)
  assert _wait_for(p, lambda: os.path.exists(lock) and json.load(open(lock)).get("pid") == p.pid)
  p.send_signal(signal.SIGSTOP)  # holds the lock, alive
  other = _run(cmd)
  p.send_signal(signal.SIGCONT)
  assert other.returncode == 1
  assert f"is in use by another run: pid {p.pid} on host" in _last_lines(other.stderr), other.stderr[-2000:]
  assert _wait_for(p, lambda: _newest(workdir) > resumed), "the run ended before Ctrl-C"
  p.send_signal(signal.SIGINT)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 130, err[-3000:]
  last = _last_lines(err, 1)
  assert "interrupted at step" in last and "last good checkpoint: step" in last, err[-3000:]
  assert not _tmp_checkpoints(workdir)
  _assert_checkpoints_readable_and_finite(workdir)

  p = _start(cmd)
  if _wait_for(p, lambda: os.path.isdir(os.path.join(workdir, "hf"))):
    p.kill()
  p.communicate(timeout=60)
  _assert_checkpoints_readable_and_finite(workdir)

  r = _run(cmd)
  assert r.returncode == 0, r.stderr[-3000:]
  assert _weights(workdir) == _weights(uninterrupted)
  steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert steps == list(range(1, 13)), steps
  assert not os.path.exists(lock)


@pytest.mark.slow
def test_error_mid_run_finalises_the_checkpoint_and_is_the_last_thing_printed(setup, tmp_path):
  lines = open(setup["data"]).read().splitlines()
  lines[5 * 8 + 2] = "{not json"  # met in step 6 (shuffle off, 8 records a step)
  bad = tmp_path / "bad.jsonl"
  bad.write_text("\n".join(lines) + "\n")
  workdir = str(tmp_path / "w")
  r = _run(_cmd(setup, workdir, f"--config.data.train_path={bad}", "--config.data.shuffle=False",
                "--config.data.validate=False", "--config.train.checkpoint_every=5"))
  assert r.returncode == 1
  tail = _last_lines(r.stderr)
  assert f"{bad}, line 43: invalid JSON" in tail, r.stderr[-3000:]
  assert "training stopped at step 5; last good checkpoint: step 5" in tail, r.stderr[-3000:]
  assert 5 in _steps(workdir) and not _tmp_checkpoints(workdir)
  _assert_checkpoints_readable_and_finite(workdir)


def test_bad_config_stops_before_any_model_loads_naming_each_flag(setup, tmp_path):
  workdir = tmp_path / "w"
  r = _run(_cmd(setup, str(workdir), "--config.train.keep_checkpoints=0", "--config.optim.lr=-0.001",
                f"--config.model.path={tmp_path / 'no_model_here'}"))
  assert r.returncode == 1
  tail = _last_lines(r.stderr, 3)
  assert "--config.train.keep_checkpoints=0: must be >= 1" in tail, r.stderr[-3000:]
  assert "--config.optim.lr=-0.001: must be > 0" in tail, r.stderr[-3000:]
  assert "Traceback" not in r.stderr and not (workdir / "checkpoints").exists()
