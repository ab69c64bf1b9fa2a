"""Activation bags: equal to Hugging Face's activations of the same tokens; store round trip; splits."""

import json
import os

import numpy as np
import pytest

from pragjax.methods.probes import activations
from pragjax.models import load_hf
from pragjax.models.tokenizer import train_bpe_tokenizer
from tests import hf_models

TEXTS = ["The city of Lima is in Peru.", "Oslo is not in Chile.", "Bavelo likes to eat rice.",
         "The favourite colour of Zuma is green.", "A.", "Every day, Tiko eats honey and bread with cheese."]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  d = tmp_path_factory.mktemp("hf")
  path = hf_models.make_hf_checkpoint("llama", str(d))
  tok = train_bpe_tokenizer(TEXTS * 4, 300)
  tok.save(path)
  return path, tok


def _hf_per_layer(path, tok, texts):
  """Per text: HF hidden_states of blocks 0..L-2 (elements 1..L-1) and a forward hook's output of block L-1."""
  import torch

  model = hf_models.load_torch(path)
  captured = {}
  model.model.layers[-1].register_forward_hook(
      lambda m, i, o: captured.__setitem__("last", (o[0] if isinstance(o, tuple) else o).detach()))
  out = []
  for text in texts:
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
      hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    layers = [h[0].float().numpy() for h in hs[1:-1]] + [captured["last"][0].float().numpy()]
    out.append(layers)
  return out


def test_bags_equal_hf_activations_of_the_same_tokens(tiny_llama, tmp_path):
  path, tok = tiny_llama
  model, cfg = load_hf(path, dtype="float32")
  layers = list(range(cfg.num_hidden_layers))
  store = activations.collect_bags(model, tok, TEXTS, layers, str(tmp_path / "bags"), batch_size=4)
  reference = _hf_per_layer(path, tok, TEXTS)
  assert store.num_bags == len(TEXTS)
  np.testing.assert_array_equal(store.lengths, [len(tok.encode(t)) for t in TEXTS])
  ids = np.asarray(store.token_ids())
  for layer in layers:
    bags, mask = store.bags(layer)
    for i, text in enumerate(TEXTS):
      np.testing.assert_array_equal(ids[store.offsets[i]:store.offsets[i + 1]], tok.encode(text))
      ref = reference[i][layer]
      got = bags[i][mask[i]]
      assert got.shape == ref.shape
      # Stored in float16: equal to HF up to half-precision rounding.
      np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_chat_template_wraps_statements(tiny_llama, tmp_path):
  path, tok = tiny_llama
  tok.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
  model, _ = load_hf(path, dtype="float32")
  store = activations.collect_bags(model, tok, TEXTS[:2], [0], str(tmp_path / "chat"), chat_template=True)
  ids = activations.statement_token_ids(tok, TEXTS[:2], chat_template=True)
  assert ids[0][0] == tok.bos_token_id and ids[0][-1] == tok.eos_token_id
  np.testing.assert_array_equal(store.lengths, [len(i) for i in ids])
  assert store.meta["chat_template"] is True


def test_store_round_trip_and_incomplete_store(tmp_path):
  rng = np.random.default_rng(0)
  lengths = [3, 1, 4]
  writer = activations.BagWriter(str(tmp_path / "s"), [2, 5], lengths, 4, token_ids=[[1, 2, 3], [4], [5, 6, 7, 8]])
  acts = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
  mask = np.arange(4)[None, :] < np.asarray(lengths)[:, None]
  with pytest.raises(activations.BagStoreError, match="no meta.json"):
    writer.write([2, 0], acts[:, [2, 0]], mask[[2, 0]])
    activations.BagStore(str(tmp_path / "s"))  # Not closed yet: incomplete.
  writer.write([1], acts[:, [1]], mask[[1]])
  writer.close({"model": "m"})
  store = activations.BagStore(str(tmp_path / "s"))
  assert store.layers == (2, 5) and store.meta["model"] == "m" and store.meta["dtype"] == "float16"
  bags, m = store.bags(5, [2, 1])
  np.testing.assert_array_equal(m, mask[[2, 1]])
  np.testing.assert_allclose(bags[m], acts[1, [2, 1]][mask[[2, 1]]], rtol=1e-3, atol=1e-3)
  assert np.all(bags[~m] == 0)
  with pytest.raises(activations.BagStoreError, match="layer 3"):
    store.layer(3)
  with open(os.path.join(tmp_path / "s", "meta.json")) as f:
    assert json.load(f)["num_tokens"] == 8


def test_entity_disjoint_split():
  rng = np.random.default_rng(0)
  groups = [f"e{rng.integers(200)}" for _ in range(1000)]
  split = activations.entity_disjoint_split(groups, test_fraction=0.25, calibration_fraction=0.25, seed=3)
  sets = {k: {groups[i] for i in v} for k, v in split.items()}
  assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["calibration"])
  assert not (sets["calibration"] & sets["test"])
  assert sorted(np.concatenate(list(split.values()))) == list(range(1000))
  assert 0.24 <= len(split["test"]) / 1000 <= 0.28
  assert 0.17 <= len(split["calibration"]) / 1000 <= 0.22
  again = activations.entity_disjoint_split(groups, test_fraction=0.25, calibration_fraction=0.25, seed=3)
  assert all(np.array_equal(split[k], again[k]) for k in split)
