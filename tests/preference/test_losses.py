"""The DPO-family losses of `pragjax.objectives.preference` against direct numpy transcriptions of their equations."""

import numpy as np
import pytest

from pragjax.objectives import preference as pref


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _pairs(seed, n=64, scale=8.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=n) * scale).astype(np.float32), (rng.normal(size=n) * scale).astype(np.float32)


BETA = 0.3
EPS = 0.15

NUMPY = {
    "dpo": lambda w, l: -_log_sigmoid(BETA * (w - l)),
    "ipo": lambda w, l: (w - l - 1.0 / (2 * BETA)) ** 2,
    "cdpo": lambda w, l: -(1 - EPS) * _log_sigmoid(BETA * (w - l)) - EPS * _log_sigmoid(-BETA * (w - l)),
    "robust": lambda w, l: ((1 - EPS) * -_log_sigmoid(BETA * (w - l)) - EPS * -_log_sigmoid(BETA * (l - w)))
    / (1 - 2 * EPS),
    "sppo_hard": lambda w, l: (w - 1.0 / (2 * BETA)) ** 2 + (l + 1.0 / (2 * BETA)) ** 2,
    "hinge": lambda w, l: np.maximum(0.0, 1.0 - BETA * (w - l)),
    "nca": lambda w, l: -_log_sigmoid(BETA * w) - 0.5 * _log_sigmoid(-BETA * w) - 0.5 * _log_sigmoid(-BETA * l),
}


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_loss_equals_its_equation(name):
  w, l = _pairs(1)
  eps = EPS if name in ("cdpo", "robust") else 0.0
  got = float(pref.pair_loss(name, w, l, BETA, label_smoothing=eps))
  want = float(np.mean(NUMPY[name](w.astype(np.float64), l.astype(np.float64))))
  np.testing.assert_allclose(got, want, rtol=2e-5)
  # The masked mean is the mean over the valid rows only.
  mask = np.random.default_rng(2).random(len(w)) < 0.5
  got = float(pref.pair_loss(name, w, l, BETA, mask, label_smoothing=eps))
  want = float(np.mean(NUMPY[name](w[mask].astype(np.float64), l[mask].astype(np.float64))))
  np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.parametrize("fn", [pref.ipo_loss, pref.sppo_hard_loss, pref.hinge_loss])
def test_direct_functions_match_the_registry(fn):
  w, l = _pairs(3)
  name = {pref.ipo_loss: "ipo", pref.sppo_hard_loss: "sppo_hard", pref.hinge_loss: "hinge"}[fn]
  np.testing.assert_allclose(float(fn(w, l, BETA)), float(np.mean(NUMPY[name](w, l))), rtol=2e-5)


def test_smoothing_zero_is_dpo_and_robust_is_unbiased():
  w, l = _pairs(4)
  dpo = float(pref.dpo_loss(w, l, BETA))
  assert float(pref.cdpo_loss(w, l, BETA, label_smoothing=0.0)) == pytest.approx(dpo, rel=1e-6)
  assert float(pref.robust_dpo_loss(w, l, BETA, label_smoothing=0.0)) == pytest.approx(dpo, rel=1e-6)
  # Robust DPO's defining property: averaged over labels flipped with probability eps it is the clean DPO loss.
  flipped = float(pref.robust_dpo_loss(l, w, BETA, label_smoothing=EPS))
  clean = float(pref.robust_dpo_loss(w, l, BETA, label_smoothing=EPS))
  assert (1 - EPS) * clean + EPS * flipped == pytest.approx(dpo, rel=1e-5)


def test_stable_at_large_margins_and_bad_arguments():
  w = np.array([4e3, -4e3], np.float32)
  l = np.array([-4e3, 4e3], np.float32)
  for name in ("dpo", "cdpo", "robust", "nca"):
    eps = EPS if name in ("cdpo", "robust") else 0.0
    assert np.isfinite(float(pref.pair_loss(name, w, l, 1.0, label_smoothing=eps)))
  with pytest.raises(ValueError, match="0.5"):
    pref.robust_dpo_loss(w, l, BETA, label_smoothing=0.5)
  with pytest.raises(ValueError, match="applies to"):
    pref.pair_loss("ipo", w, l, BETA, label_smoothing=0.1)
  with pytest.raises(ValueError, match="unknown pairwise loss"):
    pref.pair_loss("simpo", w, l, BETA)
