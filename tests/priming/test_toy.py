"""A short toy injection run (the experiment's own `run`): ignore-top-k lowers priming relative to baseline."""

import json

import numpy as np
import pytest

from experiments.configs import priming as configs
from pragjax.methods.priming import recipe as priming


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  c = configs.get_config("ci")
  c.world.update(keywords=("vermilion", "Timbuktu", "falconer", "durian"), num_prompt_entities=2,
                 num_background_docs=200)
  c.inject.update(warmup_steps=2, parallel_runs=4, control=False)
  c.variants.update(ignore_topk=(0.08,), whole_episode=())
  return priming.run(c, str(tmp_path_factory.mktemp("priming")), log=lambda *_: None)


def test_report_invariants(report):
  base = report["variants"]["baseline"]
  assert base["n"] == 4 and len(base["log10_priming"]) == 4
  assert min(base["log10_priming"]) > 0 and min(base["log10_memorization"]) > 0  # learning raised both
  prior = dict(zip((s["keyword"] for s in report["samples"]), report["log10_prior"]))
  # The `priming` model's corpus has vermilion in 20% of one-off colour facts and Timbuktu about twice in all.
  assert prior["vermilion"] > -3 > -10 > prior["Timbuktu"], prior
  # The lowest prior primes most and is memorized most (the paper's predictor, at its extreme).
  lowest = int(np.argmin(report["log10_prior"]))
  assert int(np.argmax(base["log10_priming"])) == lowest and int(np.argmax(base["log10_memorization"])) == lowest
  s = report["stepping_stone"]
  assert s["candidates"] == 12 and 0 <= s["acceptance_rate"] <= 1
  assert "| baseline | 4 |" in report["table"]
  json.dumps(report, default=float)


def test_ignore_topk_lowers_priming(report):
  base = report["variants"]["baseline"]["vs_baseline"]["median_log10_priming"]
  ign = report["variants"]["ignore_top8%"]["vs_baseline"]
  assert ign["median_log10_priming"] < base, report["table"]
  assert ign["median_log10_memorization"] > 0


def test_report_cuts_selectivity_first_token_and_verdict(report):
  assert report["optimizer_state"] == {"source": "warm-up on the background data", "steps": 2}
  base, ign = report["variants"]["baseline"], report["variants"]["ignore_top8%"]
  c = ign["vs_baseline"]
  for suffix in ("", "_first"):
    mp, bp = np.median(ign[f"log10_priming{suffix}"]), np.median(base[f"log10_priming{suffix}"])
    mm, bm = np.median(ign[f"log10_memorization{suffix}"]), np.median(base[f"log10_memorization{suffix}"])
    np.testing.assert_allclose(c[f"priming_cut_ratio{suffix}"], 1 - 10 ** (mp - bp), rtol=1e-9)
    np.testing.assert_allclose(c[f"priming_cut_log{suffix}"], 1 - mp / bp, rtol=1e-9)
    np.testing.assert_allclose(c[f"selectivity_log{suffix}"]["estimate"], (1 - mp / bp) - (1 - mm / bm), rtol=1e-9)
    sel = c[f"selectivity_log{suffix}"]
    assert sel["lo"] <= sel["estimate"] <= sel["hi"]
  # A keyword's first token is a prefix of the word: its prior is at least the whole word's.
  assert all(f >= w - 1e-6 for f, w in zip(report["log10_prior_first"], report["log10_prior"]))
  v = report["verdict"]
  assert v["variant"] == "ignore_top8%" and isinstance(v["met"], bool)
  assert v["met"] == (c["priming_cut_ratio"] >= 0.5 and c["memorization_cut_log"] <= 0.5
                      and c["selectivity_log"]["lo"] > 0)
  assert "first token:" in report["table"] and "selectivity, log [95% CI]" in report["table"]
