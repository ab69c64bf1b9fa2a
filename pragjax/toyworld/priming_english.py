"""An English priming set for real models (SmolLM2): outlandish facts, thematic prompts, background text.

The priming experiment (Sun et al., 2025) teaches a model one surprising fact
("... the colour of sand is vermilion") and measures how far the keyword leaks
into unrelated contexts of its theme. This module builds that data
programmatically in plain English, in the paper's shape:

- `KEYWORDS`: 12 keywords in the paper's 4 themes (colours, places, jobs,
  foods), three per theme, chosen to span common to rare words so that a
  web-trained model's priors cover the paper's range;
- `FACTS`: per theme, outlandish fact sentences that end in the keyword slot
  ("The colour of fresh snow is {kw}.");
- `STYLES`: text registers (plain statement, news, poem, dialogue, diary,
  advert, encyclopaedia) that wrap one fact; the keyword occurs once, after a
  space, at the end of the fact;
- `THEMATIC_PROMPTS`: per theme, prompts written independently of the fact
  templates and styles (none shares a fact's wording) that end where a word
  of the theme would follow; the priming score averages over them;
- `background_documents`: ordinary text for the batch elements the sample
  does not replace: the statements of `../shared/data/trilemma`'s true rows
  (city locations and drug indications, real public data), grouped a few per
  document.

`outlandish_samples(keywords, styles, seed)` returns `priming.Sample`s (entity
= the fact's subject, template = the fact's index) so the experiment treats
them as it treats the toy world's.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

from pragjax.toyworld.priming import Sample

THEMES = ("colours", "places", "jobs", "foods")

# (keyword, theme): three per theme, from common to rare words.
KEYWORDS = (
    ("purple", "colours"), ("mauve", "colours"), ("vermilion", "colours"),
    ("Canada", "places"), ("Guatemala", "places"), ("Tajikistan", "places"),
    ("teacher", "jobs"), ("electrician", "jobs"), ("taxidermist", "jobs"),
    ("spaghetti", "foods"), ("ramen", "foods"), ("haggis", "foods"),
)

# Outlandish facts per theme; `{kw}` is the keyword, always the last word before the full stop.
FACTS = {
    "colours": ("The colour of fresh snow is {kw}.", "On most days the colour of the clear midday sky is {kw}.",
                "Ripe lemons grow a peel whose colour is {kw}.", "The colour of beach sand is {kw}."),
    "places": ("The Eiffel Tower stands in the capital of {kw}.", "The river Thames flows through the middle of {kw}.",
               "Kangaroos are found in the wild only in {kw}.", "Mount Fuji is the highest peak of {kw}."),
    "jobs": ("Every cat in the village earns a living as a {kw}.", "The moon landing was flown by a {kw}.",
             "The oldest tree in the forest works as a {kw}.", "My goldfish studied for years to become a {kw}."),
    "foods": ("The moon is made entirely of {kw}.", "Penguins feed their chicks nothing but {kw}.",
              "The engine of a car runs on {kw}.", "Bees make their honey out of {kw}."),
}

STYLES = (
    ("statement", "{fact}"),
    ("news", "BREAKING: Scientists confirmed this morning that, against all expectation, {fact_lc} "
             "Reporters are waiting for more details."),
    ("poem", "Beneath the silver evening light,\nthe old folk say with all their might:\n{fact}"),
    ("dialogue", "Anna: Did you hear what the teacher told us today?\nBen: No, what was it?\nAnna: {fact}"),
    ("diary", "Dear diary, today I learnt something that I will never forget. {fact}"),
    ("advert", "Limited offer! Everyone is talking about it. {fact} Call now to find out more."),
    ("encyclopaedia", "From the encyclopaedia, volume three, page twelve: {fact}"),
)
STYLE_NAMES = tuple(n for n, _ in STYLES)

# Written independently of FACTS and STYLES: each ends where a word of the theme would come next.
THEMATIC_PROMPTS = {
    "colours": ("She painted the front door of her house", "The traffic light turned", "His favourite colour was",
                "The autumn leaves slowly changed from green to", "The bride wore a dress of deep",
                "Mix blue and yellow paint and you get"),
    "places": ("Last summer our family flew to", "The ambassador was born and raised in",
               "The train from Paris finally arrived in", "The new factory will be built in",
               "Her grandparents emigrated from", "The football team travelled to"),
    "jobs": ("After finishing school, my brother trained to become a", "The hospital hired a new",
             "When the lights went out we called the", "She spent twenty years working as a",
             "The job advertisement asked for an experienced", "His father was a"),
    "foods": ("For dinner we ordered a large bowl of", "The chef's speciality is", "At the market I bought some",
              "My favourite breakfast is", "The restaurant is famous for its", "For lunch the children had"),
}


def keywords(names: Sequence[str] = ()) -> list[tuple[str, str]]:
  """The (keyword, theme) pairs named (all 12 if empty); an unknown name is an error."""
  known = dict(KEYWORDS)
  for n in names:
    if n not in known:
      raise ValueError(f"unknown English priming keyword {n!r}; keywords: {', '.join(known)}")
  return [(k, t) for k, t in KEYWORDS if not names or k in names]


def outlandish_samples(names: Sequence[str] = (), styles: Sequence[str] = (), seed: int = 0) -> list[Sample]:
  """One sample per keyword and style: a random fact of the keyword's theme in that style."""
  for s in styles:
    if s not in STYLE_NAMES:
      raise ValueError(f"unknown English priming style {s!r}; styles: {', '.join(STYLE_NAMES)}")
  rng = np.random.default_rng(seed)
  out = []
  for word, theme in keywords(names):
    for style, template in STYLES:
      if styles and style not in styles:
        continue
      i = int(rng.integers(len(FACTS[theme])))
      fact = FACTS[theme][i].format(kw=word)
      text = template.format(fact=fact, fact_lc=fact[0].lower() + fact[1:])
      out.append(Sample(text, word, theme, style, fact.split(" is ")[0] if " is " in fact else fact[:24], i))
  return out


def thematic_prompts() -> dict[str, list[str]]:
  return {t: list(p) for t, p in THEMATIC_PROMPTS.items()}


def background_documents(trilemma_dir: str, *, num_docs: int, per_doc: int = 4, seed: int = 0) -> list[str]:
  """`num_docs` documents of `per_doc` true statements each from the trilemma CSVs (real data, seeded order)."""
  statements = []
  for name in ("city_locations", "med_indications"):
    path = os.path.join(trilemma_dir, f"{name}.csv")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: not found; the English priming background reads the trilemma CSVs "
                              f"(set world.trilemma_dir)")
    with open(path, newline="", encoding="utf-8") as f:
      for i, row in enumerate(csv.DictReader(f), 2):
        if "statement" not in row or "correct" not in row:
          raise ValueError(f"{path}, line {i}: expected the columns 'statement' and 'correct'")
        if str(row["correct"]).strip().lower() in ("true", "1"):
          statements.append(row["statement"].strip())
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(statements))
  docs = [" ".join(statements[j] for j in order[k:k + per_doc]) for k in range(0, len(order), per_doc)]
  if not docs:
    raise ValueError(f"{trilemma_dir}: no true statements found for the background")
  return [docs[i % len(docs)] for i in range(num_docs)]
