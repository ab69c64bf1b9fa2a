"""SAMI (Franken et al., 2024): constitutions, sampling, the C x C scoring batch, training and iterations.

- `constitutions`: principles with antitheses, negation patterns, C constitutions per query, the paper's JSON files.
- `sampling`: responses from a model under prompts (the project's KV-cache sampler), token ids kept.
- `batches`: prompts from templates, the `[B, C, C, T]` (constitution, response) batch with response masks.
- `scoring`: the jitted C x C log-probability matrix (mean or sum over response tokens).
- `training`: the `loss_fn` for the one train step (one pass = `runner.train_lm` with it; `pragjax.methods.sami.recipe.train_pass`).
- `iterate`: sample -> train -> evaluate, for N iterations, resumable (the caller passes model loading and the training pass).

The loss itself is the pure `pragjax.objectives.sami.sami_loss`.
"""
