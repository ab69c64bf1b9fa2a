"""Clear errors for bad checkpoints and configs; MoE kernels agree."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax.models import CheckpointError, ConfigError, Decoder, ModelConfig, load_hf, safetensors_io, save_hf
from pragjax.models.tokenizer import TokenizerError, build_word_level_tokenizer, check_vocab


def _cfg(**kw):
  base = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  base.update(kw)
  return ModelConfig(**base)


@pytest.fixture
def ckpt(tmp_path):
  cfg = _cfg()
  path = str(tmp_path / "m")
  save_hf(Decoder(cfg, rngs=nnx.Rngs(0)), cfg, path)
  return path


def _edit_config(path, **changes):
  p = os.path.join(path, "config.json")
  with open(p) as f:
    d = json.load(f)
  d.update(changes)
  with open(p, "w") as f:
    json.dump(d, f)


def test_unknown_model_type_lists_supported(ckpt):
  _edit_config(ckpt, model_type="falcon")
  with pytest.raises(ConfigError, match=r"unsupported model_type 'falcon'.*llama, mistral, mixtral, qwen2, gemma, gemma2"):
    load_hf(ckpt)


def test_unsupported_rope_type_lists_supported(ckpt):
  _edit_config(ckpt, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0})
  with pytest.raises(ConfigError, match=r"rope_type 'yarn'.*default, linear, llama3"):
    load_hf(ckpt)


def test_missing_tensor_is_named(ckpt):
  f = safetensors_io.SafetensorsFile(os.path.join(ckpt, "model.safetensors"))
  drop = "model.layers.1.mlp.up_proj.weight"
  keep = [(n, f.shape(n), f.dtype(n), (lambda n=n: f.read(n))) for n in f.keys() if n != drop]
  safetensors_io.write_file(os.path.join(ckpt, "model.safetensors"), keep)
  with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
    load_hf(ckpt)


def test_unexpected_tensor_is_named(ckpt):
  f = safetensors_io.SafetensorsFile(os.path.join(ckpt, "model.safetensors"))
  items = [(n, f.shape(n), f.dtype(n), (lambda n=n: f.read(n))) for n in f.keys()]
  items.append(("model.layers.0.mystery.weight", (2,), np.float32, lambda: np.zeros(2, np.float32)))
  safetensors_io.write_file(os.path.join(ckpt, "model.safetensors"), items)
  with pytest.raises(CheckpointError, match="unexpected tensor.*mystery"):
    load_hf(ckpt)


def test_wrong_shape_names_tensor_expected_and_found(ckpt):
  _edit_config(ckpt, intermediate_size=40)
  with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(48, 32\), expected \(40, 32\)"):
    load_hf(ckpt)


def test_missing_files_are_reported(tmp_path, ckpt):
  with pytest.raises(CheckpointError, match="no config.json"):
    load_hf(str(tmp_path))
  os.remove(os.path.join(ckpt, "model.safetensors"))
  with pytest.raises(CheckpointError, match="no model.safetensors"):
    load_hf(ckpt)


def test_tokenizer_model_vocab_mismatch():
  tok = build_word_level_tokenizer([f"w{i}" for i in range(100)])
  check_vocab(tok, 128)  # a padded model vocab is fine
  with pytest.raises(TokenizerError, match=r"64"):
    check_vocab(tok, 64)


def test_config_validation():
  with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
    _cfg(num_attention_heads=4, num_key_value_heads=3)
  with pytest.raises(ConfigError, match="sliding_window"):
    _cfg(layer_types=("sliding_attention", "full_attention"))
  with pytest.raises(ConfigError, match="unsupported activation"):
    _cfg(hidden_act="relu6")


def test_moe_ragged_equals_dense():
  cfg = _cfg(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 64, (3, 9)))
  ragged = Decoder(cfg, rngs=nnx.Rngs(1))(ids).logits  # same seed: same weights
  dense = Decoder(cfg.replace(moe_impl="dense"), rngs=nnx.Rngs(1))(ids).logits
  np.testing.assert_allclose(np.asarray(ragged), np.asarray(dense), atol=1e-5)
