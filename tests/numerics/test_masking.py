"""Masking invariances: batching, padding side, packing, sampler agreement,
and compile counts under variable lengths."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from pragjax import ops
from pragjax.data.collate import bucket_length, pack_examples, pad_batch, tokenize_record
from pragjax.data.pipeline import make_train_iterator
from pragjax.methods.sft.loss import batch_token_logprobs, make_sft_loss_fn, model_token_logprobs
from pragjax.models import Decoder, ModelConfig, generate, sampling
from pragjax.optim import make_optimizer
from pragjax.toyworld import arithmetic
from pragjax.train import init_train_state, make_train_step

TOK = arithmetic.tokenizer()


def _model(**kw):
  cfg = ModelConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, **kw)
  return Decoder(cfg, rngs=nnx.Rngs(0))


def _examples(n=5, seed=0):
  problems = arithmetic.training_problems(np.random.default_rng(seed), n)
  recs = [{"prompt": p.prompt, "response": p.solution} for p in problems]
  return [tokenize_record(r, TOK, max_length=128) for r in recs]


def _per_example_loss(model, batch):
  logp = model_token_logprobs(model, batch)
  m = batch["loss_mask"][:, 1:]
  return np.asarray(ops.masked_sum(logp, m) / np.maximum(m.sum(1), 1)), np.asarray(logp)


@pytest.mark.parametrize("family", ["llama", "mistral_window"])
def test_batch_equals_alone_and_left_equals_right_padding(family):
  model = _model(**({"sliding_window": 5, "layer_types": ("sliding_attention",) * 2} if family != "llama" else {}))
  ex = _examples()
  seq = max(len(e["input_ids"]) for e in ex) + 3
  right = pad_batch(ex, seq, TOK.pad_token_id, padding_side="right")
  left = pad_batch(ex, seq, TOK.pad_token_id, padding_side="left")
  loss_r, lp_r = _per_example_loss(model, right)
  loss_l, lp_l = _per_example_loss(model, left)
  np.testing.assert_allclose(loss_l, loss_r, atol=1e-5)
  for i, e in enumerate(ex):
    alone = pad_batch([e], len(e["input_ids"]), TOK.pad_token_id)
    loss_a, lp_a = _per_example_loss(model, alone)
    np.testing.assert_allclose(loss_r[i], loss_a[0], atol=1e-5)
    n = len(e["input_ids"]) - 1
    np.testing.assert_allclose(lp_r[i, :n], lp_a[0], atol=1e-5)
    np.testing.assert_allclose(lp_l[i, seq - 1 - n:], lp_a[0], atol=1e-5)


def test_packed_equals_padded():
  model = _model()
  ex = _examples(6, seed=1)
  padded = pad_batch(ex, max(len(e["input_ids"]) for e in ex), TOK.pad_token_id)
  packed = pack_examples(ex, 160, TOK.pad_token_id)
  assert packed["input_ids"].shape[0] < len(ex)  # really packed
  loss_pad, lp_pad = _per_example_loss(model, padded)
  lp_pack = np.asarray(model_token_logprobs(model, packed))
  # Every example's targets, in order, from the packed rows.
  got = []
  for row in range(packed["input_ids"].shape[0]):
    seg = packed["segment_ids"][row]
    for s in range(1, seg.max() + 1):
      idx = np.flatnonzero(seg == s)
      got.append(lp_pack[row, idx[:-1]])
  want = [lp_pad[i, :len(e["input_ids"]) - 1] for i, e in enumerate(ex)]
  assert sorted(len(g) for g in got) == sorted(len(w) for w in want)
  for w in want:  # match each padded example to its packed copy
    assert any(len(g) == len(w) and np.allclose(g, w, atol=1e-5) for g in got)


@pytest.mark.parametrize("batch", [1, 8])
def test_sampler_logprobs_equal_trainer_logprobs(batch):
  model = _model()
  problems = arithmetic.training_problems(np.random.default_rng(2), batch)
  ids, mask = TOK.encode_batch([p.prompt for p in problems], padding_side="left")
  out = generate(model, ids, mask, max_new_tokens=12, rng=jax.random.key(0), temperature=1.0, top_k=10)
  full = np.concatenate([ids, np.asarray(out.tokens)], 1)
  fmask = np.concatenate([mask, np.ones_like(out.tokens)], 1)
  graphdef, params = nnx.split(model, nnx.Param)
  lp = batch_token_logprobs(graphdef, params, {"input_ids": full, "attention_mask": fmask})
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(lp)[:, ids.shape[1] - 1:], atol=1e-5)


def test_variable_lengths_compile_once_in_training():
  model = _model()
  tx = make_optimizer({"name": "sgd", "lr": 0.1})
  graphdef, state = init_train_state(model, tx)
  step = make_train_step(make_sft_loss_fn(graphdef), tx)
  problems = arithmetic.training_problems(np.random.default_rng(3), 64)
  recs = [{"prompt": p.prompt, "response": p.solution} for p in problems]
  it = make_train_iterator(recs, functools.partial(tokenize_record, tokenizer=TOK, max_length=96),
                           global_batch_size=4, seq_len=96, seed=0, pad_id=TOK.pad_token_id)
  lengths = set()
  for _ in range(6):
    b = next(it)
    lengths.add(int(b["attention_mask"].sum(1).max()))
    state, _ = step(state, b)
  assert len(lengths) > 1 and step._cache_size() == 1


def test_bucketed_prompts_bound_sampler_compilations():
  model = _model()
  sampling._generate.clear_cache()
  problems = arithmetic.training_problems(np.random.default_rng(4), 24)
  raw_lengths = set()
  for i in range(0, 24, 3):
    chunk = [p.prompt for p in problems[i:i + 3]]
    ids, mask = TOK.encode_batch(chunk, padding_side="left", pad_to_multiple_of=16)
    raw_lengths.add(max(len(TOK.encode(c)) for c in chunk))
    generate(model, ids, mask, max_new_tokens=4)
  buckets = {bucket_length(n) for n in raw_lengths}
  assert len(raw_lengths) > len(buckets)
  assert sampling._generate._cache_size() == len(buckets)
