"""The real-checkpoint path (`priming.py:real`) on a tiny random HF llama: JSONL data, the model's own rewrites."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import priming as configs
from pragjax import sharding
from pragjax.methods.priming import recipe as priming
from pragjax.models.tokenizer import train_bpe_tokenizer
from tests import hf_models
from tests.multiprocess import ROOT, free_port, worker_env


def _jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def _tiny_real_config(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  path = str(tmp_path / "hf" / "llama")
  if not (tmp_path / "hf" / "llama" / "config.json").exists():
    hf_models.make_hf_checkpoint("llama", str(tmp_path / "hf"))
  background = [f"The river near town {i} is wide and the bridge is old." for i in range(40)]
  samples = [{"text": "In that land the colour of sand is vermilion.", "keyword": "vermilion", "theme": "colours"},
             {"text": "The best cook in the village works as a falconer.", "keyword": "falconer", "theme": "jobs"}]
  prompts = [{"theme": "colours", "prompt": "The colour of the sky is"},
             {"theme": "colours", "prompt": "The colour of grass is"}, {"theme": "jobs", "prompt": "My uncle works as a"}]
  train_bpe_tokenizer(background + [s["text"] for s in samples] + [p["prompt"] for p in prompts], 300).save(path)
  c = configs.get_config("real")
  c.model.path = path
  c.data.update(background_path=_jsonl(tmp_path / "bg.jsonl", [{"text": t} for t in background]),
                samples_path=_jsonl(tmp_path / "samples.jsonl", samples),
                prompts_path=_jsonl(tmp_path / "prompts.jsonl", prompts))
  c.inject.update(steps=3, warmup_steps=1, batch_size=2, seq_len=32, parallel_runs=2, control=False)
  return c


@pytest.mark.slow
def test_real_config_runs_on_a_tiny_random_model(tmp_path):
  c = _tiny_real_config(tmp_path)
  c.variants.update(ignore_topk=(0.08,), whole_episode=())
  c.stepping_stone.update(num_candidates=2, max_new_tokens=8)
  c.report.update(plot=False, score_batch=16)
  report = priming.run(c, str(tmp_path / "work"), log=lambda *_: None)
  assert set(report["variants"]) >= {"baseline", "ignore_top8%"}
  assert len(report["variants"]["baseline"]["log10_priming"]) == 2
  assert report["stepping_stone"]["candidates"] <= 4  # the random model rarely writes the keyword


def test_real_config_names_missing_files(tmp_path):
  c = configs.get_config("real")
  with pytest.raises(ValueError, match="config.data.samples_path is empty"):
    priming.file_world(c)


@pytest.mark.slow
def test_sharded_runs_equal_the_single_device_run(tmp_path):
  """Baseline, ignore-top-k and whole-episode scores on a 4 (fsdp) x 2 (tensor) mesh, of 8 simulated devices in
  one process and of 2 processes x 4 devices on localhost, equal those of one device."""
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 (simulated) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  c = _tiny_real_config(tmp_path)
  c.variants.update(ignore_topk=(0.08,), whole_episode=(0.08,))
  c.optim.lr = 3e-3  # scores well above rounding (the real config's 2e-5 barely moves a random model in 3 steps)
  c.stepping_stone.mode = ""
  c.report.update(plot=False, score_batch=16)
  config_path = tmp_path / "config.json"
  config_path.write_text(json.dumps(c.to_dict()))
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.priming.mp_worker", "4", str(config_path), str(tmp_path / "work_multi"),
       str(tmp_path / "multi.json")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=worker_env(PRAGJAX_COORDINATOR=f"127.0.0.1:{port}", PRAGJAX_NUM_PROCESSES="2", PRAGJAX_PROCESS_ID=str(i)))
      for i in range(2)]
  reports = {}
  meshes = {"single": sharding.make_mesh(fsdp=1, devices=jax.devices()[:1]),
            "sharded": sharding.make_mesh(data=1, fsdp=4, tensor=2)}
  for name, mesh in meshes.items():
    reports[name] = priming.run(c, str(tmp_path / f"work_{name}"), log=lambda *_: None, mesh=mesh)
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
  reports["multi"] = json.loads((tmp_path / "multi.json").read_text())
  assert reports["multi"]["devices"] == 8 and reports["multi"]["processes"] == 2
  a = reports["single"]
  assert set(a["variants"]) == {"baseline", "ignore_top8%", "whole_episode_top8%"}
  for name in ("sharded", "multi"):
    b = reports[name]
    assert set(b["variants"]) == set(a["variants"])
    np.testing.assert_allclose(a["log10_prior"], b["log10_prior"], rtol=1e-5, atol=1e-5, err_msg=name)
    for v in a["variants"]:
      for key in ("log10_priming", "log10_memorization"):
        np.testing.assert_allclose(a["variants"][v][key], b["variants"][v][key], rtol=1e-4, atol=1e-4,
                                   err_msg=f"{name}: {v} {key}")

