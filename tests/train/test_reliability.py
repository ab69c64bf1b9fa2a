"""What a user's run does when things go wrong, through the public training functions: non-finite
updates are never checkpointed, a corrupt checkpoint falls back to the newest one that restores, one run
per workdir, config values checked before any model is loaded (naming the flag), bad data lines found in
one pass before training, and metrics.jsonl rows written once per step across a resume.

(End-to-end runs of the entry point, with signals and SIGKILL, are in test_runs.py.)"""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import implicit_prm as implicit_prm_configs
from experiments.configs import pretrain_toy as pretrain_toy_configs
from experiments.configs import priming as priming_configs
from experiments.configs import sami as sami_configs
from experiments.configs import sft as sft_configs
from pragjax.data.errors import DataError
from pragjax.methods.sft import recipe as sft
from pragjax.methods.sft.loss import make_sft_loss_fn
from pragjax.train import checks, runner
from pragjax.train import workdir as workdir_lib
from pragjax.train.checkpoint import Checkpointer, CheckpointRestoreError
from pragjax.train.loop import NonFiniteLossError, ResumeError
from tests.train.test_runs import setup  # noqa: F401  (the tiny model and data file)


def _config(setup, **train):
  config = sft_configs.get_config("toy")
  config.model.path = setup["model"]
  config.data.train_path = setup["data"]
  config.runtime.compilation_cache_dir = ""
  config.world.eval_problems = 0
  config.optim.update(lr=3e-3, warmup_steps=0)
  config.train.update(steps=4, batch_size=8, seq_len=96, checkpoint_every=1, keep_checkpoints=10, log_every=1,
                      progress=False, export_hf=False)
  config.train.update(**train)
  return config


def _ckpt(workdir) -> Checkpointer:
  return Checkpointer(os.path.join(workdir, "checkpoints"), keep=10, interval=1, async_save=False)


def _all_finite(tree) -> bool:
  return all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.floating))


def _step_dirs(workdir) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _nan_gradient_loss(graphdef):
  """The SFT loss plus sqrt(0 * sum(params)): its value is unchanged, its gradient NaN, so the update
  turns every parameter to NaN while the loss of that step is finite (what a diverging run does)."""
  inner = make_sft_loss_fn(graphdef)

  def loss_fn(params, batch, rng):
    loss, metrics = inner(params, batch, rng)
    return loss + jnp.sqrt(0.0 * sum(jnp.sum(x) for x in jax.tree.leaves(params))), metrics

  return loss_fn


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
  """A workdir after 4 steps with a checkpoint at every step; tests resume copies of it."""
  workdir = str(tmp_path_factory.mktemp("trained") / "w")
  runner.train_lm(_config(setup, steps=4), workdir, sft.method())
  return workdir


def _copy(trained, tmp_path) -> str:
  shutil.copytree(trained, tmp_path / "w")
  return str(tmp_path / "w")


# -- 1. a non-finite step is never checkpointed -----------------------------------------------------------


def test_update_to_nan_parameters_is_never_checkpointed(setup, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  with pytest.raises(NonFiniteLossError) as e:  # resumes at 4; step 5's loss is finite, its update is not
    runner.train_lm(_config(setup, steps=6), workdir, sft.method().replace(loss=_nan_gradient_loss))
  message = str(e.value)
  assert "non-finite grad_norm (nan) at step 5" in message, message
  assert "last good checkpoint: step 4" in message, message
  assert _step_dirs(workdir) == ["1", "2", "3", "4"]
  ckpt = _ckpt(workdir)
  for step in ckpt.steps():
    state, _ = ckpt.restore_raw(step)
    assert _all_finite(state["params"]), f"checkpoint {step} holds NaN or inf"
  ckpt.close()


# -- 4. checkpoint integrity and fallback -------------------------------------------------------------------


def test_nan_or_unmarked_checkpoint_is_skipped_and_none_restoring_lists_each(tmp_path):
  good = {"w": jnp.ones((4,)), "step": jnp.asarray(1)}
  bad = {"w": jnp.full((4,), jnp.nan), "step": jnp.asarray(2)}
  ckpt = Checkpointer(str(tmp_path / "c"), keep=5, interval=1, async_save=False)
  ckpt.save(1, good, {"i": 1})
  ckpt.save(2, bad, {"i": 2})
  ckpt.save(3, good, {"i": 3})
  os.remove(tmp_path / "c" / "3" / "commit_success.txt")  # as if killed before orbax committed it
  assert ckpt.latest_step() == 2  # a step without its commit marker is not complete
  restored = ckpt.restore_latest(good)
  assert restored.step == 1 and restored.data_state == {"i": 1}
  assert [s for s, _ in restored.skipped] == [3, 2]
  assert "commit marker" in restored.skipped[0][1] and "non-finite" in restored.skipped[1][1]
  assert sorted(os.listdir(tmp_path / "c")) == ["1", "2.unreadable", "3.unreadable"]
  ckpt.close()

  (tmp_path / "c" / "1" / "data" / "metadata").write_text("{garbled")
  ckpt = Checkpointer(str(tmp_path / "c"), keep=5, interval=1, async_save=False)
  with pytest.raises(CheckpointRestoreError, match=r"(?s)no checkpoint in .* restores:.*step 1 "):
    ckpt.restore_latest(good)
  assert os.path.isdir(tmp_path / "c" / "1")  # nothing set aside when nothing restores
  ckpt.close()


def test_corrupt_latest_checkpoints_fall_back_to_the_newest_that_restores(setup, trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  ck = tmp_path / "w" / "checkpoints"
  os.remove(ck / "4" / "state" / "_METADATA")
  for root, _, files in os.walk(ck / "3" / "state"):  # truncate the tensor data files (OCDBT d/ directories)
    for name in files if os.path.basename(root) == "d" else ():
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(root, name)) // 2)
  (ck / "2" / "data" / "metadata").write_text("{garbled")
  with caplog.at_level(logging.WARNING):
    result, _ = runner.train_lm(_config(setup, steps=5), workdir, sft.method())
  assert result.resumed_from == 1 and result.step == 5
  assert [s for s, _ in result.skipped_checkpoints] == [4, 3, 2]
  for step in (4, 3, 2):
    assert f"checkpoint step {step} in {ck} did not restore" in caplog.text
  assert {"4.unreadable", "3.unreadable", "2.unreadable"} <= set(os.listdir(ck))
  ckpt = _ckpt(workdir)
  assert ckpt.steps() == [1, 2, 3, 4, 5]  # rewritten by the resumed run
  assert _all_finite(ckpt.restore_raw(5)[0]["params"])
  ckpt.close()


# -- metrics.jsonl across a resume, steps below the checkpoint ----------------------------------------------


def test_resume_writes_each_step_once_and_refuses_steps_below_the_checkpoint(setup, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  shutil.rmtree(tmp_path / "w" / "checkpoints" / "4")  # as if killed after step 4 was logged, before its save

  def failing_evaluator(step, model):
    if step == 5:
      raise RuntimeError("evaluator failed")
    return {}

  with pytest.raises(RuntimeError, match="evaluator failed") as e:  # after step 5 is logged, before its save
    runner.train_lm(_config(setup, steps=6, eval_every=1), workdir,
                    sft.method().replace(evaluators=[failing_evaluator]))
  assert "training stopped at step 5; last good checkpoint: step 4" in "".join(e.value.__notes__)
  assert _step_dirs(workdir) == ["1", "2", "3", "4"]  # step 4's save, in flight when it failed, finished
  result, _ = runner.train_lm(_config(setup, steps=5), workdir, sft.method())
  assert result.resumed_from == 4
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]

  with pytest.raises(ResumeError, match=r"checkpoint at step 5, past the 2 steps .*--config\.train\.steps=2"):
    runner.train_lm(_config(setup, steps=2), workdir, sft.method())
  again, _ = runner.train_lm(_config(setup, steps=5), workdir, sft.method())  # already done: says so, with the real loss
  assert again.step == again.resumed_from == 5
  assert again.last_metrics["loss"] == pytest.approx(rows[-1]["loss"])


def test_stop_when_ends_the_run_after_an_evaluation_with_a_checkpoint(setup, tmp_path):
  seen = []

  def evaluator(step, model):
    seen.append(step)
    return {"val": float(step)}

  method = sft.method().replace(evaluators=[evaluator], stop_when=lambda: len(seen) >= 2)
  workdir = str(tmp_path / "w")
  result, _ = runner.train_lm(_config(setup, steps=10, eval_every=2, checkpoint_every=100), workdir, method)
  assert result.stopped_early and not result.preempted and result.step == 4 and seen == [2, 4]
  assert _step_dirs(workdir)[-1] == "4"  # the stop forced a save at the step it ended on (interval 100)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["eval/val"] for r in rows if "eval/val" in r] == [2.0, 4.0]
  # Never asked at the last step, and never without an evaluation.
  seen.clear()
  done, _ = runner.train_lm(_config(setup, steps=2, eval_every=0), str(tmp_path / "v"),
                            sft.method().replace(evaluators=[evaluator], stop_when=lambda: True))
  assert done.step == 2 and not done.stopped_early and seen == [2]


# -- 2. the data file is checked in one pass before training ----------------------------------------------


def test_bad_data_line_is_found_before_the_model_is_loaded(setup, tmp_path):
  lines = open(setup["data"]).read().splitlines()
  lines[149] = '{"prompt": "1+1=", "response": 2}'
  bad = tmp_path / "bad.jsonl"
  bad.write_text("\n".join(lines) + "\n")
  workdir = tmp_path / "w"
  config = _config(setup, steps=40)
  config.data.train_path = str(bad)
  config.model.path = str(tmp_path / "no_model_here")  # loading a model would fail differently
  with pytest.raises(DataError, match=r"bad\.jsonl, line 150: field 'response' must be a string"):
    runner.train_lm(config, str(workdir), sft.method())
  assert not (workdir / "checkpoints").exists()


def test_validate_data_file_checks_every_record_shape(tmp_path):
  good = [{"text": "a b"}, {"prompt": "p", "response": "r"},
          {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
  cases = {
      '[1, 2]': "expected a JSON object",
      '{"prompt": "p"}': "missing field 'response'",
      '{"messages": [{"role": "user", "content": "q"}]}': "no 'assistant' message",
      '{"question": "q"}': "missing field: expected 'messages'",
      '{"text": "a"': "invalid JSON",
  }
  path = tmp_path / "d.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in good) + "\n")
  assert checks.validate_data_file(str(path)) == 3
  for line, message in cases.items():
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"d\.jsonl, line 5: .*{message}"):
      checks.validate_data_file(str(path))


# -- 3. one run per workdir ---------------------------------------------------------------------------------


def _write_lock(workdir, **owner):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, workdir_lib.LOCK_NAME)
  with open(path, "w") as f:
    json.dump({"host": socket.gethostname(), "since": "2025-01-01 00:00:00", "command": "python -m x", **owner}, f)
  return path


def _dead_pid() -> int:
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_workdir_held_by_a_live_run_is_refused_naming_it(setup, tmp_path):
  workdir = str(tmp_path / "w")
  lock = _write_lock(workdir, pid=os.getppid())  # alive: the process that started this test session
  with pytest.raises(workdir_lib.WorkdirLockedError, match=rf"in use by another run: pid {os.getppid()} on host "
                                                           rf"{socket.gethostname()}.*python -m x"):
    runner.train_lm(_config(setup), workdir, sft.method())
  assert os.path.exists(lock) and not os.path.exists(os.path.join(workdir, "checkpoints"))

  _write_lock(workdir, host="another-host", pid=12345)
  with pytest.raises(workdir_lib.WorkdirLockedError, match=rf"if that run is dead, delete {lock}"):
    runner.train_lm(_config(setup), workdir, sft.method())


def test_stale_lock_of_a_dead_run_is_taken_over_and_released(tmp_path, caplog):
  workdir = str(tmp_path / "w")
  lock = _write_lock(workdir, pid=_dead_pid())
  with caplog.at_level(logging.WARNING), workdir_lib.lock(workdir):
    held = json.load(open(lock))
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with workdir_lib.lock(workdir):  # re-entrant in one process (entry point, then train_lm)
      pass
    assert os.path.exists(lock)
  assert "stale lock" in caplog.text
  assert not os.path.exists(lock)


# -- 5. config checks, before any model is loaded ----------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("train.keep_checkpoints", 0, "--config.train.keep_checkpoints=0: must be >= 1"),
    ("train.log_every", 0, "--config.train.log_every=0: must be >= 1"),
    ("train.accum_steps", 0, "--config.train.accum_steps=0: must be >= 1"),
    ("train.steps", -5, "--config.train.steps=-5: must be >= 1"),
    ("train.checkpoint_every", 0, "--config.train.checkpoint_every=0: must be >= 1"),
    ("train.batch_size", 0, "--config.train.batch_size=0: must be >= 1"),
    ("optim.lr", -1e-3, "--config.optim.lr=-0.001: must be > 0"),
    ("optim.lr", float("nan"), "--config.optim.lr=nan: must be a finite number"),
    ("optim.b2", 1.0, "--config.optim.b2=1.0: must lie in [0.0, 1.0)"),
    ("train.batch_size", 12, "--config.train.batch_size=12: must be divisible by the 8 batch shards of the mesh "
                             "(data=1 x fsdp=8"),
    ("train.accum_steps", 3, "--config.train.batch_size=16: must be divisible by --config.train.accum_steps=3"),
])
def test_bad_config_value_is_named_by_its_flag(field, value, message):
  config = sft_configs.get_config("toy")  # 8 devices in tests: mesh fsdp=8
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(checks.ConfigError) as e:
    checks.check_config(config)
  assert message in str(e.value), str(e.value)


def test_every_config_error_is_listed_before_the_model_loads(setup, tmp_path):
  config = _config(setup, log_every=0, keep_checkpoints=0)
  config.model.path = str(tmp_path / "no_model_here")
  with pytest.raises(checks.ConfigError) as e:
    runner.train_lm(config, str(tmp_path / "w"), sft.method())
  assert "--config.train.log_every=0" in str(e.value) and "--config.train.keep_checkpoints=0" in str(e.value)


def test_shipped_configs_of_every_training_entry_point_pass_the_checks():
  from pragjax.methods.priming import recipe as priming

  for variant in ("toy", "llama8b"):
    checks.check_config(sft_configs.get_config(variant))
  for variant in ("toy", "ci"):
    checks.check_config(implicit_prm_configs.get_config(variant), derived=("train.steps",))
    checks.check_config(sami_configs.get_config(variant), derived=("train.steps", "train.seq_len"))
    checks.check_config(priming_configs.get_config(variant), extra=priming.INJECT_RULES, sections=("optim", "mesh"))
  for variant in ("arithmetic", "knowledge", "sami", "smoke"):
    checks.check_config(pretrain_toy_configs.get_config(variant))
  config = priming_configs.get_config("toy")
  config.inject.steps = 0
  with pytest.raises(checks.ConfigError, match=r"--config\.inject\.steps=0: must be >= 1"):
    checks.check_config(config, extra=priming.INJECT_RULES)


# -- workdirs on object stores ------------------------------------------------------------------------------


def test_whole_run_with_the_workdir_on_an_object_store(setup, memory_gcs, tmp_path):
  from pragjax.models import load_hf
  from pragjax.train.metrics import MetricWriter, read_metrics

  workdir = "gs://bucket/run"
  local = tmp_path / "checkpoints"  # orbax writes gs:// through tensorstore's own GCS driver, not fsspec
  result, trained = runner.train_lm(_config(setup, steps=2, export_hf=True), workdir, sft.method(), checkpoint_dir=str(local))
  assert result.step == 2 and sorted(os.listdir(local)) == ["1", "2"]
  names = {k.split("gs://bucket/run/", 1)[-1] for k in memory_gcs}
  assert {"metrics.jsonl", "hf/config.json", "hf/model.safetensors", "hf/tokenizer.json"} <= names, names
  assert any(n.startswith("tb/events.out.tfevents") for n in names), names
  assert workdir_lib.LOCK_NAME not in names  # released
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2]

  hf = tmp_path / "hf"  # the export is a loadable HF directory with the trained weights
  for name in names:
    if name.startswith("hf/"):
      (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / name).write_bytes(memory_gcs[f"gs://bucket/run/{name}"].getvalue())
  model, _ = load_hf(str(hf))
  np.testing.assert_array_equal(np.asarray(model.embed[...]), np.asarray(trained.model.embed[...]))

  writer = MetricWriter(workdir, tensorboard=False)  # a resume at step 1 drops the rows of the replayed steps
  assert writer.truncate_after(1) == 1
  writer.close()
  assert [r["step"] for r in read_metrics(workdir)] == [1]
