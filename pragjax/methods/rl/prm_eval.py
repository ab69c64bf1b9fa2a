"""Does RL on outcome rewards teach the policy to judge steps? The RL policy against its initial model as an
implicit PRM ("Is PRM necessary?", Feng et al., 2025; PAPERS.md "Online RL").

The step reward of step k is `beta * sum_{t in step k} (log pi_RL(y_t) - log pi_init(y_t))`
(`pragjax.methods.prm.implicit`, the same scorer the trained implicit PRMs use), computed on a fixed test set:
`num_samples` solutions per held-out problem sampled from the *initial* model (so the set does not depend on
the RL run), labelled with the world's exact first-error index. Reported: the ProcessBench first-error F1 of the
thresholded step rewards (the threshold tuned on the first `tune_fraction` of the problems, scored on the
rest), next to the best constant prediction and the outcome-aware baseline of `prm.toy_eval.first_error_report`,
and best-of-n accuracy of the min step reward against random and majority picks. The initial model against
itself scores every step 0: its F1 is that of a constant. The control for "any small change of the weights
gives some F1 after threshold tuning" is `random_direction`: the initial parameters moved by a random direction
of the same global L2 norm as the RL run's total change, scored the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from flax import nnx

from pragjax.methods.prm import implicit
from pragjax.methods.prm import toy_eval as prm_toy
from pragjax.toyworld import arithmetic

__all__ = ["sample_test_set", "evaluate", "random_direction"]


def sample_test_set(init_model, tokenizer, problems: Sequence[arithmetic.Problem], *, num_samples: int,
                    temperature: float, seed: int, max_new_tokens: int, batch_size: int) -> list[list[str]]:
  """`[P][num_samples]` solutions of the initial model (the fixed test set)."""
  return prm_toy.sample_solutions(init_model, tokenizer, problems, num_samples=num_samples, temperature=temperature,
                                  seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size)


def evaluate(policy_model, init_params, tokenizer, problems: Sequence[arithmetic.Problem],
             samples: Sequence[Sequence[str]], *, beta: float, tune_fraction: float = 0.5,
             ns: Sequence[int] = (4, 8), batch_size: int = 128, max_length: int = 128, seed: int = 0) -> dict:
  """First-error F1 and best-of-n of `policy_model` as an implicit PRM against `init_params` (module docstring)."""
  scorer = implicit.make_scorer(nnx.graphdef(policy_model), beta)
  s = prm_toy.score_solutions(scorer, nnx.state(policy_model, nnx.Param), init_params, tokenizer, problems, samples,
                              batch_size=batch_size, max_length=max_length)
  labels = prm_toy.first_error_labels(problems, samples)
  correct = np.asarray([[arithmetic.is_correct(p, x) for x in g] for p, g in zip(problems, samples)])
  tune = int(round(tune_fraction * len(problems)))
  first_error = {mode: prm_toy.first_error_report(s[f"steps_{mode}"], labels, correct, tune)
                 for mode in implicit.MODES}
  ns = [n for n in ns if n <= correct.shape[1]]
  rows = prm_toy.best_of_n_report(correct[tune:], prm_toy.answer_classes(samples[tune:]),
                                  {"rl_prm_min": s[f"{implicit.MODES[0]}_min"][tune:]}, ns=ns,
                                  weighted="rl_prm_min", num_subsets=32, seed=seed)
  return {"beta": beta, "problems": len(problems), "samples": int(correct.shape[1]),
          "sample_accuracy": float(correct.mean()), "exact_rate": float(np.mean(labels == -1)),
          "first_error": first_error, "best_of_n": [dataclasses.asdict(r) for r in rows]}


def random_direction(init_params, policy_params, seed: int):
  """`init + u * ||policy - init||`, u a uniformly random unit direction over all parameters (Gaussian, normalised
  over the whole tree), so the control moves the weights exactly as far as RL did, in no particular direction."""
  import jax
  import jax.numpy as jnp

  leaves, treedef = jax.tree.flatten(init_params)
  moved = jax.tree.leaves(policy_params)
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(b, jnp.float32) - jnp.asarray(a, jnp.float32)))
                      for a, b in zip(leaves, moved)))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noise = [jax.random.normal(k, jnp.shape(a), jnp.float32) for k, a in zip(keys, leaves)]
  total = jnp.sqrt(sum(jnp.sum(jnp.square(n)) for n in noise))
  out = [(jnp.asarray(a, jnp.float32) + n * (norm / total)).astype(jnp.asarray(a).dtype) for a, n in zip(leaves, noise)]
  return jax.tree.unflatten(treedef, out)
