"""Online RL end to end on the `:ci` config: learning signal, report, resume = uninterrupted run, and the
same rewards and losses on 1 device, 8 simulated devices and 2 processes x 4 devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import rl as rl_configs
from pragjax.methods.rl import recipe
from pragjax.train.metrics import read_metrics
from tests.multiprocess import ROOT, free_port, worker_env


def _config(**rl):
  c = rl_configs.get_config("ci")
  c.rl.update(rl)
  return c


def _leaves(model):
  from flax import nnx

  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.mark.slow
def test_ci_run_reports_and_resumes_exactly(tmp_path, capsys):
  straight = recipe.run(_config(rollouts=3, prm_eval_problems=8, prm_eval_samples=4), str(tmp_path / "straight"),
                        log=lambda *_: None)
  result, trained, report = straight
  q = report["rl_prm"]  # the RL policy against its initial model as an implicit PRM
  assert q["problems"] == 8 and q["samples"] == 4 and set(q["first_error"]) == {"single", "accumulative"}
  for fe in q["first_error"].values():
    assert 0.0 <= fe["prm"]["f1"] <= 1.0 and fe["cases"] == 16  # the second half of 8 x 4 samples
  assert {r["method"] for r in q["best_of_n"]} >= {"random", "majority", "rl_prm_min", "oracle"}
  c = report["rl_prm_random_direction"]  # the control: the same norm of change in a random direction
  assert set(c["first_error"]) == {"single", "accumulative"} and c["problems"] == 8
  recipe.print_summary(straight, _config(rollouts=3), str(tmp_path / "straight"))
  printed = capsys.readouterr().out
  assert "as an implicit PRM" in printed and "| accuracy |" in printed
  assert result.step == 3 and report["steps"] == 3
  assert set(report["before"]) >= {"accuracy", "reward", "response_length", "n"}
  assert report["after"]["n"] == 16
  rows = read_metrics(str(tmp_path / "straight"))
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
  assert all(r["grad_norm"] > 0 for r in rows if "loss" in r)  # the shaped reward varies: a real update
  for r in rows:
    if "loss" in r:
      assert r["ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # one on-policy step per rollout
      assert 0.0 <= r["rollout/reward"] <= 1.0 and r["rollout/rows"] == 16
  on_disk = json.load(open(tmp_path / "straight" / "report.json"))
  assert on_disk["after"] == report["after"]

  work = str(tmp_path / "resumed")
  recipe.run(_config(rollouts=2), work, log=lambda *_: None)
  again, trained_again, _ = recipe.run(_config(rollouts=3), work, log=lambda *_: None)
  assert again.resumed_from == 2 and again.step == 3
  for a, b in zip(_leaves(trained.model), _leaves(trained_again.model)):
    np.testing.assert_array_equal(a, b)
  ra = {r["step"]: r for r in rows if "loss" in r}
  rb = {r["step"]: r for r in read_metrics(work) if "loss" in r}
  assert ra[3]["loss"] == rb[3]["loss"] and ra[3]["rollout/reward"] == rb[3]["rollout/reward"]


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="rl.algorithm"):
    recipe.resolve(_config(algorithm="ppo").rl)
  with pytest.raises(ValueError, match="dapo has no KL"):
    recipe.resolve(_config(algorithm="dapo", kl_coef=0.1).rl)
  c = recipe._derive(_config(minibatches=3))
  with pytest.raises(ValueError, match="rl.minibatches=3"):
    recipe.check_config(c)
  c = recipe._derive(_config(minibatches=2))
  c.train.checkpoint_every = 3
  with pytest.raises(ValueError, match="checkpoint_every=3 must be a multiple"):
    recipe.check_config(c)
  s = recipe.resolve(_config(algorithm="dr_grpo", clip_high=0.3).rl)
  assert s["scale"] == "none" and s["normalize"] == "constant" and s["clip_high"] == 0.3


def _popen(devices, work, **env):
  cmd = [sys.executable, "-m", "experiments.rl", "--config=experiments/configs/rl.py:ci", f"--workdir={work}",
         "--config.rl.rollouts=2", "--config.train.progress=False"]
  env = worker_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu", **env)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(*procs):
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]


def _rows(work):
  return [r for r in read_metrics(work) if "loss" in r]


@pytest.mark.slow
def test_one_device_eight_devices_and_two_processes_agree(tmp_path):
  one, eight, multi = (str(tmp_path / n) for n in ("one", "eight", "multi"))
  _wait(_popen(1, one))
  assert jax.device_count() == 8  # this test session's simulated devices (tests/conftest.py)
  recipe.run(_config(rollouts=2), eight, log=lambda *_: None)
  port = free_port()
  _wait(*[_popen(4, multi, PRAGJAX_COORDINATOR=f"127.0.0.1:{port}", PRAGJAX_NUM_PROCESSES="2",
                 PRAGJAX_PROCESS_ID=str(i)) for i in range(2)])
  base = _rows(one)
  assert len(base) == 2 and all(r["grad_norm"] > 0 and r["advantage_std"] > 0 for r in base)  # a real signal
  for other in (_rows(eight), _rows(multi)):
    assert [r["step"] for r in other] == [1, 2]
    for a, b in zip(base, other):
      for key in ("rollout/reward", "rollout/response_length", "reward", "advantage_std"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
      for key in ("loss", "grad_norm"):
        assert a[key] == pytest.approx(b[key], abs=1e-5), key
  assert os.path.exists(os.path.join(multi, "report.json"))
