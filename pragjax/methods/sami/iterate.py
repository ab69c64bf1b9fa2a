"""SAMI iterations: sample under each constitution, train one pass, evaluate; N times, resumable.

Layout of a workdir (every file written when its step completes, so a killed
run restarted with the same command redoes only the unfinished step; a
training pass resumes from its own checkpoint):

  iter_0/heldout.json      base model: held-out groups (queries, constitutions, responses)
  iter_0/eval.json         base model: held-out MI bound, lengths, the world's metrics
  iter_K/train_groups.json responses of the model of iteration K-1 under each training constitution
  iter_K/checkpoints/      orbax checkpoints of the training pass
  iter_K/hf/               the trained model of iteration K in HF layout (kept for every K)
  iter_K/heldout.json, iter_K/eval.json   as for iter_0, with the model of iteration K
  iter_K/val.json          with validation queries: the same groups on the validation split (the reported
                           iteration is chosen on it, never on the test queries)

Iteration K trains, on the responses of iteration K-1's model, either that
model (`sami.init_from = "previous"`, the paper) or the base model
(`"base"`). Held-out groups use the same queries and constitutions at every
iteration (the first of each group is the all-positive constitution), so the
MI bound and the win rate compare like with like. `evaluate(iteration,
groups, base_groups)` (supplied by the caller: judges live in
`pragjax.eval`) adds the win rate and the world's metrics.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data.jsonl import write_json
from pragjax.methods.sami import batches, sampling, scoring, training
from pragjax.methods.sami import constitutions as const_lib
from pragjax.objectives.sami import per_query_loss

INIT_FROM = ("previous", "base")
FILTERS = ("none", "distinct", "paper")


def filter_groups(groups: Sequence["Group"], mode: str, well_formed: Callable[[str, str], bool] | None = None
                  ) -> tuple[list["Group"], dict]:
  """The training groups SAMI keeps (the authors keep only well-formed, distinct responses).

  `mode`: "none" keeps every group; "distinct" drops a group in which two constitutions got the same response
  text; "paper" also drops one with a malformed response (`well_formed(query, response_text)` False).
  Returns (kept groups, counts: `groups`, `kept`, `dropped_duplicate`, `dropped_malformed`).
  """
  if mode not in FILTERS:
    raise ValueError(f"sami.filter must be one of {FILTERS}, got {mode!r}")
  kept, dup, bad = [], 0, 0
  for g in groups:
    texts = [r.text.strip() for r in g.responses]
    if mode == "paper" and well_formed is not None and not all(well_formed(g.query, t) for t in texts):
      bad += 1
    elif mode != "none" and len(set(texts)) < len(texts):
      dup += 1
    else:
      kept.append(g)
  return kept, {"groups": len(groups), "kept": len(kept), "dropped_duplicate": dup, "dropped_malformed": bad}


@dataclasses.dataclass
class Group:
  """One query, its C constitutions and the response sampled under each."""
  query: str
  constitutions: list[const_lib.Constitution]
  responses: list[sampling.Response]

  def to_json(self) -> dict:
    return {"query": self.query, "constitutions": [c.to_json() for c in self.constitutions],
            "responses": [r.to_json() for r in self.responses]}

  @classmethod
  def from_json(cls, d: Mapping) -> "Group":
    return cls(d["query"], [const_lib.Constitution.from_json(c) for c in d["constitutions"]],
               [sampling.Response.from_json(r) for r in d["responses"]])


def _read_json(path: str):
  return json.loads(paths.read_text(path))


def _exists(path: str) -> bool:
  return paths.resolve(path).exists()


def constitution_sets(library: Sequence[const_lib.Principle], n: int, seed: Sequence[int], sc) -> list:
  """`n` lists of C constitutions (one per query), from a seeded stream."""
  rng = np.random.default_rng(list(seed))
  return [const_lib.sample_constitutions(library, rng, num_principles=sc.num_principles,
                                         num_constitutions=sc.num_constitutions,
                                         include_positive=sc.include_positive) for _ in range(n)]


def prompt_text(sc, constitution: const_lib.Constitution, query: str) -> str:
  return batches.render_prompt(sc.prompt_template, constitution.text(sc.line_format), query)


def sample_groups(model, queries: Sequence[str], sets: Sequence[Sequence], sc, *,
                  rng: jax.Array, log=print, what: str = "") -> list[Group]:
  """One response per (query, constitution) with the project's sampler (`sami.temperature`, `top_p`, ...)."""
  prompts = [prompt_text(sc, c, q) for q, cs in zip(queries, sets) for c in cs]
  t0, last = time.time(), [0.0]

  def progress(done, total):
    if time.time() - last[0] > 15 or done == total:
      last[0] = time.time()
      log(f"  sampling {what}: {done}/{total} responses ({time.time() - t0:.0f}s)")

  resp = sampling.sample(model.model, model.tokenizer, prompts, rng=rng, max_new_tokens=sc.max_new_tokens,
                         temperature=sc.temperature, top_p=sc.top_p or None, batch_size=sc.sample_batch,
                         pad_multiple=sc.pad_multiple,
                         progress=progress)
  out, k = [], 0
  for q, cs in zip(queries, sets):
    out.append(Group(q, list(cs), resp[k:k + len(cs)]))
    k += len(cs)
  return out


def group_examples(groups: Sequence[Group], tokenizer, sc) -> list[dict]:
  """Groups -> C x C examples (`batches.make_example`) with the prompts of each constitution."""
  return [batches.make_example([sampling.prompt_ids(tokenizer, prompt_text(sc, c, g.query)) for c in g.constitutions],
                               [r.ids for r in g.responses], max_length=sc.max_length, where=f"group {n}")
          for n, g in enumerate(groups)]


def heldout_scores(model, groups: Sequence[Group], sc) -> dict:
  """MI bound of `model` on held-out groups sampled from it, and response lengths."""
  examples = group_examples(groups, model.tokenizer, sc)
  L = scoring.score_groups(model.model, examples, pad_id=model.tokenizer.pad_token_id or 0,
                           reduction=sc.reduction, batch_size=sc.score_batch,
                           length_bucket=sc.pad_multiple)
  loss, n = per_query_loss(L)
  bound = np.log(np.asarray(n)) - np.asarray(loss)
  pos = [g.responses[0] for g in groups]
  return {"mi_bound": float(bound.mean()), "mi_bound_ci95": float(1.96 * bound.std(ddof=1) / np.sqrt(len(bound))),
          "log_C": float(np.log(L.shape[-1])),
          "diag_margin": float(np.mean(np.diagonal(L, axis1=1, axis2=2)) - np.mean(L[:, ~np.eye(L.shape[-1], dtype=bool)])),
          "mean_tokens_positive": float(np.mean([len(r.ids) for r in pos])),
          "mean_tokens_all": float(np.mean([len(r.ids) for g in groups for r in g.responses])),
          "ended_rate": float(np.mean([r.ended for g in groups for r in g.responses]))}


def run_iterations(config, workdir: str, *, train_queries: Sequence[str], heldout_queries: Sequence[str],
                   library: Sequence[const_lib.Principle],
                   evaluate: Callable[[int, list[Group], list[Group]], dict] | None = None,
                   log: Callable[[str], None] = print, val_queries: Sequence[str] = (),
                   well_formed: Callable[[str, str], bool] | None = None) -> dict:
  """Runs (or resumes) `sami.iterations` SAMI iterations (module docstring) -> report with one row per iteration.

  Models come from `training.load_model` (the base, or the HF directory a
  previous iteration exported) and each pass is `training.train_pass`
  (exports iteration K's model under `iter_K/hf`; resumes from its checkpoints).
  Training groups pass `filter_groups(sami.filter, well_formed)`. With
  `val_queries`, every iteration is also scored on them (row keys prefixed
  `val_`), for choosing the reported iteration.
  """
  sc = config.sami
  filter_mode = sc.get("filter", "none")
  if filter_mode not in FILTERS:
    raise ValueError(f"sami.filter must be one of {FILTERS}, got {filter_mode!r}")
  batches.check_template(sc.prompt_template, "sami.prompt_template")
  scoring.check_reduction(sc.reduction)
  if sc.init_from not in INIT_FROM:
    raise ValueError(f"sami.init_from must be one of {INIT_FROM}, got {sc.init_from!r}")
  workdir = str(paths.resolve(workdir))
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  heldout_sets = constitution_sets(library, len(heldout_queries), (config.seed, 0x4845), sc)
  val_sets = constitution_sets(library, len(val_queries), (config.seed, 0x5641), sc)
  rows: list[dict] = []
  base_groups: list[Group] | None = None
  base_val: list[Group] | None = None
  prev_path = ""  # "" = config.model (the base)
  with jax.set_mesh(mesh):
    for k in range(0, sc.iterations + 1):
      d = paths.join(workdir, f"iter_{k}")
      eval_path, heldout_path = paths.join(d, "eval.json"), paths.join(d, "heldout.json")
      val_path = paths.join(d, "val.json")
      if _exists(eval_path) and (k == 0 or _exists(paths.join(d, "hf", "config.json"))):
        row = _read_json(eval_path)
        log(f"iteration {k}: done earlier (MI bound {row['mi_bound']:.4f})")
        if k == 0:
          base_groups = [Group.from_json(g) for g in _read_json(heldout_path)]
          if val_queries:
            base_val = [Group.from_json(g) for g in _read_json(val_path)]
        rows.append(row)
        prev_path = paths.join(d, "hf") if k else ""
        continue
      t0 = time.time()
      row: dict[str, Any] = {"iteration": k}
      if k == 0:
        model = training.load_model(config, "")
      else:
        current = training.load_model(config, paths.fetch_dir(prev_path) if prev_path else "")
        groups_path = paths.join(d, "train_groups.json")
        if _exists(groups_path):
          groups = [Group.from_json(g) for g in _read_json(groups_path)]
        else:
          log(f"iteration {k}: sampling {len(train_queries)} queries x {sc.num_constitutions} constitutions")
          sets = constitution_sets(library, len(train_queries), (config.seed, k), sc)
          groups = sample_groups(current, train_queries, sets, sc, rng=jax.random.key(config.seed * 1000 + k),
                                 log=log, what="train")
          write_json(groups_path, [g.to_json() for g in groups])
        groups, kept = filter_groups(groups, filter_mode, well_formed)
        row.update({f"train_groups_{m}": v for m, v in kept.items()})
        if not groups:
          raise ValueError(f"iteration {k}: sami.filter={filter_mode!r} dropped every one of {kept['groups']} "
                           f"training groups ({kept}); sample with a higher sami.temperature or filter less")
        row["sample_seconds"] = time.time() - t0
        examples = group_examples(groups, current.tokenizer, sc)
        init = current if sc.init_from == "previous" else training.load_model(config, "")
        log(f"iteration {k}: training one pass on {len(examples)} groups (init: {sc.init_from})")
        t1 = time.time()
        result, model = training.train_pass(config, d, examples, init)  # exports iteration K's model to iter_K/hf
        if result.preempted:
          log(f"iteration {k}: preempted at step {result.step}; rerun the same command to resume")
          return {"rows": rows, "preempted": True}
        row["train_seconds"] = time.time() - t1
        row.update({f"train_{m}": v for m, v in result.last_metrics.items()
                    if m in ("loss", "mi_bound", "diag_margin", "grad_norm")})
        row["train_steps"] = result.step
      t2 = time.time()
      if _exists(heldout_path) and k > 0:
        groups_h = [Group.from_json(g) for g in _read_json(heldout_path)]
      else:
        groups_h = sample_groups(model, heldout_queries, heldout_sets, sc,
                                 rng=jax.random.key(config.seed * 1000 + 500 + k), log=log, what="held-out")
        write_json(heldout_path, [g.to_json() for g in groups_h])
      if k == 0:
        base_groups = groups_h
      row.update(heldout_scores(model, groups_h, sc))
      if evaluate is not None:
        row.update(evaluate(k, groups_h, base_groups))
      if val_queries:
        if _exists(val_path) and k > 0:
          groups_v = [Group.from_json(g) for g in _read_json(val_path)]
        else:
          groups_v = sample_groups(model, val_queries, val_sets, sc,
                                   rng=jax.random.key(config.seed * 1000 + 700 + k), log=log, what="validation")
          write_json(val_path, [g.to_json() for g in groups_v])
        if k == 0:
          base_val = groups_v
        val = heldout_scores(model, groups_v, sc)
        if evaluate is not None:
          val.update(evaluate(k, groups_v, base_val))
        row.update({f"val_{m}": v for m, v in val.items() if not isinstance(v, (list, dict))})
      row["eval_seconds"] = time.time() - t2
      row["seconds"] = time.time() - t0
      write_json(eval_path, row)
      rows.append(row)
      log(f"iteration {k}: " + ", ".join(f"{m}={v:.4f}" if isinstance(v, float) else f"{m}={v}"
                                          for m, v in row.items() if not isinstance(v, (list, dict))))
      prev_path = paths.join(d, "hf") if k else ""
      del model
      sys.stdout.flush()
  return {"rows": rows, "preempted": False}
