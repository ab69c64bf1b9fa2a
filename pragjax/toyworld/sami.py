"""The principles world (SAMI): list words on given topics, following written rules about the answer.

A query names `TOPICS_PER_QUERY` topics ("topics: animals music food");
an answer lists words of those topics (`TOPICS` holds 8 words per topic, no
word in two topics). Three principles, each with an antithesis, are about
attributes of the answer that a program checks exactly:

| principle | positive text | antithesis text | positive holds when | antithesis holds when |
|---|---|---|---|---|
| brief | "be brief" | "be long" | <= BRIEF_MAX words | >= LONG_MIN words |
| order | "sort a to z" | "sort z to a" | words in alphabetical order | in reverse alphabetical order |
| case | "use lower case" | "use upper case" | all lower case | all upper case |

(length, ordering and vocabulary, mirroring the paper's "concise" /
"comprehensive" principles for summaries). Only a well-formed answer can
satisfy a principle: at least `MIN_WORDS` words, each a word of one of the
query's topics, none repeated, all in one case (`parse`).

A document is a prompt (`PROMPT_TEMPLATE` with a constitution of 2 of the 3
principles, each stated positively or negated, in random order, and the
query) followed by an answer. The corpus is principle-conditioned text that
follows its rules only weakly, as a base model's pretraining text does: for
each stated rule, with probability `follow_rate` the answer's attribute
obeys it; otherwise the attribute is drawn as if no rule were stated (length
uniform over MIN_WORDS..MAX_WORDS, a random order, either case with
probability 1/2). Attributes of principles that are not stated are always
drawn that way. A model trained on this corpus follows principles only a
little more often than chance; `adherence` measures how often.

Held-out queries are a fixed part of query space (a stable hash bucket of the
topic list, `HELDOUT_BUCKETS`): unseen combinations of seen topics, never in
the corpus whatever the seed.

Tokenizer: one token per word (`VOCAB`: the prompt's words, the topic
names, and every topic word in lower and in upper case), split on
whitespace; decoding joins words with single spaces. (A character-level
version of this world, with answers copied from a list in the query, was
not learnt by a model small enough to pretrain in a few CPU minutes.)
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from pragjax.models.tokenizer import build_word_level_tokenizer

TOPICS = {
    "animals": ("ant", "bee", "cat", "cow", "dog", "elk", "fox", "owl"),
    "food": ("bun", "egg", "fig", "jam", "nut", "pea", "rice", "tea"),
    "tools": ("axe", "awl", "drill", "file", "saw", "vise", "wedge", "hoe"),
    "colours": ("red", "blue", "gold", "grey", "jade", "pink", "rust", "tan"),
    "places": ("barn", "camp", "dock", "farm", "mall", "park", "port", "zoo"),
    "clothes": ("belt", "boot", "cap", "coat", "hat", "scarf", "sock", "vest"),
    "weather": ("fog", "gale", "hail", "haze", "mist", "rain", "snow", "wind"),
    "body": ("arm", "ear", "eye", "hip", "jaw", "leg", "lip", "toe"),
    "music": ("bass", "bell", "drum", "flute", "gong", "harp", "horn", "lute"),
    "water": ("bay", "cove", "lake", "pond", "pool", "reef", "sea", "well"),
}
TOPIC_NAMES = tuple(TOPICS)
TOPICS_PER_QUERY = 3
MIN_WORDS = 2  # shortest well-formed answer
MAX_WORDS = 8  # longest answer in the corpus
BRIEF_MAX = 3  # "be brief": at most this many words
LONG_MIN = 6  # "be long": at least this many words
HELDOUT_BUCKETS = 10  # a query whose hash is 0 mod 10 is held out
PRINCIPLES_PER_DOC = 2
PROMPT_TEMPLATE = "rules:\n{constitution}\ntopics: {query}\nanswer: "


@dataclasses.dataclass(frozen=True)
class Principle:
  """A principle of the world: its name, its text and its antithesis' text."""
  name: str
  positive: str
  negative: str


PRINCIPLES = (
    Principle("brief", "be brief", "be long"),
    Principle("order", "sort a to z", "sort z to a"),
    Principle("case", "use lower case", "use upper case"),
)
BY_NAME = {p.name: p for p in PRINCIPLES}


@dataclasses.dataclass(frozen=True)
class Rule:
  """One line of a constitution: principle `name`, stated positively or negated."""
  name: str
  positive: bool

  @property
  def text(self) -> str:
    p = BY_NAME[self.name]
    return p.positive if self.positive else p.negative


def format_constitution(rules: Sequence[Rule]) -> str:
  """Numbered lines, e.g. "1. be brief\\n2. use upper case"."""
  return "\n".join(f"{i + 1}. {r.text}" for i, r in enumerate(rules))


def format_query(topics: Sequence[str]) -> str:
  return " ".join(topics)


def parse_query(text: str) -> tuple[str, ...]:
  return tuple(text.split(" "))


def vocabulary(topics: Sequence[str]) -> tuple[str, ...]:
  """The words an answer to `topics` may use."""
  return tuple(w for t in topics for w in TOPICS[t])


def prompt(rules: Sequence[Rule], items: Sequence[str], template: str = PROMPT_TEMPLATE) -> str:
  return template.format(constitution=format_constitution(rules), query=format_query(items))


def vocab() -> list[str]:
  """Every word of the world (module docstring), in a fixed order."""
  prompt_words = PROMPT_TEMPLATE.replace("{constitution}", "").replace("{query}", "").split()
  rule_words = [w for p in PRINCIPLES for t in (p.positive, p.negative) for w in t.split()]
  numbers = [f"{i}." for i in range(1, len(PRINCIPLES) + 1)]
  words = [w for t in TOPICS.values() for w in t]
  out = []
  for w in [*prompt_words, *numbers, *rule_words, *TOPIC_NAMES, *words, *(w.upper() for w in words)]:
    if w not in out:
      out.append(w)
  return out


def tokenizer():
  return build_word_level_tokenizer(vocab())


def is_heldout(items: Sequence[str]) -> bool:
  digest = hashlib.sha1(" ".join(sorted(items)).encode()).digest()
  return int.from_bytes(digest[:8], "big") % HELDOUT_BUCKETS == 0


def sample_items(rng: np.random.Generator) -> tuple[str, ...]:
  """A query: `TOPICS_PER_QUERY` distinct topics in random order."""
  return tuple(TOPIC_NAMES[i] for i in rng.choice(len(TOPIC_NAMES), size=TOPICS_PER_QUERY, replace=False))


def _queries(rng: np.random.Generator, n: int, heldout: bool) -> list[tuple[str, ...]]:
  out = []
  while len(out) < n:
    items = sample_items(rng)
    if is_heldout(items) == heldout:
      out.append(items)
  return out


def training_queries(rng: np.random.Generator, n: int) -> list[tuple[str, ...]]:
  """`n` queries outside the held-out bucket (topic sets repeat: there are only C(10, 3) of them)."""
  return _queries(rng, n, heldout=False)


def heldout_queries(seed: int, n: int) -> list[tuple[str, ...]]:
  """`n` held-out queries (a fixed hash bucket of topic sets, in random topic order)."""
  return _queries(np.random.default_rng([seed, 0x484F]), n, heldout=True)


def sample_rules(rng: np.random.Generator, k: int = PRINCIPLES_PER_DOC) -> tuple[Rule, ...]:
  """`k` distinct principles in random order, each positive or negated with probability 1/2."""
  names = rng.choice(len(PRINCIPLES), size=k, replace=False)
  return tuple(Rule(PRINCIPLES[i].name, bool(rng.random() < 0.5)) for i in names)


def answer(items: Sequence[str], rules: Sequence[Rule], rng: np.random.Generator, follow_rate: float) -> str:
  """An answer to `items` that obeys each of `rules` with probability `follow_rate` (module docstring)."""
  target = {r.name: r.positive for r in rules if rng.random() < follow_rate}
  if "brief" in target:
    n = rng.integers(MIN_WORDS, BRIEF_MAX + 1) if target["brief"] else rng.integers(LONG_MIN, MAX_WORDS + 1)
  else:
    n = rng.integers(MIN_WORDS, MAX_WORDS + 1)
  vocab = vocabulary(items)
  words = [vocab[i] for i in rng.choice(len(vocab), size=int(n), replace=False)]
  if "order" in target:
    words = sorted(words, reverse=not target["order"])
  lower = target["case"] if "case" in target else bool(rng.random() < 0.5)
  return " ".join(w if lower else w.upper() for w in words)


def corpus(rng: np.random.Generator, n: int, follow_rate: float) -> list[dict]:
  """`n` training documents as `{"prompt", "response"}` records."""
  docs = []
  for items in training_queries(rng, n):
    rules = sample_rules(rng)
    docs.append({"prompt": prompt(rules, items), "response": answer(items, rules, rng, follow_rate)})
  return docs


def parse(items: Sequence[str], response: str) -> list[str] | None:
  """The answer's words in lower case, or None if it is not well formed (module docstring)."""
  words = response.strip().split(" ")
  if len(words) < MIN_WORDS or not (all(w.islower() for w in words) or all(w.isupper() for w in words)):
    return None
  lower = [w.lower() for w in words]
  if not set(lower) <= set(vocabulary(items)) or len(set(lower)) != len(lower):
    return None
  return lower


def holds(items: Sequence[str], response: str, rule: Rule) -> bool:
  """Whether `response` satisfies `rule` (a well-formed answer only)."""
  idx = parse(items, response)
  if idx is None:
    return False
  if rule.name == "brief":
    return len(idx) <= BRIEF_MAX if rule.positive else len(idx) >= LONG_MIN
  if rule.name == "order":
    pairs = list(zip(idx, idx[1:]))
    return all(a < b for a, b in pairs) if rule.positive else all(a > b for a, b in pairs)
  if rule.name == "case":
    first = response.strip().split(" ")[0]
    return first.islower() if rule.positive else first.isupper()
  raise ValueError(f"unknown principle {rule.name!r}; known: {', '.join(BY_NAME)}")


def score(items: Sequence[str], response: str, rules: Sequence[Rule]) -> int:
  """Number of `rules` the response satisfies."""
  return sum(holds(items, response, r) for r in rules)


def adherence(items_list: Sequence[Sequence[str]], responses: Sequence[str],
              rules_list: Sequence[Sequence[Rule]]) -> dict[str, float]:
  """Share of stated rules that hold, overall and per principle and sign; share of well-formed answers."""
  hits: dict[str, list[bool]] = {}
  for items, resp, rules in zip(items_list, responses, rules_list):
    for r in rules:
      ok = holds(items, resp, r)
      hits.setdefault("all", []).append(ok)
      hits.setdefault(f"{r.name}:{'pos' if r.positive else 'neg'}", []).append(ok)
  out = {k: float(np.mean(v)) for k, v in sorted(hits.items())}
  out["well_formed"] = float(np.mean([parse(i, r) is not None for i, r in zip(items_list, responses)]))
  return out


def chance_adherence(rule: Rule) -> float:
  """Probability that an answer drawn with no rule stated satisfies `rule` (the corpus's unconditioned answers)."""
  lengths = np.arange(MIN_WORDS, MAX_WORDS + 1)
  if rule.name == "brief":
    return float(np.mean(lengths <= BRIEF_MAX) if rule.positive else np.mean(lengths >= LONG_MIN))
  if rule.name == "order":
    return float(np.mean([1.0 / np.prod(np.arange(1, n + 1)) for n in lengths]))
  return 0.5
