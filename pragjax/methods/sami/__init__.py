"""SAMI (Franken et al., 2024): constitutions, sampling, the C x C scoring batch, training and iterations.

- `constitutions`: principles with antitheses, negation patterns, C constitutions per query, the paper's JSON files.
- `sampling`: responses from a model under prompts (the project's KV-cache sampler), token ids kept.
- `batches`: prompts from templates, the `[B, C, C, T]` (constitution, response) batch with response masks.
- `scoring`: the jitted C x C log-probability matrix (mean or sum over response tokens).
- `training`: the `loss_fn` for the one train step (and `train_pass`, one pass through `runner.train_lm`; `load_model`).
- `iterate`: sample -> train -> evaluate, for N iterations, resumable.
- `toy_eval`, `evaluate`: the principles world's adherence and judge; win rates, tables and the plot of a run.
- `recipe`: `run(config, workdir)`, the task (toy world or files), the judge, the report.

The loss itself is the pure `pragjax.objectives.sami.sami_loss`.
"""
