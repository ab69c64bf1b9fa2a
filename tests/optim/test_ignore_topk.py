"""ignore_topk: exact counts, bit-identical kept entries, ties, global scope,
sharded == unsharded, prune_delta, approx error bound, inside the train step."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pragjax import sharding
from pragjax.methods.sft.loss import make_sft_loss_fn
from pragjax.models import Decoder, ModelConfig
from pragjax.optim import ignore_topk, make_optimizer, num_pruned, prune_delta, prune_topk, topk_masks
from pragjax.optim.ignore_topk import approx_relative_error
from pragjax.train import init_train_state, make_train_step


def ref_masks(leaves, fraction, scope="tensor"):
  """numpy transcription of the rule: the first k of the stable descending
  sort of |u| (float32), per leaf or over the concatenated leaves."""
  mags = [np.abs(np.asarray(x, np.float32)).ravel() for x in leaves]

  def top(a):
    m = np.zeros(a.size, bool)
    m[np.argsort(-a, kind="stable")[:num_pruned(fraction, a.size)]] = True
    return m

  if scope == "tensor":
    flat = [top(a) for a in mags]
  else:
    allm = top(np.concatenate(mags))
    flat = np.split(allm, np.cumsum([a.size for a in mags])[:-1])
  return [m.reshape(np.shape(x)) for m, x in zip(flat, leaves)]


def _bits(x):
  x = np.asarray(x)
  return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _tree(seed=0):
  rng = np.random.RandomState(seed)
  return {
      "w": rng.randn(48, 40).astype(np.float32),
      "w2": rng.randn(48, 40).astype(np.float32) * 3,  # same shape: stacked and vmapped with "w"
      "b": rng.randn(37).astype(np.float32) * 1e-3,
      "e": jnp.asarray(rng.randn(3, 5, 7), jnp.bfloat16),
      "s": np.float32(2.5),
  }


@pytest.mark.parametrize("fraction", [0.08, 0.5, 0.97])
@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_exact_zeroes_the_numpy_reference_set_and_keeps_the_rest_bit_identical(fraction, scope):
  tree = _tree()
  out = jax.jit(lambda t: prune_topk(t, fraction, scope=scope))(tree)
  leaves, outs = jax.tree.leaves(tree), jax.tree.leaves(out)
  refs = ref_masks(leaves, fraction, scope)
  for x, y, m in zip(leaves, outs, refs):
    y = np.asarray(y)
    assert y.dtype == np.asarray(x).dtype and y.shape == np.shape(x)
    np.testing.assert_array_equal(_bits(y)[~m], _bits(x)[~m])  # kept: bit-identical
    assert (y[m] == 0).all()
  pruned = sum(int(m.sum()) for m in refs)
  if scope == "tensor":
    assert [int(m.sum()) for m in refs] == [num_pruned(fraction, np.size(x)) for x in leaves]
  else:
    assert pruned == num_pruned(fraction, sum(np.size(x) for x in leaves))
  got = jax.tree.leaves(jax.jit(lambda t: topk_masks(t, fraction, scope=scope))(tree))
  for g, m in zip(got, refs):
    np.testing.assert_array_equal(np.asarray(g), m)


def test_fraction_zero_is_a_no_op():
  tree = _tree()
  tx = ignore_topk(0.0)
  out, _ = tx.update(tree, tx.init(tree))
  for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(out)):
    np.testing.assert_array_equal(_bits(y), _bits(x))
  masks = topk_masks(tree, 0.0, scope="global")
  assert not any(bool(np.asarray(m).any()) for m in jax.tree.leaves(masks))


def test_small_fraction_rounds_to_zero_entries():
  x = np.arange(1.0, 11.0, dtype=np.float32)  # round(0.04 * 10) = 0; round(0.05 * 10) = 0 (half to even)
  for f in (0.04, 0.05):
    np.testing.assert_array_equal(np.asarray(prune_topk({"x": x}, f)["x"]), x)
  assert int((np.asarray(prune_topk({"x": x}, 0.15)["x"]) == 0).sum()) == 2  # round(1.5) = 2


def test_ties_are_broken_by_leaf_order_then_flat_index():
  # 8 of 20 entries share the threshold magnitude 1 (with both signs).
  np.testing.assert_array_equal(np.asarray(topk_masks(x := np.array([[0, 1, -1, 3, 1]], np.float32), 0.2)),
                                [[0, 0, 0, 1, 0]])
  x = np.array([[0, 1, -1, 3, 1], [1, 0, -1, 2, 0], [1, 1, 0, 0, 5], [0, -1, 0, 0, 0]], np.float32)
  m = np.asarray(topk_masks(x, 0.3))  # k = 6: 5, 3, 2, then the first 3 tied 1s in row-major order
  expected = np.zeros_like(x, bool)
  expected[2, 4] = expected[0, 3] = expected[1, 3] = True
  expected[0, 1] = expected[0, 2] = expected[0, 4] = True
  np.testing.assert_array_equal(m, expected)
  # global: tied entries of the first leaf (tree order) go before the second's
  tree = {"a": np.ones(6, np.float32), "b": np.ones((2, 3), np.float32)}
  g = topk_masks(tree, 0.75, scope="global")  # k = 9 of 12: all of "a", first 3 of "b"
  np.testing.assert_array_equal(np.asarray(g["a"]), np.ones(6, bool))
  np.testing.assert_array_equal(np.asarray(g["b"]), np.array([[1, 1, 1], [0, 0, 0]], bool))
  np.testing.assert_array_equal(np.concatenate([np.asarray(v).ravel() for v in jax.tree.leaves(g)]),
                                np.concatenate([r.ravel() for r in ref_masks(jax.tree.leaves(tree), 0.75, "global")]))


def test_all_zero_updates_and_nan_rank_first():
  z = np.zeros((9, 11), np.float32)
  m = np.asarray(topk_masks(z, 0.08))
  assert m.sum() == 8 and m.ravel()[:8].all()  # all tied: the first 8 by index
  x = np.linspace(-1, 1, 50).astype(np.float32)
  x[17] = np.nan
  y = np.asarray(prune_topk(x, 0.02))  # k = 1: the NaN
  assert y[17] == 0 and np.isfinite(y).all()


def test_argument_errors_name_the_argument():
  for bad in (1.0, -0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="fraction"):
      ignore_topk(bad)
  with pytest.raises(ValueError, match="scope"):
    ignore_topk(0.1, scope="layer")
  with pytest.raises(ValueError, match="mode"):
    ignore_topk(0.1, mode="fast")
  with pytest.raises(TypeError, match="floating"):
    topk_masks(np.arange(10, dtype=np.int32), 0.1)
  with pytest.raises(ValueError, match="shape"):
    prune_delta({"a": np.zeros(3)}, {"a": np.zeros(4)}, 0.1)


def _max_all_gather(hlo: str) -> int:
  sizes = [0]
  for line in hlo.splitlines():
    m = re.search(r"= \w+\[([\d,]*)\]\S* all-gather\(", line)
    if m:
      sizes.append(math.prod(int(d) for d in m.group(1).split(",") if d))
  return max(sizes)


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_sharded_equals_unsharded_without_gathering_tensors(mode):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  rng = np.random.RandomState(3)
  tree = {"w": rng.randn(256, 192).astype(np.float32), "v": rng.randn(64, 96).astype(np.float32),
          "u": rng.randn(256, 192).astype(np.float32) ** 3}
  tree["w"][:40, :3] = 0.25  # a tied block across shards
  kw = dict(scope="tensor", mode=mode, sample_size=1024)
  single = jax.jit(lambda t: topk_masks(t, 0.08, **kw))(tree)
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  shard = {"w": NamedSharding(mesh, P("fsdp", "tensor")), "v": NamedSharding(mesh, P(None, "tensor")),
           "u": NamedSharding(mesh, P("fsdp", "tensor"))}
  with jax.set_mesh(mesh):
    placed = jax.device_put(tree, shard)
    fn = jax.jit(lambda t: topk_masks(t, 0.08, **kw), in_shardings=(shard,))
    multi = fn(placed)
    hlo = fn.lower(placed).compile().as_text()
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _max_all_gather(hlo) <= 4 * 1024  # only samples move, never a whole tensor
  for scope in ("global",):
    kw["scope"] = scope
    s = jax.jit(lambda t: prune_topk(t, 0.08, **kw))(tree)
    with jax.set_mesh(mesh):
      mm = jax.jit(lambda t: prune_topk(t, 0.08, **kw), in_shardings=(shard,))(placed)
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(mm)):
      np.testing.assert_array_equal(_bits(a), _bits(b))


def test_exact_with_sample_bracket_matches_reference():
  # Large enough that the sampled starting bracket is used (size > 4 * sample_size).
  rng = np.random.RandomState(5)
  x = (rng.standard_t(3, (300, 401)) * 1e-4).astype(np.float32)
  for f in (0.08, 0.001, 0.9):
    m = np.asarray(jax.jit(lambda x: topk_masks(x, f, sample_size=2048))(x))
    np.testing.assert_array_equal(m, ref_masks([x], f)[0])


def test_global_scope_counts_beyond_int32_are_exact():
  from pragjax.optim.ignore_topk import _Count

  a, b = 3 * 2**31 + 12345, 2**31 - 7
  got = _Count.const(a) - _Count.const(b) + _Count.of(jnp.int32(2**31 - 1))
  v = got.norm()
  assert int(v.hi) * 2**16 + int(v.lo) == a - b + 2**31 - 1
  assert bool(_Count.const(a).ge(_Count.const(a))) and not bool(_Count.const(b).ge(_Count.const(a)))
  assert int((_Count.const(a) - _Count.const(b)).clip_int32(jnp.int32(100))) == 100
  assert int((_Count.const(b) - _Count.const(a)).clip_int32(jnp.int32(100))) == 0
  assert int((_Count.const(b) - _Count.const(b - 42)).clip_int32(jnp.int32(100))) == 42


def test_approx_mode_error_within_documented_bound():
  rng = np.random.RandomState(7)
  x = (rng.randn(500, 600) * np.exp(rng.randn(500, 1))).astype(np.float32)  # rows of different scales
  sample = 8192
  for f in (0.08, 0.04):
    k = num_pruned(f, x.size)
    exact = np.asarray(topk_masks(x, f))
    approx = np.asarray(jax.jit(lambda x: topk_masks(x, f, mode="approx", sample_size=sample))(x))
    n = int(approx.sum())
    assert abs(n - k) / k <= 4 * approx_relative_error(f, sample)
    # both are top sets of |x|: one contains the other
    inter = int((exact & approx).sum())
    assert inter == min(n, k)
  # at most sample_size entries: approx is exact
  small = x[:50, :100]
  np.testing.assert_array_equal(np.asarray(topk_masks(small, 0.08, mode="approx", sample_size=5000)),
                                ref_masks([small], 0.08)[0])


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_prune_delta_equals_numpy(scope):
  before = _tree(1)
  after = jax.tree.map(lambda b, d: (np.asarray(b, np.float32) + d).astype(np.asarray(b).dtype), before,
                       jax.tree.map(lambda b: np.asarray(np.random.RandomState(2).randn(*np.shape(b)), np.float32),
                                    before))
  out = prune_delta(before, after, 0.08, scope=scope)
  lb, la, lo = jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(out)
  deltas = [np.asarray(a, np.float32) - np.asarray(b, np.float32) for b, a in zip(lb, la)]
  for b, a, o, m in zip(lb, la, lo, ref_masks(deltas, 0.08, scope)):
    np.testing.assert_array_equal(_bits(o)[m], _bits(np.asarray(b))[m])
    np.testing.assert_array_equal(_bits(o)[~m], _bits(np.asarray(a))[~m])


def test_in_the_train_step_changes_exactly_the_expected_entries():
  cfg = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  rng = np.random.RandomState(0)
  ids = rng.randint(3, 64, (4, 10)).astype(np.int32)
  batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "loss_mask": np.ones_like(ids)}
  # sgd with lr 1: the update is exactly -grad, so the pruned set is the top-k of |grad|.
  tx = make_optimizer({"name": "sgd", "lr": 1.0, "ignore_topk": 0.1})
  graphdef, state = init_train_state(model, tx, seed=1)
  loss_fn = make_sft_loss_fn(graphdef)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0))[0]))(state.params)
  plain = make_train_step(loss_fn, optax.sgd(1.0), donate=False)
  pruned = make_train_step(loss_fn, tx, donate=False)
  s_plain, _ = plain(state.replace(opt_state=optax.sgd(1.0).init(state.params)), batch)
  s_pruned, _ = pruned(state, batch)
  old, new0, new1 = (jax.tree.leaves(s.params) for s in (state, s_plain, s_pruned))
  g = jax.tree.leaves(grads)
  for o, a, b, gm in zip(old, new0, new1, ref_masks(g, 0.1)):
    o, a, b = np.asarray(o), np.asarray(a), np.asarray(b)
    assert gm.sum() == num_pruned(0.1, o.size)
    np.testing.assert_array_equal(b[gm], o[gm])  # pruned: unchanged
    np.testing.assert_array_equal(b[~gm], a[~gm])  # kept: exactly the plain step
