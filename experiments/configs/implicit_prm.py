"""Implicit PRM (Yuan et al., 2024): train an outcome reward model r = beta log pi/pi_ref, read process rewards.

Variants:
  toy       the built-in arithmetic model samples solutions to training
            problems, labelled by final answer only; CE (instance-balanced,
            as the paper) and DPO PRMs are trained from it (init = reference
            = the built-in model) for up to 8 epochs, stopped early on the
            within-problem AUC of q(end) on 128 validation problems (never on
            best-of-N), then evaluated by that AUC, best-of-{4,16,64} and
            first-error F1 on held-out test problems against the world's exact
            step labels. About half an hour on 2 CPU cores.
  ci        the toy pipeline, smaller (the CI test).
  tiny      a local HF checkpoint (set --config.model.path) trained on
            JSONL outcome/stepwise records (--config.data.train_path) and
            evaluated on ProcessBench JSON (--config.eval.processbench_dir);
            the CI exercises it with a tiny random llama.
  llama8b   Llama-3.1-8B-Instruct as initialisation and reference, beta 0.05,
            lr 5e-7, one epoch (the paper's setting), on one GPU node / TPU slice.

Fields beyond common.py:
  prm.losses              losses to train, each its own PRM: ce | dpo | nca | kto
  prm.beta                reward scale beta
  prm.label_threshold     label >= threshold counts as correct (pairs, KTO)
  prm.max_pairs_per_prompt DPO/NCA: pairs kept per prompt, drawn at random (0 = every pair)
  prm.chat_template       "" = use the tokenizer's template when it has one; "on" | "off"
  prm.separator           step separator when records give steps ("\\n\\n")
  prm.kto_desirable_weight, prm.kto_undesirable_weight   KTO lambda_D, lambda_U
  prm.balance             CE data: none (every record) | instance (per prompt as many correct as wrong
                          responses, one-sided prompts dropped: the paper's instance-balanced CE)
  prm.evals_per_epoch     toy with world.val_problems: validation AUC evaluations per epoch
  prm.patience            evaluations without a better validation AUC before training stops (0 = never
                          stop early; the best evaluated model is used either way)
  train.epochs            epochs when train.steps is 0
  train.length_bucket     pad each batch to its longest sequence rounded up to this (0 = seq_len)
  world.*                 toy: train_problems, train_samples, eval_problems, eval_samples,
                          tune_fraction (held-out problems used to tune the F1 threshold),
                          val_problems, val_samples (the early-stopping split: held-out problems after the
                          test ones; 0 = no selection, train the whole budget),
                          temperature, max_new_tokens, sample_batch (sequences per generate call),
                          sample_dir (where sampled solutions are cached; "" = the workdir: point several
                          runs with other PRM settings at one to sample once)
  eval.best_of            n values of best-of-n; eval.num_subsets random subsets per n
  eval.modes              step-reward modes scored (single, accumulative)
  eval.aggregations       solution scores compared (min, sum, last, mean)
  eval.weighted           aggregation whose sigmoid weights the weighted vote
  eval.processbench_dir   directory with ProcessBench {split}.json ("" = skip)
  eval.processbench_splits, eval.processbench_limit (cases per split, 0 = all)
  eval.best_of_n_path     JSONL of candidates ({problem|prompt, answer, responses: [N]}) scored for
                          best-of-n with math answer equivalence ("" = skip); eval.best_of_n_limit
  eval.batch_size, eval.max_length   scoring batch and token budget
"""

from ml_collections import ConfigDict

from experiments.configs import common


def get_config(arg: str = "toy") -> ConfigDict:
  c = common.base_config()
  c.prm = ConfigDict(dict(losses=("ce", "dpo"), beta=0.05, label_threshold=0.5, max_pairs_per_prompt=0,
                          chat_template="", separator="\n\n",
                          kto_desirable_weight=1.0, kto_undesirable_weight=1.0, balance="none",
                          evals_per_epoch=2, patience=3))
  c.world = ConfigDict(dict(name="arithmetic", train_problems=1024, train_samples=16, eval_problems=200,
                            eval_samples=64, tune_fraction=0.5, temperature=1.0, max_new_tokens=64,
                            sample_batch=1024, val_problems=0, val_samples=16, sample_dir=""))
  c.eval = ConfigDict(dict(best_of=(4, 16, 64), num_subsets=20, modes=("single", "accumulative"),
                           aggregations=("min", "sum", "last"), weighted="single_min", processbench_dir="",
                           processbench_splits=("gsm8k", "math"), processbench_limit=0, best_of_n_path="",
                           best_of_n_limit=0, batch_size=256,
                           max_length=128))
  c.train = common.train_config(steps=0, batch_size=64, seq_len=128, log_every=20, checkpoint_every=200,
                                progress=True, export_hf=False)
  c.train.epochs = 1
  c.train.length_bucket = 0
  c.optim = common.optim_config(lr=1e-4, schedule="cosine", warmup_steps=10, total_steps=0, end_lr_factor=0.1,
                                weight_decay=0.0, clip_norm=1.0)
  if arg in ("toy", "ci"):
    # DPO sees as many sequences per prompt as CE (16 samples -> 8 pairs); all pairs would be ~5x the compute.
    c.prm.max_pairs_per_prompt = 8
    c.prm.balance = "instance"
    c.train.length_bucket = 32
    c.train.epochs = 8
    c.world.val_problems = 128
  if arg == "toy":
    pass
  elif arg == "ci":
    c.prm.max_pairs_per_prompt = 4
    c.world.update(train_problems=96, train_samples=8, eval_problems=48, eval_samples=16, val_problems=24,
                   val_samples=8)
    c.train.epochs = 2
    c.prm.patience = 2
    c.eval.update(best_of=(4, 16), num_subsets=5)
    c.train.update(batch_size=32, log_every=10, progress=False)
  elif arg == "tiny":
    c.model = common.model_config(path="", builtin="")
    c.world.name = ""
    c.prm.losses = ("ce",)
    c.train.update(steps=4, batch_size=8, seq_len=256, log_every=2, checkpoint_every=2, progress=False)
    c.eval.update(processbench_limit=16, batch_size=8, max_length=256)
  elif arg == "llama8b":
    c.model = common.model_config(path="", builtin="")
    c.model.update(dtype="bfloat16", param_dtype="float32")
    c.world.name = ""
    c.mesh.update(data=1, fsdp=8, tensor=1)
    c.prm.losses = ("dpo",)
    c.train.update(steps=0, batch_size=64, seq_len=2048, accum_steps=8, log_every=10, checkpoint_every=200,
                   keep_checkpoints=2, export_hf=True)
    c.optim = common.optim_config(lr=5e-7, schedule="cosine", warmup_steps=20, total_steps=0, end_lr_factor=0.0,
                                  weight_decay=0.0, clip_norm=1.0)
    c.eval.update(batch_size=8, max_length=4096)
  else:
    raise ValueError(f"unknown implicit_prm variant {arg!r}; expected toy, ci, tiny or llama8b")
  return c
