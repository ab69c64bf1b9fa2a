"""The injection protocol: batch surgery, and vmapped runs equal to separate runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.methods.priming import injection
from pragjax.methods.priming import scores as scores
from pragjax.methods.sft.loss import make_sft_loss_fn
from pragjax.optim import make_optimizer
from pragjax.toyworld import knowledge as kw
from pragjax.train import runner
from pragjax.train.state import init_train_state


@pytest.fixture(scope="module")
def setup():
  lm = runner.load_model({"builtin": "knowledge"})
  kb = kw.build_kb(0, 160)
  docs = kw.corpus(kb, np.random.default_rng(1), 200)
  rows = injection.document_rows(lm.tokenizer, docs, 64)
  return lm, rows


def test_document_rows_and_inject(setup):
  lm, rows = setup
  assert set(rows) == set(injection.ROW_KEYS) and rows["input_ids"].shape[1] == 64
  assert rows["segment_ids"].max() > 1  # packed
  batches = injection.background_batches(rows, 3, 4, np.random.default_rng(0))
  assert batches["input_ids"].shape == (3, 4, 64)
  sample = injection.document_rows(lm.tokenizer, ["Kufe loves the colour mauve."], 64, packing=False)
  out = injection.inject(batches, {k: v[0] for k, v in sample.items()}, position=2)
  for k in injection.ROW_KEYS:
    np.testing.assert_array_equal(np.asarray(out[k])[:, 2], np.broadcast_to(sample[k][0], (3, 64)))
    np.testing.assert_array_equal(np.asarray(out[k])[:, [0, 1, 3]], batches[k][:, [0, 1, 3]])


def test_vmapped_runs_equal_separate_runs(setup):
  lm, rows = setup
  tok = lm.tokenizer
  tx = make_optimizer({"name": "adamw", "lr": 1e-3, "clip_norm": 1.0})
  graphdef, state = init_train_state(lm.model, tx)
  loss_fn = make_sft_loss_fn(graphdef)
  key_fn = scores.keyword_logprob_fn(graphdef)
  batches = injection.background_batches(rows, 3, 2, np.random.default_rng(0))
  texts = ["Kufe loves the colour mauve.", "Sabo lives in Timbuktu.", "Pelu works as a falconer."]
  sample_rows = injection.document_rows(tok, texts, 64, packing=False)
  kb = scores.keyword_batch(tok, ["Tarimu loves the colour", "Tarimu lives in", "Tarimu works as a"],
                            ["mauve", "Timbuktu", "falconer"])
  inputs = {k: v[:, None] for k, v in kb.items()}  # one scored row per run
  run = injection.make_injection_runner(loss_fn, tx, lambda start, final, x: key_fn(final, x))
  together = injection.run_chunked(run, state, batches, sample_rows, inputs, chunk=2)  # chunks of 2, one padded
  train = jax.jit(injection.make_train_scan(loss_fn, tx))
  for n in range(3):
    final, metrics = train(state, injection.inject(batches, {k: v[n] for k, v in sample_rows.items()}))
    alone = key_fn(final.params, {k: jnp.asarray(v[n]) for k, v in inputs.items()})
    np.testing.assert_allclose(together[n], np.asarray(alone), rtol=1e-4, atol=1e-3)
    assert metrics["loss"].shape == (3,)
  before = key_fn(state.params, {k: jnp.asarray(v[:, 0]) for k, v in inputs.items()})
  assert np.all(together[:, 0] > np.asarray(before))  # learning "mauve" raises it for Tarimu too
