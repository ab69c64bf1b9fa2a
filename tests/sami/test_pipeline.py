"""End to end on the real-checkpoint path: tiny random Mistral / Mixtral HF checkpoints, the paper's constitution
files, queries from a file, the log-probability judge; resume after an interruption."""

import json
import os

import numpy as np
import pytest

from experiments.configs import sami as configs
from pragjax.methods.sami import queries as queries_lib
from pragjax.methods.sami import recipe as sami
from pragjax.models.tokenizer import train_bpe_tokenizer


def _checkpoint(root, family: str) -> str:
  import torch
  from transformers import AutoConfig, AutoModelForCausalLM

  kw = dict(num_local_experts=4, num_experts_per_tok=2) if family == "mixtral" else dict(sliding_window=64)
  cfg = AutoConfig.for_model(family, vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                             pad_token_id=0, bos_token_id=1, eos_token_id=2, **kw)
  torch.manual_seed(0)
  model = AutoModelForCausalLM.from_config(cfg)
  path = os.path.join(str(root), family)
  model.save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data):
  root = tmp_path_factory.mktemp("sami_tiny")
  posts = queries_lib.load_queries(str(shared_data / "sami" / "base-mistral-mistral-constitution-responses.json"),
                                   "question")
  short = [p[:160] for p in posts[:40]]
  path = root / "queries.jsonl"
  path.write_text("".join(json.dumps({"question": q}) + "\n" for q in short))
  cdir = str(shared_data / "sami" / "constitutions_mistral")
  texts = short + [json.load(open(os.path.join(cdir, f)))[k] for f in os.listdir(cdir) for k in ("positive", "negative")]
  tok = train_bpe_tokenizer(texts * 3 + [configs.REAL_TEMPLATE, configs.JUDGE_TEMPLATE] * 3, vocab_size=380)
  models = {}
  for family in ("mistral", "mixtral"):
    models[family] = _checkpoint(root, family)
    tok.save(models[family])
  return {"root": root, "queries": str(path), "constitutions": cdir, **models}


def _config(files, family, iterations):
  c = configs.get_config("tiny")
  c.model.path = files[family]
  c.data.update(queries_path=files["queries"], heldout_buckets=4)
  c.sami.update(constitutions_dir=files["constitutions"], iterations=iterations, train_queries=16, heldout_queries=4)
  return c


@pytest.mark.slow
def test_tiny_mistral_end_to_end_and_resume(files):
  workdir = str(files["root"] / "run_mistral")
  report = sami.run(_config(files, "mistral", 1), workdir, log=lambda *_: None)
  rows = report["rows"]
  assert [r["iteration"] for r in rows] == [0, 1] and not report["preempted"]
  for r in rows[1:]:
    assert 0.0 <= r["win_rate"] <= 1.0 and r["wins"] + r["ties"] + r["losses"] == 4
    assert np.isfinite(r["train_loss"]) and r["train_steps"] == 2  # 16 queries / batch 8, one pass
    assert r["mi_bound"] <= r["log_C"] + 1e-6  # InfoNCE cannot exceed log C
  for k in (1,):  # every iteration's model is kept, loadable by transformers as the same family
    from transformers import AutoConfig
    assert AutoConfig.from_pretrained(os.path.join(workdir, f"iter_{k}", "hf")).model_type == "mistral"
  assert os.path.exists(os.path.join(workdir, "sami.png"))
  groups = json.load(open(os.path.join(workdir, "iter_1", "train_groups.json")))
  assert {tuple(sorted(p["name"] for p in c["principles"])) for g in groups for c in g["constitutions"]} == {
      ("comprehensive", "concise")}
  assert all(all(g["constitutions"][0]["pattern"]) and not all(g["constitutions"][1]["pattern"]) for g in groups)
  # Interrupted after iteration 1's training: only its evaluation is redone, with the same result; a second
  # iteration then continues from iteration 1's exported model.
  os.remove(os.path.join(workdir, "iter_1", "eval.json"))
  again = sami.run(_config(files, "mistral", 2), workdir, log=lambda *_: None)["rows"]
  assert [r["iteration"] for r in again] == [0, 1, 2] and again[0]["mi_bound"] == rows[0]["mi_bound"]
  np.testing.assert_allclose(again[1]["mi_bound"], rows[1]["mi_bound"], rtol=1e-5)
  assert again[1]["win_rate"] == rows[1]["win_rate"] and np.isfinite(again[2]["train_loss"])
  from transformers import AutoConfig
  assert AutoConfig.from_pretrained(os.path.join(workdir, "iter_2", "hf")).model_type == "mistral"


@pytest.mark.slow
def test_tiny_mixtral_one_iteration(files):
  report = sami.run(_config(files, "mixtral", 1), str(files["root"] / "run_mixtral"), log=lambda *_: None)
  assert [r["iteration"] for r in report["rows"]] == [0, 1]
  assert np.isfinite(report["rows"][1]["train_loss"])


def test_real_configs_follow_the_paper():
  for name, fsdp in (("mistral7b", 8), ("mixtral8x7b", 8), ("mistral7b_v5p64", 32), ("mixtral8x7b_v5p64", 32)):
    c = configs.get_config(name)
    assert (c.optim.name, c.optim.lr) == ("rmsprop", 5e-7)
    assert (c.sami.num_principles, c.sami.num_constitutions, c.sami.iterations) == (2, 2, 3)
    assert c.sami.reduction == "mean" and c.sami.init_from == "previous" and c.mesh.fsdp == fsdp
  with pytest.raises(ValueError, match="unknown sami variant"):
    configs.get_config("llama")
