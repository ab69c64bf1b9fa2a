"""Training an implicit PRM with the one train step: loss functions on example groups and the run wiring.

`make_prm_loss_fn(graphdef, loss, beta)` is a `loss_fn(params, batch, rng)`
for `pragjax.train.make_train_step`; `make_ref_fn(graphdef)` is its frozen
reference pass (run inside the step on `state.ref_params`). Both read the
group batches of `pragjax.prm.data` (`input_ids [B, G, T]` ...), flatten the
groups into one `[B*G, T]` forward, and reduce to sequence log-probs
`[B, G]` (sum over `loss_mask` targets). The sequence log-ratio
`d = policy - reference` feeds the pure losses of
`pragjax.objectives.preference`.

`train_prm(config, workdir, records)` wires model, reference, data,
optimizer, step, checkpoints and metrics exactly as `pragjax.train.runner`
does for language modelling (same pieces, same loop), because the runner's
data path only knows single-sequence records.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax import ops
from pragjax import sharding as sharding_lib
from pragjax.data.errors import DataError
from pragjax.data.pipeline import to_global_arrays
from pragjax.objectives import preference
from pragjax.optim import make_optimizer
from pragjax.prm import data as prm_data
from pragjax.train import runner
from pragjax.train.checkpoint import Checkpointer
from pragjax.train.flops import device_peak_flops, train_flops_per_token
from pragjax.train.loop import LoopResult, run
from pragjax.train.metrics import MetricWriter
from pragjax.train.state import init_train_state, state_shardings
from pragjax.train.step import make_train_step

__all__ = ["sequence_logprobs", "make_ref_fn", "make_prm_loss_fn", "chat_template_flag", "train_prm"]


def sequence_logprobs(graphdef: nnx.GraphDef, params, batch: Mapping[str, jax.Array]) -> jax.Array:
  """`[B, G]` float32 sum of log p(target tokens) over `loss_mask` for group batches `[B, G, T]`."""
  ids = batch["input_ids"]
  b, g, t = ids.shape
  flat = lambda x: jnp.reshape(x, (b * g, t))
  model = nnx.merge(graphdef, params)
  logits = model(flat(ids), flat(batch["attention_mask"])).logits
  logp = ops.token_logprobs(logits, flat(ids))
  return ops.masked_sum(logp, flat(batch["loss_mask"])[:, 1:]).reshape(b, g)


def make_ref_fn(graphdef: nnx.GraphDef):
  """`ref_fn(ref_params, batch) -> {"ref_seq_logp": [B, G]}` for `make_train_step`."""

  def ref_fn(ref_params, batch):
    return {"ref_seq_logp": sequence_logprobs(graphdef, ref_params, batch)}

  return ref_fn


def make_prm_loss_fn(graphdef: nnx.GraphDef, loss: str, beta: float, *, desirable_weight: float = 1.0,
                     undesirable_weight: float = 1.0):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` for implicit-PRM training with `loss` in `LOSSES`.

  Needs `batch["ref_seq_logp"]` (from `make_ref_fn`, or precomputed).
  Metrics: `reward_correct` / `reward_wrong` (mean beta*d of each side),
  `reward_accuracy` (pairs: beta*d_w > beta*d_l; CE/KTO: sign of beta*d
  agrees with label >= 0.5), and `kl` for KTO. Under gradient
  accumulation KTO's KL baseline is the micro-batch's.
  """
  if loss not in prm_data.LOSSES:
    raise ValueError(f"loss must be one of {prm_data.LOSSES}, got {loss!r}")

  def loss_fn(params, batch, rng):
    del rng
    d = sequence_logprobs(graphdef, params, batch) - batch["ref_seq_logp"]
    label = batch["label"]
    metrics = {"loss_weight": jnp.asarray(d.shape[0], jnp.float32)}
    if loss in prm_data.PAIRWISE:
      fn = preference.dpo_loss if loss == "dpo" else preference.nca_loss
      value = fn(d[:, 0], d[:, 1], beta)
      metrics.update(reward_correct=jnp.mean(beta * d[:, 0]), reward_wrong=jnp.mean(beta * d[:, 1]),
                     reward_accuracy=jnp.mean((d[:, 0] > d[:, 1]).astype(jnp.float32)))
      return value, metrics
    own = d[:, 0]
    if loss == "ce":
      value = preference.ce_loss(own, label, beta)
    else:
      kl = preference.kto_kl_baseline(d[:, 1])
      value = preference.kto_loss(own, label, beta, kl, desirable_weight=desirable_weight,
                                  undesirable_weight=undesirable_weight)
      metrics["kl"] = kl
    good = label >= 0.5
    metrics.update(
        reward_correct=ops.masked_mean(beta * own, good, axis=0),
        reward_wrong=ops.masked_mean(beta * own, ~good, axis=0),
        reward_accuracy=jnp.mean(((own > 0) == good).astype(jnp.float32)))
    return value, metrics

  return loss_fn


def chat_template_flag(value: str) -> bool | None:
  """Config `prm.chat_template` -> `chat_template` argument: "" None (automatic), "on" True, "off" False."""
  flags = {"": None, "auto": None, "on": True, "off": False}
  if value not in flags:
    raise ValueError(f"prm.chat_template must be one of {sorted(flags)}, got {value!r}")
  return flags[value]


def train_prm(config, workdir: str, records: Sequence[Mapping[str, Any]], *, loss: str,
              model: runner.LoadedModel | None = None, on_log=None
              ) -> tuple[LoopResult, runner.LoadedModel, dict]:
  """Trains an implicit PRM on outcome records; the initial model is also the frozen reference.

  Args:
    config: ConfigDict with `seed`, `model`, `mesh`, `optim`, `train` (as for
      `train_lm`; `train.steps` 0 = `train.epochs` over the examples) and `prm`
      (`beta`, `label_threshold`, `max_pairs_per_prompt`, `chat_template`,
      `kto_desirable_weight`, `kto_undesirable_weight`); see `experiments/configs/implicit_prm.py`.
    records: outcome records (`{"prompt", "response", "label"}`; see
      `pragjax.prm.data.outcome_record`).
    loss: one of `pragjax.prm.data.LOSSES`.
    model: the initial model (default: `config.model`); it is also the reference.
  Returns: (loop result, the trained PRM, data stats).
  """
  workdir = runner.prepare_workdir(workdir)
  tc, pc = config.train, config.prm
  examples, stats = prm_data.training_records(records, loss, seed=config.seed, threshold=pc.label_threshold,
                                              max_pairs_per_prompt=pc.max_pairs_per_prompt)
  if not examples:
    raise DataError(f"no {loss} training examples from {len(records)} records ({stats}); pairwise losses need "
                    f"prompts with both correct and wrong responses")
  steps = int(tc.steps) or max(1, int(tc.epochs) * len(examples) // tc.batch_size)
  stats.update(steps=steps)
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  with jax.set_mesh(mesh):
    if model is None:
      model = runner.load_model(dict(config.model), mesh)
    else:
      sharding_lib.shard_model(model.model, mesh)
    tok = model.tokenizer
    optim_cfg = dict(config.optim)
    if not optim_cfg.get("total_steps"):  # Schedules span the run (its length depends on the data).
      optim_cfg["total_steps"] = steps
      optim_cfg["warmup_steps"] = min(int(optim_cfg.get("warmup_steps", 0)), steps - 1)
    tx = make_optimizer(optim_cfg)
    graphdef, state = init_train_state(model.model, tx, seed=config.seed, ref_model=model.model)
    # The reference is the initial policy; its own buffers, since the step donates the state.
    state = state.replace(ref_params=jax.tree.map(jnp.copy, state.ref_params))
    st_sh = state_shardings(state, mesh)
    state = jax.device_put(state, st_sh)
    loss_fn = make_prm_loss_fn(graphdef, loss, pc.beta, desirable_weight=pc.kto_desirable_weight,
                               undesirable_weight=pc.kto_undesirable_weight)
    step_fn = make_train_step(loss_fn, tx, accum_steps=tc.accum_steps, ref_fn=make_ref_fn(graphdef),
                              state_shardings=st_sh, batch_shardings=sharding_lib.batch_sharding(mesh))
    tokenize = functools.partial(prm_data.tokenize_group, tokenizer=tok, loss=loss, max_length=tc.seq_len,
                                 chat_template=chat_template_flag(pc.chat_template))
    data = prm_data.make_prm_iterator(
        examples, tokenize, global_batch_size=tc.batch_size, seq_len=tc.seq_len, seed=config.seed,
        pad_id=tok.pad_token_id, shuffle=config.data.shuffle, process_index=jax.process_index(),
        process_count=jax.process_count(), length_bucket=tc.length_bucket)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints,
                                interval=tc.checkpoint_every, async_save=tc.async_checkpoint)
    writer = MetricWriter(workdir)
    result = run(
        state, step_fn, data, num_steps=steps, checkpointer=checkpointer, writer=writer,
        to_device=functools.partial(to_global_arrays, mesh=mesh), log_every=tc.log_every,
        # Per token: the policy's forward and backward plus the reference's forward (1/3 of a train step).
        flops_per_token=train_flops_per_token(model.config, tc.seq_len) * 4 / 3,
        peak_flops=device_peak_flops(model.config.dtype), progress=tc.progress, on_log=on_log)
    checkpointer.close()
    writer.close()
    trained = nnx.merge(graphdef, result.state.params)
    out = runner.LoadedModel(trained, model.config, tok, model.path)
    if tc.export_hf and not result.preempted:
      hf_dir = os.path.join(workdir, "hf")
      runner.save_hf(trained, model.config, hf_dir)
      if jax.process_index() == 0:
        tok.save(hf_dir)
  return result, out, stats
