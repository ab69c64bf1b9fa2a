"""The loop of long runs: metrics kept on the device and fetched once per log window, the finite flags read
before every save (a NaN between saves is named exactly and never checkpointed), evaluator rows, the
held-out loss, the ahead-of-time compile report and the profiler trace."""

import functools
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.configs import sft as sft_configs
from pragjax.data.collate import tokenize_record
from pragjax.data.jsonl import JsonlSource
from pragjax.data.pipeline import make_train_iterator
from pragjax.methods.sft import recipe as sft
from pragjax.methods.sft.loss import make_sft_loss_fn
from pragjax.models import Decoder, ModelConfig
from pragjax.optim import make_optimizer
from pragjax.train import checks, init_train_state, make_train_step, read_metrics, runner
from pragjax.train.checkpoint import Checkpointer
from pragjax.train.loop import NonFiniteLossError
from pragjax.train.step import AheadOfTimeStep, memory_report
from tests.train import nan_sft
from tests.train.test_runs import setup  # noqa: F401  (the tiny model and data file)

METRICS = ("loss", "grad_norm", "update_norm")


def _config(setup, **train):
  config = sft_configs.get_config("toy")
  config.model.path = setup["model"]
  config.data.train_path = setup["data"]
  config.runtime.compilation_cache_dir = ""
  config.world.eval_problems = 0
  config.optim.update(lr=3e-3, warmup_steps=0)
  config.train.update(steps=8, batch_size=8, seq_len=96, checkpoint_every=1000, keep_checkpoints=10, log_every=1,
                      progress=False, export_hf=False, async_checkpoint=False)
  config.train.update(**train)
  return config


def _rows(workdir) -> list[dict]:
  return read_metrics(workdir)


# -- metrics on the device: one row per window, the mean of the steps ---------------------------------------


def test_rows_of_a_log_window_are_the_mean_of_its_steps(setup, tmp_path):
  every = str(tmp_path / "every")
  window = str(tmp_path / "window")
  runner.train_lm(_config(setup, log_every=1), every, sft.method())
  runner.train_lm(_config(setup, log_every=4), window, sft.method())
  per_step, per_window = _rows(every), _rows(window)
  assert [r["step"] for r in per_step] == list(range(1, 9))
  assert [r["step"] for r in per_window] == [4, 8]
  assert "finite" not in per_window[0]
  for row, first in zip(per_window, (0, 4)):
    for k in METRICS:
      expected = np.mean([r[k] for r in per_step[first:first + 4]])
      np.testing.assert_allclose(row[k], expected, rtol=1e-5, err_msg=k)
    assert row["tokens_per_sec"] > 0


# -- a NaN between two saves is named exactly and never checkpointed ----------------------------------------


def _nan_at(config, at: int):
  return nan_sft.with_nan(sft.method(), config, None, at)


def test_nan_between_saves_names_its_step_and_the_last_checkpoint_is_finite(setup, tmp_path):
  workdir = str(tmp_path / "w")
  config = _config(setup, steps=9, checkpoint_every=3, log_every=10)  # no row before the save at step 6
  with pytest.raises(NonFiniteLossError) as e:
    runner.train_lm(config, workdir, _nan_at(config, 5))
  message = str(e.value)
  assert "non-finite loss (nan) at step 5" in message, message
  assert "no state of steps 5-6 was saved" in message, message  # found by the check before step 6's save
  assert "last good checkpoint: step 3" in message, message
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=10, interval=1, async_save=False)
  assert ckpt.steps() == [1, 3]  # orbax saves a run's first step, then every 3rd
  for step in ckpt.steps():
    state, _ = ckpt.restore_raw(step)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state["params"]))
  ckpt.close()
  assert _rows(workdir) == []  # the window holding the NaN step is not written


def test_nan_found_by_a_row_when_no_save_is_due(setup, tmp_path):
  workdir = str(tmp_path / "w")
  config = _config(setup, steps=8, checkpoint_every=1000, log_every=4)
  with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 6; no state of steps 6-8 was saved; "
                                               r"last good checkpoint: step 1 "):
    runner.train_lm(config, workdir, _nan_at(config, 6))
  assert [r["step"] for r in _rows(workdir)] == [4]


# -- evaluators ------------------------------------------------------------------------------------------


def test_evaluator_rows_land_at_their_steps_and_see_that_steps_state(setup, tmp_path):
  workdir = str(tmp_path / "w")
  seen = {}

  def embed_sum(step, model):
    seen[step] = float(jnp.sum(model.embed[...]))
    return {"embed_sum": seen[step]}

  runner.train_lm(_config(setup, steps=7, log_every=2, eval_every=3, checkpoint_every=1),
                  workdir, sft.method().replace(evaluators=[embed_sum]))
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == [2, 3, 4, 6, 7]
  evaluated = {r["step"]: r["eval/embed_sum"] for r in rows if "eval/embed_sum" in r}
  assert sorted(evaluated) == [3, 6, 7] and sorted(seen) == [3, 6, 7]
  assert "loss" not in [r for r in rows if r["step"] == 3][0]  # an evaluation-only row between two log rows
  assert "loss" in [r for r in rows if r["step"] == 6][0]
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=10, interval=1, async_save=False)
  for step, value in evaluated.items():
    params = ckpt.restore_raw(step)[0]["params"]
    assert value == pytest.approx(float(np.sum(np.asarray(jax.tree.leaves(params["embed"])[0]))), rel=1e-6), step
  ckpt.close()


def test_heldout_loss_equals_the_token_mean_nll_of_the_heldout_batches(setup, tmp_path):
  held = tmp_path / "heldout.jsonl"
  held.write_text("".join(open(setup["data"]).readlines()[:20]))  # 2 full batches of 8, 4 records left out
  workdir = str(tmp_path / "w")
  config = _config(setup, steps=2, eval_every=1)
  config.data.eval_path = str(held)
  result, trained = runner.train_lm(config, workdir, sft.method())
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == [1, 2] and all("eval/loss" in r for r in rows)

  batches = list(make_train_iterator(
      JsonlSource(str(held)), functools.partial(tokenize_record, tokenizer=trained.tokenizer, max_length=96),
      global_batch_size=8, seq_len=96, seed=0, shuffle=False, num_epochs=1, pad_id=trained.tokenizer.pad_token_id))
  assert len(batches) == 2
  nll, tokens = 0.0, 0.0
  for b in batches:
    logits = np.asarray(trained.model(jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"])).logits,
                        np.float64)
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    target = np.take_along_axis(logp[:, :-1], b["input_ids"][:, 1:, None], -1)[..., 0]
    mask = b["loss_mask"][:, 1:]
    nll -= float(np.sum(target * mask))
    tokens += float(np.sum(mask))
  assert rows[-1]["eval/loss"] == pytest.approx(nll / tokens, rel=1e-4)
  assert rows[0]["eval/loss"] != pytest.approx(rows[1]["eval/loss"], rel=1e-6)  # evaluated on each step's state

  config.train.eval_batches = 1
  runner.train_lm(config, str(tmp_path / "one"), sft.method())
  assert _rows(str(tmp_path / "one"))[-1]["eval/loss"] != pytest.approx(rows[-1]["eval/loss"], rel=1e-6)


# -- ahead-of-time compile --------------------------------------------------------------------------------


def test_compile_report_is_written_and_printed(setup, tmp_path, capsys):
  workdir = str(tmp_path / "w")
  runner.train_lm(_config(setup, steps=2, progress=True), workdir, sft.method())
  report = json.loads(open(os.path.join(workdir, "compile.json")).read())
  assert report["batch_shapes"]["input_ids"] == [8, 96]
  assert report["compile_s"] > 0 and report["lower_s"] > 0
  mem = report["memory"]
  assert mem["argument_size_in_bytes"] > 0 and mem["temp_size_in_bytes"] > 0
  assert mem["alias_size_in_bytes"] > 0  # the donated state's buffers are reused for the new state
  assert mem["total_bytes"] == (mem["argument_size_in_bytes"] + mem["output_size_in_bytes"]
                                + mem["temp_size_in_bytes"] - mem["alias_size_in_bytes"])
  out = capsys.readouterr().out
  assert "train step compiled in" in out and "input_ids 8x96" in out and "temporaries" in out


CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)


def _batch(t: int, seed: int = 0):
  ids = np.random.RandomState(seed).randint(3, 64, (4, t)).astype(np.int32)
  ones = np.ones_like(ids)
  return {"input_ids": ids, "attention_mask": ones, "loss_mask": ones}


def test_ahead_of_time_step_equals_the_jitted_step_and_leaves_other_shapes_to_it():
  model = Decoder(CFG, rngs=nnx.Rngs(0))
  tx = make_optimizer({"name": "adamw", "lr": 1e-2})
  graphdef, state = init_train_state(model, tx)
  jitted = make_train_step(make_sft_loss_fn(graphdef), tx, donate=False)
  aot = AheadOfTimeStep(jitted)
  s_ref, s_aot = state, state
  for t in (12, 12, 16, 12):  # a second shape, as length buckets give
    s_ref, m_ref = jitted(s_ref, _batch(t, seed=t))
    s_aot, m_aot = aot(s_aot, _batch(t, seed=t))
    np.testing.assert_allclose(float(m_aot["loss"]), float(m_ref["loss"]), rtol=1e-6)
  assert aot.report["batch_shapes"]["input_ids"] == [4, 12] and len(aot.other_shapes) == 1
  for a, b in zip(jax.tree.leaves(s_aot.params), jax.tree.leaves(s_ref.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
  with pytest.raises(TypeError, match="jax.jit function"):
    AheadOfTimeStep(lambda state, batch: (state, {}))


def test_memory_report_is_none_where_the_backend_has_no_analysis():
  class NoAnalysis:
    def memory_analysis(self):
      return None

  class Raises:
    def memory_analysis(self):
      raise NotImplementedError("not on this backend")

  assert memory_report(NoAnalysis()) is None and memory_report(Raises()) is None


# -- profiler trace ---------------------------------------------------------------------------------------


def test_profile_steps_write_a_trace(setup, tmp_path):
  workdir = str(tmp_path / "w")
  result, _ = runner.train_lm(_config(setup, steps=4, profile_steps="2:3"), workdir, sft.method())
  assert result.step == 4
  traces = glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*"))
  assert any(t.endswith((".xplane.pb", ".trace.json.gz")) for t in traces), traces


@pytest.mark.parametrize("value,expected", [("", None), ("5:8", (5, 8)), ("3", (3, 5)), (" 2:2 ", (2, 2))])
def test_profile_steps_format(value, expected):
  assert checks.parse_profile_steps(value) == expected


@pytest.mark.parametrize("field,value,message", [
    ("train.profile_steps", "8:5", "--config.train.profile_steps='8:5': must name steps 1 <= FIRST <= LAST"),
    ("train.profile_steps", "a-b", "--config.train.profile_steps='a-b': must be '' (off), 'FIRST:LAST'"),
    ("train.profile_steps", "0", "--config.train.profile_steps='0': must name steps"),
    ("train.eval_batches", -1, "--config.train.eval_batches=-1: must be >= 0"),
])
def test_new_fields_are_checked_by_their_flag(field, value, message):
  config = sft_configs.get_config("toy")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(checks.ConfigError) as e:
    checks.check_config(config)
  assert message in str(e.value), str(e.value)
