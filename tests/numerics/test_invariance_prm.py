"""Masking invariances of implicit-PRM step scores (`pragjax.methods.prm.implicit`): the scoring pass
(`make_scorer`: lean policy and reference log-probs -> token rewards -> step rewards -> solution scores)
gives each solution alone what it gives in a batch, any padding offset (left = right) gives the same,
padding steps never count, truncation keeps a prefix of whole steps with unchanged scores (a step cut
by `max_length` is dropped and counted, never scored on its prefix), and the scorer never
materialises `[B, T, V]` logits."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pragjax.methods.prm import implicit
from pragjax.methods.prm import steps as steps_lib
from pragjax.models import Decoder, ModelConfig
from pragjax.toyworld import arithmetic

TOK = arithmetic.tokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)
SEQ, K, N, BETA = 128, 8, 4, 0.5
ATOL = 5e-5  # step rewards are differences of float32 cumulative sums of ~70 log-ratios
SETTINGS = hypothesis.settings(max_examples=8, deadline=None, derandomize=True, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))
STEP_KEYS = ("single", "accumulative")
SCORE_KEYS = tuple(f"{m}_{h}" for m in implicit.MODES for h in implicit.AGGREGATIONS) + ("outcome",)


@functools.cache
def _setup():
  graphdef, params = nnx.split(Decoder(CFG, rngs=nnx.Rngs(0)), nnx.Param)
  _, ref_params = nnx.split(Decoder(CFG, rngs=nnx.Rngs(1)), nnx.Param)
  return implicit.make_scorer(graphdef, BETA), params, ref_params


@functools.cache
def _solutions():
  problems = arithmetic.training_problems(np.random.default_rng(5), N)
  return [(p.prompt, p.solution) for p in problems]


def _encode(prompt, response, max_length=None):
  return steps_lib.encode_solution(TOK, prompt, response, steps_lib.split_response(response, arithmetic.STEP_SEPARATOR),
                                   max_length=max_length)


def _score(batch) -> dict:
  scorer, params, ref_params = _setup()
  out = scorer(params, ref_params, {k: jnp.asarray(v) for k, v in batch.items()})
  return {k: np.asarray(v) for k, v in out.items()}


def _collate(encs):
  return steps_lib.collate_solutions(encs, TOK.pad_token_id, seq_len=SEQ, num_steps=K)


def _assert_same(a: dict, b: dict, rows_a=slice(None), rows_b=slice(None)):
  for k in STEP_KEYS + SCORE_KEYS:
    np.testing.assert_allclose(a[k][rows_a], b[k][rows_b], atol=ATOL, rtol=0, err_msg=k)


def test_batch_equals_alone():
  encs = [_encode(*s) for s in _solutions()]
  assert len({len(e.input_ids) for e in encs}) > 1 and all(len(e.step_end) > 1 for e in encs)
  batch = _score(_collate(encs))
  for i, e in enumerate(encs):
    _assert_same(batch, _score(_collate([e])), rows_a=slice(i, i + 1))
  assert np.all(np.abs(batch["single"][batch["single"] != 0]) > 0)
  assert np.all(np.abs(batch["outcome"]) > 1e-3)  # the two models differ on every solution


@SETTINGS
@hypothesis.given(data=st.data())
def test_any_padding_offset_gives_the_same_step_scores(data):
  """Right padding (collate_solutions) moved to the left, or anywhere between, per row; step ends move along."""
  batch = _collate([_encode(*s) for s in _solutions()])
  lengths = batch["attention_mask"].sum(1)
  shifted = dict(batch)
  offsets = [data.draw(st.integers(0, int(SEQ - n))) for n in lengths]
  hypothesis.note(f"offsets {offsets}")
  for k in ("input_ids", "attention_mask", "response_mask"):
    shifted[k] = np.stack([np.roll(row, o) for row, o in zip(batch[k], offsets)])
  shifted["step_end"] = batch["step_end"] + np.asarray(offsets)[:, None] * batch["step_mask"]
  _assert_same(_score(shifted), _score(batch))


@SETTINGS
@hypothesis.given(data=st.data())
def test_padding_steps_never_count(data):
  """Pure functions: padding steps (step_mask 0) may hold any index and any order; valid steps' rewards and
  every aggregate are those of the valid steps alone."""
  t, k = 24, 6
  r = np.asarray(data.draw(st.lists(st.floats(-3, 3, width=32), min_size=t, max_size=t)), np.float32)[None]
  ends = sorted(data.draw(st.lists(st.integers(0, t - 1), min_size=1, max_size=k, unique=True)))
  junk = data.draw(st.lists(st.integers(0, t - 1), min_size=k - len(ends), max_size=k - len(ends)))
  slots = data.draw(st.permutations(range(k)))  # where the valid steps sit among the padding ones
  valid_slots = sorted(slots[:len(ends)])
  step_end, step_mask = np.zeros((1, k), np.int32), np.zeros((1, k), bool)
  step_end[0, valid_slots], step_mask[0, valid_slots] = ends, True
  step_end[0, sorted(slots[len(ends):])] = junk
  alone_end, alone_mask = np.asarray([ends], np.int32), np.ones((1, len(ends)), bool)
  for mode in implicit.MODES:
    got = implicit.step_rewards(r, step_end, step_mask, mode)
    want = implicit.step_rewards(r, alone_end, alone_mask, mode)
    np.testing.assert_allclose(np.asarray(got)[0, valid_slots], np.asarray(want)[0], atol=1e-5)
    assert np.all(np.asarray(got)[~step_mask] == 0)
    for how in implicit.AGGREGATIONS:
      np.testing.assert_allclose(implicit.aggregate(got, step_mask, how), implicit.aggregate(want, alone_mask, how),
                                 atol=1e-5, err_msg=f"{mode} {how}")


@SETTINGS
@hypothesis.given(data=st.data())
def test_truncation_keeps_whole_steps_with_their_scores(data):
  """Cut at any `max_length`: the kept steps are a prefix of the steps (so step labels keep their indices),
  each kept step is whole (its last token is inside), their rewards equal the untruncated ones, and the cut
  steps are counted (`num_steps - len(step_end)`), never scored on a prefix."""
  prompt, response = _solutions()[data.draw(st.integers(0, N - 1))]
  full = _encode(prompt, response)
  n_prompt = int((full.response_mask == 0).sum())
  cut = data.draw(st.integers(n_prompt, len(full.input_ids)))
  hypothesis.note(f"max_length {cut} of {len(full.input_ids)}, step ends {full.step_end.tolist()}")
  enc = _encode(prompt, response, max_length=cut)
  kept = len(enc.step_end)
  np.testing.assert_array_equal(enc.step_end, full.step_end[:kept])
  assert kept == int((full.step_end < cut).sum()) and enc.num_steps == len(full.step_end)
  assert enc.num_steps - kept == int((full.step_end >= cut).sum())  # the cut steps, reported
  np.testing.assert_array_equal(enc.input_ids, full.input_ids[:cut])
  got, want = _score(_collate([enc])), _score(_collate([full]))
  for mode in STEP_KEYS:
    np.testing.assert_allclose(got[mode][0, :kept], want[mode][0, :kept], atol=ATOL, rtol=0)
    assert np.all(got[mode][0, kept:] == 0)


def _max_vocab_intermediate(jaxpr, vocab: int) -> int:
  """Largest number of elements of any value with a trailing vocab axis in `jaxpr` (sub-jaxprs included)."""
  best = 0
  for eqn in jaxpr.eqns:
    for v in eqn.outvars:
      shape = getattr(v.aval, "shape", ())
      if shape and shape[-1] == vocab:
        best = max(best, int(np.prod(shape)))
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          best = max(best, _max_vocab_intermediate(inner, vocab))
  return best


def test_scorer_never_materialises_full_logits():
  """The scoring pass holds at most one chunk of logits (`[B, chunk, V]`), not `[B, T, V]`."""
  scorer, params, ref_params = _setup()
  b, t = 2, 512
  batch = {k: jnp.zeros((b, t), jnp.int32) for k in ("input_ids", "attention_mask", "response_mask")}
  batch.update(step_end=jnp.zeros((b, K), jnp.int32), step_mask=jnp.zeros((b, K), jnp.int32))
  jaxpr = jax.make_jaxpr(scorer)(params, ref_params, batch).jaxpr
  biggest = _max_vocab_intermediate(jaxpr, CFG.vocab_size)
  assert 0 < biggest <= b * 128 * CFG.vocab_size < b * (t - 1) * CFG.vocab_size
