"""DPO and its family as a `Method`: pairs in, a policy out, held-out preference accuracy before and after.

`method(config, pairs)` is the `Method` that `runner.train_lm` trains: the
loss of `pragjax.methods.preference.loss` on `[B, 2, T]` pair batches of
`pragjax.data.groups.GroupIterator` (slot 0 chosen, slot 1 rejected), the
reference either in the step or from the reference store. `run(config,
workdir)` loads the pairs (`data.train_path`, `data.eval_path`, or with no
model and no data the arithmetic world's pairs of
`pragjax.methods.preference.toy`), trains, and scores the held-out pairs.

The reference (`dpo.reference`):
- "store" (default): the initial model's token log-probs of every training
  sequence are computed once into `pragjax.train.reference_store` (under
  `dpo.reference_store_dir`, default WORKDIR/reference_store; reused by any
  run with the same model, tokenizer and data, rebuilt when one changed), the
  sequences' sums ride in the batches, and the step runs the policy alone:
  the store's own recommendation (no second copy of the parameters, no
  second forward per step). Store record 2i is pair i's chosen sequence,
  2i + 1 its rejected one.
- "in_step": the initial model is kept as a frozen reference and evaluated
  inside the train step (`Method.reference`).
The two give the same losses (tested); they differ in memory and time.

Held-out metrics on the pairs of `data.eval_path` (toy: pairs of held-out
problems), each sequence log-prob lp the sum over the response tokens
(`dpo.reduction`), d = lp_policy - lp_reference:
- `logp_accuracy`: share of pairs with lp(chosen) > lp(rejected) (ties 1/2)
  under the model itself. "before" is the initial model, which is also the
  reference: how often it already prefers the chosen response.
- `reward_accuracy`: share of pairs with d(chosen) > d(rejected) (ties 1/2),
  the implicit reward model's ranking, and `reward_margin`, the mean of
  beta (d(chosen) - d(rejected)). Before training the policy is the reference,
  every d is exactly 0 and every pair a tie: reward accuracy 0.5 and margin 0
  by construction, not a measurement. The after values are the measurement.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data.errors import DataError
from pragjax.data.groups import GroupIterator, collate_groups
from pragjax.data.jsonl import write_json
from pragjax.eval import batching
from pragjax.methods.preference import data as pref_data
from pragjax.methods.preference.loss import (
  LOSSES,
  REDUCTIONS,
  REF_KEY,
  make_dpo_loss_fn,
  make_ref_fn,
  sequence_logprobs,
)
from pragjax.objectives import preference
from pragjax.train import checks, runner
from pragjax.train import reference_store as store_lib
from pragjax.train.method import Method

REFERENCES = ("store", "in_step")
PAD_MULTIPLE = 16

__all__ = ["REFERENCES", "check_config", "load_pairs", "num_steps", "PairScorer", "pair_metrics",
           "build_reference_store", "method", "run", "print_summary"]


def _one_of(options: Sequence[str]) -> Callable[[Any], str | None]:
  return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def check_config(config) -> None:
  """The common checks plus the `dpo` section's (one ConfigError naming every bad flag)."""
  runner.check_config(config, derived=("train.steps",), extra=(
      ("dpo.loss", _one_of(LOSSES)), ("dpo.beta", checks.positive_real),
      ("dpo.label_smoothing", checks.in_range(0.0, 0.5)), ("dpo.reference", _one_of(REFERENCES)),
      ("dpo.reduction", _one_of(REDUCTIONS)), ("eval.batch_size", checks.at_least(1))))
  if config.dpo.label_smoothing and config.dpo.loss not in ("cdpo", "robust"):
    raise checks.ConfigError(f"invalid config:\n  --config.dpo.label_smoothing={config.dpo.label_smoothing}: "
                             f"applies to --config.dpo.loss=cdpo or robust, not {config.dpo.loss!r}")


# -- data --------------------------------------------------------------------------------------------------------


def is_toy(config) -> bool:
  return not config.model.path and not config.data.train_path


def load_pairs(config) -> tuple[pref_data.PairSource, list[dict]]:
  """(training pairs, parsed held-out pairs): the files of `data.train_path` / `data.eval_path` (every training
  line checked first when `data.validate`), or the toy world's when there is neither a model nor data."""
  if is_toy(config):
    from pragjax.methods.preference import toy

    w = config.world
    train = pref_data.PairSource(toy.training_pairs(config.seed, w.train_pairs))
    heldout = toy.heldout_pairs(config.seed, w.eval_pairs) if w.eval_pairs else []
    return train, [pref_data.parse_pair(p, f"held-out pair {i}") for i, p in enumerate(heldout)]
  path = config.data.train_path
  if not path:
    raise DataError("config.data.train_path is empty: DPO needs a JSONL file of preference pairs")
  train = pref_data.PairSource(path)
  limit = float(config.data.validate_max_mb)
  if config.data.validate and (not limit or os.path.getsize(path) <= limit * 2**20):
    pref_data.validate_pairs(train)
  if not len(train):
    raise DataError(f"{path}: no preference pairs")
  heldout = pref_data.read_pairs(config.data.eval_path) if config.data.eval_path else []
  return train, heldout


def num_steps(config, num_pairs: int) -> int:
  """`train.steps`, or when 0, `train.epochs` passes over `num_pairs` in batches of `train.batch_size` pairs."""
  tc = config.train
  return int(tc.steps) or max(1, int(tc.epochs) * num_pairs // int(tc.batch_size))


# -- scoring held-out pairs --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0, static_argnames=("reduction",))
def _score(graphdef, params, batch, reduction):
  return sequence_logprobs(graphdef, params, batch, reduction=reduction)


class PairScorer:
  """Sequence log-probs `[N, 2]` (chosen, rejected) of fixed pairs under any model with the same tokenizer.

  The pairs are tokenised once (those that do not fit in `max_length` are
  left out: `num_dropped`); batches of `batch_size` pairs (rounded up to the
  mesh's batch shards) are padded to one length, the longest pair rounded up
  to 16, so every call reuses one compiled shape.
  """

  def __init__(self, tokenizer, pairs: Sequence[Mapping], *, max_length: int, batch_size: int,
               reduction: str = "sum", where: Callable[[int], str] = lambda i: f"held-out pair {i}"):
    groups = [pref_data.tokenize_pair(p, tokenizer, max_length=max_length, where=where(i))
              for i, p in enumerate(pairs)]
    self.groups = [g for g in groups if g is not None]
    self.num_dropped = len(groups) - len(self.groups)
    if pairs and not self.groups:
      raise DataError(f"none of the {len(pairs)} held-out pairs fits in {max_length} tokens")
    longest = max((len(s["input_ids"]) for g in self.groups for s in g), default=2)
    self.seq_len = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    self.batch_size, self.reduction = int(batch_size), reduction
    self.pad_id = tokenizer.pad_token_id or 0

  def __len__(self) -> int:
    return len(self.groups)

  def __call__(self, model: nnx.Module) -> np.ndarray:
    graphdef, params = nnx.split(model, nnx.Param)
    out = []
    for chunk in batching.chunks(self.groups, self.batch_size):
      batch = collate_groups(chunk.items, group_size=2, pad_id=self.pad_id, seq_len=self.seq_len)
      batch = batching.place({k: batch[k] for k in ("input_ids", "attention_mask", "loss_mask")})
      out.append(batching.fetch(_score(graphdef, params, batch, reduction=self.reduction))[:chunk.n])
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 2))


def _accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
  return float(np.mean(np.where(chosen > rejected, 1.0, np.where(chosen == rejected, 0.5, 0.0))))


def pair_metrics(policy: np.ndarray, reference: np.ndarray, beta: float) -> dict[str, float]:
  """Held-out metrics of `[N, 2]` (chosen, rejected) sequence log-probs of the policy and the reference (module
  docstring): `logp_accuracy`, `reward_accuracy`, `reward_margin`, `n`."""
  d = policy - reference
  return {"logp_accuracy": _accuracy(policy[:, 0], policy[:, 1]), "reward_accuracy": _accuracy(d[:, 0], d[:, 1]),
          "reward_margin": float(np.mean(beta * (d[:, 0] - d[:, 1]))), "n": int(len(policy))}


def _evaluator(scorer: PairScorer, reference: np.ndarray, beta: float, last: dict):
  def evaluate(step: int, model) -> dict[str, float]:
    m = pair_metrics(scorer(model), reference, beta)
    last[step] = m
    return {k: v for k, v in m.items() if k != "n"}

  return evaluate


# -- the reference store -----------------------------------------------------------------------------------------


def _store_dir(config, workdir: str) -> str:
  directory = config.dpo.reference_store_dir or paths.join(workdir, "reference_store")
  if paths.is_uri(directory):
    raise ValueError(f"the reference store is a local directory; workdir {workdir} is not local: set "
                     f"--config.dpo.reference_store_dir to a local path (or --config.dpo.reference=in_step)")
  return directory


def build_reference_store(config, workdir: str, model: runner.LoadedModel, source: pref_data.PairSource,
                          log=print) -> store_lib.ReferenceStore:
  """The reference store of `source`'s sequences under `model` (the reference): opened when one with the same
  model, tokenizer and data exists (`dpo.rebuild_reference` forces a rebuild), else built (module docstring)."""
  tok, seq_len = model.tokenizer, int(config.train.seq_len)
  graphdef, params = nnx.split(model.model, nnx.Param)
  fingerprint = {"model": store_lib.model_fingerprint(params), "tokenizer": store_lib.tokenizer_fingerprint(tok),
                 "data": store_lib.data_fingerprint(source, seq_len=seq_len, layout="preference pairs: 2i chosen, "
                                                    "2i+1 rejected")}
  directory = _store_dir(config, workdir)
  tokenize = pref_data.pair_group(source, tok, max_length=seq_len)

  def build():
    log(f"scoring the {2 * len(source)} training sequences with the reference into {directory}")
    examples: list[dict | None] = []
    for i in range(len(source)):
      group = tokenize(i)
      examples.extend(group if group is not None else (None, None))
    return store_lib.ReferenceStore.build(directory, graphdef, params, examples, fingerprint=fingerprint,
                                          batch_size=int(config.eval.batch_size), pad_id=tok.pad_token_id or 0)

  store, _ = store_lib.ReferenceStore.open_or_build(directory, fingerprint, build,
                                                    rebuild=bool(config.dpo.rebuild_reference))
  if len(store) != 2 * len(source):
    raise store_lib.StaleReferenceError(f"reference store {directory} has {len(store)} sequences, the data "
                                        f"{2 * len(source)}")
  return store


def with_stored_reference(tokenize, store: store_lib.ReferenceStore, reduction: str = "sum"):
  """Wraps a pair `tokenize(index)` to add each sequence's stored reference log-prob (`ref_seq_logp`, a scalar:
  the sum, or mean, of the stored token log-probs over its `loss_mask`)."""

  def fn(index):
    group = tokenize(index)
    if group is None:
      return None
    out = []
    for slot, ex in enumerate(group):
      ref = store[2 * int(index) + slot]
      if len(ref) != len(ex["input_ids"]):
        raise store_lib.StaleReferenceError(f"pair {index}: the stored reference has {len(ref)} tokens, "
                                            f"tokenisation gives {len(ex['input_ids'])}")
      values = ref[ex["loss_mask"].astype(bool)]
      out.append({**ex, REF_KEY: np.float32(values.sum() if reduction == "sum" else values.mean())})
    return out

  return fn


# -- the method and the run --------------------------------------------------------------------------------------


def method(config, pairs: pref_data.PairSource, *, store: store_lib.ReferenceStore | None = None,
           evaluators: Sequence = ()) -> Method:
  """The `Method` training `config.dpo.loss` on `pairs`; with `dpo.reference=store` it needs the built `store`."""
  dc, tc = config.dpo, config.train
  in_step = dc.reference == "in_step"
  if not in_step and store is None:
    raise ValueError("dpo.reference=store needs the reference store (build_reference_store)")

  def make_data(tok):
    tokenize = pref_data.pair_group(pairs, tok, max_length=tc.seq_len)
    if not in_step:
      tokenize = with_stored_reference(tokenize, store, dc.reduction)
    bucket = int(tc.get("length_bucket", 0) or 0)
    return GroupIterator(
        range(len(pairs)), tokenize, global_batch_size=tc.batch_size, group_size=2,
        seq_len=None if bucket else tc.seq_len, pad_id=tok.pad_token_id or 0, seed=config.seed,
        shuffle=config.data.shuffle, length_bucket=bucket, pad_to_multiple_of=PAD_MULTIPLE)

  loss = functools.partial(make_dpo_loss_fn, loss=dc.loss, beta=dc.beta, label_smoothing=dc.label_smoothing,
                           reduction=dc.reduction)
  return Method(
      name=f"dpo:{dc.loss}", loss=loss, data=make_data,
      reference=functools.partial(make_ref_fn, reduction=dc.reduction) if in_step else None,
      evaluators=tuple(evaluators),
      flops_factor=4 / 3 if in_step else 1.0)  # per token: policy forward + backward (+ the reference's forward)


def initial_loss(config) -> float:
  """The loss at step 1, where the policy is the reference and every log-ratio is 0 (exact)."""
  z = np.zeros((1,), np.float32)
  return float(preference.pair_loss(config.dpo.loss, z, z, config.dpo.beta,
                                    label_smoothing=config.dpo.label_smoothing))


def run(config, workdir: str, log=print) -> tuple[Any, runner.LoadedModel, dict]:
  """Trains DPO per `config` (see `experiments/configs/dpo.py`) -> (loop result, trained model, report).

  The report (also WORKDIR/report.json) holds the held-out metrics `before`
  (the initial model = the reference) and `after`, the loss at step 1 and
  the last logged one, and the data counts.
  """
  check_config(config)
  with runner.lock_workdir(workdir) as workdir:
    mesh = sharding_lib.mesh_from_config(dict(config.mesh))
    with jax.set_mesh(mesh):
      return _run(config, workdir, mesh, log)


def _run(config, workdir: str, mesh, log):
  dc = config.dpo
  if dc.reference == "store":
    _store_dir(config, workdir)  # a workdir on an object store needs a local store directory: say so first
  train_pairs, heldout = load_pairs(config)
  steps = num_steps(config, len(train_pairs))
  base = runner.load_model(dict(config.model), mesh)
  report: dict[str, Any] = {"loss": dc.loss, "beta": dc.beta, "reference": dc.reference,
                            "train_pairs": len(train_pairs), "steps": steps}
  evaluators, last = [], {}
  scorer = reference = None
  if heldout:
    scorer = PairScorer(base.tokenizer, heldout, max_length=config.train.seq_len,
                        batch_size=config.eval.batch_size, reduction=dc.reduction)
    reference = scorer(base.model)
    report["before"] = pair_metrics(reference, reference, dc.beta)
    report["eval_pairs_dropped"] = scorer.num_dropped
    evaluators.append(_evaluator(scorer, reference, dc.beta, last))
  store = build_reference_store(config, workdir, base, train_pairs, log) if dc.reference == "store" else None
  # data.eval_path holds pairs, read above; the runner's record-pipeline held-out loss must not read it too.
  train_config = config.copy_and_resolve_references()
  train_config.data.eval_path = ""
  result, trained = runner.train_lm(train_config, workdir, method(config, train_pairs, store=store,
                                                                  evaluators=evaluators),
                                    model=base, num_steps=steps)
  report.update(initial_loss=initial_loss(config), final_metrics=dict(result.last_metrics),
                train_pairs_dropped=int(result.last_metrics.get("dropped_examples", 0)))
  if scorer is not None and not result.preempted:
    report["after"] = last.get(result.step) or pair_metrics(scorer(trained.model), reference, dc.beta)
  write_json(paths.join(workdir, "report.json"), report, indent=1)
  return result, trained, report


def format_report(report: Mapping) -> str:
  """The before/after table of a report (module docstring for what each row means)."""
  b, a = report["before"], report["after"]
  rows = [("held-out log-prob preference accuracy, lp(chosen) > lp(rejected)", b["logp_accuracy"],
           a["logp_accuracy"]),
          ("held-out reward accuracy, d(chosen) > d(rejected) (before: every pair a tie, 0.5)", b["reward_accuracy"],
           a["reward_accuracy"]),
          ("held-out reward margin, beta (d(chosen) - d(rejected))", b["reward_margin"], a["reward_margin"])]
  lines = ["| metric | before | after | n |", "|---|---|---|---|"]
  lines += [f"| {name} | {x:.3f} | {y:.3f} | {a['n']} |" for name, x, y in rows]
  return "\n".join(lines)


def print_summary(out, config, workdir: str) -> None:
  """What `python -m experiments.dpo` prints at the end of a run."""
  result, _, report = out
  if result.preempted:
    print(f"preempted at step {result.step}; checkpoint written, rerun the same command to resume")
    return
  if result.resumed_from == result.step:
    print(f"\nnothing to train: the checkpoint in {workdir} is at step {result.step} = train.steps")
  loss = result.last_metrics.get("loss", float("nan"))
  print(f"\nfinished {result.step} steps of {config.dpo.loss} (beta {config.dpo.beta}, reference "
        f"{config.dpo.reference}) on {report['train_pairs']} pairs: loss {report['initial_loss']:.4f} at step 1, "
        f"{loss:.4f} over the last logged steps")
  if "after" in report:
    print("\nbefore = the initial model, which is also the reference; after = the trained policy\n")
    print(format_report(report))
  if math.isfinite(loss) and report.get("train_pairs_dropped"):
    print(f"\n{report['train_pairs_dropped']} training pair(s) did not fit in train.seq_len={config.train.seq_len}")
