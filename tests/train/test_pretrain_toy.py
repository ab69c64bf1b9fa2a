"""The toy pretraining recipe learns, and the shipped model solves what the
README states."""

import numpy as np
import pytest

from experiments.configs import pretrain_toy as configs
from pragjax.methods.sft import toy_pretrain as pretrain_toy
from pragjax.models import toy_builtins as builtin
from pragjax.toyworld import arithmetic
from pragjax.toyworld import arithmetic_eval as arith_eval
from pragjax.train import runner


@pytest.mark.slow
def test_short_pretraining_beats_unigram_entropy(tmp_path):
  config = configs.get_config("smoke")
  config.train.progress = False
  report = pretrain_toy.pretrain(config, str(tmp_path / "pt"))
  assert report["steps"] == config.train.steps
  assert report["final_loss"] < 0.75 * report["unigram_entropy"], report
  # The exported model is a loadable HF checkpoint with its tokenizer.
  loaded = runner.load_model({"path": str(tmp_path / "pt" / "hf")})
  assert loaded.config.vocab_size == arithmetic.tokenizer().vocab_size


@pytest.mark.slow
def test_shipped_model_solves_stated_share():
  loaded = runner.load_model({"builtin": "arithmetic"})
  problems = arithmetic.heldout_problems(0, 300)
  result = arith_eval.evaluate(loaded.model, loaded.tokenizer, problems)
  stated = builtin.STATED_HELDOUT_ACCURACY["arithmetic"]
  # 300 problems: a binomial standard error of at most 0.029.
  assert abs(result["accuracy"] - stated) < 0.06, (result, stated)
  assert np.isfinite(result["exact"])
