"""Priming (how one new sample primes unrelated contexts) and the ignore-top-k remedy.

- `scores`: keyword log-probabilities in one lean pass, log10 priming and memorization, the predictor report, the
  scatter plot.
- `injection`: the injection protocol (background rows, one batch element replaced by the sample, the train step
  scanned and vmapped over samples, scored in the same jit).
- `recipe`: `run(config, workdir)`: worlds (toy, English, files), variants (ignore-top-k, whole-episode
  pruning), stepping stones, the report.

The update pruning itself is `pragjax.optim.ignore_topk`.
"""
