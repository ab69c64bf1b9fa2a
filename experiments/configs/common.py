"""Shared config sections. Every field is overridable on the command line as
`--config.SECTION.FIELD=value`; an unknown field is an error. Every entry point
that trains checks the numbers before loading a model
(`pragjax.train.checks.check_config`; the ranges are given below), and names
the flag of each bad value.

seed                     global seed (init, data order, sampling)
model.path               HF checkpoint directory ("" = built-in `model.builtin`)
model.builtin            built-in toy model name (arithmetic)
model.tokenizer          tokenizer directory ("" = model.path)
model.dtype              compute dtype ("" = param dtype): float32 | bfloat16
model.param_dtype        storage dtype ("" = the checkpoint's)
model.attention_impl     "" (XLA) | cudnn | explicit
model.scan_layers        run the blocks of cache-free passes (training, scoring) as one lax.scan
                         over repeating layer groups: one compiled block body; layout unchanged
model.remat              rematerialise block activations in the backward pass: none | full |
                         dots_saveable | dots_with_no_batch_dims_saveable | everything_saveable
mesh.data/fsdp/tensor    mesh shape; one may be -1 (= the remaining devices)
optim.*                  see pragjax/optim/factory.py (name, lr (> 0, finite), schedule,
                         warmup_steps, total_steps, end_lr_factor, weight_decay,
                         b1, b2, eps, decay, momentum, clip_norm, trainable, frozen)
optim.ignore_topk        zero this fraction of each update's largest entries (0 = off)
optim.ignore_topk_scope  tensor | global;  optim.ignore_topk_mode  exact | approx
optim.ignore_topk_sample_size  sample entries per tensor for the approx mode
train.steps              total optimizer steps (>= 1)
train.batch_size         global batch (sequences; >= 1, divisible by accum_steps,
                         by the mesh's batch shards data x fsdp and by the process count)
train.seq_len            tokens per sequence (>= 2; longer records are truncated)
train.accum_steps        micro-batches per step (gradient accumulation; >= 1)
train.log_every          steps between metric rows / progress updates (>= 1)
train.checkpoint_every   steps between checkpoints (>= 1)
train.keep_checkpoints   newest checkpoints kept (>= 1)
train.async_checkpoint   write checkpoints in the background
train.progress           show a progress bar
train.export_hf          save the final model in HF layout under WORKDIR/hf
train.eval_every         steps between runs of the method's evaluators (0 = at the last step only)
train.eval_batches       held-out batches of data.eval_path per evaluation (>= 0; 0 = every full batch)
train.profile_steps      jax.profiler trace of these steps into WORKDIR/profile: "" = off, "A:B" = steps
                         A to B (1-based, inclusive), "N" = N steps from step 3 (after the compile)
data.train_path          JSONL with messages | prompt+response | text records
data.eval_path           held-out JSONL of the same records ("" = none): with the record pipeline, the
                         mean loss of the method's loss over train.eval_batches batches is reported as
                         eval/loss every train.eval_every steps (token-weighted when the loss gives a weight)
data.shuffle             shuffle records (seeded)
data.packing             pack several records per row (segment ids)
data.validate            check every line of data.train_path before training (one pass; a bad
                         line is reported in seconds, not when training reaches it)
data.validate_max_mb     ... for files up to this size in MiB (0 = any size)
runtime.compilation_cache_dir  persistent XLA cache ("" = off; default ~/.cache/pragjax/xla)
runtime.deterministic    deterministic GPU ops (XLA flags; see pragjax/train/runtime.py)
"""

from ml_collections import ConfigDict

from pragjax.train import runtime


def model_config(path: str = "", builtin: str = "arithmetic") -> ConfigDict:
  return ConfigDict(dict(path=path, builtin=builtin, tokenizer="", dtype="", param_dtype="", attention_impl="",
                         scan_layers=False, remat="none"))


def optim_config(**kw) -> ConfigDict:
  c = dict(name="adamw", lr=1e-3, schedule="constant", warmup_steps=0, total_steps=0, end_lr_factor=0.0,
           weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, decay=0.9, momentum=0.0, clip_norm=1.0,
           trainable="", frozen="", ignore_topk=0.0, ignore_topk_scope="tensor",
           ignore_topk_mode="exact", ignore_topk_sample_size=65536)
  c.update(kw)
  return ConfigDict(c)


def train_config(**kw) -> ConfigDict:
  c = dict(steps=100, batch_size=16, seq_len=128, accum_steps=1, log_every=10, checkpoint_every=50,
           keep_checkpoints=3, async_checkpoint=True, progress=True, export_hf=True, eval_every=0,
           eval_batches=0, profile_steps="")
  c.update(kw)
  return ConfigDict(c)


def base_config() -> ConfigDict:
  return ConfigDict(dict(
      seed=0,
      model=model_config(),
      mesh=ConfigDict(dict(data=1, fsdp=-1, tensor=1)),
      optim=optim_config(),
      train=train_config(),
      data=ConfigDict(dict(train_path="", eval_path="", shuffle=True, packing=False, validate=True,
                          validate_max_mb=256.0)),
      runtime=ConfigDict(dict(compilation_cache_dir=runtime.DEFAULT_CACHE_DIR, deterministic=False)),
  ))
