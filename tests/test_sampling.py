"""KV-cache sampling: HF greedy parity, reproducibility, log-prob agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax.models import Decoder, ModelConfig, generate, process_logits
from pragjax.ops import token_logprobs


def _model(**kw):
  cfg = ModelConfig(
      vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=8, **kw,
  )
  return Decoder(cfg, rngs=nnx.Rngs(0))


def _prompts():
  ids = np.array([[0, 0, 0, 5, 6, 7], [0, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25]], np.int32)
  mask = (np.arange(6)[None] >= np.array([3, 1, 0])[:, None]).astype(np.int32)
  return ids, mask


def _to_right_padding(ids, mask):
  r_ids, r_mask = np.zeros_like(ids), np.zeros_like(mask)
  for b in range(len(ids)):
    n = mask[b].sum()
    r_ids[b, :n], r_mask[b, :n] = ids[b][mask[b] == 1], 1
  return r_ids, r_mask


@pytest.mark.parametrize("name", ["llama", "mistral", "mixtral", "gemma2", "qwen2"])
def test_greedy_equals_transformers_generate(name, tmp_path):
  torch = pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from pragjax.models import load_hf
  from tests import hf_models

  path = hf_models.make_hf_checkpoint(name, str(tmp_path))
  ref = hf_models.load_torch(path)
  rng = np.random.RandomState(0)
  ids = rng.randint(3, hf_models.VOCAB, size=(3, 7))
  mask = np.ones_like(ids)
  mask[0, :4], mask[1, :2] = 0, 0  # prompts of 3, 5 and 7 tokens
  ids[mask == 0] = 0
  with torch.no_grad():
    want = ref.generate(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10,
        do_sample=False, pad_token_id=0, eos_token_id=None,
    )[:, ids.shape[1]:].numpy()
  model, _ = load_hf(path)
  got = generate(model, ids, mask, max_new_tokens=10)
  np.testing.assert_array_equal(np.asarray(got.tokens), want)
  np.testing.assert_array_equal(np.asarray(got.lengths), [10, 10, 10])
  # The same continuation from right-padded prompts.
  r_ids, r_mask = _to_right_padding(ids, mask)
  np.testing.assert_array_equal(np.asarray(generate(model, r_ids, r_mask, max_new_tokens=10).tokens), want)


@pytest.mark.parametrize("batch", [1, 3])
def test_sampled_logprobs_equal_teacher_forced_forward(batch):
  model = _model(sliding_window=3, layer_types=("sliding_attention", "full_attention"))
  ids, mask = _prompts()
  ids, mask = ids[:batch], mask[:batch]
  kw = dict(max_new_tokens=8, rng=jax.random.key(7), temperature=0.9, top_k=20, top_p=0.9, num_samples=2)
  out = generate(model, ids, mask, **kw)
  again = generate(model, ids, mask, **kw)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(again.tokens))
  other = generate(model, ids, mask, **{**kw, "rng": jax.random.key(8)})
  assert not np.array_equal(np.asarray(out.tokens), np.asarray(other.tokens))
  full = np.concatenate([np.repeat(ids, 2, 0), np.asarray(out.tokens)], axis=1)
  full_mask = np.concatenate([np.repeat(mask, 2, 0), np.ones_like(out.tokens)], axis=1)
  lp = token_logprobs(model(full, full_mask).logits, full)[:, ids.shape[1] - 1:]
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(lp), atol=1e-5)
  # Processed log-probs: of the filtered distribution, so never below raw.
  assert np.all(np.asarray(out.processed_logprobs) >= np.asarray(out.logprobs) - 1e-5)


def test_num_samples_rows_are_grouped_by_prompt():
  model = _model()
  ids, mask = _prompts()
  out = generate(model, ids, mask, max_new_tokens=4, rng=jax.random.key(0), temperature=1e-4, num_samples=3)
  greedy = np.asarray(generate(model, ids, mask, max_new_tokens=4).tokens)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.repeat(greedy, 3, axis=0))


def test_stop_tokens_end_rows_and_pad_after():
  model = _model()
  ids, mask = _prompts()
  greedy = np.asarray(generate(model, ids, mask, max_new_tokens=6).tokens)
  stop = int(greedy[0, 2])
  out = generate(model, ids, mask, max_new_tokens=6, eos_token_ids=(stop,), pad_token_id=-1)
  toks, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for b in range(len(ids)):
    hits = np.flatnonzero(greedy[b] == stop)
    n = hits[0] + 1 if hits.size else 6
    assert lengths[b] == n
    np.testing.assert_array_equal(toks[b, :n], greedy[b, :n])
    assert np.all(toks[b, n:] == -1) and np.all(np.asarray(out.logprobs)[b, n:] == 0)
  assert lengths[0] <= 3


def test_top_k_one_is_greedy_and_top_p_filters():
  model = _model()
  ids, mask = _prompts()
  greedy = generate(model, ids, mask, max_new_tokens=5)
  k1 = generate(model, ids, mask, max_new_tokens=5, rng=jax.random.key(1), temperature=2.0, top_k=1)
  np.testing.assert_array_equal(np.asarray(k1.tokens), np.asarray(greedy.tokens))
  np.testing.assert_allclose(np.asarray(k1.processed_logprobs), 0.0, atol=1e-6)
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(process_logits(logits, 1.0, None, 0.7)))
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  kept = np.isfinite(np.asarray(process_logits(logits, 1.0, 3, None)))
  np.testing.assert_array_equal(kept, [[True, True, True, False]])


def test_bad_arguments_raise():
  model = _model()
  ids, mask = _prompts()
  with pytest.raises(ValueError, match="rng"):
    generate(model, ids, mask, max_new_tokens=2, temperature=1.0)
  with pytest.raises(ValueError, match="top_p"):
    generate(model, ids, mask, max_new_tokens=2, rng=jax.random.key(0), temperature=1.0, top_p=1.5)
  with pytest.raises(ValueError, match="max_new_tokens"):
    generate(model, ids, mask, max_new_tokens=0)
