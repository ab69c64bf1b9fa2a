"""Supervised fine-tuning (and pretraining): the `Method`, the toy records and the run.

`method()` is the plain causal-LM loss on the record pipeline; `run` trains
it on `data.train_path` (or, with no model and no data given, on freshly
generated problems of the arithmetic world, scoring held-out problems before
and after).
"""

from __future__ import annotations

import numpy as np

from pragjax.eval.tables import markdown_table
from pragjax.methods.sft.loss import make_sft_loss_fn
from pragjax.train import runner
from pragjax.train.method import Method


def method(*, lean: bool = True, chunk_size: int = 128) -> Method:
  """SFT / pretraining: next-token NLL on the records' `loss_mask` targets."""
  return Method(name="sft", loss=lambda graphdef: make_sft_loss_fn(graphdef, lean=lean, chunk_size=chunk_size))


def toy_records(config) -> list[dict]:
  from pragjax.toyworld import arithmetic

  problems = arithmetic.training_problems(np.random.default_rng(config.seed + 1), config.world.num_records)
  return [{"prompt": p.prompt, "response": p.solution} for p in problems]


def run(config, workdir, *, sft: Method | None = None):
  """Returns (loop result, trained model, report rows). Checks the config and locks `workdir` first.

  `sft` replaces the default `method()` (e.g. a wrapped loss in tests)."""
  runner.check_config(config)
  with runner.lock_workdir(workdir) as workdir:
    return _run(config, workdir, sft or method())


def _run(config, workdir, sft: Method):
  records = None
  toy = not config.model.path and not config.data.train_path
  if toy:
    records = toy_records(config)
  evaluate = toy and config.world.eval_problems > 0
  rows = {}
  if evaluate:
    from pragjax.toyworld import arithmetic
    from pragjax.toyworld import arithmetic_eval as arith_eval

    base = runner.load_model(dict(config.model))
    problems = arithmetic.heldout_problems(config.seed, config.world.eval_problems)
    rows["before"] = arith_eval.evaluate(base.model, base.tokenizer, problems)
  result, trained = runner.train_lm(config, workdir, sft, records=records)
  if evaluate and not result.preempted:
    rows["after"] = arith_eval.evaluate(trained.model, trained.tokenizer, problems)
  return result, trained, rows


def print_summary(out, config, workdir: str) -> None:
  """What `python -m experiments.sft` prints at the end of a run."""
  del config
  result, _, rows = out
  if result.preempted:
    print(f"preempted at step {result.step}; checkpoint written, rerun the same command to resume")
    return
  if result.resumed_from == result.step:
    print(f"\nnothing to train: the checkpoint in {workdir} is at step {result.step} = train.steps")
  print(f"\nfinished {result.step} steps, loss {result.last_metrics.get('loss', float('nan')):.4f}")
  if rows:
    print(markdown_table([{"model": name, **r} for name, r in rows.items()],
                         {"model": "model", "accuracy": "answer accuracy", "exact": "all steps right", "n": "n"},
                         formats={"accuracy": ".3f", "exact": ".3f"}))
