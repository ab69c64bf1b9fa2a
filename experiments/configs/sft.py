"""Supervised fine-tuning of a causal LM on JSONL records.

Variants:
  toy       the built-in arithmetic model on freshly generated arithmetic
            problems (prompt -> step-by-step solution); no files needed
  llama8b   a local Llama-3.1-8B(-Instruct) checkpoint on one 8-GPU node
            (set --config.model.path and --config.data.train_path)

Fields beyond common.py:
  world.num_records       toy: training records generated
  world.eval_problems     toy: held-out problems scored before and after
"""

from ml_collections import ConfigDict

from experiments.configs import common


def get_config(arg: str = "toy") -> ConfigDict:
  c = common.base_config()
  c.world = ConfigDict(dict(num_records=4000, eval_problems=200))
  c.train = common.train_config(steps=60, batch_size=16, seq_len=128, log_every=10, checkpoint_every=20)
  # The built-in model ended pretraining at lr 1.5e-4 (cosine from 3e-3); fine-tuning it at 5e-4 on more of the
  # same distribution lowered held-out accuracy (0.345 -> 0.275 on 200 problems), at 1e-4 it stays within noise
  # (0.320; 2e-5: 0.325): the toy row shows the pipeline, not a gain, since the model has seen this distribution.
  c.optim = common.optim_config(lr=1e-4, schedule="constant", warmup_steps=5)
  if arg == "toy":
    pass
  elif arg == "llama8b":
    c.model = common.model_config(path="", builtin="")
    c.model.update(dtype="bfloat16", param_dtype="float32")
    c.mesh.update(data=1, fsdp=8, tensor=1)
    c.train.update(steps=1000, batch_size=64, seq_len=2048, accum_steps=4, log_every=10,
                   checkpoint_every=200, keep_checkpoints=2)
    c.optim = common.optim_config(lr=1e-5, schedule="cosine", warmup_steps=50, total_steps=1000,
                                  end_lr_factor=0.1, weight_decay=0.0)
    c.world = ConfigDict(dict(num_records=0, eval_problems=0))
  else:
    raise ValueError(f"unknown sft variant {arg!r}; expected toy or llama8b")
  return c
