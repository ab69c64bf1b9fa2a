"""ReLIFT: prompts whose every response fails are buffered with their demonstration; a full buffer becomes one
NLL step between rollouts, in the one compiled step's shape; the loss, the resume and the config checks."""

import numpy as np
import pytest
from flax import nnx

from experiments.configs import rl as rl_configs
from pragjax.data.errors import DataError
from pragjax.methods.rl import recipe
from pragjax.methods.rl.loss import make_pg_loss_fn
from pragjax.models.logprobs import batch_token_logprobs
from pragjax.objectives.rl import group_advantages
from pragjax.toyworld import arithmetic
from pragjax.train import runner
from pragjax.train.rollout import SFT_KEY, RolloutSource

G, P, T, NEW = 4, 4, 96, 24


@pytest.fixture(scope="module")
def toy():
  model = runner.load_model(dict(path="", builtin="arithmetic", tokenizer="", dtype="", param_dtype="",
                                 attention_impl=""))
  rng = np.random.default_rng(0)
  prompts = [{"prompt": p.prompt, "problem": p, "i": i} for i, p in enumerate(arithmetic.training_problems(rng, 12))]
  return model, prompts


def _odd_prompts_fail(record, text):
  """Every response to an odd-numbered prompt fails, every response to an even one succeeds; the reward varies
  within a group (the response's length parity) so that RL rows carry advantages."""
  return {"reward": float(len(text) % 2), "correct": float(record["i"] % 2 == 0)}


def _adv(r):
  return np.asarray(group_advantages(r, group_size=G, scale="std", baseline="mean"))


def _source(toy, **kw):
  model, prompts = toy
  args = dict(advantage_fn=_adv, group_size=G, prompts_per_rollout=P, seq_len=T, max_new_tokens=NEW, seed=3,
              shuffle=False, demonstration_fn=recipe.demonstration, sft_batch=4)
  src = RolloutSource(prompts, kw.pop("reward_fn", _odd_prompts_fail), model.tokenizer, **{**args, **kw})
  src.observe_model(model.model)
  return src


def test_failed_prompts_become_one_demonstration_batch_between_rollouts(toy):
  model, prompts = toy
  tok = model.tokenizer
  src = _source(toy)
  first = next(src)  # rollout 1: prompts 0-3 in order (no shuffle); 1 and 3 fail
  assert first[SFT_KEY].tolist() == [0.0] * (G * P) and src.metrics()["sft/buffered"] == 2
  second = next(src)  # rollout 2: prompts 4-7; 5 and 7 fail: the buffer now holds 4
  assert second[SFT_KEY].max() == 0 and src.metrics()["sft/buffered"] == 4
  assert src.wants_model()
  sft = next(src)  # the demonstration batch, before rollout 3
  assert set(sft) == set(first) and all(sft[k].shape == first[k].shape for k in first)
  assert sft[SFT_KEY].tolist() == [1.0] * 4 + [0.0] * (G * P - 4)
  np.testing.assert_array_equal(sft["on_policy"], np.ones(G * P))
  np.testing.assert_array_equal(sft["advantages"], np.zeros(G * P))
  for row, i in enumerate((1, 3, 5, 7)):
    prompt = tok.encode(prompts[i]["prompt"], add_special_tokens=True)
    demo = tok.encode(prompts[i]["problem"].solution, add_special_tokens=False) + [tok.eos_token_id]
    n = len(prompt) + len(demo)
    np.testing.assert_array_equal(sft["input_ids"][row, :n], prompt + demo)
    assert sft["attention_mask"][row].sum() == n
    np.testing.assert_array_equal(np.flatnonzero(sft["loss_mask"][row]), np.arange(len(prompt), n))
    assert tok.decode(sft["input_ids"][row, len(prompt):n - 1].tolist()) == prompts[i]["problem"].solution
  assert sft["loss_mask"][4:].sum() == 0 and sft["attention_mask"][4:].sum() == 0
  assert src.metrics()["sft/steps"] == 1 and src.metrics()["sft/demonstrations"] == 4
  assert src.metrics()["sft/buffered"] == 0
  third = next(src)  # RL continues with rollout 3 (prompts 8-11)
  assert third[SFT_KEY].max() == 0 and src.metrics()["sft/buffered"] == 2


def test_resume_with_a_full_buffer_serves_the_same_batches(toy):
  a = _source(toy)
  next(a), next(a)
  state = a.get_state()
  b = _source(toy)
  b.set_state(state)
  b.observe_model(toy[0].model)
  for _ in range(2):  # the demonstration batch, then rollout 3
    x, y = next(a), next(b)
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_process_slices_of_a_demonstration_batch_concatenate_to_the_one_process_batch(toy):
  whole = _source(toy)
  parts = [_source(toy, process_index=i, process_count=2) for i in range(2)]
  batches = [[next(s) for _ in range(3)] for s in [whole] + parts]
  for k in batches[0][2]:
    np.testing.assert_array_equal(batches[0][2][k], np.concatenate([batches[1][2][k], batches[2][2][k]]), err_msg=k)


def test_loss_is_the_token_mean_nll_on_a_demonstration_batch_and_unchanged_on_rl_batches(toy):
  model, _ = toy
  src = _source(toy)
  rl_batch = next(src)
  next(src)
  sft = next(src)
  graphdef, params = nnx.split(model.model, nnx.Param)
  loss_fn = make_pg_loss_fn(graphdef, normalize="sequence")
  loss, metrics = loss_fn(params, sft, None)
  lp = np.asarray(batch_token_logprobs(graphdef, params, {k: sft[k] for k in ("input_ids", "attention_mask")}))
  m = sft["loss_mask"][:, 1:].astype(np.float64)
  np.testing.assert_allclose(float(loss), -(lp * m).sum() / m.sum(), rtol=1e-5)
  assert float(metrics["sft_step"]) == 1.0
  with_key, m1 = loss_fn(params, rl_batch, None)
  without = {k: v for k, v in rl_batch.items() if k != SFT_KEY}
  plain, _ = loss_fn(params, without, None)
  assert float(with_key) == float(plain) and float(m1["sft_step"]) == 0.0


def test_errors_name_the_field(toy):
  model, prompts = toy
  with pytest.raises(DataError, match="needs a demonstration_fn"):
    RolloutSource(prompts, _odd_prompts_fail, model.tokenizer, advantage_fn=_adv, group_size=G,
                  prompts_per_rollout=P, seq_len=T, max_new_tokens=NEW, sft_batch=2)
  with pytest.raises(DataError, match="exceeds the 16 rows of a minibatch"):
    _source(toy, sft_batch=17)
  c = rl_configs.get_config("ci")
  c.rl.update(algorithm="relift", sft_batch=40)
  with pytest.raises(ValueError, match="rl.sft_batch=40 exceeds train.batch_size=16"):
    recipe.check_config(recipe._derive(c))
  c.rl.sft_batch = -3
  with pytest.raises(ValueError, match="rl.sft_batch must be >= 0"):
    recipe.resolve(c.rl)
  c.rl.sft_batch = -1
  assert recipe.resolve(c.rl)["sft_batch"] == c.rl.prompts_per_rollout  # auto: one rollout's prompts
  c.rl.algorithm = "grpo"
  assert recipe.resolve(c.rl)["sft_batch"] == 0


def test_relift_on_jsonl_needs_solutions(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": "4", "solution": 4}\n')
  with pytest.raises(DataError, match="line 2, field 'solution': expected a string"):
    recipe._read_prompts(str(path))
  path.write_text('{"prompt": "1+1=", "answer": "2"}\n')
  c = rl_configs.get_config("ci")
  c.rl.algorithm = "relift"
  c.data.train_path = str(path)
  with pytest.raises(DataError, match="has a 'solution' field"):
    recipe.run(c, str(tmp_path / "work"), log=lambda *_: None)
