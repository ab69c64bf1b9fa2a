"""Pretrains the built-in toy model on a toy world's corpus.

  python -m experiments.pretrain_toy --config=experiments/configs/pretrain_toy.py:arithmetic \
      --workdir=/tmp/pretrain_arithmetic [--config.ship=True]

Prints the final loss against the corpus's unigram entropy and the held-out
accuracy; with `ship`, copies WORKDIR/hf into the package's assets.
"""

import os
import shutil

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pragjax.eval import arithmetic as arith_eval
from pragjax.toyworld import arithmetic, builtin
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/pretrain_toy.py:arithmetic",
                                          "pretraining config (file:variant)")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics, hf/)")


def pretrain(config, workdir: str) -> dict:
  if config.world.name != "arithmetic":
    raise ValueError(f"unknown world {config.world.name!r}; available: arithmetic")
  tok = arithmetic.tokenizer()
  docs = arithmetic.corpus(np.random.default_rng(config.seed), config.world.num_docs)
  records = [{"prompt": "", "response": d} for d in docs]
  model = runner.new_model(dict(config.model_arch), tok, seed=config.seed)
  result, trained = runner.train_lm(config, workdir, records=records, model=model)
  ids = [tok.encode(d) + [tok.eos_token_id] for d in docs[:5000]]
  report = {
      "final_loss": result.last_metrics.get("loss", float("nan")),
      "unigram_entropy": arithmetic.unigram_entropy(ids),
      "steps": result.step,
      "preempted": result.preempted,
  }
  if not result.preempted:
    problems = arithmetic.heldout_problems(config.seed, config.world.eval_problems)
    report.update({f"heldout_{k}": v for k, v in arith_eval.evaluate(trained.model, tok, problems).items()})
  return report


def main(argv):
  del argv
  runner.setup(_CONFIG.value)
  config = _CONFIG.value
  report = pretrain(config, _WORKDIR.value)
  print("\n| metric | value |\n|---|---|")
  for k, v in report.items():
    print(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
  if config.ship and not report["preempted"]:
    dest = os.path.join(builtin.ASSETS, config.world.name)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(os.path.abspath(_WORKDIR.value), "hf"), dest)
    print(f"shipped to {dest}")


if __name__ == "__main__":
  app.run(main)
