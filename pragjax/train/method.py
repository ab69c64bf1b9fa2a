"""A method, as the runner trains it: a value, not a bag of keyword hooks.

`runner.train_lm(config, workdir, method)` trains any `Method`. A method
package (`pragjax.methods.<name>`) builds one from its config:

    Method(name="dpo", loss=lambda graphdef: make_dpo_loss_fn(graphdef, beta=0.1),
           data=lambda tok: preference_iterator(...), reference=make_ref_fn,
           flops_factor=4 / 3)

Fields:
  name: shown in messages and recorded in `metrics.jsonl` rows' source.
  loss: `graphdef -> loss_fn(params, batch, rng) -> (loss, metrics)`, the
    function the one train step differentiates.
  data: `tokenizer -> iterator` of process-local host batches with the
    checkpointable `get_state` / `set_state` (`pragjax.data.pipeline`,
    `pragjax.data.groups`); `None` = the record pipeline (single sequences of
    `{prompt, response}` / `{text}` / `{messages}` records, tokenised with
    `train.seq_len`, batched to `train.batch_size`).
  reference: `graphdef -> ref_fn(ref_params, batch) -> dict`; when set, the
    initial model becomes a frozen reference evaluated inside the step and its
    outputs are merged into the batch the loss sees.
  evaluators: `evaluator(step, model) -> {name: float}`, called every
    `train.eval_every` steps (and at the last step) on the current parameters
    merged into a model; rows go to `metrics.jsonl` / TensorBoard prefixed
    `eval/`.
  stop_when: `() -> bool`, asked after each evaluation; True stops the run
    early (with a checkpoint; e.g. an evaluator's patience on a held-out metric
    ran out).
  flops_factor: model FLOPs per token relative to one train step of the plain
    LM (e.g. 4/3 with an in-step reference forward), for the MFU display.
  flops_seq_len: sequence length of the FLOPs estimate (default `train.seq_len`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from flax import nnx

LossFn = Callable[[Any, Mapping[str, Any], Any], tuple[Any, Mapping[str, Any]]]
Evaluator = Callable[[int, nnx.Module], Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  loss: Callable[[nnx.GraphDef], LossFn]
  data: Callable[[Any], Any] | None = None
  reference: Callable[[nnx.GraphDef], Callable] | None = None
  evaluators: Sequence[Evaluator] = ()
  stop_when: Callable[[], bool] | None = None
  flops_factor: float = 1.0
  flops_seq_len: int | None = None

  def replace(self, **kw) -> "Method":
    return dataclasses.replace(self, **kw)
