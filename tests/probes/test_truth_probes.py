"""The truth-probes entry point: trilemma on a tiny random HF model (CI), labels, and config consistency."""

import csv
import json
import os

import numpy as np
import pytest

from experiments.configs import pretrain_toy as pretrain_configs
from experiments.configs import truth_probes as configs
from pragjax.methods.probes import metrics, report
from pragjax.methods.probes import recipe as truth_probes
from pragjax.models.tokenizer import train_bpe_tokenizer
from pragjax.toyworld import knowledge as kw
from tests import hf_models

CITY_COLUMNS = ("statement", "object_1", "object_2", "correct_object_2", "correct", "negation", "real_object",
                "category", "is_true", "is_false", "is_neither", "multiclass_label")


def test_toy_config_probes_the_kb_the_shipped_model_learnt():
  probe, pretrain = configs.get_config("toy"), pretrain_configs.get_config("knowledge")
  assert probe.data.num_entities == pretrain.world.num_entities
  assert probe.data.kb_seed == pretrain.seed
  assert probe.model.builtin == "knowledge" and not probe.model.path


def test_trilemma_labels_come_from_correct_and_real_object(tmp_path):
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


def _ci_config(shared_data, tmp_path):
  path = hf_models.make_hf_checkpoint("llama", str(tmp_path / "hf"))
  with open(shared_data / "trilemma" / "city_locations.csv", newline="") as f:
    texts = [r["statement"] for r, _ in zip(csv.DictReader(f), range(300))]
  train_bpe_tokenizer(texts, 400).save(path)
  config = configs.get_config("ci")
  config.model.path = path
  config.data.trilemma_dir = str(shared_data / "trilemma")
  return config


def test_trilemma_ci_runs_the_resplit_protocol_on_a_tiny_random_model(shared_data, tmp_path):
  """`:ci` with 2 re-splits and 2 layers: per-re-split results, intervals, the verdict, saved scores, transfer."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  config = _ci_config(shared_data, tmp_path)
  config.probe.layers = "0,1"
  config.split.num_resplits = 2
  config.report.plot = True
  methods = ("sawmil", "mean_diff", "svm_last", "logreg_last")
  logs = []
  work = tmp_path / "work"
  out = truth_probes.run(config, str(work), log=logs.append)
  with open(work / "results.json") as f:
    saved = json.load(f)
  assert saved["verdict"]["met"] in (True, False, None)
  for name in truth_probes.TRILEMMA:
    d = out["datasets"][name]
    # Real + synthetic files: all three labels, in every re-split's train, validation and test.
    assert d["classes"] == ["true", "false", "neither"], logs
    assert set(d["forms"]) == {"affirmative", "negated"}
    assert len(d["counts_per_resplit"]) == 2 and d["counts_per_resplit"][0] != d["counts_per_resplit"][1]
    assert sum(sum(v) for v in d["counts"].values()) == config.data.max_statements
    # Each re-split's own results, and means over them with intervals lo <= mean <= hi.
    assert len(d["resplits"]) == 2
    for layer in (0, 1):
      for m in methods:
        values = [d["resplits"][r]["layers"][layer][m]["mcc_mean"] for r in range(2)]
        assert all(np.isfinite(values))
        agg = d["layers"][layer][m]
        np.testing.assert_allclose(agg["mcc_mean"], np.mean(values))
        for key in ("mcc_mean", "validation_mcc_mean", "coverage"):
          sp = agg["spread"][key]
          assert sp["n"] == 2 and len(sp["values"]) == 2 and sp["lo"] <= sp["mean"] <= sp["hi"], (key, sp)
        np.testing.assert_allclose(agg["spread"]["mcc_mean"]["values"], values)
    # Layers are chosen on validation (mean over re-splits), never on test.
    for m in methods:
      val = {l: d["layers"][l][m]["spread"]["validation_mcc_mean"]["mean"] for l in (0, 1)}
      assert d["best_layers"][m] == max((0, 1), key=lambda l: val[l])
    v = d["verdict"]
    assert v["resplits"] == 2 and v["met"] is report.all_met([v["mcc"]["met"], v["coverage"]["met"]])
    ref = d["layers"][d["best_layers"]["sawmil"]]["sawmil"]
    np.testing.assert_allclose(v["mcc"]["reference_mcc"], ref["mcc_mean"])
    base = v["mcc"]["best_baseline"]
    np.testing.assert_allclose(v["mcc"]["baseline_mcc"], d["layers"][d["best_layers"][base]][base]["mcc_mean"])
    assert v["mcc"]["met"] == (v["mcc"]["reference_mcc"] >= v["mcc"]["baseline_mcc"])
    np.testing.assert_allclose(v["coverage"]["mean"], ref["conformal"]["binary_coverage_mean"])
    assert v["coverage"]["met"] == (abs(v["coverage"]["mean"] - 0.9) <= 0.03 + 1e-12)
    for m in methods:
      lo, hi = v["methods"][m]["mcc_ci_nested"]
      assert lo <= v["methods"][m]["mcc"]["mean"] <= hi
    assert saved["datasets"][name]["verdict"]["met"] == v["met"]
    assert "hypothesis (stated before measuring)" in d["table_verdict"]
    assert set(d["by_form"]["sawmil"]) == {"affirmative", "negated"}
    # The saved test scores recompute the per-re-split test MCC.
    scores = np.load(work / "scores" / f"{name}.npz")
    for r in range(2):
      idx, labels = scores[f"r{r}_index"], scores[f"r{r}_labels"]
      assert len(idx) == len(labels) == sum(d["counts_per_resplit"][r]["test"])
      for layer in (0, 1):
        for m in methods:
          s = scores[f"r{r}_l{layer}_{m}"]
          assert s.shape == (len(idx), 3)
          np.testing.assert_allclose(metrics.ova_means(labels, s, [0, 1, 2])[0],
                                     d["resplits"][r]["layers"][layer][m]["mcc_mean"])
    assert not set(scores["r0_index"]) == set(scores["r1_index"])
    # Generalisation: probes of one dataset on the other's test split, at the source's chosen layer.
    other = [n for n in truth_probes.TRILEMMA if n != name][0]
    assert np.isfinite(d["transfer"][other][1]["sawmil"]["mcc_mean"])
    assert d["transfer_best"][other]["sawmil"]["layer"] == d["best_layers"]["sawmil"]
    assert os.path.isfile(work / f"{name}_layers.png")
  assert "| layer |" in saved["datasets"]["city_locations"]["table_mcc"]
  # A rerun reuses the collected bags.
  logs = []
  config.probe.methods = "mean_diff"
  config.report.plot = False
  truth_probes.run(config, str(work), log=logs.append)
  assert any("reusing" in line for line in logs)
  assert os.path.isfile(work / "bags" / "med_indications" / "meta.json")


def test_trilemma_without_synthetic_files_probes_two_classes(shared_data, tmp_path, memory_gcs):
  """data.synthetic_paths 'none': real statements only, said plainly in the log; true / false probes only.
  The workdir is on an (in-memory) object store: results, scores and plots land there, the bags locally."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  config = _ci_config(shared_data, tmp_path)
  config.data.synthetic_paths = "city_locations=none,med_indications=none"
  config.probe.update(layers="1", methods="mean_diff,logreg_last")
  config.report.plot = True
  work = "gs://bucket/probes"
  with pytest.raises(ValueError, match=r"--config\.probe\.bags_dir"):
    truth_probes.run(config, work, log=lambda *_: None)
  config.probe.bags_dir = str(tmp_path / "bags")
  logs = []
  out = truth_probes.run(config, work, log=logs.append)
  names = {k.split(f"{work}/", 1)[-1] for k in memory_gcs}
  assert {"results.json", "scores/city_locations.npz", "city_locations_layers.png"} <= names, names
  assert json.loads(memory_gcs[f"{work}/results.json"].getvalue())["datasets"].keys() == set(truth_probes.TRILEMMA)
  assert os.path.isfile(tmp_path / "bags" / "city_locations" / "meta.json")
  assert sum("absent from the data: neither" in line for line in logs) == 2, logs
  assert sum("two classes only" in line for line in logs) == 2
  for name in truth_probes.TRILEMMA:
    d = out["datasets"][name]
    assert sum(d["counts"][s][2] for s in d["counts"]) == 0 and d["classes"] == ["true", "false"]
    r = d["layers"][1]["logreg_last"]
    assert np.isfinite(r["mcc_mean"]) and 0.0 <= r["conformal"]["binary_coverage_mean"] <= 1.0
    assert d["verdict"]["met"] is None  # no sAwMIL: the hypothesis is not evaluated


def test_toy_negated_variant_has_statements_whose_deciding_token_is_not_last():
  config = configs.get_config("toy_negated")
  records = truth_probes.load_records(config, "knowledge")
  forms = {r["form"] for r in records}
  assert forms == {"affirmative", "negated", "affirmative + clause", "negated + clause"}
  assert np.bincount([r["label"] for r in records]).tolist() == [config.data.per_label] * 3
  plain = truth_probes.load_records(configs.get_config("toy"), "knowledge")
  assert {r["form"] for r in plain} == {"affirmative"}
  negated = [r for r in records if r["negated"]]
  assert negated and all(" not " in r["text"] or " never " in r["text"] for r in negated)
  clauses = [r for r in records if "clause" in r["form"]]  # the value is no longer among the last tokens
  assert clauses and all(any(r["text"].endswith(f"{c}.") for c in kw.TRAILING_CLAUSES) for r in clauses)


def test_every_config_field_is_documented():
  doc = configs.__doc__
  common_sections = ("model", "mesh", "runtime")
  for variant in ("toy", "toy_negated", "trilemma", "ci", "smollm2") + configs.REAL_SCALE:
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
