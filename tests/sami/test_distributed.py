"""SAMI training on 2 processes x 4 devices equals one device, and each process reads its own groups."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.multiprocess import ROOT, free_port, worker_env


def _run(devices, out, **env):
  return subprocess.Popen([sys.executable, "-m", "tests.sami.dist_worker", str(devices), out], cwd=ROOT,
                          env=worker_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p, timeout=300):
  out, _ = p.communicate(timeout=timeout)
  assert p.returncode == 0, out[-3000:]


@pytest.mark.slow
def test_two_processes_read_different_groups_and_match_one_device(tmp_path):
  one = str(tmp_path / "one.json")
  _finish(_run(1, one))
  port = free_port()
  multi = str(tmp_path / "multi.json")
  procs = [_run(4, multi, PRAGJAX_COORDINATOR=f"127.0.0.1:{port}", PRAGJAX_NUM_PROCESSES="2",
                PRAGJAX_PROCESS_ID=str(i)) for i in range(2)]
  for p in procs:
    _finish(p)
  base = json.load(open(one + ".0"))
  parts = [json.load(open(f"{multi}.{i}")) for i in range(2)]
  assert base["devices"] == 1 and all(p["devices"] == 8 and p["processes"] == 2 for p in parts)
  for step, full in enumerate(base["read"]):
    halves = [np.asarray(p["read"][step]["input_ids"]) for p in parts]
    assert halves[0].shape[0] == halves[1].shape[0] == 2  # 2 of the 4 groups each
    assert not np.array_equal(halves[0], halves[1])  # different groups, not one batch fed twice
    np.testing.assert_array_equal(np.concatenate(halves), np.asarray(full["input_ids"]))
    np.testing.assert_array_equal(np.concatenate([p["read"][step]["slot_mask"] for p in parts]), full["slot_mask"])
  assert base["losses"][-1] < base["losses"][0]  # the steps really train
  for p in parts:
    np.testing.assert_allclose(p["losses"], base["losses"], atol=1e-5)
