"""Masking invariances of probe bags (`pragjax.methods.probes.activations`): a statement's bag is the same in a batch
as alone, with left padding as with right padding, and whatever the padding holds; pad tokens never enter a
bag (its rows are exactly the statement's tokens)."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pragjax.methods.probes import activations
from pragjax.models import Decoder, ModelConfig
from pragjax.toyworld import arithmetic

TOK = arithmetic.tokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)
LAYERS = (0, 2)
T = 64
SETTINGS = hypothesis.settings(max_examples=6, deadline=None, derandomize=True, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))


@functools.cache
def _model():
  return Decoder(CFG, rngs=nnx.Rngs(0))


@functools.cache
def _texts():
  problems = arithmetic.training_problems(np.random.default_rng(9), 7)
  return tuple(p.prompt.strip() + " " + p.solution.split("\n")[0] for p in problems)


def _acts(ids, mask) -> np.ndarray:
  """[L, B, T, D] float32 block outputs, the function `collect_bags` runs."""
  graphdef, state = nnx.split(_model())
  return np.asarray(activations.block_outputs(graphdef, state, jnp.asarray(ids), jnp.asarray(mask), LAYERS,
                                              dtype=jnp.float32))


def _padded(token_ids, side: str, fill):
  ids = np.asarray([fill(len(t)) for t in token_ids], np.int32)
  mask = np.zeros((len(token_ids), T), np.int32)
  for r, t in enumerate(token_ids):
    span = slice(T - len(t), T) if side == "left" else slice(0, len(t))
    ids[r, span], mask[r, span] = t, 1
  return ids, mask


def _bags(ids, mask) -> list[np.ndarray]:
  """Per row: [L, n, D] activations at its real tokens (what `BagWriter.write` stores)."""
  acts = _acts(ids, mask)
  return [acts[:, r, np.flatnonzero(mask[r])] for r in range(ids.shape[0])]


def test_store_bags_batch_equal_alone_and_hold_only_statement_tokens(tmp_path):
  texts = list(_texts())
  token_ids = activations.statement_token_ids(TOK, texts)
  batched = activations.collect_bags(_model(), TOK, texts, LAYERS, str(tmp_path / "b4"), batch_size=4)  # 7 = 4 + 3
  alone = activations.collect_bags(_model(), TOK, texts, LAYERS, str(tmp_path / "b1"), batch_size=1)
  np.testing.assert_array_equal(batched.lengths, [len(t) for t in token_ids])  # no pad row in any bag
  np.testing.assert_array_equal(batched.token_ids(), np.concatenate(token_ids))
  assert TOK.pad_token_id not in set(np.concatenate(token_ids).tolist())
  for layer in LAYERS:
    a, ma = batched.bags(layer)
    b, mb = alone.bags(layer)
    np.testing.assert_array_equal(ma, mb)
    # float16 on disk: equal up to one half-precision rounding of float32 values that agree to ~1e-6.
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-3)
    assert np.all(a[~ma] == 0)


@SETTINGS
@hypothesis.given(data=st.data())
def test_left_equals_right_padding_whatever_the_padding_holds(data):
  token_ids = [TOK.encode(t) for t in _texts()]
  junk = data.draw(st.sampled_from(["pad", "random", "eos"]))
  rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
  fills = {"pad": lambda n: np.full(T, TOK.pad_token_id), "eos": lambda n: np.full(T, TOK.eos_token_id),
           "random": lambda n: rng.integers(0, TOK.vocab_size, T)}
  right = _bags(*_padded(token_ids, "right", lambda n: np.full(T, TOK.pad_token_id)))
  other = _bags(*_padded(token_ids, data.draw(st.sampled_from(["left", "right"])), fills[junk]))
  for r, t in enumerate(token_ids):
    alone = _bags(*_padded([t], "right", lambda n: np.full(T, TOK.pad_token_id)))[0]
    assert right[r].shape == (len(LAYERS), len(t), CFG.hidden_size)
    np.testing.assert_allclose(other[r], right[r], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(alone, right[r], atol=1e-5, rtol=1e-5)


def test_writer_stores_only_masked_tokens_of_left_padded_batches(tmp_path):
  """`BagWriter.write` takes the real tokens from the mask, wherever the padding is."""
  token_ids = [TOK.encode(t) for t in _texts()[:3]]
  stores = {}
  for side in ("left", "right"):
    ids, mask = _padded(token_ids, side, lambda n: np.full(T, TOK.pad_token_id))
    w = activations.BagWriter(str(tmp_path / side), LAYERS, [len(t) for t in token_ids], CFG.hidden_size,
                              token_ids=token_ids, dtype=np.float32)
    w.write(range(len(token_ids)), _acts(ids, mask), mask)
    w.close()
    stores[side] = activations.BagStore(str(tmp_path / side))
  for layer in LAYERS:
    np.testing.assert_allclose(stores["left"].layer(layer), stores["right"].layer(layer), atol=1e-5, rtol=1e-5)
