"""The truth-probes entry point: trilemma on a tiny random HF model (CI), labels, and config consistency."""

import csv
import json
import os

import numpy as np
import pytest

from experiments.configs import pretrain_toy as pretrain_configs
from experiments.configs import truth_probes as configs
from pragjax.methods.probes import recipe as truth_probes
from pragjax.models.tokenizer import train_bpe_tokenizer
from tests import hf_models

CITY_COLUMNS = ("statement", "object_1", "object_2", "correct_object_2", "correct", "negation", "real_object",
                "category", "is_true", "is_false", "is_neither", "multiclass_label")


def test_toy_config_probes_the_kb_the_shipped_model_learnt():
  probe, pretrain = configs.get_config("toy"), pretrain_configs.get_config("knowledge")
  assert probe.data.num_entities == pretrain.world.num_entities
  assert probe.data.kb_seed == pretrain.seed
  assert probe.model.builtin == "knowledge" and not probe.model.path


def test_trilemma_labels_come_from_correct_and_real_object(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  rows = [("The city of Lima is located in Peru.", "Lima", "TRUE", "TRUE"),
          ("The city of Lima is located in Chile.", "Lima", "FALSE", "TRUE"),
          ("The city of Zubrava is located in Peru.", "Zubrava", "FALSE", "FALSE"),
          ("The city of Zubrava is not located in Chile.", "Zubrava", "TRUE", "FALSE")]
  with open(tmp_path / "city_locations.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(CITY_COLUMNS)
    for text, entity, correct, real in rows:
      w.writerow([text, entity, "Peru", "Peru", correct, "FALSE", real, "cities", "", "", "", ""])
  config = configs.get_config("trilemma")
  config.data.trilemma_dir = str(tmp_path)
  records = truth_probes.load_records(config, "city_locations", str(tmp_path / "work"))
  assert [r["label"] for r in records] == [0, 1, 2, 2]  # true, false, neither, neither
  assert [r["group"] for r in records] == ["Lima", "Lima", "Zubrava", "Zubrava"]


def test_trilemma_ci_runs_on_a_tiny_random_model(shared_data, tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  pytest.importorskip("tensorflow_datasets")
  path = hf_models.make_hf_checkpoint("llama", str(tmp_path / "hf"))
  with open(shared_data / "trilemma" / "city_locations.csv", newline="") as f:
    texts = [r["statement"] for r, _ in zip(csv.DictReader(f), range(300))]
  train_bpe_tokenizer(texts, 400).save(path)
  config = configs.get_config("ci")
  config.model.path = path
  config.data.trilemma_dir = str(shared_data / "trilemma")
  config.probe.layers = "1"
  first_logs = []
  out = truth_probes.run(config, str(tmp_path / "work"), log=first_logs.append)
  # Said plainly in the log: the shared copy has no "neither" rows, so true / false probes only.
  assert sum("absent from the data: neither" in line for line in first_logs) == 2, first_logs
  assert sum("two classes only" in line for line in first_logs) == 2
  for name in truth_probes.TRILEMMA:
    d = out["datasets"][name]
    # The shared CSVs hold only real entities: no "neither" statement, so no neither probe.
    assert sum(d["counts"][s][2] for s in d["counts"]) == 0
    assert d["classes"] == ["true", "false"]
    res = d["layers"][1]
    for method in ("sawmil", "mean_diff", "svm_last", "logreg_last"):
      r = res[method]
      assert np.isfinite(r["mcc_mean"]) and 0.0 <= r["conformal"]["binary_coverage_mean"] <= 1.0
      assert 0.0 <= r["conformal"]["ova_abstention"] <= 1.0
    other = [n for n in truth_probes.TRILEMMA if n != name][0]
    assert np.isfinite(d["transfer"][other][1]["sawmil"]["mcc_mean"])
  with open(tmp_path / "work" / "results.json") as f:
    saved = json.load(f)
  assert "| layer |" in saved["datasets"]["city_locations"]["table_mcc"]
  # A rerun reuses the collected bags.
  logs = []
  config.probe.methods = "mean_diff"
  truth_probes.run(config, str(tmp_path / "work"), log=logs.append)
  assert any("reusing" in line for line in logs)
  assert os.path.isfile(tmp_path / "work" / "bags" / "med_indications" / "meta.json")


def test_every_config_field_is_documented():
  doc = configs.__doc__
  common_sections = ("model", "mesh", "runtime")
  for variant in ("toy", "trilemma", "ci") + configs.REAL_SCALE:
    flat = configs.get_config(variant).to_dict()
    for section, fields in flat.items():
      if section in common_sections or not isinstance(fields, dict):
        assert section in doc or section in common_sections
        continue
      for field in fields:
        assert f"{section}.{field}" in doc or f"probe.{field}" in doc, f"{section}.{field} undocumented"


@pytest.mark.parametrize("family", ["llama3_rope", "mistral", "gemma2", "qwen2"])
def test_real_scale_config_loads_and_collects_each_family(family, tmp_path):
  """The 7-9B variants' code path (bfloat16 load, depth sweep, bag collection) on a tiny random model per family."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from pragjax.methods.probes import activations
  from pragjax.train import runner

  variant = {"llama3_rope": "llama8b", "mistral": "mistral7b", "gemma2": "gemma2_9b", "qwen2": "qwen2_5_7b"}[family]
  config = configs.get_config(variant)
  assert config.model.dtype == "bfloat16" and config.probe.min_depth == 0.1 and config.probe.layer_stride == 1
  # Every block from 10% depth to the last, at the real depths.
  assert truth_probes.select_layers(config, 32) == list(range(3, 32))
  assert truth_probes.select_layers(config, 42) == list(range(4, 42))
  assert truth_probes.select_layers(config, 28) == list(range(2, 28))
  path = hf_models.make_hf_checkpoint(family, str(tmp_path / "hf"))
  texts = ["The city of Lima is located in Peru.", "Aspirin is indicated for the treatment of pain.", "Oslo."]
  train_bpe_tokenizer(texts * 4, 300).save(path)
  config.model.path = path
  loaded = runner.load_model(dict(config.model))
  layers = truth_probes.select_layers(config, loaded.config.num_hidden_layers)
  assert layers == [0, 1, 2]
  store = activations.collect_bags(loaded.model, loaded.tokenizer, texts, layers, str(tmp_path / "bags"), batch_size=4)
  assert store.layers == (0, 1, 2)
  for layer in layers:
    bags, mask = store.bags(layer)
    assert np.isfinite(bags[mask]).all() and np.abs(bags[mask]).max() > 0
