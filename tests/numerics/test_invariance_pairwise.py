"""Masking invariances of the outcome / pairwise losses (`pragjax.objectives.preference`) through the full
scoring pipeline of `pragjax.methods.prm` (tokenize_group -> collate_groups -> lean sequence log-probs of policy and
reference -> ce / dpo / nca / kto): a batch gives each example's log-ratios alone, any padding offset (left,
right, in between) gives the same, packed rows give the padded values, padding rows never count, and a
response cut by truncation is dropped and counted, never trained on under its label."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax.data.collate import first_fit, pack_examples
from pragjax.data.groups import GroupIterator
from pragjax.methods.prm import data as prm_data
from pragjax.methods.prm import training
from pragjax.models import Decoder, ModelConfig
from pragjax.models.logprobs import batch_token_logprobs
from pragjax.objectives import preference
from pragjax.toyworld import arithmetic

TOK = arithmetic.tokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)
SEQ, B, BETA = 96, 4, 0.5
# Sequence log-ratios are differences of two float32 sums of ~50 log-probs (|sum| ~ 150): 1 ulp of each is
# ~1e-5, so they agree to 5e-5; the per-token values agree to 1e-5 (tests/numerics/test_masking.py).
SEQ_ATOL = 5e-5
SETTINGS = hypothesis.settings(max_examples=6, deadline=None, derandomize=True, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))


@functools.cache
def _models():
  graphdef, params = nnx.split(Decoder(CFG, rngs=nnx.Rngs(0)), nnx.Param)
  _, ref_params = nnx.split(Decoder(CFG, rngs=nnx.Rngs(1)), nnx.Param)
  return graphdef, params, ref_params


@functools.cache
def _records():
  problems = arithmetic.training_problems(np.random.default_rng(11), 2 * B)
  recs = []
  for i, p in enumerate(problems[:B]):
    other = problems[B + i].solution
    recs.append({"prompt": p.prompt, "chosen": p.solution, "rejected": other, "response": p.solution,
                 "kl_response": other, "label": float(i % 2)})
  return recs


@functools.cache
def _groups(loss: str):
  return [prm_data.tokenize_group(r, TOK, loss=loss, max_length=SEQ) for r in _records()]


@functools.cache
def _log_ratio_fn():
  graphdef, _, _ = _models()

  @jax.jit
  def fn(params, ref_params, batch):
    return training.sequence_logprobs(graphdef, params, batch) - training.sequence_logprobs(graphdef, ref_params, batch)

  return fn


@functools.cache
def _loss_fn(loss: str):
  graphdef, _, _ = _models()
  loss_fn = training.make_prm_loss_fn(graphdef, loss, BETA)
  ref_fn = training.make_ref_fn(graphdef)
  return jax.jit(lambda p, rp, b: loss_fn(p, {**b, **ref_fn(rp, b)}, None)[0])


def _d(batch) -> np.ndarray:
  _, params, ref_params = _models()
  keys = ("input_ids", "attention_mask", "loss_mask")
  return np.asarray(_log_ratio_fn()(params, ref_params, {k: jnp.asarray(batch[k]) for k in keys}))


def _loss(loss: str, batch) -> float:
  _, params, ref_params = _models()
  return float(_loss_fn(loss)(params, ref_params, {k: jnp.asarray(v) for k, v in batch.items()}))


def _direct_loss(loss: str, d: np.ndarray, labels: np.ndarray) -> float:
  """The pure loss on log-ratios computed elsewhere (each example alone)."""
  if loss == "ce":
    return float(preference.ce_loss(d[:, 0], labels, BETA))
  if loss in ("dpo", "nca"):
    return float(getattr(preference, f"{loss}_loss")(d[:, 0], d[:, 1], BETA))
  return float(preference.kto_loss(d[:, 0], labels, BETA, preference.kto_kl_baseline(d[:, 1])))


def _shift(batch, offsets):
  """Moves row (b, g)'s tokens `offsets[b][g]` slots to the right (right padding -> any padding offset)."""
  out = dict(batch)
  b, g, _ = batch["input_ids"].shape
  for k in ("input_ids", "attention_mask", "loss_mask"):
    out[k] = np.stack([np.stack([np.roll(batch[k][i, j], offsets[i][j]) for j in range(g)]) for i in range(b)])
  return out


def _alone(loss: str) -> np.ndarray:
  return np.concatenate([_d(prm_data.collate_groups([g], SEQ, TOK.pad_token_id)) for g in _groups(loss)])


@pytest.mark.parametrize("loss", prm_data.LOSSES)
def test_batch_equals_alone_and_loss_equals_direct(loss):
  groups = _groups(loss)
  assert all(g is not None for g in groups)
  batch = prm_data.collate_groups(groups, SEQ, TOK.pad_token_id)
  alone = _alone(loss)
  np.testing.assert_allclose(_d(batch), alone, atol=SEQ_ATOL, rtol=0)
  assert np.all(np.abs(alone) > 1e-3)  # the two models really differ on every sequence
  np.testing.assert_allclose(_loss(loss, batch), _direct_loss(loss, alone, batch["label"]), atol=BETA * SEQ_ATOL, rtol=0)


@pytest.mark.parametrize("loss", prm_data.LOSSES)
@SETTINGS
@hypothesis.given(data=st.data())
def test_any_padding_offset_gives_the_same_log_ratios_and_loss(loss, data):
  """Left padding = right padding = any mix, per row (shapes fixed: no recompilation across examples)."""
  batch = prm_data.collate_groups(_groups(loss), SEQ, TOK.pad_token_id)
  b, g, t = batch["input_ids"].shape
  lengths = batch["attention_mask"].sum(-1)
  offsets = [[data.draw(st.sampled_from([0, int(t - lengths[i, j]), int(t - lengths[i, j]) // 2]))
              for j in range(g)] for i in range(b)]
  shifted = _shift(batch, offsets)
  np.testing.assert_allclose(_d(shifted), _d(batch), atol=SEQ_ATOL, rtol=0)
  np.testing.assert_allclose(_loss(loss, shifted), _loss(loss, batch), atol=BETA * SEQ_ATOL, rtol=0)


def test_packed_sequences_equal_padded():
  """Pairs' sequences packed into rows (segment ids, restarted positions) give the padded log-ratios and loss."""
  graphdef, params, ref_params = _models()
  groups = _groups("dpo")
  seqs = [{"input_ids": ids, "loss_mask": mask} for grp in groups for ids, mask in grp["sequences"]]
  packed = pack_examples(seqs, 2 * SEQ, TOK.pad_token_id)
  assert packed["input_ids"].shape[0] < len(seqs)  # really packed
  score = jax.jit(lambda p, b: batch_token_logprobs(graphdef, p, b))
  lp = {k: np.asarray(score(p, packed)) for k, p in (("policy", params), ("ref", ref_params))}
  d = np.zeros(len(seqs))
  for r, members in enumerate(first_fit([len(s["input_ids"]) for s in seqs], 2 * SEQ)):
    for segment, i in enumerate(members, start=1):
      targets = (packed["segment_ids"][r, 1:] == segment) & (packed["loss_mask"][r, 1:] == 1)
      d[i] = np.sum((lp["policy"][r] - lp["ref"][r]) * targets)
  padded = _d(prm_data.collate_groups(groups, SEQ, TOK.pad_token_id))
  np.testing.assert_allclose(d.reshape(padded.shape), padded, atol=SEQ_ATOL, rtol=0)
  np.testing.assert_allclose(float(preference.dpo_loss(d[0::2], d[1::2], BETA)),
                             _loss("dpo", prm_data.collate_groups(groups, SEQ, TOK.pad_token_id)), atol=BETA * SEQ_ATOL)


@SETTINGS
@hypothesis.given(data=st.data())
def test_padding_rows_never_count(data):
  """The losses' `mask`: masked rows (a fixed-size batch's padding) change nothing, whatever they hold."""
  n, pad = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
  floats = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=n + pad, max_size=n + pad)
  dw, dl, lab = (np.asarray(data.draw(floats), np.float32) for _ in range(3))
  lab = (lab > 0).astype(np.float32)
  mask = np.r_[np.ones(n), np.zeros(pad)].astype(np.float32)
  losses = {
      "ce": lambda s, m: preference.ce_loss(dw[s], lab[s], BETA, m),
      "dpo": lambda s, m: preference.dpo_loss(dw[s], dl[s], BETA, m),
      "nca": lambda s, m: preference.nca_loss(dw[s], dl[s], BETA, m),
      "kto": lambda s, m: preference.kto_loss(dw[s], lab[s], BETA, preference.kto_kl_baseline(dl[s], m), m),
  }
  for name, f in losses.items():
    np.testing.assert_allclose(float(f(slice(None), mask)), float(f(slice(0, n), None)), rtol=1e-5, atol=1e-6,
                               err_msg=name)


@pytest.mark.parametrize("loss", prm_data.LOSSES)
def test_truncated_response_is_dropped_and_counted(loss):
  """A labelled response cut by `max_length` would keep its label on a prefix: the group is dropped, the
  iterator counts it (`num_dropped`, logged as `dropped_examples`), and no batch holds it."""
  recs = _records()
  labelled = 1 if loss in ("ce", "kto") else 2
  cut = min(max(len(ids) for ids, _ in g["sequences"][:labelled]) for g in _groups(loss))  # the shortest group fits
  kept = [prm_data.tokenize_group(r, TOK, loss=loss, max_length=cut) for r in recs]
  assert any(k is None for k in kept) and any(k is not None for k in kept)
  for k, full in zip(kept, _groups(loss)):
    if k is not None:  # a kept group's labelled sequences are exactly the untruncated ones
      for (a, ma), (b, mb) in zip(k["sequences"][:labelled], full["sequences"][:labelled]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ma, mb)
  fn = functools.partial(prm_data.tokenize_group, tokenizer=TOK, loss=loss, max_length=cut)
  it = GroupIterator(recs, lambda r: prm_data.group_sequences(fn(r)), global_batch_size=1,
                     group_size=prm_data.group_size(loss), seq_len=cut, seed=0, pad_id=TOK.pad_token_id, num_epochs=1)
  batches = list(it)
  assert len(batches) == sum(k is not None for k in kept) and it.num_dropped == sum(k is None for k in kept)
  state = it.get_state()
  assert state["num_dropped"] == it.num_dropped
  with pytest.raises(prm_data.DataError, match="every training example was dropped"):
    next(GroupIterator(recs, lambda r: prm_data.group_sequences(fn(r, max_length=8)), global_batch_size=1,
                       group_size=prm_data.group_size(loss), seq_len=8, seed=0, pad_id=TOK.pad_token_id))
