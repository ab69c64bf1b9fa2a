"""Implicit-PRM scoring and the preference losses against direct numpy transcriptions of their equations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.methods.prm import implicit
from pragjax.objectives import preference


def _log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _random_batch(seed, b=5, t=17, k=6):
  """Random log-probs, response masks (padding on both sides) and step ends, with edge cases:
  row 0 one step; row 1 no steps; row 2 an empty step (repeated end); others several steps."""
  rng = np.random.default_rng(seed)
  pol = rng.normal(size=(b, t)).astype(np.float32) - 2
  ref = rng.normal(size=(b, t)).astype(np.float32) - 2
  resp = np.zeros((b, t), np.int32)
  ends = np.zeros((b, k), np.int32)
  smask = np.zeros((b, k), np.int32)
  for i in range(b):
    start, stop = rng.integers(1, 6), rng.integers(10, t + 1)
    resp[i, start:stop] = 1
    n = {0: 1, 1: 0}.get(i, rng.integers(2, k + 1))
    e = np.sort(rng.choice(np.arange(start, stop), size=n, replace=n > stop - start))
    if i == 2 and n >= 2:
      e[1] = e[0]  # an empty step
    ends[i, :n] = e
    ends[i, n:] = rng.integers(0, t, size=k - n)  # padding steps hold garbage
    smask[i, :n] = 1
  return pol, ref, resp, ends, smask


def np_token_rewards(pol, ref, resp, beta):
  out = np.zeros_like(pol, dtype=np.float64)
  for b in range(pol.shape[0]):
    for t in range(pol.shape[1]):
      if resp[b, t]:
        out[b, t] = beta * (float(pol[b, t]) - float(ref[b, t]))
  return out


def np_step_rewards(r, ends, smask, mode):
  out = np.zeros(ends.shape)
  for b in range(r.shape[0]):
    prev_q = 0.0
    for k in range(ends.shape[1]):
      if not smask[b, k]:
        continue
      q = sum(r[b, :ends[b, k] + 1])
      out[b, k] = q if mode == "accumulative" else q - prev_q
      prev_q = q
  return out


def np_aggregate(x, smask, how):
  out = np.zeros(x.shape[0])
  for b in range(x.shape[0]):
    vals = [x[b, k] for k in range(x.shape[1]) if smask[b, k]]
    if not vals:
      continue
    out[b] = {"min": min, "sum": sum, "last": lambda v: v[-1], "mean": lambda v: sum(v) / len(v)}[how](vals)
  return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_rewards_equal_numpy(seed):
  pol, ref, resp, _, _ = _random_batch(seed)
  got = implicit.token_rewards(pol, ref, resp, 0.05)
  chex.assert_trees_all_close(np.asarray(got), np_token_rewards(pol, ref, resp, 0.05), atol=1e-6)
  assert got.dtype == jnp.float32


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", implicit.MODES)
def test_step_rewards_equal_numpy(seed, mode):
  pol, ref, resp, ends, smask = _random_batch(seed)
  r = np_token_rewards(pol, ref, resp, 0.5)
  got = implicit.step_rewards(jnp.asarray(r, jnp.float32), ends, smask, mode)
  chex.assert_trees_all_close(np.asarray(got), np_step_rewards(r, ends, smask, mode), atol=1e-5)


def test_step_rewards_non_prefix_mask_uses_previous_valid_step():
  r = np.arange(1, 9, dtype=np.float32)[None]  # q = 1, 3, 6, 10, 15, 21, 28, 36
  ends = np.array([[1, 7, 3, 5]])
  smask = np.array([[1, 0, 1, 1]])
  single = np.asarray(implicit.step_rewards(r, ends, smask, "single"))
  np.testing.assert_allclose(single, [[3, 0, 7, 11]])
  np.testing.assert_allclose(single, np_step_rewards(r, ends, smask, "single"))


def test_single_steps_sum_to_last_accumulative():
  pol, ref, resp, ends, smask = _random_batch(5)
  r = implicit.token_rewards(pol, ref, resp, 1.0)
  single = implicit.step_rewards(r, ends, smask, "single")
  acc = implicit.step_rewards(r, ends, smask, "accumulative")
  chex.assert_trees_all_close(implicit.aggregate(single, smask, "sum"), implicit.aggregate(acc, smask, "last"),
                              atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("how", implicit.AGGREGATIONS)
def test_aggregate_equal_numpy(seed, how):
  _, _, _, ends, smask = _random_batch(seed)
  x = np.random.default_rng(seed + 10).normal(size=ends.shape).astype(np.float32)
  got = implicit.aggregate(x, smask, how)
  chex.assert_trees_all_close(np.asarray(got), np_aggregate(x, smask, how), atol=1e-5)
  assert float(got[1]) == 0.0  # row 1 has no step


def test_bad_mode_and_aggregation_are_clear_errors():
  with pytest.raises(ValueError, match="mode must be one of"):
    implicit.step_rewards(jnp.zeros((1, 3)), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1)), "cumulative")
  with pytest.raises(ValueError, match="aggregation must be one of"):
    implicit.aggregate(jnp.zeros((1, 1)), jnp.ones((1, 1)), "max")


def test_aligned_token_logprobs():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  ids = rng.integers(0, 7, size=(2, 5))
  got = np.asarray(implicit.aligned_token_logprobs(logits, ids))
  lsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert np.all(got[:, 0] == 0)
  for t in range(1, 5):
    np.testing.assert_allclose(got[:, t], lsm[np.arange(2), t - 1, ids[:, t]], rtol=1e-5)


# ---- losses ---------------------------------------------------------------------------------------------------------

def _d(seed, n=9):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=n) * 20).astype(np.float32), (rng.normal(size=n) * 20).astype(np.float32), rng


@pytest.mark.parametrize("seed", [0, 1])
def test_ce_loss_equals_numpy(seed):
  d, _, rng = _d(seed)
  labels = rng.integers(0, 2, size=d.shape).astype(np.float32)
  labels[0] = 0.3  # soft label
  beta = 0.05
  z = beta * d.astype(np.float64)
  want = np.mean(-(labels * np.log(_sigmoid(z)) + (1 - labels) * np.log(1 - _sigmoid(z))))
  np.testing.assert_allclose(float(preference.ce_loss(d, labels, beta)), want, rtol=1e-5)
  mask = np.arange(len(d)) < 4
  want_m = np.mean((-(labels * np.log(_sigmoid(z)) + (1 - labels) * np.log(1 - _sigmoid(z))))[:4])
  np.testing.assert_allclose(float(preference.ce_loss(d, labels, beta, mask)), want_m, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_and_nca_equal_numpy(seed):
  dw, dl, _ = _d(seed)
  beta = 0.1
  w, l = beta * dw.astype(np.float64), beta * dl.astype(np.float64)
  np.testing.assert_allclose(float(preference.dpo_loss(dw, dl, beta)), np.mean(-_log_sigmoid(w - l)), rtol=1e-5)
  want = np.mean(-_log_sigmoid(w) - 0.5 * _log_sigmoid(-w) - 0.5 * _log_sigmoid(-l))
  np.testing.assert_allclose(float(preference.nca_loss(dw, dl, beta)), want, rtol=1e-5)


@pytest.mark.parametrize("kl", [-3.0, 0.0, 4.0])
def test_kto_equals_numpy_with_clamped_baseline(kl):
  d, _, rng = _d(3)
  labels = rng.integers(0, 2, size=d.shape).astype(np.float32)
  beta, lam_d, lam_u = 0.1, 1.0, 1.5
  z0 = max(kl, 0.0)
  per = [lam_d * (1 - _sigmoid(beta * (x - z0))) if y else lam_u * (1 - _sigmoid(beta * (z0 - x)))
         for x, y in zip(d.astype(np.float64), labels)]
  got = preference.kto_loss(d, labels, beta, kl, desirable_weight=lam_d, undesirable_weight=lam_u)
  np.testing.assert_allclose(float(got), np.mean(per), rtol=1e-5)


def test_kto_baseline_is_clamped_mean_without_gradient():
  d = np.array([-5.0, 1.0, 2.0], np.float32)
  assert float(preference.kto_kl_baseline(d)) == 0.0
  assert float(preference.kto_kl_baseline(d + 5)) == pytest.approx(np.mean(d + 5))
  g = jax.grad(lambda x: preference.kto_loss(x[:1], jnp.ones(1), 1.0, preference.kto_kl_baseline(x)))(
      jnp.asarray(d + 5))
  assert float(g[1]) == 0.0 and float(g[2]) == 0.0 and float(g[0]) != 0.0


def test_losses_are_stable_for_large_log_ratios():
  big = np.array([4000.0, -4000.0], np.float32)
  for value in (preference.ce_loss(big, np.array([0.0, 1.0]), 1.0), preference.dpo_loss(big, -big, 1.0),
                preference.nca_loss(big, -big, 1.0)):
    assert np.isfinite(float(value))
