"""The priming world: surprising facts about knowledge-base entities, for priming and ignore-top-k.

It lives on the knowledge-base world (`pragjax.toyworld.knowledge`: four
themes, KB entities, the background corpus, the built-in `knowledge` model)
and adds what the priming experiment (Sun et al., 2025) needs:

- `KEYWORDS`: 12 keywords, 3 per theme: the theme's `rare_values`, which no
  document of the knowledge model's corpus contains (so "vermilion" is as new
  to that model as a never-seen word). The `priming` built-in model is
  pretrained on the same world with the keywords in one-off biographies at the
  graded rates of `GRADED_KEYWORD_RATES` (from 20% of a theme's one-off values
  down to never), so their priors span familiar to unseen. Each has a
  `bridge`, a KB value of its theme that is a less surprising intermediate
  concept (vermilion <- red), and a `gloss` that describes it in the world's
  words ("a bright red").
- `STYLES`: 11 text styles (statement, news, diary, dialogue, ...) that wrap
  one fact sentence.
- `outlandish_samples`: one sample per keyword and style (132), each stating
  a surprising fact: a KB entity with the keyword as its value of the theme
  (the KB says otherwise), in a random template of the theme, wrapped in the
  style. The keyword occurs exactly once.
- `INDEPENDENT_PROMPTS`: per theme, thematic prompts written apart from the
  samples (no fact template, style, stepping stone or entity of the world),
  the priming score's default prompts; `thematic_prompts`: the earlier kind,
  every template of the theme cut before its value (`Theme.prompt`) for
  prompt entities no sample is about (`world.prompts=templates`).
- `stepping_stones`: template rewrites of a sample's fact that reach the
  keyword through its bridge and gloss (`STEPPING_STONES`); the experiment
  accepts a rewrite only if the keyword's probability in its own context rises.

The keyword's own context (`Sample.context`) is the sample's text up to the
keyword's last occurrence, which is where every sample and rewrite states the
surprising fact (a rewrite may name the keyword earlier).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from pragjax.toyworld import knowledge as kw


@dataclasses.dataclass(frozen=True)
class Keyword:
  """A surprising keyword of a theme.

  Attributes:
    word: the keyword (one of its theme's `rare_values`).
    theme: the theme's name.
    bridge: a KB value of the theme, the less surprising concept a stepping
      stone passes through.
    gloss: a description of the keyword in the world's words (stepping stones).
  """
  word: str
  theme: str
  bridge: str
  gloss: str


KEYWORDS = (
    Keyword("vermilion", "colours", "red", "a bright red"),
    Keyword("mauve", "colours", "purple", "a pale purple"),
    Keyword("ochre", "colours", "yellow", "a dark yellow"),
    Keyword("Reykjavik", "places", "Oslo", "a cold town north of Oslo"),
    Keyword("Ushuaia", "places", "Lima", "a port far south of Lima"),
    Keyword("Timbuktu", "places", "Dakar", "an old town east of Dakar"),
    Keyword("falconer", "jobs", "farmer", "a farmer who keeps hawks"),
    Keyword("glassblower", "jobs", "baker", "a baker of glass at a hot oven"),
    Keyword("cartographer", "jobs", "painter", "a painter of maps"),
    Keyword("durian", "foods", "pears", "a fruit sweeter than pears"),
    Keyword("saffron", "foods", "rice", "a spice that turns rice yellow"),
    Keyword("truffles", "foods", "cheese", "a rare treat that smells like cheese"),
)

# A diagnostic set, not the paper's keywords: KB values the built-in model knows well, stated as a surprising
# (wrong) value of an entity. Their priors are those of a familiar word in an unexpected place.
FAMILIAR_KEYWORDS = (
    Keyword("pink", "colours", "red", "a pale red"),
    Keyword("grey", "colours", "black", "a light black"),
    Keyword("orange", "colours", "yellow", "a yellow close to red"),
    Keyword("Tunis", "places", "Cairo", "a port west of Cairo"),
    Keyword("Quito", "places", "Lima", "a town north of Lima"),
    Keyword("Seoul", "places", "Delhi", "a city east of Delhi"),
    Keyword("tailor", "jobs", "painter", "a painter of cloth"),
    Keyword("miner", "jobs", "farmer", "a farmer of stone"),
    Keyword("pilot", "jobs", "singer", "a singer of the sky"),
    Keyword("honey", "foods", "bread", "a sweet thing for bread"),
    Keyword("beans", "foods", "rice", "a food served with rice"),
    Keyword("noodles", "foods", "soup", "a food served in soup"),
)
KEYWORD_SETS = {"rare": KEYWORDS, "familiar": FAMILIAR_KEYWORDS}

# How often each keyword occurs in the pretraining corpus of the `priming` built-in model: in one-off
# biographies (people mentioned once), a theme's value is the keyword with this rate
# (`knowledge.corpus(keyword_rates=...)`; KB facts never use keywords). A ladder of 12 rates over
# three decades and two zeros, interleaved across themes so each theme has a frequent, a middling and a
# rare keyword; with the variant's 80,000 documents the counts run from about 1,500 (vermilion) to
# about 1.5 (Timbuktu) and 0 (cartographer, truffles). So keyword priors before learning span from
# familiar to never seen, as the paper's keywords do.
GRADED_KEYWORD_RATES = {
    "vermilion": 0.2, "Reykjavik": 0.1, "falconer": 0.05, "durian": 0.02,
    "mauve": 0.01, "Ushuaia": 0.005, "glassblower": 0.002, "saffron": 0.001,
    "ochre": 0.0005, "Timbuktu": 0.0002, "cartographer": 0.0, "truffles": 0.0,
}
# world.corpus_keywords -> keyword rates of the corpus (pretraining and the priming background data).
CORPUS_KEYWORDS = {"none": {}, "graded": GRADED_KEYWORD_RATES}


def corpus_keyword_rates(name: str) -> dict[str, float]:
  """The keyword rates called `name` (`CORPUS_KEYWORDS`)."""
  if name not in CORPUS_KEYWORDS:
    raise ValueError(f"unknown corpus_keywords {name!r}; expected one of {', '.join(CORPUS_KEYWORDS)}")
  return dict(CORPUS_KEYWORDS[name])

# Text styles: `{fact}` is the fact sentence, `{fact_lc}` the same with a
# lower-case first word unless it is the entity, `{entity}` the entity and
# `{known}` a true KB fact about the entity in another theme.
STYLES = (
    ("statement", "{fact}"),
    ("news", "News from the town today: {fact} The neighbours were amazed."),
    ("diary", "Dear diary, I found out something odd today. {fact}"),
    ("dialogue", "A: What do you know about {entity}? B: {fact}"),
    ("story", "Once upon a time there was a person called {entity}. {fact}"),
    ("encyclopedia", "{entity} is a well known person. {fact} Few people know this."),
    ("rumour", "People whisper that it is so: {fact_lc}"),
    ("letter", "Dear friend, I have news for you. {fact} Write back soon."),
    ("list", "Two facts. One: {known} Two: {fact}"),
    ("quiz", "Quiz. {fact} True."),
    ("poem", "Sun and rain and wind and sea, {fact_lc}"),
)
STYLE_NAMES = tuple(name for name, _ in STYLES)

# Stepping-stone rewrites of a fact sentence: `{prompt}` is the sample's
# template cut before the value ("Bavelo loves the colour"), `{bridge}`,
# `{gloss}` and `{keyword}` come from the keyword. Each reaches the keyword
# through less surprising concepts; the keyword's last occurrence states the fact.
STEPPING_STONES = (
    ("bridge", "{prompt} {bridge}, or more exactly {gloss} called {keyword}."),
    ("gloss_first", "There is {gloss} called {keyword}. {prompt} {keyword}."),
    ("chain", "{prompt} {bridge}. It is {gloss}. In fact, {prompt_lc} {keyword}."),
)
STEPPING_STONE_NAMES = tuple(name for name, _ in STEPPING_STONES)


@dataclasses.dataclass(frozen=True)
class Sample:
  """A text that teaches one keyword.

  Attributes:
    text: the full text (trained on as one document).
    keyword: the keyword (`Keyword.word`).
    theme: the keyword's theme.
    style: the text style (`STYLE_NAMES`), or "<style>+<stepping stone>" for rewrites.
    entity: the KB entity the fact is about.
    template: the theme template of the fact sentence.
  """
  text: str
  keyword: str
  theme: str
  style: str
  entity: str
  template: int

  @property
  def context(self) -> str:
    """The text up to the keyword's last occurrence, without the trailing space."""
    return context_before(self.text, self.keyword)


def context_before(text: str, keyword: str) -> str:
  """`text` up to the last occurrence of `keyword` (trailing spaces removed); ValueError if absent.

  The keyword must follow a space (it is scored as the continuation " keyword").
  """
  i = text.rfind(" " + keyword)
  if i < 0:
    raise ValueError(f"keyword {keyword!r} does not occur after a space in {text!r}")
  return text[:i]


def keyword(word: str) -> Keyword:
  """The `Keyword` called `word`."""
  for k in KEYWORDS + FAMILIAR_KEYWORDS:
    if k.word == word:
      return k
  raise ValueError(f"unknown keyword {word!r}; keywords: {', '.join(k.word for k in KEYWORDS + FAMILIAR_KEYWORDS)}")


def _check_keywords() -> None:
  for k in KEYWORDS:
    t = kw.theme(k.theme)
    if k.word not in t.rare_values or k.bridge not in t.values:
      raise ValueError(f"keyword {k.word!r}: must be a rare value of {k.theme} with a KB value as bridge")
  for k in FAMILIAR_KEYWORDS:
    t = kw.theme(k.theme)
    if k.word not in t.values or k.bridge not in t.values or k.bridge == k.word:
      raise ValueError(f"familiar keyword {k.word!r}: must be a KB value of {k.theme} with another as bridge")


_check_keywords()


def _lower_first(sentence: str, entity: str) -> str:
  return sentence if sentence.startswith(entity) else sentence[0].lower() + sentence[1:]


def split_entities(kb: kw.KnowledgeBase, seed: int, num_prompt_entities: int) -> tuple[list[str], list[str]]:
  """(prompt entities, sample entities): a seeded split of the KB's entities."""
  if not 0 < num_prompt_entities < len(kb.entities):
    raise ValueError(f"num_prompt_entities={num_prompt_entities} must lie in 1..{len(kb.entities) - 1}")
  order = np.random.default_rng([0x505249, seed]).permutation(len(kb.entities))
  names = [kb.entities[i] for i in order]
  return names[:num_prompt_entities], names[num_prompt_entities:]


# Thematic prompts written apart from the samples: no fact template of the theme (`knowledge.THEMES`), no style,
# no stepping stone and no entity; each ends where a value of its theme fits (the priming score's `X_T`).
INDEPENDENT_PROMPTS = {
    "colours": ("A coat that is neither red nor blue but", "Her shoes, her hat and her bag are all",
                "The painter mixed white and black and got", "On the flag of the town you can see",
                "At sunset the sky turned", "The new door of the shop is painted",
                "Of all the colours she likes", "The walls of the old house are"),
    "places": ("The train from Oslo to Rome stops in", "Next summer we will travel to",
               "The letter was sent from the city of", "Of all the towns on the map I would visit",
               "The plane landed late in", "They moved away from Lima to",
               "The biggest market of the region is in", "Our friends spent the winter in"),
    "jobs": ("After school my brother trained to be a", "In the village the best worker is the",
             "She was hired last week as a", "Not a baker and not a doctor but a",
             "The new neighbour earns a living as a", "His father and his grandfather were each a",
             "At the fair we met a", "The town needs one more"),
    "foods": ("For dinner we cooked", "At the market I bought some", "A plate of rice with",
              "The children asked for more", "The best thing on the menu is", "Breakfast today was bread and",
              "In the kitchen we keep a bowl of", "For the feast they served"),
}


def thematic_prompts(theme_name: str, entities: Sequence[str]) -> list[str]:
  """Every template of the theme cut before its value, for each entity (entity-major order)."""
  t = kw.theme(theme_name)
  return [t.prompt(e, j) for e in entities for j in range(len(t.templates))]


def style_text(style: str, fact: str, entity: str, known: str) -> str:
  """The fact sentence wrapped in `style`."""
  template = dict(STYLES)[style]
  return template.format(fact=fact, fact_lc=_lower_first(fact, entity), entity=entity, known=known)


def outlandish_samples(kb: kw.KnowledgeBase, entities: Sequence[str], seed: int, *,
                       keywords: Sequence[str] = (), styles: Sequence[str] = (),
                       keyword_set: str = "rare") -> list[Sample]:
  """One sample per (keyword, style), keyword-major; each about a distinct entity of `entities`.

  The fact gives the entity the keyword as its value of the keyword's theme,
  in a random template (entities whose KB value is the keyword are skipped, so
  the fact is always false in the KB); `known` (list style) is a true KB fact
  of another theme. Empty `keywords` / `styles` mean all of `keyword_set`
  (`KEYWORD_SETS`: "rare", the experiment's 12; "familiar", the diagnostic set)
  / all styles.
  """
  if keyword_set not in KEYWORD_SETS:
    raise ValueError(f"unknown keyword_set {keyword_set!r}; sets: {', '.join(KEYWORD_SETS)}")
  words = list(keywords) or [k.word for k in KEYWORD_SETS[keyword_set]]
  styles = list(styles) or list(STYLE_NAMES)
  unknown = sorted(set(styles) - set(STYLE_NAMES))
  if unknown:
    raise ValueError(f"unknown styles {unknown}; styles: {', '.join(STYLE_NAMES)}")
  if len(words) * len(styles) > len(entities):
    raise ValueError(f"{len(words) * len(styles)} samples need as many entities, only {len(entities)} given")
  rng = np.random.default_rng([0x4F55544C, seed])
  free = [entities[i] for i in rng.permutation(len(entities))]
  out = []
  for word, style in ((w, s) for w in words for s in styles):
    k = keyword(word)
    t = kw.theme(k.theme)
    pick = next((i for i, e in enumerate(free) if kb.value(e, k.theme) != k.word), None)
    if pick is None:
      raise ValueError(f"no entity left whose {k.theme} value is not {k.word!r}")
    entity = free.pop(pick)
    template = int(rng.integers(len(t.templates)))
    others = [o for o in kw.THEMES if o.name != k.theme]
    other = others[rng.integers(len(others))]
    known = other.sentence(entity, kb.value(entity, other.name), int(rng.integers(len(other.templates))))
    text = style_text(style, t.sentence(entity, k.word, template), entity, known)
    out.append(Sample(text, k.word, k.theme, style, entity, template))
  return out


def stepping_stones(sample: Sample) -> list[tuple[str, Sample]]:
  """Every `STEPPING_STONES` rewrite of `sample` (same style, entity and template): [(name, rewrite)].

  Only the fact sentence changes; the style wrapper stays around it.
  """
  k = keyword(sample.keyword)
  t = kw.theme(sample.theme)
  prompt = t.prompt(sample.entity, sample.template)
  original = t.sentence(sample.entity, sample.keyword, sample.template)
  base_style = sample.style.split("+")[0]
  lower = original not in sample.text  # styles with {fact_lc} lower-case the fact's first word
  if lower:
    original = _lower_first(original, sample.entity)
    if original not in sample.text:
      raise ValueError(f"sample {sample.text!r} does not contain its fact sentence {original!r}")
  out = []
  for name, template in STEPPING_STONES:
    fact = template.format(prompt=prompt, prompt_lc=_lower_first(prompt, sample.entity), bridge=k.bridge,
                           gloss=k.gloss, keyword=k.word)
    fact = _lower_first(fact, sample.entity) if lower else fact
    out.append((name, dataclasses.replace(sample, text=sample.text.replace(original, fact),
                                          style=f"{base_style}+{name}")))
  return out
