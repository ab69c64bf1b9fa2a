"""Every family against transformers' PyTorch model on tiny random configs."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pragjax.models import ModelConfig, load_hf, save_hf  # noqa: E402
from tests import hf_models  # noqa: E402

FAMILIES = sorted(hf_models.FAMILIES)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  return {name: hf_models.make_hf_checkpoint(name, str(root)) for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_and_hidden_states_match_transformers(name, checkpoints):
  path = checkpoints[name]
  ref = hf_models.load_torch(path)
  ids, mask = hf_models.padded_batch(seed=1)
  ref_logits, ref_hidden = hf_models.torch_forward(ref, ids, mask)

  model, cfg = load_hf(path)
  assert cfg.model_type == hf_models.FAMILIES[name]["model_type"]
  out = model(jnp.asarray(ids), jnp.asarray(mask), output_hidden_states=True, output_block_outputs=True)
  valid = mask.astype(bool)
  assert out.logits.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out.logits)[valid], ref_logits[valid], atol=1e-4, rtol=0)
  assert len(out.hidden_states) == cfg.num_hidden_layers + 1 == len(ref_hidden)
  for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref_hidden)):
    np.testing.assert_allclose(np.asarray(ours)[valid], theirs[valid], atol=1e-4, rtol=0, err_msg=f"hidden {i}")
  # Raw block outputs: equal to HF's hidden states 1..L-1, and the last one is
  # the un-normed input of the final norm (so it must differ from HF's last).
  for i in range(cfg.num_hidden_layers - 1):
    np.testing.assert_array_equal(np.asarray(out.block_outputs[i]), np.asarray(out.hidden_states[i + 1]))
  assert np.abs(np.asarray(out.block_outputs[-1]) - np.asarray(out.hidden_states[-1]))[valid].max() > 1e-2


@pytest.mark.parametrize("name", ["llama", "mixtral", "gemma2", "qwen2_tied"])
def test_save_hf_round_trip_loads_in_transformers(name, checkpoints, tmp_path):
  model, cfg = load_hf(checkpoints[name])
  out_dir = str(tmp_path / "out")
  save_hf(model, cfg, out_dir)
  ids, mask = hf_models.padded_batch(seed=2)
  before, _ = hf_models.torch_forward(hf_models.load_torch(checkpoints[name]), ids, mask)
  after, _ = hf_models.torch_forward(hf_models.load_torch(out_dir), ids, mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(after[valid], before[valid], atol=1e-5, rtol=0)
  reloaded, cfg2 = load_hf(out_dir)
  assert cfg2 == cfg
  np.testing.assert_array_equal(
      np.asarray(reloaded(jnp.asarray(ids), jnp.asarray(mask)).logits),
      np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits),
  )


def test_save_hf_shards_above_threshold(checkpoints, tmp_path):
  model, cfg = load_hf(checkpoints["llama"])
  out_dir = str(tmp_path / "sharded")
  save_hf(model, cfg, out_dir, max_shard_bytes=200_000)
  with open(os.path.join(out_dir, "model.safetensors.index.json")) as f:
    index = json.load(f)
  files = sorted(set(index["weight_map"].values()))
  assert len(files) >= 3 and all(os.path.exists(os.path.join(out_dir, f)) for f in files)
  assert not os.path.exists(os.path.join(out_dir, "model.safetensors"))
  ids, mask = hf_models.padded_batch(seed=3)
  ref, _ = hf_models.torch_forward(hf_models.load_torch(checkpoints["llama"]), ids, mask)
  got, _ = hf_models.torch_forward(hf_models.load_torch(out_dir), ids, mask)
  np.testing.assert_allclose(got[mask == 1], ref[mask == 1], atol=1e-5, rtol=0)
  reloaded, _ = load_hf(out_dir)
  np.testing.assert_allclose(
      np.asarray(reloaded(jnp.asarray(ids), jnp.asarray(mask)).logits)[mask == 1], ref[mask == 1], atol=1e-4
  )


def test_bfloat16_params_track_float32(checkpoints):
  ids, mask = hf_models.padded_batch(seed=4)
  f32, _ = load_hf(checkpoints["llama"])
  bf16, cfg = load_hf(checkpoints["llama"], param_dtype="bfloat16")
  assert cfg.dtype == "bfloat16" and f32.embed[...].dtype == jnp.float32
  assert bf16.embed[...].dtype == jnp.bfloat16
  a = np.asarray(f32(ids, mask).logits)[mask == 1]
  b = np.asarray(bf16(ids, mask).logits)
  assert b.dtype == np.float32  # log-softmax inputs stay float32
  b = b[mask == 1]
  assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
  assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.8


def test_transformers4_config_layout_reads_the_same():
  v5 = dict(
      model_type="llama", vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2,
      rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
  )
  v4 = {k: v for k, v in v5.items() if k != "rope_parameters"}
  v4.update(rope_theta=5e5, rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
  a, b = ModelConfig.from_hf(v5), ModelConfig.from_hf(v4)
  assert a == b and a.rope_scaling.rope_type == "llama3" and a.rope_theta == 5e5
  # and our own output reads back identically
  assert ModelConfig.from_hf(a.to_hf()) == a
