"""The principles world (`pragjax.toyworld.sami`): sampled answers, adherence, and the programmatic judge."""

from __future__ import annotations

import jax
import numpy as np

from pragjax.eval.judges import Comparison, Judge, programmatic_judge
from pragjax.methods.sami import sampling
from pragjax.toyworld import sami as world


def toy_score(comparison: Comparison, response: str) -> float:
  """Principles of the comparison's rules that `response` satisfies (`meta` = (items, rules))."""
  items, rules = comparison.meta
  return float(world.score(items, response, rules))


def toy_judge() -> Judge:
  """The programmatic judge: more satisfied principles wins, equal counts tie."""
  return programmatic_judge(toy_score)


def random_rule_sets(seed: int, n: int, k: int = world.PRINCIPLES_PER_DOC) -> list[tuple[world.Rule, ...]]:
  rng = np.random.default_rng([seed, 0x5255])
  return [world.sample_rules(rng, k) for _ in range(n)]


def measure_adherence(model, tokenizer, *, seed: int, num_queries: int, temperature: float, max_new_tokens: int,
                      batch_size: int = 128, template: str = world.PROMPT_TEMPLATE) -> dict[str, float]:
  """Adherence of `model` on held-out queries, each under a random constitution (2 principles, random signs).

  Returns `adherence` (`all`, per principle and sign, `well_formed`) plus
  `chance`: the share of the same rules that an answer drawn as if no rule
  were stated would satisfy (the corpus's unconditioned answers).
  """
  items = world.heldout_queries(seed, num_queries)
  rules = random_rule_sets(seed, num_queries)
  prompts = [world.prompt(r, i, template) for r, i in zip(rules, items)]
  resp = sampling.sample(model, tokenizer, prompts, rng=jax.random.key(seed), max_new_tokens=max_new_tokens,
                         temperature=temperature, batch_size=batch_size)
  out = world.adherence(items, [r.text for r in resp], rules)
  out["chance"] = float(np.mean([world.chance_adherence(x) for rs in rules for x in rs]))
  out["mean_words"] = float(np.mean([len(r.text.split()) for r in resp]))
  return out


def library():
  """The world's principles as a SAMI principle library."""
  from pragjax.methods.sami.constitutions import Principle

  return [Principle(p.name, p.positive, p.negative) for p in world.PRINCIPLES]


def rules_of(constitution) -> tuple[world.Rule, ...]:
  """A SAMI `Constitution` of this world's principles -> its rules."""
  return tuple(world.Rule(p.name, bool(s)) for p, s in zip(constitution.principles, constitution.pattern))


def items_of(query: str) -> tuple[str, ...]:
  return world.parse_query(query)


def judge_meta(group) -> tuple:
  """What the programmatic judge needs for a held-out group: its items and the all-positive rules."""
  return items_of(group.query), rules_of(group.constitutions[0])


def well_formed(query: str, response: str) -> bool:
  """The world's well-formedness of a response to a query (`pragjax.toyworld.sami.parse`): the paper-style
  filter keeps only training groups whose every response passes."""
  return world.parse(items_of(query), response) is not None


def world_metrics(groups) -> dict[str, float]:
  """Adherence of held-out responses: under the all-positive constitution (slot 0), under the others (the
  rules each states, negated or not; `adherence_negated` counts only negated rules), per principle and sign;
  well-formed share and mean words of the positive-constitution responses."""
  pos_items, pos_resp, pos_rules = [], [], []
  neg_hits = []
  per: dict[str, list[bool]] = {}
  for g in groups:
    items = items_of(g.query)
    for slot, (c, r) in enumerate(zip(g.constitutions, g.responses)):
      rules = rules_of(c)
      for rule in rules:
        ok = world.holds(items, r.text, rule)
        per.setdefault(f"adherence_{rule.name}_{'pos' if rule.positive else 'neg'}", []).append(ok)
        if not rule.positive:
          neg_hits.append(ok)
      if slot == 0:
        pos_items.append(items)
        pos_resp.append(r.text)
        pos_rules.append(rules)
  adh = world.adherence(pos_items, pos_resp, pos_rules)
  out = {"adherence_positive": adh["all"], "well_formed_positive": adh["well_formed"],
         "adherence_negated": float(np.mean(neg_hits)) if neg_hits else float("nan"),
         "mean_words_positive": float(np.mean([len(t.split()) for t in pos_resp]))}
  out.update({k: float(np.mean(v)) for k, v in sorted(per.items())})
  return out
