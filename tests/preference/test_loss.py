"""The DPO loss builder on a tiny model against numpy from the model's full logits, and the reference pass."""

import jax
import numpy as np
import pytest
from flax import nnx

from pragjax.data.groups import GroupIterator
from pragjax.methods.preference import data as pref_data
from pragjax.methods.preference import loss as pref_loss
from pragjax.methods.preference import toy
from pragjax.models import Decoder, ModelConfig
from pragjax.toyworld import arithmetic


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _model(tok, seed):
  cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, eos_token_id=(tok.eos_token_id,),
                    pad_token_id=tok.pad_token_id)
  return Decoder(cfg, rngs=nnx.Rngs(seed))


def _np_sequence_logprobs(model, batch, reduction):
  """log p(response) from the full logits: numpy log-softmax, gather, sum (or mean) over loss_mask targets."""
  b, g, t = batch["input_ids"].shape
  ids = batch["input_ids"].reshape(b * g, t)
  logits = np.asarray(model(ids, batch["attention_mask"].reshape(b * g, t)).logits, np.float64)
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  out = np.zeros(b * g)
  mask = batch["loss_mask"].reshape(b * g, t)
  for r in range(b * g):
    lp = [logits[r, k - 1, ids[r, k]] - logz[r, k - 1] for k in range(1, t) if mask[r, k]]
    out[r] = sum(lp) if reduction == "sum" else np.mean(lp)
  return out.reshape(b, g)


@pytest.fixture(scope="module")
def setup():
  tok = arithmetic.tokenizer()
  src = pref_data.PairSource(toy.training_pairs(0, 12))
  it = GroupIterator(range(len(src)), pref_data.pair_group(src, tok, max_length=96), global_batch_size=6,
                     group_size=2, pad_id=tok.pad_token_id, shuffle=False)
  return tok, next(it), _model(tok, 0), _model(tok, 1)


@pytest.mark.parametrize("name, reduction", [("dpo", "sum"), ("ipo", "mean"), ("robust", "sum"),
                                             ("sppo_hard", "sum"), ("hinge", "mean")])
def test_loss_builder_equals_numpy(setup, name, reduction):
  tok, batch, policy, reference = setup
  assert batch["input_ids"].shape[:2] == (6, 2) and batch["slot_mask"].all()
  beta, eps = 0.5, (0.2 if name == "robust" else 0.0)
  gdef, ref_params = nnx.split(reference, nnx.Param)
  ref = pref_loss.make_ref_fn(gdef, reduction=reduction)(ref_params, batch)[pref_loss.REF_KEY]
  np_ref = _np_sequence_logprobs(reference, batch, reduction)
  np.testing.assert_allclose(np.asarray(ref), np_ref, rtol=1e-5, atol=1e-5)
  gdef, params = nnx.split(policy, nnx.Param)
  fn = pref_loss.make_dpo_loss_fn(gdef, loss=name, beta=beta, label_smoothing=eps, reduction=reduction)
  value, metrics = jax.jit(fn)(params, {**batch, pref_loss.REF_KEY: ref}, jax.random.PRNGKey(0))
  lp = _np_sequence_logprobs(policy, batch, reduction)
  d = lp - np_ref
  h = d[:, 0] - d[:, 1]
  want = {
      "dpo": lambda: -_log_sigmoid(beta * h),
      "ipo": lambda: (h - 1 / (2 * beta)) ** 2,
      "robust": lambda: ((1 - eps) * -_log_sigmoid(beta * h) - eps * -_log_sigmoid(-beta * h)) / (1 - 2 * eps),
      "sppo_hard": lambda: (d[:, 0] - 1 / (2 * beta)) ** 2 + (d[:, 1] + 1 / (2 * beta)) ** 2,
      "hinge": lambda: np.maximum(0, 1 - beta * h),
  }[name]().mean()
  np.testing.assert_allclose(float(value), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(metrics["reward_margin"]), np.mean(beta * h), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(metrics["logp_chosen"]), lp[:, 0].mean(), rtol=1e-5)
  assert float(metrics["reward_accuracy"]) == pytest.approx(np.mean(h > 0))
  assert float(metrics["loss_weight"]) == 6


def test_padding_pairs_do_not_count_and_ties_are_half(setup):
  tok, batch, policy, _ = setup
  gdef, params = nnx.split(policy, nnx.Param)
  ref = pref_loss.make_ref_fn(gdef)(params, batch)[pref_loss.REF_KEY]
  fn = pref_loss.make_dpo_loss_fn(gdef, beta=0.1)
  # The policy is its own reference: every log-ratio is 0, the loss log 2, every pair a tie.
  value, metrics = fn(params, {**batch, pref_loss.REF_KEY: ref}, None)
  assert float(value) == pytest.approx(np.log(2), abs=1e-6)
  assert float(metrics["reward_accuracy"]) == 0.5
  # A pair with an empty slot is left out of the loss and of loss_weight.
  shifted = {**batch, pref_loss.REF_KEY: np.asarray(ref) - np.array([[1.0, 0.0]] + [[0.0, 0.0]] * 5)}
  slot = batch["slot_mask"].copy()
  slot[0, 1] = 0
  value, metrics = fn(params, {**shifted, "slot_mask": slot}, None)
  assert float(value) == pytest.approx(np.log(2), abs=1e-6) and float(metrics["loss_weight"]) == 5
  value, _ = fn(params, shifted, None)
  assert float(value) == pytest.approx((5 * np.log(2) - _log_sigmoid(0.1)) / 6, abs=1e-6)


def test_bad_arguments():
  with pytest.raises(ValueError, match="dpo.loss"):
    pref_loss.make_dpo_loss_fn(None, loss="orpo")
  with pytest.raises(ValueError, match="label_smoothing"):
    pref_loss.make_dpo_loss_fn(None, loss="dpo", label_smoothing=0.1)
  with pytest.raises(ValueError, match="reduction"):
    pref_loss.make_dpo_loss_fn(None, reduction="max")
