"""Online RL (GRPO, Dr. GRPO, DAPO, RLOO) on sampled groups, with a verifiable reward.

Variants:
  toy       the built-in arithmetic model on the arithmetic world's training problems, the world's exact
            checker as reward (1 = right final answer), 48 rollouts of 16 prompts x 8 responses, one
            on-policy step each; held-out greedy accuracy on 256 held-out problems before, every 8 steps
            and after. A few minutes on 2 CPU cores; no files needed.
  ci        the same path at test size (3 rollouts of 4 prompts x 4 responses, 16 held-out problems; the
            step-shaped reward, so that rewards vary within a group even when no answer is right).
  qwen_math7b  a local Qwen2.5-Math-7B (or any causal LM) directory on one 8-GPU node (fsdp=8, bfloat16
            compute, float32 parameters and optimizer) on {prompt, answer} JSONL (GSM8K / MATH style,
            math-answer reward): 64 prompts x 8 responses per rollout in 4 minibatches; set
            --config.model.path, --config.data.train_path and --config.data.eval_path.

Fields beyond common.py (those marked "auto" take the algorithm's value when left at "" / -1):
  rl.algorithm           grpo | dr_grpo | dapo | rloo | relift (the presets: pragjax/methods/rl/recipe.py)
  rl.rollouts            rollouts in the run; train.steps = rollouts x epochs_per_rollout x minibatches
  rl.group_size          G responses per prompt
  rl.prompts_per_rollout prompts per rollout (rows = prompts x G)
  rl.epochs_per_rollout  passes over a rollout's rows (K; 1 with one minibatch = exactly on-policy)
  rl.minibatches         optimizer steps per pass (train.batch_size = rows / minibatches, derived when 0)
  rl.max_new_tokens      response cap; also Dr. GRPO's constant normaliser
  rl.temperature, rl.top_p  sampling (top_p 1.0 = off)
  rl.scale               auto | std | none: divide the group-centred reward by its std (+ eps)
  rl.baseline            auto | mean | leave_one_out
  rl.normalize           auto | sequence (GRPO) | token (DAPO) | constant (Dr. GRPO)
  rl.clip_low, rl.clip_high  auto | eps_lo, eps_hi of the ratio clip
  rl.kl_coef             auto | beta of the k3 KL to the initial model (> 0 keeps a frozen reference in the step)
  rl.filter_equal        auto | drop groups whose rewards are all equal and sample more prompts (DAPO)
  rl.accuracy_min, rl.accuracy_max  keep groups whose mean correctness lies in [min, max] (PRIME: 0.2, 0.8;
                         0, 1 = off)
  rl.sft_batch           auto (-1) | 0 = off | B: ReLIFT's demonstration steps, one NLL step whenever B prompts whose
                         G responses all failed wait with their reference solution (auto: rl.prompts_per_rollout
                         for relift, else 0); the step counts in train.steps
  rl.max_draws           sampling draws per rollout when filters drop groups (then dropped groups fill up)
  rl.sample_batch_size   prompts per generate call (0 = a whole draw at once)
  rl.step_weight         toy: reward + step_weight x the share of steps before the first wrong one
  rl.format_penalty      subtracted when a response has no readable final answer
  rl.prm_eval_problems   toy: after training, the RL policy against its initial model as an implicit PRM on this many
                         held-out problems (0 = off; pragjax/methods/rl/prm_eval.py): first-error F1, best-of-n
  rl.prm_eval_samples    solutions per problem, sampled from the initial model before training (temperature 1)
  rl.prm_beta            beta of the step rewards (F1 after threshold tuning and min-reward ranking do not depend on it)
  rl.plot                write WORKDIR/learning_curve.png (held-out accuracy, rollout reward, response length)
  world.prompts          toy: training problems in the prompt stream
  world.eval_problems    toy: held-out problems scored greedily
  eval.batch_size        held-out prompts per generate call
  train.eval_every       steps between held-out evaluations (the learning curve; 0 = only at the end)
  train.checkpoint_every must be a multiple of the steps of one rollout
  data.train_path, data.eval_path  {prompt, answer} JSONL (real data; empty = the toy world); an optional
                         "solution" field is the reference solution ReLIFT fine-tunes on
"""

from ml_collections import ConfigDict

from experiments.configs import common


def get_config(arg: str = "toy") -> ConfigDict:
  c = common.base_config()
  c.rl = ConfigDict(dict(
      algorithm="grpo", rollouts=48, group_size=8, prompts_per_rollout=16, epochs_per_rollout=1, minibatches=1,
      max_new_tokens=64, temperature=1.0, top_p=1.0, scale="", baseline="", normalize="", clip_low=-1.0,
      clip_high=-1.0, kl_coef=-1.0, filter_equal="", accuracy_min=0.0, accuracy_max=1.0, max_draws=4,
      sample_batch_size=0, step_weight=0.0, format_penalty=0.0, plot=True, prm_eval_problems=0,
      prm_eval_samples=8, prm_beta=0.05, sft_batch=-1))
  c.world = ConfigDict(dict(prompts=4096, eval_problems=256))
  c.eval = ConfigDict(dict(batch_size=128))
  # The toy's prompt + solution is at most 91 tokens with BOS and EOS; responses are capped at 64 new tokens.
  c.train = common.train_config(steps=0, batch_size=0, seq_len=128, log_every=4, checkpoint_every=16,
                                progress=True, export_hf=False, eval_every=8)
  # Chosen before any RL run: the DPO toy's measured stable range on this model was 1e-4..3e-4 (configs/dpo.py);
  # the lower end, as a policy-gradient step on normalised advantages is as large as an SFT step.
  c.optim = common.optim_config(lr=1e-4, schedule="constant", warmup_steps=0, clip_norm=1.0)
  if arg == "toy":
    pass
  elif arg == "ci":
    c.rl.update(rollouts=3, group_size=4, prompts_per_rollout=4, step_weight=1.0)  # shaped: rewards vary in a group
    c.world.update(prompts=32, eval_problems=16)
    c.eval.batch_size = 16
    c.train.update(log_every=1, checkpoint_every=1, eval_every=0, progress=False)
  elif arg == "qwen_math7b":
    c.model = common.model_config(path="", builtin="")
    c.model.update(dtype="bfloat16", param_dtype="float32")
    c.mesh.update(data=1, fsdp=8, tensor=1)
    c.rl.update(rollouts=500, group_size=8, prompts_per_rollout=64, minibatches=4, max_new_tokens=1024,
                kl_coef=0.0)
    c.eval.batch_size = 64
    c.train.update(seq_len=1536, log_every=1, checkpoint_every=20, keep_checkpoints=2, export_hf=True,
                   eval_every=50)
    c.optim = common.optim_config(lr=1e-6, schedule="constant", warmup_steps=10, weight_decay=0.0, clip_norm=1.0)
  else:
    raise ValueError(f"unknown rl variant {arg!r}; expected toy, ci or qwen_math7b")
  return c
