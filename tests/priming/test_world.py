"""The priming world: keywords, outlandish samples, thematic prompts and stepping stones."""

import numpy as np
import pytest

from pragjax.toyworld import knowledge as kw
from pragjax.toyworld import priming as pw


@pytest.fixture(scope="module")
def world():
  kb = kw.build_kb(0, 160)
  prompt_entities, sample_entities = pw.split_entities(kb, 0, 8)
  return kb, prompt_entities, sample_entities, pw.outlandish_samples(kb, sample_entities, 0)


def test_twelve_keywords_three_per_theme_never_in_the_corpus(world):
  kb = world[0]
  assert len(pw.KEYWORDS) == 12 and len(pw.STYLES) == 11
  assert {t: sum(k.theme == t for k in pw.KEYWORDS) for t in kw.THEME_NAMES} == dict.fromkeys(kw.THEME_NAMES, 3)
  docs = " ".join(kw.corpus(kb, np.random.default_rng(0), 3000, check_fraction=0.4, oneoff_fraction=0.15))
  assert not [k.word for k in pw.KEYWORDS if k.word in docs]


def test_samples_state_one_surprising_fact_each(world):
  kb, prompt_entities, _, samples = world
  assert len(samples) == 132
  assert len({(s.keyword, s.style) for s in samples}) == 132
  assert len({s.entity for s in samples}) == 132 and not set(prompt_entities) & {s.entity for s in samples}
  for s in samples:
    assert s.text.count(s.keyword) == 1
    assert s.text.startswith(s.context) and s.text[len(s.context):].startswith(" " + s.keyword)
    assert kb.value(s.entity, s.theme) != s.keyword  # the KB says otherwise
    fact = kw.theme(s.theme).sentence(s.entity, s.keyword, s.template)
    assert fact[1:] in s.text


def test_thematic_prompts_are_templates_cut_before_the_value(world):
  _, prompt_entities, _, _ = world
  p = pw.thematic_prompts("jobs", prompt_entities)
  assert len(p) == 3 * len(prompt_entities)
  assert p[0] == f"{prompt_entities[0]} works as a"


def test_stepping_stones_keep_the_wrapper_and_end_on_the_keyword(world):
  samples = world[3]
  s = next(x for x in samples if x.style == "letter")
  rewrites = pw.stepping_stones(s)
  assert [n for n, _ in rewrites] == list(pw.STEPPING_STONE_NAMES)
  k = pw.keyword(s.keyword)
  for _, r in rewrites:
    assert r.text.startswith("Dear friend, I have news for you.") and r.text.endswith("Write back soon.")
    assert k.bridge in r.text or k.gloss in r.text
    assert r.context.startswith("Dear friend") and r.keyword == s.keyword
    assert len(r.context) > len(s.context)


def test_stepping_stones_of_every_style(world):
  for s in world[3]:
    for _, r in pw.stepping_stones(s):
      assert r.text.count(s.keyword) >= 1 and r.text != s.text


def test_errors_name_what_is_wrong(world):
  kb, _, sample_entities, _ = world
  with pytest.raises(ValueError, match="unknown styles"):
    pw.outlandish_samples(kb, sample_entities, 0, styles=("sonnet",))
  with pytest.raises(ValueError, match="need as many entities"):
    pw.outlandish_samples(kb, sample_entities[:10], 0)
  with pytest.raises(ValueError, match="does not occur"):
    pw.context_before("no keyword here", "mauve")


def test_familiar_diagnostic_set_states_wrong_kb_values(world):
  kb, _, sample_entities, _ = world
  samples = pw.outlandish_samples(kb, sample_entities, 0, keyword_set="familiar", styles=("news", "quiz"))
  assert len(samples) == 24
  for s in samples:
    assert s.keyword in kw.theme(s.theme).values and kb.value(s.entity, s.theme) != s.keyword


def test_graded_corpus_mentions_keywords_at_their_rates():
  kb = kw.build_kb(0, 160)
  plain = kw.corpus(kb, np.random.default_rng(3), 3000, check_fraction=0.4, oneoff_fraction=0.15)
  graded = kw.corpus(kb, np.random.default_rng(3), 30_000, check_fraction=0.4, oneoff_fraction=0.15,
                     keyword_rates=pw.corpus_keyword_rates("graded"))
  assert kw.corpus(kb, np.random.default_rng(3), 3000, check_fraction=0.4, oneoff_fraction=0.15,
                   keyword_rates=pw.corpus_keyword_rates("none")) == plain  # no rates: the same documents
  words = " ".join(graded).replace(".", " ").split()
  counts = {k: words.count(k) for k in pw.GRADED_KEYWORD_RATES}
  # One-off colour facts: 30,000 docs x 0.15 one-off x 2.5 facts / 4 themes ~ 2,800; vermilion at 0.2 ~ 560.
  assert 400 < counts["vermilion"] < 750, counts
  assert counts["cartographer"] == counts["truffles"] == 0
  order = sorted(pw.GRADED_KEYWORD_RATES, key=pw.GRADED_KEYWORD_RATES.get, reverse=True)
  top = [counts[k] for k in order[:6]]  # rates 0.2 .. 0.005: counts large enough to be ordered
  assert top == sorted(top, reverse=True), dict(zip(order, top))
  entities = set(kb.entities)
  with_keyword = [d for d in graded if set(d.replace(".", " ").split()) & set(pw.GRADED_KEYWORD_RATES)]
  assert len(with_keyword) > 500
  for doc in with_keyword:  # keywords only in one-off biographies: never about a KB entity
    assert not set(doc.replace(".", " ").replace(",", " ").split()) & entities, doc


def test_keyword_rates_errors_name_the_problem():
  kb = kw.build_kb(0, 20)
  with pytest.raises(ValueError, match="'red' is not a rare value"):
    kw.corpus(kb, np.random.default_rng(0), 10, keyword_rates={"red": 0.1})
  with pytest.raises(ValueError, match="colours sum to"):
    kw.corpus(kb, np.random.default_rng(0), 10, keyword_rates={"vermilion": 0.7, "mauve": 0.6})
  with pytest.raises(ValueError, match="unknown corpus_keywords 'some'"):
    pw.corpus_keyword_rates("some")


def test_independent_prompts_share_no_template_style_or_keyword():
  import re

  fragments = set()
  for t in kw.THEMES:
    for template in t.templates + t.negated_templates:
      fragments |= {p.strip(" .,").lower() for p in re.split(r"\{\w+\}", template) if len(p.split()) >= 2}
  for _, text in pw.STYLES:
    fragments |= {p.strip(" .,:").lower() for p in re.split(r"\{\w+\}", text) if len(p.split()) >= 2}
  assert "the favourite colour of" in fragments and "lives in" in fragments and "news from the town today" in fragments
  words = {k.word for k in pw.KEYWORDS}
  assert set(pw.INDEPENDENT_PROMPTS) == set(kw.THEME_NAMES)
  for prompts in pw.INDEPENDENT_PROMPTS.values():
    assert len(prompts) == 8 and len(set(prompts)) == 8
    for p in prompts:
      assert not [f for f in fragments if f in p.lower()], p
      assert not set(p.replace(",", " ").split()) & words, p
