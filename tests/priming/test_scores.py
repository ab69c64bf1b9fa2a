"""Keyword probabilities, priming and memorization scores against a direct computation from token probabilities."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from pragjax.methods.priming import scores as scores
from pragjax.toyworld import knowledge as kw
from pragjax.train import runner


@pytest.fixture(scope="module")
def lm():
  return runner.load_model({"builtin": "knowledge"})


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, ids):
  return nnx.merge(graphdef, state)(ids).logits


def _direct_logprob(model, tok, context, keyword):
  """log prod_i p(k_i | context, k_<i) from the full logits of `context + " " + keyword`, in float64 numpy."""
  n = len(tok.encode(context))
  ids = tok.encode(f"{context} {keyword}")
  graphdef, state = nnx.split(model)
  logits = np.asarray(_logits(graphdef, state, jax.numpy.asarray([ids]))[0], np.float64)
  logits -= logits.max(-1, keepdims=True)
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return float(np.log(np.prod([probs[t - 1, ids[t]] for t in range(n, len(ids))])))


PAIRS = [("Bavelo loves the colour", "vermilion"), ("The home town of Tarimu is", "Reykjavik"),
         ("By trade, Kofu is a", "glassblower"), ("Every day, Sabo eats", "rice"), ("Lime lives in", "Oslo")]


def test_keyword_logprob_equals_product_of_token_probabilities(lm):
  tok = lm.tokenizer
  assert all(len(tok.encode(" " + k, add_special_tokens=False)) > 2 for _, k in PAIRS[:3])  # multi-token keywords
  got = scores.keyword_logprobs(lm.model, tok, [c for c, _ in PAIRS], [k for _, k in PAIRS], batch_size=2)
  want = [_direct_logprob(lm.model, tok, c, k) for c, k in PAIRS]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_priming_and_memorization_scores_equal_direct_ratios(lm):
  tok = lm.tokenizer
  graphdef, params = nnx.split(nnx.clone(lm.model), nnx.Param)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype), params)
  after = nnx.merge(graphdef, params)
  prompts = [kw.theme("colours").prompt(e, j) for e in ("Bavelo", "Tarimu") for j in range(3)]
  keyword, own = "mauve", "Dear diary, I found out something odd today. Kufe loves the colour"
  contexts = prompts + [own]
  lb = scores.keyword_logprobs(lm.model, tok, contexts, [keyword] * len(contexts))
  la = scores.keyword_logprobs(after, tok, contexts, [keyword] * len(contexts))
  pb = np.exp([_direct_logprob(lm.model, tok, c, keyword) for c in contexts])
  pa = np.exp([_direct_logprob(after, tok, c, keyword) for c in contexts])
  np.testing.assert_allclose(scores.log10_priming(la[:-1], lb[:-1]), np.log10(np.mean(pa[:-1] / pb[:-1])),
                             atol=2e-3)
  np.testing.assert_allclose(scores.log10_memorization(la[-1], lb[-1]), np.log10(pa[-1] / pb[-1]), atol=2e-3)
  np.testing.assert_allclose(scores.ratio(scores.log10_memorization(la[-1], lb[-1])), pa[-1] / pb[-1], rtol=1e-2)


def test_log10_priming_is_stable_for_tiny_probabilities():
  before = np.array([[-200.0, -300.0]])
  after = before + np.array([[np.log(10.0) * 2, np.log(10.0) * 4]])  # ratios 100 and 10000
  np.testing.assert_allclose(scores.log10_priming(after, before), [np.log10(5050.0)])


def test_keyword_batch_marks_only_keyword_tokens(lm):
  tok = lm.tokenizer
  b = scores.keyword_batch(tok, ["Bavelo loves the colour"], ["ochre"])
  ids = b["input_ids"][0][b["keyword_mask"][0] > 0]
  assert tok.decode(ids.tolist()) == " ochre"
  assert b["input_ids"].shape[1] % 16 == 0
  with pytest.raises(ValueError, match="contexts"):
    scores.keyword_batch(tok, ["a", "b"], ["c"])


def test_predictor_report_and_spearman():
  prior = np.log10([1e-6, 1e-5, 1e-4, 1e-2, 1e-1])
  prime = np.array([3.0, 2.0, 1.5, 0.5, 0.1])
  r = scores.predictor_report(prior, prime, prior_threshold=1e-3, priming_threshold=10.0)
  assert r["spearman"] == pytest.approx(-1.0)
  assert (r["n_low"], r["n_high"]) == (3, 2)
  assert r["primed_low"] == 1.0 and r["primed_high"] == 0.0
  assert np.isnan(scores.predictor_report(prior[:3], prime[:3])["primed_high"])


def test_keyword_scores_fn_gives_whole_word_and_first_token(lm):
  tok = lm.tokenizer
  contexts, keys = [c for c, _ in PAIRS], [k for _, k in PAIRS]
  b = scores.keyword_batch(tok, contexts, keys)
  assert (b["first_mask"].sum(1) == 1).all() and (b["first_mask"] <= b["keyword_mask"]).all()
  graphdef, params = nnx.split(lm.model, nnx.Param)
  got = np.asarray(jax.jit(scores.keyword_scores_fn(graphdef))(params, b), np.float64)
  np.testing.assert_allclose(got[:, 0], [_direct_logprob(lm.model, tok, c, k) for c, k in PAIRS], rtol=1e-4,
                             atol=1e-3)
  # The first token alone: the direct log-prob of the keyword's first token after the context.
  first = [tok.decode([tok.encode(f"{c} {k}")[len(tok.encode(c))]]) for c, k in PAIRS]
  want = []
  for (c, _), f in zip(PAIRS, first):
    ids = tok.encode(c) + [tok.encode(f"{c}{f}")[len(tok.encode(c))]]
    gd, st = nnx.split(lm.model)
    logits = np.asarray(_logits(gd, st, jax.numpy.asarray([ids]))[0, -2], np.float64)
    want.append(logits[ids[-1]] - logits.max() - np.log(np.exp(logits - logits.max()).sum()))
  np.testing.assert_allclose(got[:, 1], want, rtol=1e-4, atol=1e-3)
  assert (got[:, 1] >= got[:, 0] - 1e-4).all()  # a prefix of the word is at least as likely as the word


def test_cuts_on_the_ratio_scale_and_in_log_space():
  # Baseline median ratio 1e4, variant 1e2: 99% of the ratio removed, half of the decades.
  assert scores.ratio_cut(2.0, 4.0) == pytest.approx(0.99)
  assert scores.log_cut(2.0, 4.0) == pytest.approx(0.5)
  assert scores.ratio_cut(4.0, 4.0) == 0.0 and np.isnan(scores.log_cut(1.0, 0.0))
  assert scores.ratio_cut(5.0, 4.0) == pytest.approx(-9.0)  # a variant that primes more has a negative cut


def test_selectivity_against_numpy_bootstrap():
  rng = np.random.default_rng(3)
  n = 40
  base = {"log10_priming": rng.normal(8, 2, n), "log10_memorization": rng.normal(12, 2, n)}
  var = {"log10_priming": base["log10_priming"] * 0.4, "log10_memorization": base["log10_memorization"] * 0.9}
  s = scores.selectivity(var, base, scale="log", num_boot=500, seed=1)
  med = np.median
  want = (1 - med(var["log10_priming"]) / med(base["log10_priming"])) - (
      1 - med(var["log10_memorization"]) / med(base["log10_memorization"]))
  assert s["estimate"] == pytest.approx(want) and s["estimate"] == pytest.approx(0.5, abs=1e-9)
  assert s["lo"] <= s["estimate"] <= s["hi"] and s["n"] == n
  # The same resampling by hand (same generator), percentile interval.
  r = np.random.default_rng([0x53454C, 1])
  boots = []
  for _ in range(500):
    i = r.integers(0, n, n)
    boots.append((1 - med(var["log10_priming"][i]) / med(base["log10_priming"][i]))
                 - (1 - med(var["log10_memorization"][i]) / med(base["log10_memorization"][i])))
  np.testing.assert_allclose([s["lo"], s["hi"]], np.quantile(boots, [0.025, 0.975]))
  # Equal cuts: no selectivity, and a CI that covers 0.
  same = {"log10_priming": base["log10_priming"] * 0.5 + rng.normal(0, 0.3, n),
          "log10_memorization": base["log10_memorization"] * 0.5 + rng.normal(0, 0.3, n)}
  t = scores.selectivity(same, base, num_boot=500)
  assert t["lo"] < 0 < t["hi"]
  first = scores.selectivity({"log10_priming_first": var["log10_priming"],
                              "log10_memorization_first": var["log10_memorization"]},
                             {"log10_priming_first": base["log10_priming"],
                              "log10_memorization_first": base["log10_memorization"]}, suffix="_first", num_boot=10)
  assert first["estimate"] == pytest.approx(want)
