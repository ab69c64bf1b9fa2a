"""Supervised fine-tuning on JSONL (or the toy arithmetic world).

  python -m experiments.sft --config=experiments/configs/sft.py:toy --workdir=/tmp/sft
  python -m experiments.sft --config=experiments/configs/sft.py:llama8b \
      --config.model.path=/ckpt/Llama-3.1-8B-Instruct --config.data.train_path=train.jsonl \
      --workdir=/runs/sft

A killed run restarted with the same command resumes from its last checkpoint.
"""

import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/sft.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics.jsonl, tb/, hf/)")


def toy_records(config):
  from pragjax.toyworld import arithmetic

  problems = arithmetic.training_problems(np.random.default_rng(config.seed + 1), config.world.num_records)
  return [{"prompt": p.prompt, "response": p.solution} for p in problems]


def run(config, workdir):
  """Returns (loop result, trained model, report rows). Checks the config and locks `workdir` first."""
  runner.check_config(config)
  with runner.lock_workdir(workdir) as workdir:
    return _run(config, workdir)


def _run(config, workdir):
  records = None
  toy = not config.model.path and not config.data.train_path
  if toy:
    records = toy_records(config)
  evaluate = toy and config.world.eval_problems > 0
  rows = {}
  if evaluate:
    from pragjax.eval import arithmetic as arith_eval
    from pragjax.toyworld import arithmetic

    base = runner.load_model(dict(config.model))
    problems = arithmetic.heldout_problems(config.seed, config.world.eval_problems)
    rows["before"] = arith_eval.evaluate(base.model, base.tokenizer, problems)
  result, trained = runner.train_lm(config, workdir, records=records)
  if evaluate and not result.preempted:
    rows["after"] = arith_eval.evaluate(trained.model, trained.tokenizer, problems)
  return result, trained, rows


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  result, _, rows = run(_CONFIG.value, _WORKDIR.value)
  if result.preempted:
    print(f"preempted at step {result.step}; checkpoint written, rerun the same command to resume")
    return
  if result.resumed_from == result.step:
    print(f"\nnothing to train: the checkpoint in {_WORKDIR.value} is at step {result.step} = train.steps")
  print(f"\nfinished {result.step} steps, loss {result.last_metrics.get('loss', float('nan')):.4f}")
  if rows:
    print("| model | answer accuracy | all steps right | n |\n|---|---|---|---|")
    for name, r in rows.items():
      print(f"| {name} | {r['accuracy']:.3f} | {r['exact']:.3f} | {r['n']} |")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
