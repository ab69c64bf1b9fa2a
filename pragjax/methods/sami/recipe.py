"""SAMI: iterate sample -> train on the C x C InfoNCE bound -> evaluate, and report win rate, MI bound, length.

The run behind `python -m experiments.sami` (usage, variants and outputs: its docstring and
`experiments/configs/sami.py`).
"""

import os

import numpy as np

from pragjax.data.jsonl import write_json
from pragjax.train import runner


def _judge(config, meta_judge):
  """The configured judge: the world's programmatic one, or a local LM by log-probabilities."""
  from pragjax.eval import judges

  jc = config.judge
  if jc.kind == "programmatic":
    if meta_judge is None:
      raise ValueError("judge.kind=programmatic needs a toy world (world.name=sami); use judge.kind=logprob")
    return meta_judge
  if jc.kind != "logprob":
    raise ValueError(f"judge.kind must be programmatic or logprob, got {jc.kind!r}")
  spec = dict(config.model)
  if jc.model:
    spec.update(path=jc.model, tokenizer="")
  import jax

  from pragjax import sharding as sharding_lib

  mesh = sharding_lib.mesh_from_config(dict(config.mesh))  # the mesh the iterations evaluate on
  with jax.set_mesh(mesh):
    judge_model = runner.load_model(spec, mesh)
  return judges.LogprobJudge(judge_model.model, judge_model.tokenizer, template=jc.template, answers=tuple(jc.answers),
                             tie_margin=jc.tie_margin, batch_size=jc.batch_size, max_length=jc.max_length)


def _task(config):
  """(train queries, held-out queries, principle library, programmatic judge or None, world metrics, judge meta,
  validation queries, well-formedness check)."""
  from pragjax.methods.sami import constitutions, queries
  from pragjax.methods.sami import toy_eval as sami_toy
  from pragjax.toyworld import sami as world

  sc = config.sami
  if config.world.name == "sami":
    train = [world.format_query(q) for q in world.training_queries(np.random.default_rng([config.seed, 1]),
                                                                   sc.train_queries)]
    n_val = int(sc.get("val_queries", 0))
    held_all = [world.format_query(q) for q in world.heldout_queries(config.seed, sc.heldout_queries + n_val)]
    held, val = held_all[:sc.heldout_queries], held_all[sc.heldout_queries:]  # the test queries stay the same
    library = (constitutions.load_principles(sc.constitutions_dir) if sc.constitutions_dir else sami_toy.library())
    return (train, held, library, sami_toy.toy_judge(), sami_toy.world_metrics, sami_toy.judge_meta, val,
            sami_toy.well_formed)
  if config.world.name:
    raise ValueError(f"world.name must be 'sami' (toy) or '' (files), got {config.world.name!r}")
  if not config.data.queries_path:
    raise ValueError("config.data.queries_path is empty: set it to the queries (JSONL / JSON) to train on")
  if not sc.constitutions_dir:
    raise ValueError("config.sami.constitutions_dir is empty: set it to a directory of constitution files")
  train, held = queries.split(queries.load_queries(config.data.queries_path, config.data.query_field),
                              config.data.heldout_buckets)
  n_val = int(sc.get("val_queries", 0))
  val = train[len(train) - n_val:] if n_val else []  # the training split's tail, never trained on
  train = train[:len(train) - n_val][:sc.train_queries or None]
  held = held[:sc.heldout_queries or None]
  if not held:
    raise ValueError(f"no held-out queries in {config.data.queries_path} with data.heldout_buckets="
                     f"{config.data.heldout_buckets}; lower it")
  return (train, held, constitutions.load_principles(sc.constitutions_dir), None, None, None, val,
          lambda query, response: bool(response.strip()))


def run(config, workdir: str, log=print) -> dict:
  """Runs (or resumes) the configured SAMI iterations; returns the report (also WORKDIR/report.json)."""
  from pragjax.methods.sami import evaluate as sami_eval
  from pragjax.methods.sami import iterate

  runner.check_config(config, derived=("train.steps", "train.seq_len"))
  with runner.lock_workdir(workdir) as workdir:
    return _run(config, workdir, log, sami_eval, iterate)


def _run(config, workdir: str, log, sami_eval, iterate) -> dict:
  train, held, library, toy_judge, world_metrics, meta, val, well_formed = _task(config)
  log(f"SAMI: {len(train)} training, {len(val)} validation and {len(held)} held-out test queries, principles "
      f"{[p.name for p in library]}, k={config.sami.num_principles}, C={config.sami.num_constitutions}")
  judge = _judge(config, toy_judge)
  evaluate = sami_eval.make_evaluate(judge, seed=config.seed, line_format=config.sami.line_format,
                                     meta_fn=meta, world_metrics=world_metrics)
  report = iterate.run_iterations(
      config, workdir, train_queries=train, heldout_queries=held, library=library,
      evaluate=evaluate, log=log, val_queries=val, well_formed=well_formed)
  report["selected"] = select_iteration(report["rows"], config.sami.get("select_by", ""))
  report["table"] = sami_eval.format_table(report["rows"])
  if config.report.plot and report["rows"] and not report["preempted"]:
    report["plot"] = sami_eval.plot(report["rows"], os.path.join(workdir, "sami.png"),
                                    title=f"SAMI ({config.world.name or config.model.path})")
  write_json(os.path.join(workdir, "report.json"), report, indent=1)
  return report


SELECT_BY = ("win_rate", "mi_bound")


def select_iteration(rows, by: str) -> dict | None:
  """The reported iteration: among iterations >= 1, the one with the highest validation `by` (win rate over
  the base model or MI bound; ties: the earliest); its test-query row beside it. None when `by` is "" or no row
  has validation scores."""
  if not by:
    return None
  if by not in SELECT_BY:
    raise ValueError(f"sami.select_by must be one of {SELECT_BY} or '', got {by!r}")
  cands = [r for r in rows if r["iteration"] >= 1 and f"val_{by}" in r]
  if not cands:
    return None
  best = max(cands, key=lambda r: (r[f"val_{by}"], -r["iteration"]))
  keys = ("win_rate", "win_rate_ci95", "mi_bound", "mean_tokens_positive", "adherence_positive",
          "adherence_negated", "mean_words_positive")
  return {"iteration": best["iteration"], "by": by, "val_value": best[f"val_{by}"],
          "val_values": {r["iteration"]: r[f"val_{by}"] for r in cands},
          "test": {k: best[k] for k in keys if k in best}}


def print_summary(report: dict, config) -> None:
  """What `python -m experiments.sami` prints at the end of a run."""
  print("\n" + report["table"])
  if report["rows"] and "adherence_positive" in report["rows"][0]:
    base = report["rows"][0]
    print(f"\nbase model adherence on held-out queries: {base['adherence_positive']:.3f} of the rules of the "
          f"all-positive constitution, {base['adherence_negated']:.3f} of negated rules "
          f"(well-formed answers {base['well_formed_positive']:.3f})")
  sel = report.get("selected")
  if sel:
    t = sel["test"]
    print(f"\nselected iteration (highest validation {sel['by']}: {sel['val_value']:.4f}): {sel['iteration']}; on "
          f"the test queries: win rate {t.get('win_rate', float('nan')):.3f} +- {t.get('win_rate_ci95', float('nan')):.3f}, "
          f"MI bound {t['mi_bound']:.4f}, mean tokens {t['mean_tokens_positive']:.1f}")
  if "plot" in report:
    print(f"plot: {report['plot']}")
