"""Token log-probabilities of a model on a batch: the one scoring path.

Every method that scores tokens (SFT loss, implicit-PRM policy and reference,
SAMI's C x C matrix, priming scores, judges, truth-probe baselines) calls
`model_token_logprobs` / `batch_token_logprobs`, so that none of them
materialises `[B, T, V]` logits unless asked to (`lean=False`).

A batch follows the data contract of `pragjax.data` (`input_ids`,
`attention_mask`, optional `positions`/`segment_ids`).
"""

from __future__ import annotations

import jax
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
