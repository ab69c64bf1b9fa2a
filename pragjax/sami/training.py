"""SAMI training with the one train step: the loss function on C x C batches and one training pass.

`make_sami_loss_fn(graphdef, reduction)` is a `loss_fn(params, batch, rng)`
for `pragjax.train.make_train_step`: it scores the `[B, C*C, T]` batch into
`[B, C, C]` (`scoring.matrix_logprobs`, one forward) and returns
`sami_loss(L, response_mask=slot_mask)`. Metrics: `mi_bound` (log C - loss),
`diag_margin` (mean diagonal minus mean off-diagonal score) and
`loss_weight` (queries in the batch, so gradient accumulation equals one
batch exactly: the loss is a mean over queries).

`train_pass(config, workdir, examples, model)` trains `model` for one pass
over the groups (`train.epochs` passes, `train.steps` to override) with the
engine's pieces (mesh, optimizer, step, orbax checkpoints with the iterator
position, metrics, SIGTERM, NaN stop) and exports the result in HF layout.
A killed pass restarted with the same workdir resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax import sharding as sharding_lib
from pragjax.data.pipeline import to_global_arrays
from pragjax.objectives.sami import mi_lower_bound, sami_loss
from pragjax.optim import make_optimizer
from pragjax.sami import batches as batches_lib
from pragjax.sami import scoring
from pragjax.train import runner
from pragjax.train.checkpoint import Checkpointer
from pragjax.train.flops import device_peak_flops, train_flops_per_token
from pragjax.train.loop import LoopResult, run
from pragjax.train.metrics import MetricWriter
from pragjax.train.state import init_train_state, state_shardings
from pragjax.train.step import make_train_step


def make_sami_loss_fn(graphdef: nnx.GraphDef, reduction: str = "mean"):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` (module docstring)."""
  scoring.check_reduction(reduction)

  def loss_fn(params, batch, rng):
    del rng
    L = scoring.matrix_logprobs(graphdef, params, batch, reduction)
    slots = batch["slot_mask"]
    loss = sami_loss(L, response_mask=slots)
    m = jnp.asarray(slots, bool)
    pair = (m[:, :, None] & m[:, None, :]).astype(jnp.float32)
    eye = jnp.eye(L.shape[-1], dtype=jnp.float32)
    diag = jnp.sum(L * eye * pair) / jnp.maximum(jnp.sum(eye * pair), 1.0)
    off = jnp.sum(L * (1 - eye) * pair) / jnp.maximum(jnp.sum((1 - eye) * pair), 1.0)
    metrics = {"mi_bound": mi_lower_bound(L, response_mask=slots), "diag_margin": diag - off,
               "loss_weight": jnp.sum(jnp.any(m, axis=-1)).astype(jnp.float32)}
    return loss, metrics

  return loss_fn


def train_pass(config, workdir: str, examples: Sequence[Mapping], model: runner.LoadedModel, *, on_log=None
               ) -> tuple[LoopResult, runner.LoadedModel]:
  """One SAMI training pass (module docstring). `model`'s arrays are donated to the train state.

  Config: `seed`, `mesh`, `optim`, `train` (`batch_size` = queries per step,
  `epochs`, `steps` (0 = epochs over the groups), `accum_steps`,
  `length_bucket`, `log_every`, `checkpoint_every`, `keep_checkpoints`,
  `async_checkpoint`, `progress`, `export_hf`) and `sami.reduction`.
  """
  workdir = runner.prepare_workdir(workdir)
  tc = config.train
  steps = int(tc.steps) or max(1, int(tc.epochs) * len(examples) // tc.batch_size)
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  with jax.set_mesh(mesh):
    sharding_lib.shard_model(model.model, mesh)
    tok = model.tokenizer
    optim_cfg = dict(config.optim)
    if not optim_cfg.get("total_steps"):  # schedules span the pass (its length depends on the data)
      optim_cfg["total_steps"] = steps
      optim_cfg["warmup_steps"] = min(int(optim_cfg.get("warmup_steps", 0)), max(steps - 1, 0))
    tx = make_optimizer(optim_cfg)
    graphdef, state = init_train_state(model.model, tx, seed=config.seed)
    st_sh = state_shardings(state, mesh)
    state = jax.device_put(state, st_sh)
    step_fn = make_train_step(make_sami_loss_fn(graphdef, config.sami.reduction), tx, accum_steps=tc.accum_steps,
                              state_shardings=st_sh, batch_shardings=sharding_lib.batch_sharding(mesh))
    data = batches_lib.GroupIterator(examples, batch_size=tc.batch_size, seed=config.seed,
                                     pad_id=tok.pad_token_id or 0, length_bucket=tc.length_bucket)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints,
                                interval=tc.checkpoint_every, async_save=tc.async_checkpoint)
    writer = MetricWriter(workdir)
    seq_len = max(len(ids) for e in examples for ids, _ in e["sequences"])
    result = run(state, step_fn, data, num_steps=steps, checkpointer=checkpointer, writer=writer,
                 to_device=functools.partial(to_global_arrays, mesh=mesh), log_every=tc.log_every,
                 flops_per_token=train_flops_per_token(model.config, seq_len),
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
  return result, out
