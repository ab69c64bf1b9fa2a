"""The knowledge-base world: KB, corpus, statements, held-out parts and tokenizer."""

import re

import numpy as np
import pytest

from pragjax.toyworld import knowledge as kw


@pytest.fixture(scope="module")
def kb():
  return kw.build_kb(0, 120)


@pytest.fixture(scope="module")
def docs(kb):
  return kw.corpus(kb, np.random.default_rng(0), 4000, check_fraction=0.4, oneoff_fraction=0.15)


def _parse(sentence):
  """(entity, theme, value) of a fact sentence, by matching every template."""
  for t in kw.THEMES:
    for template in t.templates:
      pattern = re.escape(template).replace(r"\{entity\}", "([A-Z][a-z]+)").replace(r"\{value\}", "([A-Za-z]+)")
      m = re.fullmatch(pattern, sentence)
      if m:
        return m.group(1), t.name, m.group(2)
  raise AssertionError(f"no template matches {sentence!r}")


def _sentences(doc):
  return re.findall(r"[^.]+\.", doc)


def test_kb_entities_distinct_and_outside_the_unseen_bucket(kb):
  assert len(set(kb.entities)) == len(kb.entities) == 120
  assert not any(kw.is_unseen_name(e) for e in kb.entities)
  unseen = kw.unseen_entities(0, 200)
  assert len(set(unseen)) == 200 and not set(unseen) & set(kb.entities)
  assert all(kw.is_unseen_name(n) for n in unseen)
  assert kw.build_kb(0, 120) == kb  # reproducible
  for e, row in zip(kb.entities, kb.values):
    assert all(v in t.values for v, t in zip(row, kw.THEMES))


def test_corpus_facts_are_true_and_checks_are_judged_right(kb, docs):
  kinds = {"bio": 0, "check": 0, "oneoff": 0}
  mentioned = set()
  for doc in docs:
    sentences = [s.strip() for s in _sentences(doc)]
    if sentences[-1] in ("True.", "False."):
      kinds["check"] += 1
      entity, theme, value = _parse(sentences[0])
      is_true = kb.value(entity, theme) == value
      assert (sentences[-1] == "True.") == is_true, doc
      assert is_true or not kw.is_heldout_false(entity, theme, value), doc
      mentioned.add(entity)
      continue
    facts = [_parse(s) for s in sentences]
    entity = facts[0][0]
    assert all(f[0] == entity for f in facts) and len({f[1] for f in facts}) == len(facts)
    if entity in kb:
      kinds["bio"] += 1
      assert all(kb.value(e, t) == v for e, t, v in facts), doc
    else:
      kinds["oneoff"] += 1
      assert not kw.is_unseen_name(entity)
    mentioned.add(entity)
  n = len(docs)
  assert abs(kinds["check"] / n - 0.4) < 0.03 and abs(kinds["oneoff"] / n - 0.15) < 0.03
  assert not any(kw.is_unseen_name(e) for e in mentioned)


def test_statements_labels_and_heldout_parts(kb, docs):
  items = kw.statements(kb, 0, 150)
  assert kw.summarize(items) == {"true": 150, "false": 150, "neither": 150}
  judged = {s.strip() for d in docs for s in re.findall(r"[^.]+\. (?:True|False)\.", d)}
  words = set(re.findall(r"[A-Za-z]+", " ".join(docs)))
  for s in items:
    entity, theme, value = _parse(s.text)
    assert (entity, theme, value) == (s.entity, s.theme, s.value)
    assert s.text.endswith(f" {value}.")
    if s.label == "true":
      assert kb.value(entity, theme) == value
    elif s.label == "false":
      assert kb.value(entity, theme) != value and kw.is_heldout_false(entity, theme, value)
      assert f"{s.text} False." not in judged  # never judged in training
    else:
      assert entity not in kb and kw.is_unseen_name(entity) and entity not in words
  assert len({(s.entity, s.theme) for s in items if s.label == "true"}) == 150


def test_themes_prompts_and_rare_values():
  colours = kw.theme("colours")
  assert colours.prompt("Bavelo", 0) == "The favourite colour of Bavelo is"
  assert colours.sentence("Bavelo", "red", 0) == "The favourite colour of Bavelo is red."
  for t in kw.THEMES:
    assert len(t.rare_values) == 3 and not set(t.rare_values) & set(t.values)
  with pytest.raises(ValueError, match="unknown theme"):
    kw.theme("music")


def test_tokenizer_treats_known_and_unseen_names_alike(kb):
  tok = kw.tokenizer()
  assert tok.vocab_size == kw.TOKENIZER_VOCAB_SIZE
  for t in kw.THEMES:  # every KB value is one token after a space
    assert all(len(tok.encode(" " + v, add_special_tokens=False)) == 1 for v in t.values)
  pieces = lambda names: np.mean([len(tok.encode(" " + n, add_special_tokens=False)) for n in names])
  known, unseen = pieces(kb.entities), pieces(kw.unseen_entities(0, 120))
  assert abs(known - unseen) < 0.3, (known, unseen)
  assert tok.decode(tok.encode("Bavelo lives in Lima. True.")) == "Bavelo lives in Lima. True."


def test_statement_forms_default_is_unchanged_and_negation_flips_truth(kb):
  plain = kw.statements(kb, 3, 60)
  assert kw.statements(kb, 3, 60, negation_fraction=0.0, trailing_fraction=0.0) == plain
  hard = kw.statements(kb, 3, 60, negation_fraction=0.5, trailing_fraction=0.5)
  assert kw.summarize(hard) == {"true": 60, "false": 60, "neither": 60}
  assert [s.label for s in hard] == sorted((s.label for s in hard), key=kw.LABELS.index)
  by_fact = {(s.entity, s.theme, s.value): s for s in plain}
  assert sum(s.negated for s in hard) == 90 and sum(bool(s.clause) for s in hard) == 90
  for s in hard:
    base = by_fact[(s.entity, s.theme, s.value)]  # the same fact, rewritten
    assert s.negated == (" not " in s.text or " never " in s.text)
    if s.entity not in kb:
      assert s.label == base.label == "neither"
    else:
      holds = kb.value(s.entity, s.theme) == s.value
      assert s.label == ("true" if holds != s.negated else "false"), s
      assert s.label == (base.label if not s.negated else {"true": "false", "false": "true"}[base.label])


def test_statement_forms_move_the_deciding_token_off_the_end(kb):
  tok = kw.tokenizer()
  hard = kw.statements(kb, 0, 40, negation_fraction=0.5, trailing_fraction=1.0)
  for s in hard:
    assert s.clause in kw.TRAILING_CLAUSES and s.text.endswith(s.clause + ".")
    ids = tok.encode(s.text)
    value_ids = tok.encode(" " + s.value)[-1:]  # the value's (last) token, as it follows a space
    last_two = ids[-2:]
    assert value_ids[0] in ids and value_ids[0] not in last_two, s.text
  with pytest.raises(ValueError, match="negation_fraction"):
    kw.statements(kb, 0, 10, negation_fraction=1.5)
  for t in kw.THEMES:
    assert len(t.negated_templates) == len(t.templates)
    assert all(" not " in n or " never " in n for n in t.negated_templates)


def test_the_pretraining_corpus_has_no_negation_or_trailing_clause(docs):
  """What the truth-probe config says of the shipped model: it never read the hard forms."""
  assert not any(" not " in d or " never " in d for d in docs)
  assert not any(c in d for d in docs for c in kw.TRAILING_CLAUSES)
