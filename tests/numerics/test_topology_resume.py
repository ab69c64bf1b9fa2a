"""A checkpoint written on 8 devices (fsdp=8) restores onto other meshes and
training continues with the losses of an uninterrupted run there."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pragjax.train import Checkpointer
from tests.multiprocess import ROOT, free_port, worker_env


def _popen(devices, mode, mesh, ckpt, out, **env):
  return subprocess.Popen([sys.executable, "-m", "tests.numerics.topo_worker", str(devices), mode, mesh, ckpt, out],
                          cwd=ROOT, env=worker_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(*procs):
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  root = tmp_path_factory.mktemp("topo")
  ckpt = str(root / "ckpt")
  _wait(_popen(8, "save", "fsdp=8", ckpt, str(root / "save.json")))
  return root, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("devices,mesh", [(1, "1"), (4, "fsdp=2,tensor=2")])
def test_restore_onto_another_mesh_continues_identically(saved, devices, mesh):
  root, ckpt = saved
  tag = mesh.replace("=", "").replace(",", "_")
  _wait(_popen(devices, "resume", mesh, ckpt, str(root / f"resume_{tag}.json")),
        _popen(devices, "straight", mesh, str(root / f"unused_{tag}"), str(root / f"straight_{tag}.json")))
  resumed = json.load(open(root / f"resume_{tag}.json"))["losses"]
  straight = json.load(open(root / f"straight_{tag}.json"))["losses"]
  np.testing.assert_allclose(resumed, straight[2:], atol=1e-5)


@pytest.mark.slow
def test_restore_onto_two_processes(saved):
  root, ckpt = saved
  port = free_port()
  env = lambda i: dict(PRAGJAX_COORDINATOR=f"127.0.0.1:{port}", PRAGJAX_NUM_PROCESSES="2",  # noqa: E731
                       PRAGJAX_PROCESS_ID=str(i))
  out = str(root / "resume_mp.json")
  _wait(*[_popen(4, "resume", "data=2,fsdp=2,tensor=2", ckpt, out, **env(i)) for i in range(2)])
  straight = str(root / "straight_8.json")
  _wait(_popen(8, "straight", "data=2,fsdp=2,tensor=2", str(root / "unused_8"), straight))
  np.testing.assert_allclose(json.load(open(out))["losses"], json.load(open(straight))["losses"][2:], atol=1e-5)


def test_raw_restore_needs_no_tree_structure(saved):
  _, ckpt = saved
  state, data = Checkpointer(ckpt).restore_raw()
  assert int(state["step"]) == 2 and data == {}
  up = state["params"]["layers"]["0"]["mlp"]["up_proj"]
  up = up["value"] if isinstance(up, dict) else up
  assert isinstance(up, np.ndarray) and up.shape == (32, 64)
