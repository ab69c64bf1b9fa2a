"""Toy DPO runs end to end: the implicit reward learns the held-out preference, the reference store gives the
in-step reference's losses, and a run resumed from its checkpoint equals the uninterrupted one."""

import json
import os

import numpy as np
import pytest

from experiments.configs import dpo as dpo_configs
from pragjax.methods.preference import recipe


def _config(**train):
  c = dpo_configs.get_config("toy")
  c.world.update(train_pairs=256, eval_pairs=64)
  c.train.update(**{**dict(steps=16, batch_size=16, log_every=1, checkpoint_every=8, progress=False,
                          async_checkpoint=False), **train})
  c.optim.update(warmup_steps=0, lr=3e-4)  # 8 steps at 3e-4 gave 0.547 held-out reward accuracy, 16 0.688
  return c


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f if "loss" in json.loads(line)]


@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("dpo") / "store")
  return workdir, recipe.run(_config(), workdir, log=lambda *_: None)


def test_toy_run_learns_the_heldout_preference(store_run):
  workdir, (result, _, report) = store_run
  assert result.step == 16 and os.path.isfile(os.path.join(workdir, "reference_store", "manifest.json"))
  before, after = report["before"], report["after"]
  assert before["reward_accuracy"] == 0.5 and before["reward_margin"] == 0.0  # policy = reference: all ties
  assert after["reward_accuracy"] > 0.6 and after["reward_margin"] > 0
  losses = _losses(workdir)
  assert len(losses) == 16 and losses[0] == pytest.approx(np.log(2), abs=1e-5)
  assert np.mean(losses[-3:]) < losses[0] - 0.02
  assert report["initial_loss"] == pytest.approx(np.log(2))
  text = recipe.format_report(report)
  assert "reward accuracy" in text and f"| {after['n']} |" in text
  with open(os.path.join(workdir, "report.json")) as f:
    assert json.load(f)["after"]["reward_accuracy"] == after["reward_accuracy"]


def test_in_step_reference_gives_the_store_losses(store_run, tmp_path):
  workdir, (_, _, report) = store_run
  c = _config()
  c.dpo.reference = "in_step"
  _, _, in_step = recipe.run(c, str(tmp_path / "in_step"), log=lambda *_: None)
  np.testing.assert_allclose(_losses(str(tmp_path / "in_step")), _losses(workdir), rtol=2e-5, atol=2e-6)
  assert in_step["after"]["reward_accuracy"] == pytest.approx(report["after"]["reward_accuracy"], abs=1 / 64)


def test_resume_equals_the_uninterrupted_run(store_run, tmp_path):
  workdir, (_, _, report) = store_run
  resumed = str(tmp_path / "resumed")
  first, _, _ = recipe.run(_config(steps=8), resumed, log=lambda *_: None)
  assert first.step == 8
  result, _, again = recipe.run(_config(), resumed, log=lambda *_: None)
  assert result.resumed_from == 8 and result.step == 16
  np.testing.assert_allclose(_losses(resumed), _losses(workdir), rtol=1e-6, atol=1e-7)
  assert again["after"] == report["after"]


def test_a_workdir_on_an_object_store_needs_a_local_reference_store(memory_gcs, monkeypatch):
  """The store is memory-mapped: with gs:// and no `dpo.reference_store_dir` the run stops before loading a
  model, naming the flag, and leaves the workdir unlocked."""
  from pragjax.train import runner

  monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("loaded a model before the check"))
  with pytest.raises(ValueError, match=r"--config\.dpo\.reference_store_dir"):
    recipe.run(_config(), "gs://bucket/dpo", log=lambda *_: None)
  assert not any(k.endswith(".pragjax.lock") for k in memory_gcs)
