"""The real-checkpoint path (`priming.py:real`) on a tiny random HF llama: JSONL data, the model's own rewrites."""

import json

import pytest

from experiments import priming
from experiments.configs import priming as configs
from pragjax.models.tokenizer import train_bpe_tokenizer
from tests import hf_models


def _jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


@pytest.mark.slow
def test_real_config_runs_on_a_tiny_random_model(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  path = hf_models.make_hf_checkpoint("llama", str(tmp_path / "hf"))
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
