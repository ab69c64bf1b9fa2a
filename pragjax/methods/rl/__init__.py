"""Online RL on the one train step: GRPO, Dr. GRPO, DAPO and RLOO on sampled groups.

`loss` is the policy-gradient loss builder and the reference pass, `rewards` the reward functions (the
arithmetic world's checker, a format check, user functions), `recipe` the `Method` and the run.
Losses: `pragjax.objectives.rl`; the rollout source: `pragjax.train.rollout`.
"""
