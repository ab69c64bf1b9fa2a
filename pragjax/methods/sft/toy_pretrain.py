"""Pretrains the built-in toy model on a toy world's corpus.

The run behind `python -m experiments.pretrain_toy` (usage, variants and outputs: its docstring and
`experiments/configs/pretrain_toy.py`).
"""

import os
import shutil

import numpy as np

from pragjax.eval.tables import markdown_table
from pragjax.methods.sami import toy_eval as sami_toy
from pragjax.methods.sft import recipe as sft
from pragjax.models import toy_builtins as builtin
from pragjax.toyworld import arithmetic
from pragjax.toyworld import arithmetic_eval as arith_eval
from pragjax.toyworld import knowledge as kw
from pragjax.toyworld import knowledge_eval as knowledge_eval
from pragjax.toyworld import priming as priming_world
from pragjax.toyworld import sami as sami_world
from pragjax.train import runner


def _train(config, workdir: str, tok, docs: list[str], records: list[dict] | None = None):
  """Trains a fresh model on `records` (default: `docs` as plain LM documents,
  loss on every token); returns (result, trained model, report)."""
  if records is None:
    records = [{"prompt": "", "response": d} for d in docs]
  model = runner.new_model(dict(config.model_arch), tok, seed=config.seed)
  result, trained = runner.train_lm(config, workdir, sft.method(), records=records, model=model)
  ids = [tok.encode(d) + [tok.eos_token_id] for d in docs[:5000]]
  report = {
      "final_loss": result.last_metrics.get("loss", float("nan")),
      "unigram_entropy": arithmetic.unigram_entropy(ids),
      "steps": result.step,
      "preempted": result.preempted,
  }
  return result, trained, report


def _pretrain_arithmetic(config, workdir: str) -> dict:
  tok = arithmetic.tokenizer()
  problems = arithmetic.training_problems(np.random.default_rng(config.seed), config.world.num_docs)
  records = None
  if not config.world.loss_on_prompt:  # the prompt's random inputs are context, not targets
    records = [{"prompt": p.prompt, "response": p.solution} for p in problems]
  result, trained, report = _train(config, workdir, tok, [p.text for p in problems], records)
  if not result.preempted:
    problems = arithmetic.heldout_problems(config.seed, config.world.eval_problems)
    report.update({f"heldout_{k}": v for k, v in arith_eval.evaluate(trained.model, tok, problems).items()})
  return report


def _pretrain_knowledge(config, workdir: str) -> dict:
  w = config.world
  tok = kw.tokenizer()
  kb = kw.build_kb(config.seed, w.num_entities)
  docs = kw.corpus(kb, np.random.default_rng(config.seed), w.num_docs, check_fraction=w.check_fraction,
                   oneoff_fraction=w.oneoff_fraction,
                   keyword_rates=priming_world.corpus_keyword_rates(w.get("corpus_keywords", "none")))
  result, trained, report = _train(config, workdir, tok, docs)
  if not result.preempted:
    report["fact_recall"] = knowledge_eval.fact_recall(trained.model, tok, kb, max_facts=w.eval_facts)
    items = kw.statements(kb, config.seed, w.eval_statements_per_label)
    report.update({f"says_true_{k}": v for k, v in knowledge_eval.verdicts(trained.model, tok, items).items()})
  return report


def _pretrain_sami(config, workdir: str) -> dict:
  """The principles world: loss on answers + EOS; then the adherence of sampled answers on held-out queries."""
  w = config.world
  tok = sami_world.tokenizer()
  records = sami_world.corpus(np.random.default_rng(config.seed), w.num_docs, w.follow_rate)
  result, trained, report = _train(config, workdir, tok, [r["prompt"] + r["response"] for r in records], records)
  if not result.preempted:
    adh = sami_toy.measure_adherence(trained.model, tok, seed=config.seed, num_queries=w.eval_queries,
                                     temperature=w.eval_temperature, max_new_tokens=w.max_new_tokens)
    report.update({f"adherence_{k}": v for k, v in adh.items()})
  return report


WORLDS = {"arithmetic": _pretrain_arithmetic, "knowledge": _pretrain_knowledge, "sami": _pretrain_sami}


def pretrain(config, workdir: str) -> dict:
  if config.world.name not in WORLDS:
    raise ValueError(f"unknown world {config.world.name!r}; available: {', '.join(WORLDS)}")
  runner.check_config(config)
  with runner.lock_workdir(workdir) as workdir:
    return WORLDS[config.world.name](config, workdir)


def print_summary(report: dict, config, workdir: str) -> None:
  """What `python -m experiments.pretrain_toy` prints; with `config.ship`, copies WORKDIR/hf into the package's
  assets (the built-in model of that name)."""
  print("\n" + markdown_table([[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in report.items()],
                              ["metric", "value"]))
  if config.ship and not report["preempted"]:
    dest = os.path.join(builtin.ASSETS, config.asset or config.world.name)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(os.path.abspath(workdir), "hf"), dest)
    print(f"shipped to {dest}")
