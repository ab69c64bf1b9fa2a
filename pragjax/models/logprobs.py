"""Token log-probabilities of a model on a batch: the one scoring path.

Every method that scores tokens (SFT loss, implicit-PRM policy and reference,
SAMI's C x C matrix, priming scores, judges, truth-probe baselines) calls
`model_token_logprobs` / `batch_token_logprobs`, so that none of them
materialises `[B, T, V]` logits unless asked to (`lean=False`).
Methods that score groups of sequences (`pragjax.data.groups`: preference
pairs, implicit PRMs, SAMI's C x C grid) reduce them with
`group_sequence_logprobs`.

A batch follows the data contract of `pragjax.data` (`input_ids`,
`attention_mask`, optional `positions`/`segment_ids`).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax import ops


def model_token_logprobs(model, batch: dict, *, lean: bool = True, chunk_size: int = 128) -> jax.Array:
  """`[B, T-1]` float32 log p(input_ids[:, t+1] | prefix) under `model`.

  `lean=True` (default) never materialises `[B, T, V]` logits: it projects
  the final hidden states chunk by chunk (`ops.chunked_token_logprobs`);
  `lean=False` is the plain full-logits path (same values and gradients).
  """
  ids = batch["input_ids"]
  out = model(
      ids, batch.get("attention_mask"), positions=batch.get("positions"),
      segment_ids=batch.get("segment_ids"), compute_logits=not lean,
  )
  if not lean:
    return ops.token_logprobs(out.logits, ids)
  return ops.chunked_token_logprobs(
      out.final_hidden[:, :-1], model.output_embedding(out.final_hidden.dtype), ids[:, 1:],
      chunk_size=chunk_size, softcap=model.config.final_logit_softcapping,
  )


def batch_token_logprobs(graphdef: nnx.GraphDef, params, batch: dict, *, lean: bool = True,
                         chunk_size: int = 128) -> jax.Array:
  """`model_token_logprobs` for split state (inside jitted steps)."""
  return model_token_logprobs(nnx.merge(graphdef, params), batch, lean=lean, chunk_size=chunk_size)


REDUCTIONS = ("sum", "mean")


def group_sequence_logprobs(graphdef: nnx.GraphDef, params, batch: Mapping[str, jax.Array], *, reduction: str = "sum",
                            lean: bool = True, chunk_size: int = 128) -> jax.Array:
  """`[B, G]` float32 sequence log-probs of a group batch (`input_ids`, `attention_mask`, `loss_mask` `[B, G, T]`).

  The groups are flattened into one `[B*G, T]` forward; each row's token
  log-probs are reduced over its `loss_mask` targets: `sum` (log p of the
  targets) or `mean` (per target token). A row without targets (an empty
  slot) gives 0.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
  ids = batch["input_ids"]
  b, g, t = ids.shape
  rows = {k: jnp.reshape(batch[k], (b * g, t)) for k in ("input_ids", "attention_mask", "loss_mask")}
  logp = batch_token_logprobs(graphdef, params, {k: rows[k] for k in ("input_ids", "attention_mask")}, lean=lean,
                              chunk_size=chunk_size)
  mask = rows["loss_mask"][:, 1:]
  reduce = ops.masked_sum if reduction == "sum" else ops.masked_mean
  return reduce(logp, mask).reshape(b, g)
