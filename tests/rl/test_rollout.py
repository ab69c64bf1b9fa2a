"""The rollout source: batch contract, sampler log-probs = the trainer's, minibatches, filters, process slices,
resume; the policy-gradient loss builder on its batches (on-policy ratio exactly 1)."""

import jax
import numpy as np
import pytest
from flax import nnx

from pragjax.data.errors import DataError
from pragjax.methods.rl.loss import make_pg_loss_fn
from pragjax.models.logprobs import batch_token_logprobs
from pragjax.objectives.rl import group_advantages
from pragjax.toyworld import arithmetic
from pragjax.train import runner
from pragjax.train.rollout import RolloutSource

G, P, T, NEW = 4, 4, 96, 24


@pytest.fixture(scope="module")
def toy():
  model = runner.load_model(dict(path="", builtin="arithmetic", tokenizer="", dtype="", param_dtype="",
                                 attention_impl=""))
  rng = np.random.default_rng(0)
  prompts = [{"prompt": p.prompt, "problem": p} for p in arithmetic.training_problems(rng, 12)]
  return model, prompts


def _adv(r):
  return np.asarray(group_advantages(r, group_size=G, scale="std", baseline="mean"))


def _length_reward(record, text):  # a reward that varies within groups: the response's length parity
  return {"reward": float(len(text) % 2), "correct": float(arithmetic.is_correct(record["problem"], text))}


def _source(toy, **kw):
  model, prompts = toy
  reward_fn = kw.pop("reward_fn", _length_reward)
  args = dict(advantage_fn=_adv, group_size=G, prompts_per_rollout=P, seq_len=T, max_new_tokens=NEW, seed=3)
  src = RolloutSource(prompts, reward_fn, model.tokenizer, **{**args, **kw})
  src.observe_model(model.model)
  return src


def test_batch_contract_and_sampler_logprobs_equal_the_trainers(toy):
  model, prompts = toy
  src = _source(toy)
  assert src.wants_model()
  b = next(src)
  n = G * P
  assert b["input_ids"].shape == (n, T) and b["old_logp"].shape == (n, T) and b["advantages"].shape == (n,)
  assert not src.wants_model() or src.steps_per_rollout == 1
  np.testing.assert_array_equal(b["on_policy"], np.ones(n))
  tok = model.tokenizer
  for r in range(n):
    resp = np.flatnonzero(b["loss_mask"][r])
    assert len(resp) == b["response_length"][r] > 0
    assert resp[-1] + 1 == b["attention_mask"][r].sum()  # the response ends the row
    prompt_ids = tok.encode(prompts[0]["prompt"])  # every row starts with BOS + a prompt
    assert b["input_ids"][r, 0] == prompt_ids[0]
  # group g's rows share a prompt, and the advantages are the group-normalised rewards
  for g in range(P):
    rows = b["input_ids"][g * G:(g + 1) * G]
    first = np.flatnonzero(b["loss_mask"][g * G])[0]
    assert (rows[:, :first] == rows[0, :first]).all()
  np.testing.assert_allclose(b["advantages"], _adv(b["reward"]), atol=1e-6)
  _, params = nnx.split(model.model, nnx.Param)
  graphdef = nnx.graphdef(model.model)
  tf = np.asarray(batch_token_logprobs(graphdef, params, {k: b[k] for k in ("input_ids", "attention_mask")}))
  m = b["loss_mask"][:, 1:] > 0
  np.testing.assert_allclose(b["old_logp"][:, 1:][m], tf[m], atol=2e-4)
  assert np.all(b["old_logp"][:, 1:][~m] == 0)


def test_on_policy_step_has_ratio_exactly_one_and_later_minibatches_use_the_sampler(toy):
  model, _ = toy
  src = _source(toy, minibatches=2, epochs_per_rollout=2)
  assert src.steps_per_rollout == 4
  graphdef, params = nnx.split(model.model, nnx.Param)
  loss_fn = jax.jit(make_pg_loss_fn(graphdef))
  batches = [next(src) for _ in range(4)]
  assert src.wants_model()  # the rollout is used up: the next batch samples anew
  assert [float(b["on_policy"][0]) for b in batches] == [1.0, 0.0, 0.0, 0.0]
  assert all(len(b["reward"]) == G * P // 2 for b in batches)
  # each epoch's two minibatches hold every row of the rollout once, in a new order
  epochs = [sorted(r.tobytes() + a.tobytes() for b in batches[2 * e:2 * e + 2]
                   for r, a in zip(b["input_ids"], b["advantages"])) for e in range(2)]
  assert epochs[0] == epochs[1]
  assert not np.array_equal(batches[0]["input_ids"], batches[2]["input_ids"])
  _, m0 = loss_fn(params, batches[0], None)
  assert float(m0["ratio_mean"]) == 1.0 and float(m0["clip_fraction"]) == 0.0
  _, m2 = loss_fn(params, batches[2], None)  # same parameters, old log-probs from the sampler: ratio ~1, not exact
  assert abs(float(m2["ratio_mean"]) - 1.0) < 1e-3


def test_process_slices_concatenate_to_the_one_process_batch(toy):
  one = next(_source(toy, minibatches=2))
  halves = [next(_source(toy, minibatches=2, process_index=i, process_count=2)) for i in range(2)]
  for k in one:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), one[k])


def test_resume_mid_rollout_serves_the_same_batches(toy):
  a = _source(toy, minibatches=2)
  first = [next(a) for _ in range(3)]  # rollout 1 (2 steps) + the first minibatch of rollout 2
  state = a.get_state()
  assert "rows" in state
  rest = [next(a) for _ in range(3)]
  b = _source(toy, minibatches=2)
  b.set_state(state)
  assert not b.wants_model()  # the unfinished rollout comes back from the state: no sampling
  b.observe_model(toy[0].model)
  again = [next(b) for _ in range(3)]
  for x, y in zip(rest, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert first[0]["input_ids"].shape == rest[0]["input_ids"].shape
  with pytest.raises(DataError, match="cannot resume"):
    _source(toy, seed=4).set_state(state)


def test_filter_equal_refills_and_reports_kept_groups(toy):
  const = _source(toy, reward_fn=lambda r, t: 1.0, filter_equal=True, max_draws=2)
  b = next(const)
  stats = const.metrics()
  assert stats["rollout/kept_groups"] == 0.0 and stats["rollout/sampled_prompts"] == 2 * P
  assert np.all(b["advantages"] == 0) and len(b["reward"]) == G * P  # dropped groups fill the batch
  assert "rollout/accuracy" not in stats  # the reward gave no correctness
  varied = _source(toy, filter_equal=True, max_draws=4)
  next(varied)
  s = varied.metrics()
  assert s["rollout/sampled_prompts"] >= P and 0.0 < s["rollout/kept_groups"] <= 1.0


def test_errors_name_the_problem(toy):
  model, prompts = toy
  with pytest.raises(DataError, match="seq_len=24 leaves no room"):
    RolloutSource(prompts, _length_reward, model.tokenizer, advantage_fn=_adv, group_size=G, prompts_per_rollout=P,
                  seq_len=24, max_new_tokens=24)
  with pytest.raises(DataError, match="minibatches"):
    RolloutSource(prompts, _length_reward, model.tokenizer, advantage_fn=_adv, group_size=3, prompts_per_rollout=1,
                  seq_len=T, max_new_tokens=NEW, minibatches=2)
  bad = _source(toy, reward_fn=lambda r, t: {"score": 1.0})
  with pytest.raises(DataError, match="rollout prompt .*, response 0: reward_fn returned \\['score'\\]"):
    next(bad)
  nan = _source(toy, reward_fn=lambda r, t: float("nan"))
  with pytest.raises(DataError, match="non-finite reward"):
    next(nan)
  long = _source(toy, seq_len=NEW + 4)
  with pytest.raises(DataError, match="exceed seq_len"):
    next(long)
