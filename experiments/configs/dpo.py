"""DPO and its family (IPO, cDPO, robust DPO, SPPO, hinge, NCA) on preference pairs.

Variants:
  toy       the built-in arithmetic model on pairs of the arithmetic world:
            chosen = the gold solution, rejected = the same solution with one
            slipped step carried to a wrong answer (`pragjax.methods.preference.toy`);
            held-out pairs from held-out problems, scored before and after.
            Under a minute on 2 CPU cores; no files needed.
  llama8b   a local Llama-3.1-8B(-Instruct) checkpoint on one 8-GPU node
            (fsdp=8, bfloat16 compute, float32 parameters and optimizer),
            beta 0.1 and lr 5e-7 (the DPO paper's and TRL's defaults), one
            epoch; set --config.model.path, --config.data.train_path and
            (optional) --config.data.eval_path.

Fields beyond common.py:
  dpo.loss                dpo | ipo | cdpo | robust | sppo_hard | hinge | nca
                          (pragjax.objectives.preference.PAIR_LOSSES)
  dpo.beta                beta (> 0): reward scale, IPO's tau, SPPO's 1/eta
  dpo.label_smoothing     eps in [0, 0.5) of cdpo (labels flipped with probability eps) and robust
  dpo.reference           store (default: the initial model's log-probs computed once into a
                          reference store, no reference in the step) | in_step (a frozen copy of
                          the initial model evaluated inside every train step)
  dpo.reference_store_dir local directory of the store ("" = WORKDIR/reference_store)
  dpo.rebuild_reference   rebuild the store even when one for this model, tokenizer and data exists
  dpo.reduction           sum (the papers' sequence log-ratio) | mean (per response token; TRL's IPO)
  data.train_path         JSONL of pairs: {prompt, chosen, rejected} strings, {chosen, rejected}
                          conversations sharing their prompt turns, or {prompt, chosen, rejected}
                          message lists (pragjax/methods/preference/data.py)
  data.eval_path          JSONL of held-out pairs ("" = none): accuracies before and after
  train.batch_size        pairs per global batch (each pair is two sequences)
  train.steps             optimizer steps (0 = train.epochs passes over the training pairs)
  train.epochs            passes when train.steps is 0
  train.seq_len           tokens per sequence; a pair whose chosen or rejected side is longer is
                          skipped and counted
  train.length_bucket     0 = pad every batch to train.seq_len (one compiled shape); k > 0 = pad
                          each batch to its longest sequence (rounded up to 16), drawing k batches
                          at a time sorted by length
  eval.batch_size         pairs per scoring batch (held-out pairs, reference store)
  world.train_pairs       toy: training pairs (one per training problem)
  world.eval_pairs        toy: held-out pairs (one per held-out problem)
"""

from ml_collections import ConfigDict

from experiments.configs import common


def get_config(arg: str = "toy") -> ConfigDict:
  c = common.base_config()
  c.dpo = ConfigDict(dict(loss="dpo", beta=0.1, label_smoothing=0.0, reference="store", reference_store_dir="",
                          rebuild_reference=False, reduction="sum"))
  c.world = ConfigDict(dict(train_pairs=1024, eval_pairs=256))
  c.eval = ConfigDict(dict(batch_size=64))
  # One epoch of the toy pairs. The toy's solutions are at most 91 tokens with BOS and EOS.
  c.train = common.train_config(steps=32, batch_size=32, seq_len=96, log_every=8, checkpoint_every=16,
                                progress=True, export_hf=False)
  c.train.epochs = 1
  c.train.length_bucket = 0
  # Measured on the toy (32 steps, 256 held-out pairs, reward accuracy after): lr 1e-4 0.770, 2e-4 0.805,
  # 3e-4 0.812; at 5e-4 with batch 16 it fell to 0.699 and the model's own preference for the chosen side to 0.965.
  c.optim = common.optim_config(lr=2e-4, schedule="constant", warmup_steps=4, clip_norm=1.0)
  if arg == "toy":
    pass
  elif arg == "llama8b":
    c.model = common.model_config(path="", builtin="")
    c.model.update(dtype="bfloat16", param_dtype="float32")
    c.mesh.update(data=1, fsdp=8, tensor=1)
    c.world = ConfigDict(dict(train_pairs=0, eval_pairs=0))
    c.eval.batch_size = 16
    c.train.update(steps=0, batch_size=64, seq_len=2048, accum_steps=8, log_every=10, checkpoint_every=200,
                   keep_checkpoints=2, export_hf=True, length_bucket=8)
    c.optim = common.optim_config(lr=5e-7, schedule="cosine", warmup_steps=150, total_steps=0, end_lr_factor=0.0,
                                  weight_decay=0.0, clip_norm=1.0)
  else:
    raise ValueError(f"unknown dpo variant {arg!r}; expected toy or llama8b")
  return c
