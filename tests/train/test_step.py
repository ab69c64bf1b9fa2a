"""The one train step: accumulation, sharding, freezing, optimizers, reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pragjax import sharding
from pragjax.methods.sft.loss import batch_token_logprobs, make_sft_loss_fn
from pragjax.models import Decoder, ModelConfig
from pragjax.optim import make_optimizer
from pragjax.train import init_train_state, make_train_step, state_shardings

CFG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)


def _batch(b=8, t=12, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, 64, (b, t)).astype(np.int32)
  lengths = rng.randint(4, t + 1, b)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  loss_mask = mask.copy()
  loss_mask[:, :2] = 0  # a prompt of 2 tokens; response lengths differ per row
  return {"input_ids": ids * mask, "attention_mask": mask, "loss_mask": loss_mask}


def _setup(optim=None, **cfg_kw):
  model = Decoder(CFG.replace(**cfg_kw), rngs=nnx.Rngs(0))
  tx = make_optimizer(optim or {"name": "adamw", "lr": 1e-2, "clip_norm": 1.0})
  graphdef, state = init_train_state(model, tx, seed=1)
  return graphdef, state, tx


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_grad_accumulation_equals_full_batch():
  # SGD with lr 1: the parameter change is the gradient itself (Adam would
  # amplify float rounding in near-zero gradients to ~lr).
  graphdef, state, tx = _setup({"name": "sgd", "lr": 1.0})
  loss_fn = make_sft_loss_fn(graphdef)
  batch = _batch()
  full = make_train_step(loss_fn, tx, donate=False)
  accum = make_train_step(loss_fn, tx, accum_steps=4, donate=False)
  s1, m1 = full(state, batch)
  s4, m4 = accum(state, batch)
  np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), atol=1e-6)
  np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-6)
  for a, b in zip(_leaves(s1.params), _leaves(s4.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_loss_decreases_and_step_counts():
  graphdef, state, tx = _setup()
  step = make_train_step(make_sft_loss_fn(graphdef), tx)
  batch = _batch()
  losses = []
  for _ in range(20):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert int(state.step) == 20
  assert losses[-1] < 0.5 * losses[0]


def test_sharded_step_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  graphdef, state, tx = _setup()
  loss_fn = make_sft_loss_fn(graphdef)
  batch = _batch()
  single = make_train_step(loss_fn, tx, donate=False)
  s1, m1 = single(state, batch)
  s1, m1b = single(s1, batch)
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  sh = state_shardings(state, mesh)
  bsh = sharding.batch_sharding(mesh)
  with jax.set_mesh(mesh):
    st = jax.device_put(state, sh)
    assert st.params["layers"][0]["mlp"]["up_proj"][...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    step = make_train_step(loss_fn, tx, state_shardings=sh, batch_shardings=bsh)
    b = jax.device_put(batch, bsh)
    s8, m8 = step(st, b)
    s8, m8b = step(s8, b)
  np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), atol=1e-5)
  np.testing.assert_allclose(float(m8b["loss"]), float(m1b["loss"]), atol=1e-5)
  for a, b in zip(_leaves(s1.params), _leaves(s8.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_freezing_by_regex_updates_only_matching_params():
  graphdef, state, tx = _setup({"name": "sgd", "lr": 0.1, "trainable": r"layers\.1\.mlp"})
  step = make_train_step(make_sft_loss_fn(graphdef), tx, donate=False)
  new, _ = step(state, _batch())
  flat_old = dict(nnx.to_flat_state(state.params))
  flat_new = dict(nnx.to_flat_state(new.params))
  changed = {".".join(map(str, p)) for p in flat_old
             if not np.array_equal(np.asarray(flat_old[p][...]), np.asarray(flat_new[p][...]))}
  assert changed == {"layers.1.mlp.gate_proj", "layers.1.mlp.up_proj", "layers.1.mlp.down_proj"}


@pytest.mark.parametrize("name", ["adamw", "rmsprop", "sgd", "adafactor"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_every_optimizer_and_schedule_trains(name, schedule):
  optim = {"name": name, "lr": 3e-2 if name != "sgd" else 0.05, "schedule": schedule,
           "warmup_steps": 2, "total_steps": 30, "momentum": 0.9 if name == "sgd" else 0.0}
  graphdef, state, tx = _setup(optim)
  step = make_train_step(make_sft_loss_fn(graphdef), tx)
  batch = _batch()
  first = None
  for _ in range(12):
    state, m = step(state, batch)
    first = first if first is not None else float(m["loss"])
  assert float(m["loss"]) < first


def test_bf16_compute_keeps_float32_master_weights():
  graphdef, state, tx = _setup(dtype="bfloat16", param_dtype="float32")
  step = make_train_step(make_sft_loss_fn(graphdef), tx)
  new, m = step(state, _batch())
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new.params))
  assert np.isfinite(float(m["loss"]))


def test_reference_in_step_equals_precomputed():
  graphdef, state, tx = _setup({"name": "sgd", "lr": 0.1})
  ref_model = Decoder(CFG, rngs=nnx.Rngs(5))
  _, ref_params = nnx.split(ref_model, nnx.Param)

  def ref_fn(ref_params, batch):
    return {"ref_logp": batch_token_logprobs(graphdef, ref_params, batch)}

  def loss_fn(params, batch, rng):  # a log-ratio objective needing the reference
    d = batch_token_logprobs(graphdef, params, batch) - batch["ref_logp"]
    m = batch["loss_mask"][:, 1:]
    return -jnp.sum(jax.nn.log_sigmoid(d) * m) / jnp.sum(m), {}

  batch = _batch()
  live = make_train_step(loss_fn, tx, ref_fn=ref_fn, donate=False)
  s_live, m_live = live(state.replace(ref_params=ref_params), batch)
  pre = make_train_step(loss_fn, tx, donate=False)
  s_pre, m_pre = pre(state, {**batch, **jax.jit(ref_fn)(ref_params, batch)})
  np.testing.assert_allclose(float(m_live["loss"]), float(m_pre["loss"]), atol=1e-6)
  for a, b in zip(_leaves(s_live.params), _leaves(s_pre.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
