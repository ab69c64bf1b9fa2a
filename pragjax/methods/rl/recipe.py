"""Online RL as a `Method`: sample groups from the current policy, reward them, update, repeat.

`method(config, prompts, reward_fn)` is the `Method` that `runner.train_lm`
trains: the loss of `pragjax.methods.rl.loss` on batches of
`pragjax.train.rollout.RolloutSource`, whose advantages come from
`pragjax.objectives.rl.group_advantages`; with `rl.kl_coef > 0` the initial
model is the frozen reference evaluated inside the step. `run(config,
workdir)` loads the prompts (toy: the arithmetic world's training problems
with its exact checker; else a `{prompt, answer}` JSONL with the math-answer
reward), trains `rl.rollouts` rollouts of `rl.epochs_per_rollout x
rl.minibatches` optimizer steps each, and scores held-out problems greedily
before and after (and every `train.eval_every` steps: the learning curve in
`metrics.jsonl` as `eval/accuracy`).

Algorithms (`rl.algorithm`; every field can still be set on its own, the
preset fills the fields left at their "auto" value):

| algorithm | advantage | normalize | clip (low, high) | KL | groups |
|---|---|---|---|---|---|
| grpo | (r - mean) / (std + eps) | sequence | 0.2, 0.2 | rl.kl_coef | all |
| dr_grpo | r - mean | constant (max_new_tokens) | 0.2, 0.2 | rl.kl_coef | all |
| dapo | (r - mean) / (std + eps) | token | 0.2, 0.28 | 0 | all-equal groups dropped and refilled |
| rloo | r - mean of the others | constant (max_new_tokens) | 0.2, 0.2 | rl.kl_coef | all |
| relift | as grpo | sequence | 0.2, 0.2 | rl.kl_coef | all; plus demonstration steps |

ReLIFT is GRPO plus fine-tuning on demonstrations: every prompt whose G
responses all fail goes, with its reference solution (toy: the world's gold
solution; JSONL: the record's `solution` field), into a buffer, and whenever
it holds `rl.sft_batch` prompts (auto: `rl.prompts_per_rollout`) one NLL step
on them runs between two rollouts (`pragjax.train.rollout`). Those steps count
in `train.steps`, which stays `rl.rollouts x steps per rollout`: a ReLIFT run
trains as many optimizer steps as the GRPO run of the same config and samples
one rollout fewer per demonstration step.

RLOO is REINFORCE on the sequence log-prob; with one step per rollout the
ratio is 1 and its loss is `-mean_i A_i sum_t logp_it / max_new_tokens`,
the sequence-level REINFORCE loss up to the constant `max_new_tokens`.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data.errors import DataError
from pragjax.data.jsonl import write_json
from pragjax.methods.rl import report as rl_report
from pragjax.methods.rl import rewards as rewards_lib
from pragjax.methods.rl.loss import make_pg_loss_fn, make_ref_fn
from pragjax.objectives import rl as rl_objectives
from pragjax.train import runner
from pragjax.train.method import Method
from pragjax.train.rollout import RolloutSource

__all__ = ["ALGORITHMS", "resolve", "method", "demonstration", "load_prompts", "num_steps", "run", "print_summary"]

ALGORITHMS = {
    "grpo": dict(scale="std", baseline="mean", normalize="sequence", clip_low=0.2, clip_high=0.2, filter_equal=False),
    "dr_grpo": dict(scale="none", baseline="mean", normalize="constant", clip_low=0.2, clip_high=0.2,
                    filter_equal=False),
    "dapo": dict(scale="std", baseline="mean", normalize="token", clip_low=0.2, clip_high=0.28, filter_equal=True,
                 kl_coef=0.0),
    "rloo": dict(scale="none", baseline="leave_one_out", normalize="constant", clip_low=0.2, clip_high=0.2,
                 filter_equal=False),
    "relift": dict(scale="std", baseline="mean", normalize="sequence", clip_low=0.2, clip_high=0.2,
                   filter_equal=False),
}
AUTO = ("", None, -1, -1.0, "auto")


def resolve(rc) -> dict[str, Any]:
  """The effective RL settings: `rl.*` fields, with those left at "auto" ("" / -1) filled from the algorithm."""
  if rc.algorithm not in ALGORITHMS:
    raise ValueError(f"rl.algorithm must be one of {sorted(ALGORITHMS)}, got {rc.algorithm!r}")
  preset = ALGORITHMS[rc.algorithm]
  out = {}
  for key in ("scale", "baseline", "normalize", "clip_low", "clip_high", "filter_equal", "kl_coef"):
    value = rc.get(key, "")
    if isinstance(value, bool) or value not in AUTO:
      out[key] = value
    else:
      out[key] = preset.get(key, 0.0)
  if rc.algorithm == "dapo" and out["kl_coef"]:
    raise ValueError(f"rl.algorithm=dapo has no KL term; got rl.kl_coef={out['kl_coef']}")
  if out["baseline"] == "leave_one_out" and int(rc.group_size) < 2:
    raise ValueError("rl.baseline=leave_one_out (RLOO) needs rl.group_size >= 2")
  sft = int(rc.get("sft_batch", -1))
  out["sft_batch"] = (int(rc.prompts_per_rollout) if rc.algorithm == "relift" else 0) if sft == -1 else sft
  if out["sft_batch"] < 0:
    raise ValueError(f"rl.sft_batch must be >= 0 (or -1 = auto), got {sft}")
  lo, hi = float(rc.accuracy_min), float(rc.accuracy_max)
  out["accuracy_range"] = None if (lo, hi) == (0.0, 1.0) else (lo, hi)
  return out


def num_steps(config) -> int:
  rc = config.rl
  return int(rc.rollouts) * int(rc.epochs_per_rollout) * int(rc.minibatches)


def is_toy(config) -> bool:
  return not config.data.train_path


def load_prompts(config) -> tuple[list[dict], list[dict], Any]:
  """(training prompt records, held-out records, reward function) per the config."""
  rc = config.rl
  if is_toy(config):
    from pragjax.toyworld import arithmetic

    rng = np.random.default_rng([config.seed, 0x524C])
    train = [{"prompt": p.prompt, "problem": p} for p in arithmetic.training_problems(rng, int(config.world.prompts))]
    heldout = [{"prompt": p.prompt, "problem": p}
               for p in arithmetic.heldout_problems(config.seed, int(config.world.eval_problems))]
    reward = functools.partial(rewards_lib.arithmetic_reward, step_weight=float(rc.step_weight),
                               format_penalty=float(rc.format_penalty))
    return train, heldout, reward
  train = _read_prompts(config.data.train_path)
  heldout = _read_prompts(config.data.eval_path) if config.data.eval_path else []
  return train, heldout, functools.partial(rewards_lib.math_reward, format_penalty=float(rc.format_penalty))


def _read_prompts(path: str) -> list[dict]:
  """`{prompt, answer}` JSONL (one problem per line); errors name the file, line and field."""
  out = []
  for line_no, line in enumerate(paths.read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from None
    for field in ("prompt", "answer"):
      if not isinstance(record, dict) or field not in record:
        raise DataError(f"{path}, line {line_no}: missing field {field!r} (expected {{prompt, answer}})")
    if not isinstance(record["prompt"], str) or not record["prompt"]:
      raise DataError(f"{path}, line {line_no}, field 'prompt': expected a non-empty string")
    row = {"prompt": record["prompt"], "answer": str(record["answer"])}
    if "solution" in record:
      if not isinstance(record["solution"], str):
        raise DataError(f"{path}, line {line_no}, field 'solution': expected a string (the reference solution)")
      row["solution"] = record["solution"]
    out.append(row)
  if not out:
    raise DataError(f"{path}: no prompts")
  return out


def method(config, prompts: Sequence[Mapping], reward_fn, *, evaluators: Sequence = ()) -> Method:
  """The `Method` training `config.rl` on rollouts of `prompts` scored by `reward_fn`."""
  rc, tc = config.rl, config.train
  s = resolve(rc)
  advantage_fn = functools.partial(_advantages, group_size=int(rc.group_size), scale=s["scale"],
                                   baseline=s["baseline"])

  def make_data(tok):
    return RolloutSource(
        prompts, reward_fn, tok, advantage_fn=advantage_fn, group_size=int(rc.group_size),
        prompts_per_rollout=int(rc.prompts_per_rollout), seq_len=int(tc.seq_len),
        max_new_tokens=int(rc.max_new_tokens), temperature=float(rc.temperature),
        top_p=float(rc.top_p) if 0.0 < float(rc.top_p) < 1.0 else None,
        epochs_per_rollout=int(rc.epochs_per_rollout), minibatches=int(rc.minibatches),
        filter_equal=bool(s["filter_equal"]), accuracy_range=s["accuracy_range"], max_draws=int(rc.max_draws),
        sample_batch_size=int(rc.sample_batch_size), seed=config.seed, shuffle=config.data.shuffle,
        demonstration_fn=demonstration if s["sft_batch"] else None, sft_batch=int(s["sft_batch"]))

  kl = float(s["kl_coef"])
  loss = functools.partial(make_pg_loss_fn, clip_low=float(s["clip_low"]), clip_high=float(s["clip_high"]),
                           kl_coef=kl, normalize=s["normalize"], max_len=int(rc.max_new_tokens))
  return Method(name=f"rl:{rc.algorithm}", loss=loss, data=make_data, reference=make_ref_fn if kl else None,
                evaluators=tuple(evaluators), flops_factor=4 / 3 if kl else 1.0)


def demonstration(record: Mapping) -> str | None:
  """A prompt record's reference solution: the arithmetic world's gold solution, or a JSONL record's `solution`."""
  if "problem" in record:
    return record["problem"].solution
  return record.get("solution")


def _advantages(rewards: np.ndarray, *, group_size: int, scale: str, baseline: str) -> np.ndarray:
  """`group_advantages` on the host's rewards, computed on this process's first device (outside the global mesh,
  whose other processes' devices this process cannot address)."""
  local = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]), ("host",))
  with jax.set_mesh(local):
    x = jax.device_put(np.asarray(rewards, np.float32), jax.local_devices()[0])
    return np.asarray(rl_objectives.group_advantages(x, group_size=group_size, scale=scale, baseline=baseline))


def check_config(config) -> None:
  rc, tc = config.rl, config.train
  s = resolve(rc)
  for name in ("rollouts", "group_size", "prompts_per_rollout", "epochs_per_rollout", "minibatches",
               "max_new_tokens", "max_draws"):
    if int(rc[name]) < 1:
      raise ValueError(f"rl.{name} must be >= 1, got {rc[name]}")
  rows = int(rc.group_size) * int(rc.prompts_per_rollout)
  if rows % int(rc.minibatches):
    raise ValueError(f"rl.prompts_per_rollout x rl.group_size = {rows} rows must split into rl.minibatches="
                     f"{rc.minibatches} equal minibatches")
  if int(tc.batch_size) != rows // int(rc.minibatches):
    raise ValueError(f"train.batch_size={tc.batch_size} must equal the minibatch size {rows // int(rc.minibatches)} "
                     f"(rl.prompts_per_rollout x rl.group_size / rl.minibatches); leave it at 0 to derive it")
  if s["sft_batch"] > int(tc.batch_size):
    raise ValueError(f"rl.sft_batch={s['sft_batch']} exceeds train.batch_size={tc.batch_size}, the rows of the one "
                     f"compiled step a demonstration batch is served in")
  per = int(rc.epochs_per_rollout) * int(rc.minibatches)
  if int(tc.checkpoint_every) % per:
    raise ValueError(f"train.checkpoint_every={tc.checkpoint_every} must be a multiple of the {per} steps of one "
                     f"rollout (rl.epochs_per_rollout x rl.minibatches), so that periodic saves fall between "
                     f"rollouts")
  if not 0.0 <= float(rc.accuracy_min) <= float(rc.accuracy_max) <= 1.0:
    raise ValueError(f"rl.accuracy_min/max must satisfy 0 <= min <= max <= 1, got {rc.accuracy_min}, "
                     f"{rc.accuracy_max}")


def _derive(config):
  config = config.copy_and_resolve_references()
  rc = config.rl
  if not int(config.train.batch_size):
    config.train.batch_size = int(rc.group_size) * int(rc.prompts_per_rollout) // int(rc.minibatches)
  config.train.steps = num_steps(config)
  return config


def heldout_accuracy(model, tok, heldout: Sequence[Mapping], reward_fn, *, max_new_tokens: int,
                     batch_size: int) -> dict[str, float]:
  """Greedy decoding of the held-out prompts -> accuracy (mean `correct`), mean reward and response length."""
  from pragjax.eval import batching
  from pragjax.models import generate

  correct, reward, lengths = [], [], []
  for chunk in batching.chunks(list(heldout), batch_size, shrink=True):
    ids, mask = tok.encode_batch([r["prompt"] for r in chunk.items], padding_side="left", pad_to_multiple_of=16)
    ids, mask = batching.place((ids, mask))
    res = generate(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_ids=(tok.eos_token_id,),
                   pad_token_id=tok.pad_token_id)
    toks, lens = batching.fetch((res.tokens, res.lengths))
    texts = tok.decode_batch(toks[:chunk.n], lengths=lens[:chunk.n])
    for record, text, n in zip(chunk.items[:chunk.n], texts, lens[:chunk.n]):
      row = reward_fn(record, text)
      correct.append(row.get("correct", row["reward"]))
      reward.append(row["reward"])
      lengths.append(int(n))
  return {"accuracy": float(np.mean(correct)), "reward": float(np.mean(reward)),
          "response_length": float(np.mean(lengths)), "n": len(correct)}


def run(config, workdir: str, log=print) -> tuple[Any, runner.LoadedModel, dict]:
  """Trains `config.rl` (see `experiments/configs/rl.py`) -> (loop result, trained model, report).

  The report (also WORKDIR/report.json) holds the settings, the held-out
  greedy accuracy `before` and `after`, and the last logged rollout metrics.
  """
  config = _derive(config)
  check_config(config)
  with runner.lock_workdir(workdir) as workdir:
    mesh = sharding_lib.mesh_from_config(dict(config.mesh))
    with jax.set_mesh(mesh):
      return _run(config, workdir, mesh, log)


def _run(config, workdir: str, mesh, log):
  rc = config.rl
  train, heldout, reward_fn = load_prompts(config)
  if settings_sft(rc) and not any(demonstration(r) for r in train):
    raise DataError(f"rl.sft_batch={settings_sft(rc)} (ReLIFT) needs reference solutions, and no record of "
                    f"{config.data.train_path} has a 'solution' field")
  base = runner.load_model(dict(config.model), mesh)
  settings = resolve(rc)
  report: dict[str, Any] = {"algorithm": rc.algorithm, "settings": {k: v for k, v in settings.items()},
                            "prompts": len(train), "rollouts": int(rc.rollouts), "steps": int(config.train.steps),
                            "group_size": int(rc.group_size), "prompts_per_rollout": int(rc.prompts_per_rollout)}
  evaluators, curve = [], {}
  score = functools.partial(heldout_accuracy, heldout=heldout, reward_fn=reward_fn,
                            max_new_tokens=int(rc.max_new_tokens), batch_size=int(config.eval.batch_size))
  if heldout:
    report["before"] = score(base.model, base.tokenizer)
    log(f"held-out greedy accuracy before: {report['before']['accuracy']:.3f} ({len(heldout)} problems)")

    def evaluator(step, model):
      curve[step] = score(model, base.tokenizer)
      return {k: v for k, v in curve[step].items() if k != "n"}

    evaluators.append(evaluator)
  prm_set = None
  if int(rc.prm_eval_problems) and is_toy(config):  # "Is PRM necessary?": before training donates the weights
    from pragjax.methods.rl import prm_eval
    from pragjax.toyworld import arithmetic

    problems = arithmetic.heldout_problems(config.seed + 1, int(rc.prm_eval_problems))
    samples = prm_eval.sample_test_set(base.model, base.tokenizer, problems, num_samples=int(rc.prm_eval_samples),
                                       temperature=1.0, seed=config.seed, max_new_tokens=int(rc.max_new_tokens),
                                       batch_size=int(config.eval.batch_size))
    init_params = jax.tree.map(jnp.copy, nnx.state(base.model, nnx.Param))
    prm_set = (problems, samples, init_params)
  train_config = config.copy_and_resolve_references()
  train_config.data.eval_path = ""  # held-out prompts, read above; not the runner's record-pipeline loss
  result, trained = runner.train_lm(train_config, workdir, method(config, train, reward_fn, evaluators=evaluators),
                                    model=base, num_steps=int(config.train.steps))
  report["final_metrics"] = dict(result.last_metrics)
  report["curve"] = {int(k): v for k, v in sorted(curve.items())}
  if heldout and not result.preempted:
    report["after"] = curve.get(result.step) or score(trained.model, trained.tokenizer)
  if prm_set is not None and not result.preempted:
    problems, samples, init_params = prm_set
    report["rl_prm"] = prm_eval.evaluate(trained.model, init_params, trained.tokenizer, problems, samples,
                                         beta=float(rc.prm_beta), batch_size=int(config.eval.batch_size),
                                         max_length=int(config.train.seq_len), seed=config.seed)
    control = nnx.merge(nnx.graphdef(trained.model),
                        prm_eval.random_direction(init_params, nnx.state(trained.model, nnx.Param), config.seed))
    report["rl_prm_random_direction"] = prm_eval.evaluate(
        control, init_params, trained.tokenizer, problems, samples, beta=float(rc.prm_beta),
        batch_size=int(config.eval.batch_size), max_length=int(config.train.seq_len), seed=config.seed)
  write_json(paths.join(workdir, "report.json"), report, indent=1)
  if config.rl.get("plot", True) and jax.process_index() == 0:
    report["plot"] = rl_report.plot_runs({rc.algorithm: workdir}, paths.join(workdir, "learning_curve.png"),
                                         title=f"{rc.algorithm}: {report['prompts_per_rollout']} prompts x "
                                               f"{report['group_size']} responses per rollout")
  return result, trained, report


def settings_sft(rc) -> int:
  return int(resolve(rc)["sft_batch"])


def print_summary(out, config, workdir: str) -> None:
  """What `python -m experiments.rl` prints at the end of a run."""
  result, _, report = out
  if result.preempted:
    print(f"preempted at step {result.step}; checkpoint written, rerun the same command to resume")
    return
  m = result.last_metrics
  print(f"\nfinished {result.step} steps ({report['rollouts']} rollouts of {report['prompts_per_rollout']} prompts x "
        f"{report['group_size']} responses) of {report['algorithm']} in {workdir}")
  if "after" in report:
    b, a = report["before"], report["after"]
    print("\n| held-out (greedy) | before | after |\n|---|---|---|")
    for key in ("accuracy", "reward", "response_length"):
      print(f"| {key} | {b[key]:.3f} | {a[key]:.3f} |")
    if "rl_prm" in report:
      q = report["rl_prm"]
      print(f"\nRL policy vs its initial model as an implicit PRM ({q['problems']} problems x {q['samples']} samples "
            f"of the initial model, exact first-error labels):")
      for mode, fe in q["first_error"].items():
        ctrl = report["rl_prm_random_direction"]["first_error"][mode]["prm"]["f1"]
        print(f"  {mode}: first-error F1 {fe['prm']['f1']:.3f} (random direction of the same norm {ctrl:.3f}, "
              f"best constant {fe['constant']:.3f}, outcome-aware baseline {fe['outcome_baseline']['f1']:.3f}; "
              f"{fe['cases']} test cases)")
    if "sft/steps" in m:
      print(f"\ndemonstration steps (ReLIFT): {int(m['sft/steps'])}, on {int(m['sft/demonstrations'])} prompts "
            f"whose every response failed ({int(m['sft/buffered'])} still buffered)")
    print(f"\n{a['n']} held-out problems; last rollouts: reward {m.get('rollout/reward', float('nan')):.3f}, "
          f"KL {m.get('kl', 0.0):.4f}, clip fraction {m.get('clip_fraction', 0.0):.3f}")
