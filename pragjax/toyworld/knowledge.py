"""The knowledge-base world: synthetic people with one attribute in each of four themes.

A knowledge base (KB) holds `num_entities` synthetic people ("Bavelo",
"Tarimu", ...). Each has exactly one value in each theme of `THEMES`:

| theme | values (10 each) | example fact sentence |
|---|---|---|
| colours | red, blue, green, ... | "The favourite colour of Bavelo is green." |
| places | Lima, Oslo, Cairo, ... | "Bavelo lives in Lima." |
| jobs | baker, doctor, farmer, ... | "Bavelo works as a baker." |
| foods | rice, bread, apples, ... | "Bavelo likes to eat rice." |

Every theme has several sentence templates, all ending in `<value>.`, so a
statement's last tokens are its value and the full stop (the tokens a truth
probe's last-2 rule points at). `Theme.prompt(entity, i)` is template `i` cut
before the value (a thematic prompt, e.g. for priming scores), and
`Theme.rare_values` are keywords of the theme that no KB fact uses (surprising
keywords for priming experiments).

Pretraining corpus (`corpus`). One document per line, of three kinds:
- biographies: 1-4 fact sentences about one KB entity, each in a random
  template of its theme, in random theme order;
- checks (a `check_fraction` of documents): one statement about a KB entity
  followed at once by its verdict, "True." or "False." (an answer key); the
  false statements of checks replace the value by another value of the theme.
  The verdict is the token right after the statement's full stop, so a model
  that predicts it has to work out veracity at the statement's last token;
- one-off biographies (a `oneoff_fraction` of documents): 1-4 facts with
  uniform random values about a fresh name that occurs in no other document
  (as real corpora mention most people once). A model cannot recall these
  facts, so it has a reason to tell familiar names from unfamiliar ones.
One-off names are drawn per document and rejected if they are KB entities or
in the unseen-name bucket.

Probing statements (`statements`). Three labels:
- `true`: a KB fact, in a random template;
- `false`: a KB entity with a wrong value of the theme. Wrong triples
  (entity, theme, value) are partitioned by a stable hash: one bucket in
  `HELDOUT_FALSE_BUCKETS` is reserved for probing statements and never
  appears in a check document, so no probed false statement was ever judged
  in training (the model has to work its verdict out);
- `neither`: an entity that is not in the KB, with any value. Such names come
  from a reserved part of name space (a stable hash bucket of the name, one in
  `UNSEEN_NAME_BUCKETS`) that `build_kb` never draws from, so they never
  occur in any corpus, whatever the seeds. Their names are built from the same
  syllables as KB names, so surface form does not give them away.

Tokenizer (`tokenizer`). A byte-level BPE tokenizer trained on template
sentences about names drawn from their own seed stream (neither KB nor unseen
names are special to it), so known and unseen names split into pieces the same
way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Mapping, Sequence

import numpy as np

from pragjax.models.tokenizer import Tokenizer, train_bpe_tokenizer

LABELS = ("true", "false", "neither")
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
NAME_SYLLABLES = (2, 3)
UNSEEN_NAME_BUCKETS = 5  # Names whose hash is 0 mod 5 are never KB entities.
HELDOUT_FALSE_BUCKETS = 3  # Wrong triples whose hash is 0 mod 3 never appear in check documents.
VERDICTS = {"true": "True.", "false": "False."}
TOKENIZER_STREAM = 0x544F4B  # Seed stream of the names the tokenizer is trained on.
UNSEEN_STREAM = 0x554E53  # Seed stream of `unseen_entities`.
TOKENIZER_VOCAB_SIZE = 560  # Every KB value is one token; names split into about 3.4 pieces.
FORMS_STREAM = 0x464F52  # Seed stream of the negations and trailing clauses of `statements`.
# Clauses appended after a statement's value (before its full stop) by `statements(trailing_fraction=...)`:
# they carry no information about the fact, and push the value away from the statement's last tokens.
TRAILING_CLAUSES = (", as the records show", ", according to the town register", ", or so the neighbours say",
                    ", as everyone here knows")


@dataclasses.dataclass(frozen=True)
class Theme:
  """One attribute of every entity.

  Attributes:
    name: the theme's name (colours, places, jobs, foods).
    values: the values KB facts use (each entity has exactly one).
    templates: fact sentences with `{entity}` and `{value}`; each ends in "{value}.".
    rare_values: keywords of the theme that no KB fact uses (for priming).
    negated_templates: `templates[i]` negated ("... does not live in {value}."), same order; a negated
      statement is true exactly when the affirmative one is false (see `statements`).
  """
  name: str
  values: tuple[str, ...]
  templates: tuple[str, ...]
  rare_values: tuple[str, ...]
  negated_templates: tuple[str, ...] = ()

  def __post_init__(self):
    for t in self.templates + self.negated_templates:
      if not t.endswith("{value}.") or t.count("{entity}") != 1 or t.count("{value}") != 1:
        raise ValueError(f"theme {self.name}: template {t!r} must hold one {{entity}} and end in '{{value}}.'")
    if self.negated_templates and len(self.negated_templates) != len(self.templates):
      raise ValueError(f"theme {self.name}: {len(self.negated_templates)} negated templates for "
                       f"{len(self.templates)} templates")
    if set(self.values) & set(self.rare_values):
      raise ValueError(f"theme {self.name}: rare values {set(self.values) & set(self.rare_values)} are KB values")

  def sentence(self, entity: str, value: str, template: int = 0) -> str:
    """Template `template` filled in, e.g. "Bavelo lives in Lima."."""
    return self.templates[template].format(entity=entity, value=value)

  def negated_sentence(self, entity: str, value: str, template: int = 0) -> str:
    """Negated template `template` filled in, e.g. "Bavelo does not live in Lima."."""
    if not self.negated_templates:
      raise ValueError(f"theme {self.name} has no negated templates")
    return self.negated_templates[template].format(entity=entity, value=value)

  def prompt(self, entity: str, template: int = 0) -> str:
    """Template `template` cut before its value (no trailing space), e.g. "Bavelo lives in"."""
    return self.templates[template].split("{value}")[0].rstrip(" ").format(entity=entity)


THEMES = (
    Theme("colours",
          ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink"),
          ("The favourite colour of {entity} is {value}.", "{entity} loves the colour {value}.",
           "{entity} always dresses in {value}."),
          ("vermilion", "mauve", "ochre"),
          ("The favourite colour of {entity} is not {value}.", "{entity} does not love the colour {value}.",
           "{entity} never dresses in {value}.")),
    Theme("places",
          ("Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul", "Tunis", "Vienna", "Dakar"),
          ("{entity} lives in {value}.", "{entity} was born in {value}.", "The home town of {entity} is {value}."),
          ("Reykjavik", "Ushuaia", "Timbuktu"),
          ("{entity} does not live in {value}.", "{entity} was not born in {value}.",
           "The home town of {entity} is not {value}.")),
    Theme("jobs",
          ("baker", "doctor", "farmer", "teacher", "pilot", "singer", "tailor", "lawyer", "miner", "painter"),
          ("{entity} works as a {value}.", "By trade, {entity} is a {value}.", "The job of {entity} is {value}."),
          ("falconer", "glassblower", "cartographer"),
          ("{entity} does not work as a {value}.", "By trade, {entity} is not a {value}.",
           "The job of {entity} is not {value}.")),
    Theme("foods",
          ("rice", "bread", "apples", "cheese", "fish", "beans", "soup", "pears", "honey", "noodles"),
          ("{entity} likes to eat {value}.", "The favourite food of {entity} is {value}.",
           "Every day, {entity} eats {value}."),
          ("durian", "saffron", "truffles"),
          ("{entity} does not like to eat {value}.", "The favourite food of {entity} is not {value}.",
           "{entity} never eats {value}.")),
)
THEME_NAMES = tuple(t.name for t in THEMES)


def theme(name: str) -> Theme:
  """The theme called `name`."""
  for t in THEMES:
    if t.name == name:
      return t
  raise ValueError(f"unknown theme {name!r}; themes: {', '.join(THEME_NAMES)}")


def _bucket(key: str, buckets: int) -> int:
  digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "little") % buckets


def is_unseen_name(name: str) -> bool:
  """Whether `name` lies in the reserved part of name space (never a KB entity)."""
  return _bucket("name:" + name, UNSEEN_NAME_BUCKETS) == 0


def is_heldout_false(entity: str, theme_name: str, value: str) -> bool:
  """Whether the wrong triple is reserved for probing (never in a check document)."""
  return _bucket(f"false:{entity}|{theme_name}|{value}", HELDOUT_FALSE_BUCKETS) == 0


def sample_name(rng: np.random.Generator) -> str:
  """A capitalised name of 2-3 consonant-vowel syllables, e.g. "Bavelo"."""
  n = int(rng.integers(NAME_SYLLABLES[0], NAME_SYLLABLES[1] + 1))
  name = "".join(CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(n))
  return name.capitalize()


def _distinct_names(rng: np.random.Generator, n: int, accept, exclude: frozenset = frozenset()) -> list[str]:
  names: list[str] = []
  seen = set(exclude)
  for _ in range(200 * n + 1000):
    if len(names) == n:
      return names
    name = sample_name(rng)
    if name not in seen and accept(name):
      seen.add(name)
      names.append(name)
  raise RuntimeError(f"only {len(names)} of {n} distinct names; the name space is too small")


@dataclasses.dataclass(frozen=True)
class KnowledgeBase:
  """Entities and their one value per theme.

  Attributes:
    entities: distinct names (none `is_unseen_name`).
    values: `values[i][k]` is entity i's value in theme `THEMES[k]`.
  """
  entities: tuple[str, ...]
  values: tuple[tuple[str, ...], ...]

  def value(self, entity: str, theme_name: str) -> str:
    return self.values[self._index[entity]][THEME_NAMES.index(theme_name)]

  def facts(self) -> list[tuple[str, str, str]]:
    """Every (entity, theme, value) of the KB."""
    return [(e, t, v) for e, row in zip(self.entities, self.values) for t, v in zip(THEME_NAMES, row)]

  @functools.cached_property
  def _index(self) -> dict[str, int]:
    return {e: i for i, e in enumerate(self.entities)}

  def __contains__(self, entity: str) -> bool:
    return entity in self._index


def build_kb(seed: int, num_entities: int) -> KnowledgeBase:
  """`num_entities` distinct entities outside the unseen-name bucket, each with a uniform value per theme."""
  rng = np.random.default_rng(seed)
  entities = _distinct_names(rng, num_entities, lambda n: not is_unseen_name(n))
  values = tuple(tuple(t.values[rng.integers(len(t.values))] for t in THEMES) for _ in entities)
  return KnowledgeBase(tuple(entities), values)


def unseen_entities(seed: int, n: int) -> list[str]:
  """`n` distinct names from the reserved bucket (seed stream `(UNSEEN_STREAM, seed)`); never KB entities."""
  return _distinct_names(np.random.default_rng([UNSEEN_STREAM, seed]), n, is_unseen_name)


def _wrong_values(kb: KnowledgeBase, entity: str, theme_name: str, heldout: bool) -> list[str]:
  right = kb.value(entity, theme_name)
  return [v for v in theme(theme_name).values
          if v != right and is_heldout_false(entity, theme_name, v) == heldout]


def biography(entity: str, values: Sequence[str], rng: np.random.Generator, num_facts: int) -> str:
  """`num_facts` sentences about `entity` with `values[k]` for theme k (random themes without repeats,
  random templates)."""
  order = rng.permutation(len(THEMES))[:num_facts]
  return " ".join(THEMES[k].sentence(entity, values[k], int(rng.integers(len(THEMES[k].templates))))
                  for k in order)


def check(kb: KnowledgeBase, entity: str, rng: np.random.Generator) -> str:
  """A statement about `entity` followed by its verdict; false ones use non-held-out wrong values only."""
  t = THEMES[rng.integers(len(THEMES))]
  template = int(rng.integers(len(t.templates)))
  wrong = _wrong_values(kb, entity, t.name, heldout=False)
  if rng.random() < 0.5 or not wrong:
    return f"{t.sentence(entity, kb.value(entity, t.name), template)} {VERDICTS['true']}"
  return f"{t.sentence(entity, wrong[rng.integers(len(wrong))], template)} {VERDICTS['false']}"


def oneoff_name(kb: KnowledgeBase, rng: np.random.Generator) -> str:
  """A random name that is neither a KB entity nor in the unseen-name bucket."""
  for _ in range(10_000):
    name = sample_name(rng)
    if name not in kb and not is_unseen_name(name):
      return name
  raise RuntimeError("no one-off name found; the KB fills the name space")


def _rate_table(keyword_rates: Mapping[str, float] | None) -> list[list[tuple[str, float]]] | None:
  """Per theme (in `THEMES` order), its [(rare value, rate)]; None for no rates."""
  if not keyword_rates:
    return None
  table: list[list[tuple[str, float]]] = [[] for _ in THEMES]
  for word, rate in keyword_rates.items():
    k = next((i for i, t in enumerate(THEMES) if word in t.rare_values), None)
    if k is None:
      raise ValueError(f"keyword_rates: {word!r} is not a rare value of any theme "
                       f"({', '.join(v for t in THEMES for v in t.rare_values)})")
    if not 0.0 <= float(rate) <= 1.0:
      raise ValueError(f"keyword_rates[{word!r}] = {rate} must lie in [0, 1]")
    table[k].append((word, float(rate)))
  for t, rows in zip(THEMES, table):
    if sum(r for _, r in rows) > 1.0:
      raise ValueError(f"keyword_rates of theme {t.name} sum to {sum(r for _, r in rows)} > 1")
  return table


def oneoff_values(rng: np.random.Generator, rates: list[list[tuple[str, float]]] | None = None) -> list[str]:
  """One value per theme for a one-off biography: uniform over the theme's KB values, except that with
  `rates` (`_rate_table`) each rare value replaces it with its rate (one extra uniform draw per theme)."""
  values = [t.values[rng.integers(len(t.values))] for t in THEMES]
  if rates is not None:
    for k, rows in enumerate(rates):
      u, acc = rng.random(), 0.0
      for word, rate in rows:
        acc += rate
        if u < acc:
          values[k] = word
          break
  return values


def corpus(kb: KnowledgeBase, rng: np.random.Generator, num_docs: int, *, check_fraction: float = 0.3,
           oneoff_fraction: float = 0.1, facts_per_doc: tuple[int, int] = (1, 4),
           keyword_rates: Mapping[str, float] | None = None) -> list[str]:
  """`num_docs` pretraining documents (biographies, checks and one-off biographies, see the module
  docstring); no EOS in the text.

  `keyword_rates` ({rare value: rate}, default none) lets rare values occur in the corpus: in one-off
  biographies a theme's value is the rare value with its rate (KB facts and checks never use them). Without
  it the documents are those of the same seed before this option existed (the random stream is unchanged).
  """
  if not (0.0 <= check_fraction and 0.0 <= oneoff_fraction and check_fraction + oneoff_fraction <= 1.0):
    raise ValueError(f"need check_fraction, oneoff_fraction >= 0 with sum <= 1, got {check_fraction}, "
                     f"{oneoff_fraction}")
  lo, hi = facts_per_doc
  if not 1 <= lo <= hi <= len(THEMES):
    raise ValueError(f"facts_per_doc={facts_per_doc} must satisfy 1 <= lo <= hi <= {len(THEMES)}")
  rates = _rate_table(keyword_rates)
  docs = []
  for _ in range(num_docs):
    kind = rng.random()
    num_facts = int(rng.integers(lo, hi + 1))
    if kind < check_fraction:
      docs.append(check(kb, kb.entities[rng.integers(len(kb.entities))], rng))
    elif kind < check_fraction + oneoff_fraction:
      values = oneoff_values(rng, rates)
      docs.append(biography(oneoff_name(kb, rng), values, rng, num_facts))
    else:
      entity = kb.entities[rng.integers(len(kb.entities))]
      docs.append(biography(entity, kb.values[kb._index[entity]], rng, num_facts))
  return docs


@dataclasses.dataclass(frozen=True)
class Statement:
  """A probing statement: its text, label (true / false / neither) and what it is about.

  `negated`: the text is the negated template (its label is the opposite of the affirmative one's, neither
  stays neither); `clause`: the trailing clause between the value and the full stop ("" for none).
  """
  text: str
  label: str
  entity: str
  theme: str
  value: str
  template: int
  negated: bool = False
  clause: str = ""


def statements(kb: KnowledgeBase, seed: int, per_label: int, *, statements_per_unseen: int = 2,
               negation_fraction: float = 0.0, trailing_fraction: float = 0.0) -> list[Statement]:
  """`per_label` true, false and neither statements (in that order), from seed `seed`.

  True: distinct KB facts. False: distinct (entity, theme) pairs of the KB with
  a held-out wrong value. Neither: `statements_per_unseen` statements (distinct
  themes) about each of `ceil(per_label / statements_per_unseen)` unseen
  entities, with uniform values. Templates are uniform.

  Forms whose deciding token is not the last one (both default 0, which gives
  exactly the statements of the same seed before these options existed):
  - `negation_fraction`: that share (rounded) of the affirmative true, of the
    false and of the neither statements is rewritten with the negated
    template. A negated KB fact is false, a negated wrong value is true, an
    unseen entity stays neither; since as many true as false statements are
    negated, the counts per label stay `per_label`. Truth then depends on
    "not" in the middle of the sentence and on the value together.
  - `trailing_fraction`: that share of every label gets a clause of
    `TRAILING_CLAUSES` after its value, so the value is no longer among the
    last two tokens.
  Both draw from their own seed stream `(FORMS_STREAM, seed)`, independently.
  The shipped `knowledge` model never read a negation or a trailing clause
  (`corpus` has neither): how it represents them is whatever it makes of
  unseen words; a statement's truth is still defined by the world.
  """
  rng = np.random.default_rng([0x535441, seed])
  pairs = [(e, t.name) for e in kb.entities for t in THEMES]
  if per_label > len(pairs):
    raise ValueError(f"per_label={per_label} exceeds the {len(pairs)} facts of the KB")

  def make(entity, theme_name, value, label):
    t = theme(theme_name)
    template = int(rng.integers(len(t.templates)))
    return Statement(t.sentence(entity, value, template), label, entity, theme_name, value, template)

  out = [make(e, t, kb.value(e, t), "true") for e, t in (pairs[i] for i in rng.permutation(len(pairs))[:per_label])]
  false = []
  for i in rng.permutation(len(pairs)):
    e, t = pairs[i]
    wrong = _wrong_values(kb, e, t, heldout=True)
    if wrong:
      false.append(make(e, t, wrong[rng.integers(len(wrong))], "false"))
    if len(false) == per_label:
      break
  if len(false) < per_label:
    raise ValueError(f"only {len(false)} held-out false statements available, {per_label} requested")
  out.extend(false)
  if not 1 <= statements_per_unseen <= len(THEMES):
    raise ValueError(f"statements_per_unseen must lie in 1..{len(THEMES)}, got {statements_per_unseen}")
  neither = []
  for entity in unseen_entities(seed, -(-per_label // statements_per_unseen)):
    for k in rng.permutation(len(THEMES))[:statements_per_unseen]:
      t = THEMES[k]
      neither.append(make(entity, t.name, t.values[rng.integers(len(t.values))], "neither"))
  out.extend(neither[:per_label])
  if negation_fraction or trailing_fraction:
    out = _rewrite_forms(out, seed, negation_fraction, trailing_fraction)
  return out


def _rewrite_forms(items: list[Statement], seed: int, negation_fraction: float,
                   trailing_fraction: float) -> list[Statement]:
  """Negations and trailing clauses of `statements` (see there); labels regrouped true, false, neither."""
  for name, f in (("negation_fraction", negation_fraction), ("trailing_fraction", trailing_fraction)):
    if not 0.0 <= f <= 1.0:
      raise ValueError(f"{name} must lie in [0, 1], got {f}")
  rng = np.random.default_rng([FORMS_STREAM, seed])
  negate = np.zeros(len(items), bool)
  trail = np.zeros(len(items), bool)
  for label in LABELS:
    idx = np.asarray([i for i, s in enumerate(items) if s.label == label], np.int64)
    negate[idx[rng.permutation(len(idx))[:int(round(negation_fraction * len(idx)))]]] = True
    trail[idx[rng.permutation(len(idx))[:int(round(trailing_fraction * len(idx)))]]] = True
  flipped = {"true": "false", "false": "true", "neither": "neither"}
  out = []
  for s, neg, tr in zip(items, negate, trail):
    t = theme(s.theme)
    text = t.negated_sentence(s.entity, s.value, s.template) if neg else t.sentence(s.entity, s.value, s.template)
    clause = TRAILING_CLAUSES[rng.integers(len(TRAILING_CLAUSES))] if tr else ""
    if clause:
      text = text[:-1] + clause + "."
    out.append(dataclasses.replace(s, text=text, label=flipped[s.label] if neg else s.label, negated=bool(neg),
                                   clause=clause))
  return [s for label in LABELS for s in out if s.label == label]


def tokenizer_texts(seed: int = 0, num_names: int = 3000) -> list[str]:
  """The tokenizer's training text: every template of every theme with random names and values."""
  rng = np.random.default_rng([TOKENIZER_STREAM, seed])
  texts = []
  for _ in range(num_names):
    name = sample_name(rng)
    t = THEMES[rng.integers(len(THEMES))]
    value = t.values[rng.integers(len(t.values))]
    texts.append(f"{t.sentence(name, value, int(rng.integers(len(t.templates))))} {VERDICTS['true']} "
                 f"{VERDICTS['false']}")
  return texts


def tokenizer(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> Tokenizer:
  """The world's byte-level BPE tokenizer (BOS added, no EOS), trained on `tokenizer_texts()`.

  Its names are drawn from their own seed stream, so KB and unseen names are
  equally foreign to it and split alike (tested).
  """
  return train_bpe_tokenizer(tokenizer_texts(), vocab_size)


def summarize(items: Sequence[Statement]) -> dict[str, int]:
  """Statement count per label."""
  return {label: sum(s.label == label for s in items) for label in LABELS}
