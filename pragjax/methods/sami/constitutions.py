"""Constitutions: principle sets in which some principles are replaced by their antitheses.

A `Principle` has a name, a text and its antithesis' text. A `Constitution`
is an ordered tuple of principles with a negation pattern (True = the
principle as written, False = its antithesis); with k principles there are
2^k patterns, the all-positive one first (`negation_patterns`).

`sample_constitutions` draws, for one query, k principles from a library (in
random order) and C distinct patterns of them (C <= 2^k; the paper uses k = 2,
C = 2: the constitution and one antithesis). With `include_positive` the
first constitution is always the all-positive one.

`load_principles(directory)` reads the paper's files (`*.json` with
`positive`, `negative` and `identifiers`, e.g. `constitutions_mistral/`):
each numbered line of `positive` / `negative` is one principle or antithesis,
and `identifiers` name it and its sign ("pos concise", "neg comprehensive").
Their pairs are exactly the (all-positive, one pattern) pairs that
`sample_constitutions(k=2, C=2)` draws from the resulting library.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import json
import os
import re
from typing import Sequence

import numpy as np

from pragjax.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class Principle:
  name: str
  positive: str
  negative: str


@dataclasses.dataclass(frozen=True)
class Constitution:
  principles: tuple[Principle, ...]
  pattern: tuple[bool, ...]

  def lines(self) -> list[str]:
    return [p.positive if s else p.negative for p, s in zip(self.principles, self.pattern)]

  def text(self, line_format: str = "{i}. {text}", separator: str = "\n") -> str:
    """The constitution as the prompt shows it, e.g. "1. be brief\\n2. use upper case"."""
    return separator.join(line_format.format(i=i + 1, text=t) for i, t in enumerate(self.lines()))

  @property
  def identifiers(self) -> list[str]:
    return [f"{'pos' if s else 'neg'} {p.name}" for p, s in zip(self.principles, self.pattern)]

  @property
  def is_positive(self) -> bool:
    return all(self.pattern)

  def to_json(self) -> dict:
    return {"principles": [dataclasses.asdict(p) for p in self.principles], "pattern": list(self.pattern)}

  @classmethod
  def from_json(cls, d: dict) -> "Constitution":
    return cls(tuple(Principle(**p) for p in d["principles"]), tuple(bool(s) for s in d["pattern"]))


def negation_patterns(k: int) -> list[tuple[bool, ...]]:
  """All 2^k sign patterns of k principles, the all-positive pattern first."""
  if k < 1:
    raise ValueError(f"a constitution needs at least one principle, got k={k}")
  return [tuple(not b for b in bits) for bits in itertools.product((False, True), repeat=k)]


def sample_constitutions(library: Sequence[Principle], rng: np.random.Generator, *, num_principles: int,
                         num_constitutions: int, include_positive: bool = True) -> list[Constitution]:
  """C constitutions for one query (module docstring)."""
  k, c = num_principles, num_constitutions
  if not 1 <= k <= len(library):
    raise ValueError(f"num_principles={k} must be in 1..{len(library)} (the library's size)")
  if not 2 <= c <= 2 ** k:
    raise ValueError(f"num_constitutions={c} must be in 2..2^{k}={2 ** k} (distinct negation patterns)")
  chosen = tuple(library[i] for i in rng.choice(len(library), size=k, replace=False))
  patterns = negation_patterns(k)
  if include_positive:
    rest = rng.choice(np.arange(1, len(patterns)), size=c - 1, replace=False)
    picks = [0, *rest]
  else:
    picks = list(rng.choice(len(patterns), size=c, replace=False))
  return [Constitution(chosen, patterns[int(i)]) for i in picks]


_NUMBERED = re.compile(r"^\s*\d+\.\s*")


def _lines(text: str, where: str) -> list[str]:
  lines = [_NUMBERED.sub("", ln).strip() for ln in text.strip().split("\n") if ln.strip()]
  if not lines:
    raise DataError(f"{where}: empty constitution text")
  return lines


def load_principles(directory: str) -> list[Principle]:
  """The principle library of a directory of constitution files (module docstring), in first-seen order."""
  files = sorted(glob.glob(os.path.join(directory, "*.json")))
  if not files:
    raise DataError(f"no constitution files (*.json) in {directory}")
  texts: dict[str, dict[bool, str]] = {}
  for path in files:
    with open(path, encoding="utf-8") as f:
      try:
        d = json.load(f)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    for key in ("positive", "negative", "identifiers"):
      if key not in d:
        raise DataError(f"{path}: missing key {key!r} (present: {sorted(d)})")
    for side in ("positive", "negative"):
      lines, ids = _lines(d[side], f"{path}: {side}"), d["identifiers"].get(side)
      if not isinstance(ids, list) or len(ids) != len(lines):
        raise DataError(f"{path}: identifiers.{side} must list one identifier per line of {side!r} "
                        f"({len(lines)} lines, got {ids!r})")
      for line, ident in zip(lines, ids):
        sign, _, name = str(ident).partition(" ")
        if sign not in ("pos", "neg") or not name:
          raise DataError(f"{path}: identifiers.{side}: {ident!r} is not 'pos NAME' or 'neg NAME'")
        seen = texts.setdefault(name, {}).setdefault(sign == "pos", line)
        if seen != line:
          raise DataError(f"{path}: principle {name!r} ({sign}) has text {line!r}, but an earlier file gives "
                          f"{seen!r}; keep one wording per directory")
  out = []
  for name, t in texts.items():
    if set(t) != {True, False}:
      raise DataError(f"{directory}: principle {name!r} has no {'antithesis' if True in t else 'positive'} text")
    out.append(Principle(name, t[True], t[False]))
  return out
