"""1 device vs 8 simulated devices vs 2 processes x 4 devices: same losses."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.multiprocess import ROOT, free_port, worker_env


def _run(devices, out, **env):
  return subprocess.Popen(
      [sys.executable, "-m", "tests.train.dist_worker", str(devices), out],
      cwd=ROOT, env=worker_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
  )


def _finish(p, timeout=300):
  out, _ = p.communicate(timeout=timeout)
  assert p.returncode == 0, out[-3000:]


@pytest.mark.slow
def test_one_vs_eight_devices_vs_two_processes(tmp_path):
  results = {}
  for name, devices in (("one", 1), ("eight", 8)):
    path = str(tmp_path / f"{name}.json")
    _finish(_run(devices, path))
    results[name] = json.load(open(path))
  port = free_port()
  path = str(tmp_path / "multi.json")
  procs = [
      _run(4, path, PRAGJAX_COORDINATOR=f"127.0.0.1:{port}", PRAGJAX_NUM_PROCESSES="2",
           PRAGJAX_PROCESS_ID=str(i))
      for i in range(2)
  ]
  for p in procs:
    _finish(p)
  results["multi"] = json.load(open(path))
  assert results["one"]["devices"] == 1
  assert results["eight"]["devices"] == 8 and results["eight"]["processes"] == 1
  assert results["multi"]["devices"] == 8 and results["multi"]["processes"] == 2
  base = np.array(results["one"]["losses"])
  assert base[-1] < base[0]  # the steps really train
  np.testing.assert_allclose(results["eight"]["losses"], base, atol=1e-5)
  np.testing.assert_allclose(results["multi"]["losses"], base, atol=1e-5)
