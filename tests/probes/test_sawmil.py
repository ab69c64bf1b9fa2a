"""sAwMIL stages against numpy transcriptions of the paper's equations and a reference QP solver."""

import jax.numpy as jnp
import numpy as np
import pytest

from pragjax.methods.probes import metrics, sawmil
from tests.probes.qp_reference import svm_reference


def _bags(seed, b=48, t=7, d=6, signal=1.5):
  """Random bags with a planted direction on the last two tokens of positive bags."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, t + 1, b)
  mask = np.arange(t)[None, :] < lengths[:, None]
  x = rng.normal(size=(b, t, d))
  labels = (rng.random(b) < 0.4).astype(int)
  labels[:2] = [0, 1]
  direction = rng.normal(size=d)
  direction /= np.linalg.norm(direction)
  last2 = np.asarray(sawmil.last_tokens_mask(mask, 2))
  x[last2 & (labels[:, None] == 1)] += signal * direction
  x[~mask] = 0.0
  return x.astype(np.float32), mask, labels, direction


def _standardized_tokens(x, mask):
  tok = x[mask].astype(np.float64)
  mean, std = tok.mean(axis=0), tok.std(axis=0)
  return (x - mean) / np.where(std > 0, std, 1.0)


def _fit(x, mask, labels, c, intrabag=None):
  intrabag = np.asarray(sawmil.last_tokens_mask(mask, 2)) if intrabag is None else intrabag
  tokens = sawmil.Tokens(*(jnp.asarray(a) for a in sawmil.flatten_bags(x, mask, intrabag, pad_multiple=64)))
  fit = sawmil.fit_path(tokens, jnp.asarray(labels > 0), jnp.ones(len(labels)), jnp.asarray([c], jnp.float32))
  return fit, tokens


def _agree(f, f_ref):
  assert np.corrcoef(f, f_ref)[0, 1] >= 0.999
  assert np.mean(np.sign(f) == np.sign(f_ref)) >= 0.99


def _reference_relabel(scores, bag_of, positive, intrabag, eta, min_fraction=0.05):
  """Direct transcription of the relabelling rule (authors' sort_and_label + 5% fallback)."""
  cand = positive[bag_of]
  s = scores[cand]
  l_p, x_p = cand.sum(), len(np.unique(bag_of[cand]))
  k = int(min(l_p, max(x_p, int(round(l_p * eta)))))
  cutoff = np.sort(s)[::-1][k - 1]
  selected = cand & (scores >= cutoff) & intrabag
  if selected.sum() < min_fraction * l_p:
    selected = cand & (scores >= cutoff)
  return selected


@pytest.mark.parametrize("seed,c", [(0, 1.0), (1, 10.0)])
def test_smil_stage_matches_reference_qp(seed, c):
  x, mask, labels, _ = _bags(seed)
  fit, _ = _fit(x, mask, labels, c)
  z = _standardized_tokens(x, mask)
  # sMIL: negative-bag tokens at -1 (margin 1, cost C/L_n); positive bag means at +1 (margin (2-|B|)/|B|, cost C/X_p).
  neg = z[mask & (labels[:, None] == 0)]
  sizes = mask.sum(axis=1)
  pos = labels == 1
  means = np.stack([z[i][mask[i]].mean(axis=0) for i in np.flatnonzero(pos)])
  points = np.concatenate([neg, means])
  y = np.r_[-np.ones(len(neg)), np.ones(len(means))]
  rho = np.r_[np.ones(len(neg)), (2.0 - sizes[pos]) / sizes[pos]]
  u = np.r_[np.full(len(neg), c / len(neg)), np.full(len(means), c / len(means))]
  w_ref, b_ref, _, _ = svm_reference(points, y, rho, u)
  assert bool(fit.stage1.converged[0])
  tokens = z[mask]
  _agree(tokens @ np.asarray(fit.stage1.w[0], np.float64) + float(fit.stage1.b[0]), tokens @ w_ref + b_ref)
  _agree(means @ np.asarray(fit.stage1.w[0], np.float64) + float(fit.stage1.b[0]), means @ w_ref + b_ref)


@pytest.mark.parametrize("seed,c", [(2, 1.0), (3, 10.0)])
def test_relabel_and_final_stage_match_transcription(seed, c):
  x, mask, labels, _ = _bags(seed)
  fit, tokens = _fit(x, mask, labels, c)
  z = _standardized_tokens(x, mask)
  bag_of, _ = np.nonzero(mask)
  tok = z[mask]
  intrabag = np.asarray(sawmil.last_tokens_mask(mask, 2))[mask]
  eta = intrabag.mean()
  np.testing.assert_allclose(float(fit.eta), eta, rtol=1e-6)
  s1 = tok @ np.asarray(fit.stage1.w[0], np.float64) + float(fit.stage1.b[0])
  selected = _reference_relabel(s1, bag_of, labels == 1, intrabag, eta)
  assert int(fit.selected[0]) == selected.sum()
  # Final SVM on every token: relabelled positives +1, the rest -1, cost C/N.
  y = np.where(selected, 1.0, -1.0)
  w_ref, b_ref, _, _ = svm_reference(tok, y, np.ones(len(y)), np.full(len(y), c / len(y)))
  assert bool(fit.stage2.converged[0])
  _agree(tok @ np.asarray(fit.stage2.w[0], np.float64) + float(fit.stage2.b[0]), tok @ w_ref + b_ref)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(fit.direction[0])), 1.0, rtol=1e-5)


def _relabel(scores, bag, intrabag, positive, eta, min_fraction=0.05):
  tokens = sawmil.Tokens(jnp.zeros((len(scores), 1)), jnp.asarray(bag, jnp.int32), jnp.ones(len(scores), bool),
                         jnp.asarray(intrabag))
  sel, cutoff, fallback = sawmil.relabel(jnp.asarray(scores, jnp.float32), tokens, jnp.asarray(positive),
                                         jnp.ones(len(positive)), eta, min_fraction)
  return np.asarray(sel), float(cutoff), bool(fallback)


def test_relabel_top_eta_and_last_two_rule():
  # Bag 0 negative (tokens 0-3), bags 1 and 2 positive (tokens 4-8 and 9-13); intra-bag = last 2 of each bag.
  bag = np.array([0] * 4 + [1] * 5 + [2] * 5)
  intrabag = np.zeros(14, bool)
  intrabag[[2, 3, 7, 8, 12, 13]] = True
  scores = np.array([9, 9, 9, 9,  # the negative bag's scores never count
                     5, 0, 1, 4, 3,  # bag 1: top tokens 4 (5) and 7 (4)
                     2, 0, 0, 6, -1], float)  # bag 2: top token 12 (6)
  # 10 positive tokens, eta 0.3 -> k = 3 -> cutoff = 3rd largest of {5,0,1,4,3,2,0,0,6,-1} = 4.
  sel, cutoff, fallback = _relabel(scores, bag, intrabag, [False, True, True], eta=0.3)
  assert cutoff == 4.0 and not fallback
  assert np.flatnonzero(sel).tolist() == [7, 12]  # token 4 scores 5 but is not among its bag's last two


def test_relabel_k_is_at_least_the_number_of_positive_bags():
  bag = np.array([0, 0, 1, 1, 2, 2])
  scores = np.array([0, 0, 3, 2, 1, 0.5])
  sel, cutoff, _ = _relabel(scores, bag, np.ones(6, bool), [False, True, True], eta=0.01)
  assert cutoff == 2.0  # round(0.01 * 4) = 0 -> clipped up to X_p = 2
  assert np.flatnonzero(sel).tolist() == [2, 3]


def test_relabel_drops_intrabag_rule_below_five_percent():
  # 40 positive tokens in 2 bags; the top-eta tokens are all outside the intra-bag mask -> 0 < 5% qualify.
  bag = np.array([0] * 10 + [1] * 20 + [2] * 20)
  scores = np.r_[np.zeros(10), np.arange(40, 0, -1)]
  intrabag = np.zeros(50, bool)
  intrabag[[28, 29, 48, 49]] = True  # lowest-scored positive tokens
  sel, cutoff, fallback = _relabel(scores, bag, intrabag, [False, True, True], eta=0.2)
  assert fallback and cutoff == 33.0  # k = round(0.2 * 40) = 8: the top 8 scores 40..33 become positive
  assert np.flatnonzero(sel).tolist() == list(range(10, 18))
  # With one qualifying intra-bag token among the top 8 (1/40 = 2.5% < 5%) the rule is still dropped ...
  intrabag[12] = True
  sel, _, fallback = _relabel(scores, bag, intrabag, [False, True, True], eta=0.2)
  assert fallback and sel.sum() == 8
  # ... and with two (5%) it holds: only those two are positive.
  intrabag[13] = True
  sel, _, fallback = _relabel(scores, bag, intrabag, [False, True, True], eta=0.2)
  assert not fallback and np.flatnonzero(sel).tolist() == [12, 13]


def test_one_standard_error_rule_prefers_smaller_c():
  means, stds = [0.80, 0.84, 0.90, 0.91, 0.89], [0.02, 0.02, 0.03, 0.03, 0.03]
  # best 0.91, SE 0.03 / sqrt(3) = 0.0173 -> threshold 0.8927 -> first grid value with mean >= it: index 2.
  assert sawmil.one_standard_error(means, stds, 3) == 2
  assert sawmil.one_standard_error([0.5, np.nan, 0.7], [0.0, 0.0, 0.0], 3) == 2


def test_last_tokens_and_subsampling():
  mask = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0]], bool)
  last2 = np.asarray(sawmil.last_tokens_mask(mask, 2))
  assert np.flatnonzero(last2[0]).tolist() == [4, 5] and np.flatnonzero(last2[1]).tolist() == [3, 4]
  kept = sawmil.subsample_tokens(mask, last2, 4, np.random.default_rng(0))
  assert kept.sum(axis=1).tolist() == [4, 3] and np.all(kept[last2]) and not np.any(kept & ~mask)


def test_fit_recovers_planted_direction_and_scores_bags():
  x, mask, labels, direction = _bags(5, b=240, t=8, d=8, signal=3.0)
  train = np.arange(len(labels)) < 160
  probe = sawmil.SAwMIL(seed=0, max_bag_size=None).fit(x[train], mask[train], labels[train])
  assert probe.cv_results_["chosen"] == probe.C_ in sawmil.DEFAULT_C_GRID
  assert probe.diagnostics_["stage1_converged"] and probe.diagnostics_["stage2_converged"]
  w = np.asarray(probe.coef_) / np.asarray(probe.standardization_.scale)  # direction in raw space
  assert abs(w @ direction) / np.linalg.norm(w) > 0.9
  scores = probe.decision_function(x[~train], mask[~train])
  assert metrics.average_precision(labels[~train], scores) > 0.9
  # Bag score = max over real tokens of the unit-direction score.
  z = (x[~train] - np.asarray(probe.standardization_.mean)) / np.asarray(probe.standardization_.scale)
  token = z @ np.asarray(probe.coef_) + float(probe.intercept_)
  np.testing.assert_allclose(scores, np.where(mask[~train], token, -np.inf).max(axis=1), rtol=1e-4, atol=1e-4)


def _structured_bags(seed, b=60, t=10, d=128):
  """Bags shaped like real activations (and benchmarks/sawmil_fit.py): a rank-8 common structure carrying most
  of the variance, little isotropic noise, an identical first token in every bag (exact duplicates, like BOS)
  and a planted direction on the last two tokens of positive bags."""
  rng = np.random.default_rng(seed)
  basis = rng.normal(size=(8, d)) / np.sqrt(8)
  x = 2.0 * rng.normal(size=(b, t, 8)) @ basis + 0.5 * rng.normal(size=(b, t, d))
  x[:, 0] = 3.0 * rng.normal(size=d)
  labels = (rng.random(b) < 0.4).astype(int)
  labels[:2] = [0, 1]
  direction = rng.normal(size=d)
  x[labels == 1, -2:] += d ** 0.25 * direction / np.linalg.norm(direction)
  return x.astype(np.float32), np.ones((b, t), bool), labels


@pytest.mark.parametrize("method", ["dcd", "fista"])
def test_every_stage_of_the_default_grid_converges_on_ill_conditioned_bags(method):
  # Regression: with d > tokens and most variance in a few directions, the sMIL stage at C = 10 needs ~900 DCD
  # epochs / ~1,300 FISTA steps here; the former caps (500 epochs) and float32 FISTA iterates (stuck at a gap
  # of ~1e-3) stopped it unconverged, as at C = 1 on the 400 x 10 x 4096 benchmark bags.
  x, mask, labels = _structured_bags(0)
  intrabag = np.asarray(sawmil.last_tokens_mask(mask, 2))
  tokens = sawmil.Tokens(*(jnp.asarray(a) for a in sawmil.flatten_bags(x, mask, intrabag, pad_multiple=64)))
  fit = sawmil.fit_path(tokens, jnp.asarray(labels > 0), jnp.ones(len(labels)),
                        jnp.asarray(sawmil.DEFAULT_C_GRID, jnp.float32), method=method)
  for stage in (fit.stage1, fit.stage2):
    assert np.all(np.asarray(stage.converged)), (method, np.asarray(stage.iterations))
    assert np.all(np.asarray(stage.gap) <= sawmil.svm.DEFAULT_TOL * np.asarray(stage.primal))


def test_fit_warns_when_a_stage_stops_at_its_cap():
  x, mask, labels, _ = _bags(6, b=80, t=6, d=8, signal=1.0)
  with pytest.warns(sawmil.NotConvergedWarning, match="relative duality gap"):
    probe = sawmil.SAwMIL(seed=0, C=1.0, max_bag_size=None, max_epochs=1, max_iters=1, tol=1e-9).fit(
        x, mask, labels)
  assert not (probe.diagnostics_["stage1_converged"] and probe.diagnostics_["stage2_converged"])


def test_fit_rejects_bad_inputs():
  x, mask, labels, _ = _bags(6)
  with pytest.raises(ValueError, match="positive and negative"):
    sawmil.SAwMIL(C=1.0).fit(x, mask, np.zeros_like(labels))
  with pytest.raises(ValueError, match="binary"):
    sawmil.SAwMIL(C=1.0).fit(x, mask, labels + 1)
  with pytest.raises(ValueError, match="bag_mask"):
    sawmil.SAwMIL(C=1.0).fit(x, mask[:, :-1], labels)
  with pytest.raises(RuntimeError, match="not fitted"):
    sawmil.SAwMIL().decision_function(x, mask)
