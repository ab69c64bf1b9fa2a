"""`experiments.sft` with a NaN injected into the loss of one step (`--nan_step`), for the end-to-end NaN-stop
test. The hook lives here, not in production code: it wraps the SFT `Method`'s loss and data."""

import sys

import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from pragjax.methods.sft import recipe
from pragjax.train import runner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/sft.py:toy", "config file:variant")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory")
_NAN_STEP = flags.DEFINE_integer("nan_step", 5, "the step whose loss becomes NaN")


class NanInjector:
  """Marks the batch of step `at_step` (1-based) with `inject_nan`; keeps its count in the iterator state."""

  def __init__(self, data, at_step: int):
    self.data, self.at_step, self.count = data, at_step, 0
    self.num_dropped = getattr(data, "num_dropped", 0)

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self.data))
    self.count += 1
    batch["inject_nan"] = np.full((batch["input_ids"].shape[0],), int(self.count == self.at_step), np.int32)
    return batch

  def get_state(self):
    return {**self.data.get_state(), "_nan_injector_count": self.count}

  def set_state(self, state):
    state = dict(state)
    self.count = state.pop("_nan_injector_count", 0)
    self.data.set_state(state)


def with_nan(method, config, records, at_step: int):
  """`method` whose loss is NaN at step `at_step`, on the record pipeline of `config`."""
  import functools

  from pragjax.data.collate import tokenize_record
  from pragjax.data.pipeline import make_train_iterator

  def loss(graphdef):
    inner = method.loss(graphdef)

    def loss_fn(params, batch, rng):
      value, metrics = inner(params, batch, rng)
      return value + jnp.where(jnp.any(batch["inject_nan"] > 0), jnp.nan, 0.0), metrics

    return loss_fn

  def data(tok):
    tc = config.train
    inner = make_train_iterator(
        runner.make_records_source(config.data, records),
        functools.partial(tokenize_record, tokenizer=tok, max_length=tc.seq_len),
        global_batch_size=tc.batch_size, seq_len=tc.seq_len, seed=config.seed,
        shuffle=config.data.shuffle, packing=config.data.packing, pad_id=tok.pad_token_id)
    return NanInjector(inner, at_step)

  return method.replace(loss=loss, data=data)


def main(argv):
  del argv
  config = _CONFIG.value
  runner.setup(config)
  out = recipe.run(config, _WORKDIR.value, sft=with_nan(recipe.method(), config, None, _NAN_STEP.value))
  recipe.print_summary(out, config, _WORKDIR.value)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(runner.cli(main))
