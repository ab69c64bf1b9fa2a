"""SAMI training with the one train step: the loss function on C x C batches.

`make_sami_loss_fn(graphdef, reduction)` is a `loss_fn(params, batch, rng)`
for `pragjax.train.make_train_step`: it scores the `[B, C*C, T]` batch into
`[B, C, C]` (`scoring.matrix_logprobs`, one forward) and returns
`sami_loss(L, response_mask=...)` with the real constitutions of
`slot_mask [B, C*C]` (`batches.constitution_mask`). Metrics: `mi_bound` (log C - loss),
`diag_margin` (mean diagonal minus mean off-diagonal score) and
`loss_weight` (queries in the batch, so gradient accumulation equals one
batch exactly: the loss is a mean over queries).

`sami_method` is the `Method` (this loss, the group iterator of
`pragjax.data.groups` over `batches.group_sequences`); `train_pass` is one
training pass: `pragjax.train.runner.train_lm` with it; `load_model` loads the
base model or an iteration's exported one.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from flax import nnx

from pragjax import sharding as sharding_lib
from pragjax.data.groups import GroupIterator
from pragjax.methods.sami import batches, scoring
from pragjax.objectives.sami import mi_lower_bound, sami_loss
from pragjax.train import runner
from pragjax.train.method import Method


def make_sami_loss_fn(graphdef: nnx.GraphDef, reduction: str = "mean"):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` (module docstring)."""
  scoring.check_reduction(reduction)

  def loss_fn(params, batch, rng):
    del rng
    L = scoring.matrix_logprobs(graphdef, params, batch, reduction)
    slots = batches.constitution_mask(batch["slot_mask"])
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


def load_model(config, path: str = ""):
  """The base model (`path` "" = `config.model`) or an iteration's exported HF directory, on the config's mesh."""
  spec = dict(config.model)
  if path:
    spec.update(path=path, tokenizer="")
  return runner.load_model(spec, sharding_lib.mesh_from_config(dict(config.mesh)))


def sami_method(config, examples) -> Method:
  """The SAMI `Method`: this loss on `train.batch_size` C x C groups per step (`pragjax.data.groups.GroupIterator`).

  Every group is laid out over S*S slots (S = the largest C among
  `examples`, `batches.group_sequences`); each batch is padded to its
  longest sequence rounded up to `train.length_bucket`.
  """
  tc = config.train
  slots = max(int(e["num_slots"]) for e in examples)

  def make_data(tok):
    return GroupIterator(examples, functools.partial(batches.group_sequences, num_slots=slots),
                         global_batch_size=tc.batch_size, group_size=slots * slots, pad_id=tok.pad_token_id or 0,
                         seed=config.seed, shuffle=config.data.get("shuffle", True),
                         pad_to_multiple_of=tc.length_bucket or 1)

  return Method(name="sami", loss=functools.partial(make_sami_loss_fn, reduction=config.sami.reduction),
                data=make_data, flops_seq_len=max(len(ids) for e in examples for ids, _ in e["sequences"]))


def train_pass(config, workdir: str, examples, model, *, export_hf: bool = True):
  """One SAMI training pass over the C x C groups with the one train step (`runner.train_lm`).

  `train.batch_size` queries per step, `train.epochs` passes (`train.steps` >
  0 overrides), `sami.reduction`; `model`'s arrays are donated to the train
  state; the result is exported to `workdir/hf` (unless `export_hf=False`);
  a killed pass resumes from `workdir/checkpoints`.
  """
  tc = config.train
  steps = int(tc.steps) or max(1, int(tc.epochs) * len(examples) // tc.batch_size)
  sami = sami_method(config, examples)
  config = config.copy_and_resolve_references()
  config.train.export_hf = export_hf  # the iterations keep each iteration's model in HF layout
  return runner.train_lm(config, workdir, sami, model=model, num_steps=steps)
