"""The workdir lock on an object store (gs:// served in memory): write, settle, read back."""

import json

import pytest

from pragjax import paths
from pragjax.train import workdir as workdir_lib


def test_a_run_that_loses_the_write_race_fails_and_leaves_the_winner_lock(memory_gcs, monkeypatch):
  monkeypatch.setattr(workdir_lib, "OBJECT_STORE_SETTLE_S", 0.0)
  lock_path = "gs://bucket/run/" + workdir_lib.LOCK_NAME
  winner = {"host": "other-host", "pid": 1, "since": "then", "command": "python -m experiments.sft", "token": "w"}
  real_sleep = workdir_lib.time.sleep

  def racing_write_lands(seconds):  # the other run's write lands while this one settles
    paths.write_text(lock_path, json.dumps(winner))
    real_sleep(seconds)

  monkeypatch.setattr(workdir_lib.time, "sleep", racing_write_lands)
  with pytest.raises(workdir_lib.WorkdirLockedError, match="pid 1 on host other-host"):
    with workdir_lib.lock("gs://bucket/run"):
      pass
  assert json.loads(paths.read_text(lock_path))["token"] == "w"  # the winner's lock is untouched


def test_an_uncontended_object_store_lock_is_taken_and_released(memory_gcs, monkeypatch):
  monkeypatch.setattr(workdir_lib, "OBJECT_STORE_SETTLE_S", 0.0)
  lock_path = "gs://bucket/run/" + workdir_lib.LOCK_NAME
  with workdir_lib.lock("gs://bucket/run"):
    held = json.loads(paths.read_text(lock_path))
    assert held["token"] and held["host"]
  assert not paths.resolve(lock_path).exists()
