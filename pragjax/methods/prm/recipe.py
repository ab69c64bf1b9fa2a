"""Implicit PRM: train outcome reward models r = beta log pi/pi_ref and evaluate their free process rewards.

The run behind `python -m experiments.implicit_prm` (usage, variants and outputs: its docstring and
`experiments/configs/implicit_prm.py`).
"""

import functools
import io
import os

import jax
import numpy as np
from flax import nnx

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data import cache
from pragjax.data.groups import GroupIterator
from pragjax.data.jsonl import read_jsonl, write_json
from pragjax.eval.tables import markdown_table
from pragjax.methods.prm import scoring as prm_scoring
from pragjax.train import runner
from pragjax.train.method import Method


def _params(model):
  return nnx.state(model, nnx.Param)


def _sample_key(config, num_samples: int) -> dict:
  """What sampled solutions depend on besides their problems: the whole `model` section (path, dtype, ...), the
  mesh (batches are rounded up to its batch shards, which moves each batch's key), the seed and the sampling
  fields of `world`."""
  w = config.world
  return {"model": config.model.to_dict(), "mesh": config.mesh.to_dict(), "seed": config.seed,
          "world": {"temperature": w.temperature, "max_new_tokens": w.max_new_tokens, "sample_batch": w.sample_batch,
                    "num_samples": num_samples}}


def train_prm(config, workdir: str, records, *, loss: str, model: runner.LoadedModel | None = None,
              selection=None, mesh=None):
  """Trains an implicit PRM on outcome records with the one train step; the initial model is also the reference.

  `config` has `seed`, `model`, `mesh`, `optim`, `train` (`train.steps` 0 =
  `train.epochs` over the examples) and `prm` (see
  `experiments/configs/implicit_prm.py`); `records` are outcome records
  (`pragjax.methods.prm.data.outcome_record`); `loss` one of `pragjax.methods.prm.data.LOSSES`.
  `selection` (a `pragjax.methods.prm.selection.BestByMetric`): evaluated `prm.evals_per_epoch` times per
  epoch; training stops when its patience runs out and the PRM returned is its best model (loaded on `mesh`).
  Returns (loop result, the trained PRM, data stats); the loop result is None when a resumed run finds the
  selection already stopped.
  """
  from pragjax.data.errors import DataError
  from pragjax.methods.prm import data as prm_data
  from pragjax.methods.prm import training

  tc, pc = config.train, config.prm
  examples, stats = prm_data.training_records(records, loss, seed=config.seed, threshold=pc.label_threshold,
                                              max_pairs_per_prompt=pc.max_pairs_per_prompt,
                                              balance=pc.get("balance", "none"))
  if not examples:
    raise DataError(f"no {loss} training examples from {len(records)} records ({stats}); pairwise losses need "
                    f"prompts with both correct and wrong responses")
  steps = int(tc.steps) or max(1, int(tc.epochs) * len(examples) // tc.batch_size)
  stats.update(steps=steps)

  def make_data(tok):
    tokenize = functools.partial(prm_data.tokenize_sequences, tokenizer=tok, loss=loss, max_length=tc.seq_len,
                                 chat_template=training.chat_template_flag(pc.chat_template))
    # train.length_bucket > 0: T is the batch's longest rounded up to it; 0: T = train.seq_len.
    return GroupIterator(examples, tokenize, global_batch_size=tc.batch_size, group_size=prm_data.group_size(loss),
                         seq_len=None if tc.length_bucket else tc.seq_len, pad_id=tok.pad_token_id, seed=config.seed,
                         shuffle=config.data.shuffle, pad_to_multiple_of=tc.length_bucket or 16)

  prm = Method(
      name=f"implicit_prm:{loss}",
      loss=functools.partial(training.make_prm_loss_fn, loss=loss, beta=pc.beta,
                             desirable_weight=pc.kto_desirable_weight, undesirable_weight=pc.kto_undesirable_weight),
      data=make_data, reference=training.make_ref_fn,
      flops_factor=4 / 3)  # per token: the policy's forward and backward plus the reference's forward
  if selection is None:
    result, trained = runner.train_lm(config, workdir, prm, model=model, num_steps=steps)
    return result, trained, stats
  per_epoch = max(1, len(examples) // tc.batch_size)
  config = config.copy_and_resolve_references()
  config.train.eval_every = max(1, per_epoch // max(1, int(pc.get("evals_per_epoch", 1))))
  stats.update(eval_every=int(config.train.eval_every))
  result = None
  if not selection.should_stop():  # a resumed run whose selection had already stopped does not train on
    result, trained = runner.train_lm(config, workdir, prm.replace(evaluators=[selection],
                                                                  stop_when=selection.should_stop),
                                      model=model, num_steps=steps)
    stats.update(steps_trained=int(result.step))
    if result.preempted:
      return result, trained, stats
  if not selection.has_best():
    raise RuntimeError(f"{selection.directory}: no best model saved (history {selection.history})")
  best = runner.load_model({**dict(config.model), "path": selection.best_dir, "builtin": "", "tokenizer": ""}, mesh)
  stats.update(best_step=selection.best_step, best_value=selection.best_value,
               evaluations=len(selection.history), stopped_early=selection.should_stop())
  return result, best, stats


def _save_model(loaded: runner.LoadedModel):
  """`save(model, directory)` for `BestByMetric`: the model in HF layout with `loaded`'s config and tokenizer;
  a local directory is replaced whole (written beside it, then renamed), so a crash never leaves half a model."""
  import shutil

  from pragjax.models.hf_io import save_hf

  def save(model, directory):
    local = paths.is_local(directory)
    target = f"{directory}.tmp" if local else directory
    if local and jax.process_index() == 0:
      shutil.rmtree(target, ignore_errors=True)
    with paths.local_copy(target, publish=jax.process_index() == 0) as d:
      save_hf(model, loaded.config, d)
      if jax.process_index() == 0:
        loaded.tokenizer.save(d)
    if local and jax.process_index() == 0:
      shutil.rmtree(directory, ignore_errors=True)
      os.replace(target, directory)

  return save


def _auc_metric(scorer, ref_params, tokenizer, problems, samples, correct, ev):
  """`model -> within-problem AUC of q(end)` on a validation split (no bootstrap)."""
  from pragjax.methods.prm import selection
  from pragjax.methods.prm import toy_eval as prm_toy

  def metric(model):
    s = prm_toy.score_solutions(scorer, _params(model), ref_params, tokenizer, problems, samples,
                                batch_size=ev.batch_size, max_length=ev.max_length)
    return selection.within_problem_auc(s["outcome"], correct, num_boot=0)["auc"]

  return metric


def run_toy(config, workdir: str, mesh, log=print) -> dict:
  """The arithmetic-world reproduction; returns the report (also written to WORKDIR/report.json)."""
  from pragjax.eval import best_of_n
  from pragjax.methods.prm import implicit, selection
  from pragjax.methods.prm import toy_eval as prm_toy
  from pragjax.toyworld import arithmetic

  w, ev = config.world, config.eval
  sample_dir = w.get("sample_dir", "") or workdir  # solutions cached here (several PRM settings can share them)
  base = runner.load_model(dict(config.model), mesh)
  train_problems = arithmetic.training_problems(np.random.default_rng(config.seed + 1), w.train_problems)
  log(f"sampling {w.train_samples} solutions for each of {w.train_problems} training problems (T={w.temperature})")
  train_samples = cache.cached(
      sample_dir, "train_samples", key=_sample_key(config, w.train_samples),
      inputs_fingerprint=cache.fingerprint([p.prompt for p in train_problems]), log=log,
      compute=lambda: prm_toy.sample_solutions(
          base.model, base.tokenizer, train_problems, num_samples=w.train_samples, temperature=w.temperature,
          seed=config.seed + 2, max_new_tokens=w.max_new_tokens, batch_size=w.sample_batch))
  records = prm_toy.outcome_records(train_problems, train_samples)
  label_rate = float(np.mean([r["label"] for r in records]))
  log(f"training records: {len(records)}, correct by final answer: {label_rate:.3f}")
  eval_problems = arithmetic.heldout_problems(config.seed, w.eval_problems)
  log(f"sampling {w.eval_samples} solutions for each of {w.eval_problems} held-out problems")
  eval_samples = cache.cached(
      sample_dir, "eval_samples", key=_sample_key(config, w.eval_samples),
      inputs_fingerprint=cache.fingerprint([p.prompt for p in eval_problems]), log=log,
      compute=lambda: prm_toy.sample_solutions(
          base.model, base.tokenizer, eval_problems, num_samples=w.eval_samples, temperature=w.temperature,
          seed=config.seed + 3, max_new_tokens=w.max_new_tokens, batch_size=w.sample_batch))
  correct = np.asarray([[arithmetic.is_correct(p, s) for s in g] for p, g in zip(eval_problems, eval_samples)])
  labels = prm_toy.first_error_labels(eval_problems, eval_samples)
  value_labels = prm_toy.first_error_labels(eval_problems, eval_samples, prm_toy.value_first_error)
  classes = prm_toy.answer_classes(eval_samples)
  tune = int(round(w.tune_fraction * w.eval_problems))
  val_problems = val_samples = val_correct = None
  if w.get("val_problems", 0):  # more held-out problems after the eval set's: the early-stopping split
    val_problems = arithmetic.heldout_problems(config.seed, w.eval_problems + w.val_problems)[w.eval_problems:]
    log(f"sampling {w.val_samples} solutions for each of {w.val_problems} validation problems")
    val_samples = cache.cached(
        sample_dir, "val_samples", key=_sample_key(config, w.val_samples),
        inputs_fingerprint=cache.fingerprint([p.prompt for p in val_problems]), log=log,
        compute=lambda: prm_toy.sample_solutions(
            base.model, base.tokenizer, val_problems, num_samples=w.val_samples, temperature=w.temperature,
            seed=config.seed + 4, max_new_tokens=w.max_new_tokens, batch_size=w.sample_batch))
    val_correct = np.asarray([[arithmetic.is_correct(p, s) for s in g] for p, g in zip(val_problems, val_samples)])
  report = {"train_records": len(records), "train_label_rate": label_rate,
            "eval_sample_accuracy": float(correct.mean()), "eval_exact_rate": float(np.mean(labels == -1)),
            "eval_value_exact_rate": float(np.mean(value_labels == -1)), "eval_problems": w.eval_problems,
            "eval_samples": w.eval_samples, "prms": {}}
  scores = {}
  ref_params = _params(base.model)
  scorer = implicit.make_scorer(nnx.graphdef(base.model), config.prm.beta)
  for loss in config.prm.losses:
    log(f"training the {loss} PRM")
    sel = None
    if val_problems is not None:
      sel = selection.BestByMetric(
          _auc_metric(scorer, ref_params, base.tokenizer, val_problems, val_samples, val_correct, ev),
          paths.join(workdir, loss, "selection"), save=_save_model(base), patience=int(config.prm.patience))
    result, prm, stats = train_prm(config, os.path.join(workdir, loss), records, loss=loss, selection=sel, mesh=mesh)
    s = prm_toy.score_solutions(scorer, _params(prm.model), ref_params, base.tokenizer, eval_problems, eval_samples,
                                batch_size=ev.batch_size, max_length=ev.max_length)
    for mode in ev.modes:
      for how in ev.aggregations:
        scores[f"{loss}:{mode}_{how}"] = s[f"{mode}_{how}"]
    f1 = {mode: prm_toy.first_error_report(s[f"steps_{mode}"], labels, correct, tune) for mode in ev.modes}
    f1_values = {mode: prm_toy.first_error_report(s[f"steps_{mode}"], value_labels, correct, tune)
                 for mode in ev.modes}
    report["prms"][loss] = {"stats": stats, "final_metrics": result.last_metrics if result else {},
                            "first_error": f1, "first_error_names_ignored": f1_values,
                            "test_auc": selection.within_problem_auc(s["outcome"], correct, seed=config.seed)}
    if sel is not None:
      report["prms"][loss]["val_auc_history"] = {str(k): v for k, v in sorted(sel.history.items())}
  buf = io.BytesIO()
  np.savez(buf, correct=correct, first_error=labels,
           num_steps=np.asarray([[len(arithmetic.split_steps(x)) for x in g] for g in eval_samples]),
           **{k.replace(":", "__"): v for k, v in scores.items()})
  if jax.process_index() == 0:
    paths.write_bytes(paths.join(workdir, "eval_scores.npz"), buf.getvalue())
  weighted = f"{config.prm.losses[0]}:{ev.weighted}"
  rows = prm_toy.best_of_n_report(correct, classes, scores, ns=ev.best_of, weighted=weighted,
                                  num_subsets=ev.num_subsets, seed=config.seed)
  report["best_of_n"] = [r.__dict__ for r in rows]
  report["best_of_n_table"] = best_of_n.format_table(rows)
  return report


def format_training(report: dict) -> str:
  """Markdown: per PRM, its training data and steps, the early-stopping selection and the held-out
  within-problem AUC of q(end) on the test problems."""
  rows = []
  for loss, r in report["prms"].items():
    st, auc = r["stats"], r.get("test_auc", {})
    rows.append([loss, st.get("records", st.get("pairs", "-")), st["steps"], st.get("steps_trained", "-"),
                 st.get("evaluations", "-"), st.get("best_step", "-"),
                 f"{st['best_value']:.3f}" if "best_value" in st else "-",
                 f"{auc['auc']:.3f} [{auc['lo']:.3f}, {auc['hi']:.3f}]" if auc else "-", auc.get("problems", "-")])
  return markdown_table(rows, ["PRM", "training examples", "step budget", "steps trained", "evaluations",
                               "best step", "validation AUC (best)", "test within-problem AUC of q(end) [95% CI]",
                               "test problems with both outcomes"])


def format_first_error(report: dict, key: str = "first_error") -> str:
  rows = [[loss, mode, f["prm"]["f1"], f["prm"]["acc_error"], f["prm"]["acc_correct"], f["threshold"], f["constant"],
           f["outcome_baseline"]["f1"]] for loss, r in report["prms"].items() for mode, f in r[key].items()]
  return markdown_table(rows, ["PRM", "step reward", "F1 (test)", "acc. erroneous", "acc. correct", "threshold",
                               "best constant F1", "outcome-aware baseline F1"], formats=".3f")


def run_real(config, workdir: str, mesh, log=print) -> dict:
  """Train on `data.train_path` with every loss, then ProcessBench if `eval.processbench_dir` is set."""
  from pragjax.eval import processbench
  from pragjax.methods.prm import data as prm_data
  from pragjax.methods.prm import implicit, training

  report = {"prms": {}}
  records = []
  if config.data.train_path:
    records = [prm_data.outcome_record(r, separator=config.prm.separator, where=f"{config.data.train_path}, "
                                       f"record {i}") for i, r in enumerate(read_jsonl(config.data.train_path))]
  base = runner.load_model(dict(config.model), mesh)
  ref_params = _params(base.model)
  cases = {}
  if config.eval.processbench_dir:
    for split in config.eval.processbench_splits:
      c = processbench.load_processbench(os.path.join(config.eval.processbench_dir, f"{split}.json"))
      cases[split] = c[:config.eval.processbench_limit] if config.eval.processbench_limit else c
  for loss in config.prm.losses:
    if not records:
      raise ValueError("config.data.train_path is empty: nothing to train the PRM on")
    log(f"training the {loss} PRM on {len(records)} records")
    result, prm, stats = train_prm(config, os.path.join(workdir, loss), records, loss=loss)
    entry = {"stats": stats, "final_metrics": result.last_metrics}
    if cases and not result.preempted:
      scorer = implicit.make_scorer(nnx.graphdef(prm.model), config.prm.beta)
      step_scores = {split: prm_scoring.score_cases(
          scorer, _params(prm.model), ref_params, base.tokenizer, c, separator=config.prm.separator,
          chat_template=training.chat_template_flag(config.prm.chat_template), max_length=config.eval.max_length,
          batch_size=config.eval.batch_size) for split, c in cases.items()}
      labels = {split: [x["label"] for x in c] for split, c in cases.items()}
      for mode in config.eval.modes:
        entry[f"processbench_{mode}"] = processbench.cross_split_report(
            {split: s[mode] for split, s in step_scores.items()}, labels)
    if config.eval.best_of_n_path and not result.preempted:
      entry["best_of_n"] = best_of_n_on_file(config, prm, base, ref_params)
      log(entry["best_of_n"]["table"])
    report["prms"][loss] = entry
  return report


def best_of_n_on_file(config, prm, base, ref_params) -> dict:
  """Best-of-n of a candidates JSONL (`problem` or `prompt`, gold `answer`, `responses` [N]) with math answers."""
  from pragjax.eval import best_of_n, math_answers
  from pragjax.methods.prm import implicit, training

  ev = config.eval
  recs = read_jsonl(ev.best_of_n_path)[:ev.best_of_n_limit or None]
  prompts = [r.get("problem", r.get("prompt")) for r in recs]
  responses = [r["responses"] for r in recs]
  preds = [[math_answers.extract_answer(x) for x in group] for group in responses]
  correct = np.asarray([[math_answers.is_equiv(a, str(r["answer"])) for a in group] for r, group in zip(recs, preds)])
  classes = [math_answers.answer_groups(group) for group in preds]
  scorer = implicit.make_scorer(nnx.graphdef(prm.model), config.prm.beta)
  s = prm_scoring.score_responses(scorer, _params(prm.model), ref_params, base.tokenizer, prompts, responses,
                                separator=config.prm.separator,
                                chat_template=training.chat_template_flag(config.prm.chat_template),
                                max_length=ev.max_length, batch_size=ev.batch_size)
  scores = {f"{m}_{h}": s[f"{m}_{h}"] for m in ev.modes for h in ev.aggregations}
  ns = [n for n in ev.best_of if n <= correct.shape[1]]
  rows = best_of_n.evaluate_best_of_n(
      correct, classes, scores, ns=ns, num_subsets=ev.num_subsets, seed=config.seed,
      methods=["random", "majority", f"weighted:{ev.weighted}", *scores, "oracle"])
  return {"rows": [r.__dict__ for r in rows], "table": best_of_n.format_table(rows)}


def run(config, workdir: str, log=print) -> dict:
  runner.check_config(config, derived=("train.steps",))
  with runner.lock_workdir(workdir) as workdir:
    mesh = sharding_lib.mesh_from_config(dict(config.mesh))
    with jax.set_mesh(mesh):  # The PRMs train on this mesh; the reference and the scoring live on it too.
      if config.world.name == "arithmetic":
        report = run_toy(config, workdir, mesh, log)
      else:
        report = run_real(config, workdir, mesh, log)
    write_json(os.path.join(workdir, "report.json"), report, indent=1)
  return report


def print_summary(report: dict, config) -> None:
  """What `python -m experiments.implicit_prm` prints at the end of a run."""
  for loss, entry in report["prms"].items():
    if "best_of_n" in entry:
      print(f"\n{loss} PRM, best-of-n on {config.eval.best_of_n_path}\n")
      print(entry["best_of_n"]["table"])
  if "best_of_n_table" in report:
    print("\nPRM training and its outcome reward's held-out AUC (0.5 = no better than chance within a problem)\n")
    print(format_training(report))
    print(f"\nheld-out sample accuracy {report['eval_sample_accuracy']:.3f} "
          f"({report['eval_problems']} problems x {report['eval_samples']} samples); "
          "cells: mean over random n-subsets [95% CI] (first n)\n")
    print(report["best_of_n_table"])
    print(f"\nfirst-error F1 against the world's step labels (threshold tuned on the other held-out problems; "
          f"{report['eval_exact_rate']:.4f} of samples have every step right)\n")
    print(format_first_error(report))
    print(f"\ndiagnostic, not the world's labels: the same with target variable names ignored "
          f"({report['eval_value_exact_rate']:.4f} of samples right)\n")
    print(format_first_error(report, "first_error_names_ignored"))
  for loss, entry in report["prms"].items():
    for key, rows in entry.items():
      if key.startswith("processbench_"):
        print(f"\n{loss} PRM, ProcessBench, {key[len('processbench_'):]} step rewards\n")
        print(markdown_table(rows, {"tuned_on": "tuned on", "split": "split", "threshold": "threshold",
                                    "acc_error": "acc. erroneous", "acc_correct": "acc. correct", "f1": "F1"},
                             formats={"threshold": ".4f", "acc_error": ".3f", "acc_correct": ".3f", "f1": ".3f"}))
