"""Reference log-prob store: same training as a live reference, reuse, staleness."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax.data.collate import tokenize_record
from pragjax.data.pipeline import make_train_iterator
from pragjax.models import Decoder, ModelConfig
from pragjax.models.logprobs import batch_token_logprobs
from pragjax.optim import make_optimizer
from pragjax.toyworld import arithmetic
from pragjax.train import init_train_state, make_train_step
from pragjax.train import reference_store as rs

TOK = arithmetic.tokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)
SEQ = 96


def _records(n=40, seed=0):
  return [{"prompt": p.prompt, "response": p.solution}
          for p in arithmetic.training_problems(np.random.default_rng(seed), n)]


def _fingerprint(params, records):
  return {"model": rs.model_fingerprint(params), "tokenizer": rs.tokenizer_fingerprint(TOK),
          "data": rs.data_fingerprint(records, max_length=SEQ)}


def _loss_fn(graphdef):
  def loss_fn(params, batch, rng):  # a sequence log-ratio objective (CE-style)
    del rng
    m = batch["loss_mask"][:, 1:]
    d = jnp.sum((batch_token_logprobs(graphdef, params, batch) - batch["ref_logp"][:, 1:]) * m, axis=1)
    return -jnp.mean(jax.nn.log_sigmoid(0.5 * d)), {}
  return loss_fn


def _build(tmp, records):
  ref = Decoder(CFG, rngs=nnx.Rngs(7))
  graphdef, ref_params = nnx.split(ref, nnx.Param)
  fp = _fingerprint(ref_params, records)
  tok_fn = functools.partial(tokenize_record, tokenizer=TOK, max_length=SEQ)
  build = lambda: rs.ReferenceStore.build(str(tmp), graphdef, ref_params, [tok_fn(r) for r in records],  # noqa: E731
                                         fingerprint=fp, batch_size=8, shard_tokens=500)
  return ref_params, fp, tok_fn, build


def test_store_training_equals_live_reference(tmp_path):
  records = _records()
  ref_params, fp, tok_fn, build = _build(tmp_path / "store", records)
  store, built = rs.ReferenceStore.open_or_build(str(tmp_path / "store"), fp, build)
  assert built and len(store) == len(records) and len(store.manifest["shards"]) > 1
  again, built = rs.ReferenceStore.open_or_build(str(tmp_path / "store"), fp, build)
  assert not built  # reused, not recomputed

  tx = make_optimizer({"name": "adamw", "lr": 1e-3})
  graphdef, state = init_train_state(Decoder(CFG, rngs=nnx.Rngs(0)), tx)
  loss_fn = _loss_fn(graphdef)
  it_store = make_train_iterator(store.attach(records), rs.with_reference(tok_fn), global_batch_size=4,
                                 seq_len=SEQ, seed=0, pad_id=TOK.pad_token_id)
  it_live = make_train_iterator(records, tok_fn, global_batch_size=4, seq_len=SEQ, seed=0,
                                pad_id=TOK.pad_token_id)
  ref_fn = lambda p, b: {"ref_logp": jnp.pad(batch_token_logprobs(graphdef, p, b), ((0, 0), (1, 0)))}  # noqa: E731
  step_store = make_train_step(loss_fn, tx, donate=False)
  step_live = make_train_step(loss_fn, tx, ref_fn=ref_fn, donate=False)
  s_store, s_live = state, state.replace(ref_params=ref_params)
  for _ in range(3):
    b_store, b_live = next(it_store), next(it_live)
    np.testing.assert_array_equal(b_store["input_ids"], b_live["input_ids"])
    s_store, m_store = step_store(s_store, b_store)
    s_live, m_live = step_live(s_live, b_live)
    np.testing.assert_allclose(float(m_store["loss"]), float(m_live["loss"]), atol=1e-5)


def test_changed_model_or_data_invalidates_with_clear_message(tmp_path):
  records = _records(12)
  _, fp, _, build = _build(tmp_path / "s", records)
  build()
  other_model = dict(fp, model=rs.model_fingerprint(nnx.split(Decoder(CFG, rngs=nnx.Rngs(8)), nnx.Param)[1]))
  with pytest.raises(rs.StaleReferenceError, match="another model"):
    rs.ReferenceStore.open(str(tmp_path / "s"), other_model)
  other_data = dict(fp, data=rs.data_fingerprint(_records(12, seed=1), max_length=SEQ))
  with pytest.raises(rs.StaleReferenceError, match="another data"):
    rs.ReferenceStore.open(str(tmp_path / "s"), other_data)
  assert rs.data_fingerprint(records, max_length=SEQ) != rs.data_fingerprint(records, max_length=SEQ - 1)


def test_data_fingerprint_sees_every_token_of_array_records():
  a = np.arange(3000)
  b = a.copy()
  b[1500] = 7  # numpy's str() of a long array elides the middle
  assert rs.data_fingerprint([{"input_ids": a}]) != rs.data_fingerprint([{"input_ids": b}])
  assert rs.data_fingerprint([{"input_ids": a}]) == rs.data_fingerprint([{"input_ids": a.tolist()}])

