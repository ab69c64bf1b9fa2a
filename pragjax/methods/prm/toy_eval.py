"""Implicit PRM on the arithmetic-chains world: sampling, outcome labels, scoring, best-of-N and first-error F1.

The world gives exact ground truth: `is_correct` (final answer only) labels
training data, exactly as an outcome verifier would; `first_error` gives the
step labels the PRM never sees, against which its first-error predictions
are scored with the ProcessBench F1. A solution's steps are its lines
(`arithmetic.STEP_SEPARATOR`), the answer line last, each ending with its
newline; the last step also holds EOS.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np

from pragjax.eval import batching, best_of_n, processbench
from pragjax.methods.prm import implicit
from pragjax.methods.prm import steps as steps_lib
from pragjax.toyworld import arithmetic
from pragjax.toyworld import arithmetic_eval as arith_eval

__all__ = ["sample_solutions", "outcome_records", "score_solutions", "first_error_labels", "value_first_error",
           "answer_classes",
           "first_error_report", "best_of_n_report"]


def sample_solutions(model, tokenizer, problems: Sequence[arithmetic.Problem], *, num_samples: int,
                     temperature: float, seed: int, max_new_tokens: int = 64, batch_size: int = 64
                     ) -> list[list[str]]:
  """`num_samples` sampled solution texts per problem (`[P][N]`)."""
  prompts_per_batch = max(1, batch_size // num_samples)
  flat = arith_eval.solve(model, tokenizer, problems, max_new_tokens=max_new_tokens, batch_size=prompts_per_batch,
                          temperature=temperature, rng=jax.random.PRNGKey(seed), num_samples=num_samples)
  return [flat[i * num_samples:(i + 1) * num_samples] for i in range(len(problems))]


def outcome_records(problems: Sequence[arithmetic.Problem], samples: Sequence[Sequence[str]]) -> list[dict]:
  """`{"prompt", "response", "label"}` per sample; label = final answer correct (steps unchecked)."""
  return [{"prompt": p.prompt, "response": s, "label": float(arithmetic.is_correct(p, s))}
          for p, group in zip(problems, samples) for s in group]


def first_error_labels(problems: Sequence[arithmetic.Problem], samples: Sequence[Sequence[str]],
                       rule=arithmetic.first_error) -> np.ndarray:
  """`[P, N]` int: the first-error index of every sample under `rule` (default the world's exact labels)."""
  return np.asarray([[rule(p, s) for s in group] for p, group in zip(problems, samples)])


def value_first_error(problem: arithmetic.Problem, solution_text: str) -> int:
  """A diagnostic relaxation of `arithmetic.first_error` that ignores the target variable's *name*.

  Step i counts as right when its operands, operator and result equal the
  gold step's (the name before "=" may differ); the answer line and missing or
  extra steps are judged as in the world. Not the world's label: it only
  separates "wrong arithmetic or lookup" from "wrong variable name", for
  models that have not learnt to copy names.
  """
  steps = arithmetic.split_steps(solution_text)
  n_ops = len(problem.operations)
  for i, step in enumerate(steps):
    if i < n_ops:
      parsed, gold = arithmetic.parse_step(step), arithmetic.gold_step(problem, i)
      ok = parsed is not None and parsed[1:] == gold[1:]
    else:
      ok = i == n_ops and arithmetic.parse_answer(step) == problem.answer
    if not ok:
      return i
  return -1 if len(steps) == n_ops + 1 else len(steps)


def answer_classes(samples: Sequence[Sequence[str]]) -> list[list[int | None]]:
  """Answer class of every sample: its extracted integer answer (None when it has none)."""
  return [[arithmetic.extract_answer(s) for s in group] for group in samples]


def score_solutions(scorer, policy_params, ref_params, tokenizer, problems: Sequence[arithmetic.Problem],
                    samples: Sequence[Sequence[str]], *, batch_size: int = 256, max_length: int = 256) -> dict:
  """Implicit-PRM scores of every sample.

  Returns `{"{mode}_{how}": [P, N] float}` for every mode and aggregation,
  `"outcome": [P, N]` (beta * d), and `"steps_{mode}": P lists of N arrays`
  of step rewards (one per line of the solution).
  """
  flat = [(p.prompt, s) for p, group in zip(problems, samples) for s in group]
  n = len(samples[0]) if samples else 0
  keys = [f"{m}_{h}" for m in implicit.MODES for h in implicit.AGGREGATIONS] + ["outcome"]
  out = {k: [] for k in keys}
  step_scores = {m: [] for m in implicit.MODES}
  for chunk in batching.chunks(flat, batch_size):  # the last one padded with zero rows: one compiled shape
    enc = [steps_lib.encode_solution(tokenizer, prompt, text, steps_lib.split_response(text, arithmetic.STEP_SEPARATOR),
                                     max_length=max_length) for prompt, text in chunk.real]
    batch = steps_lib.collate_solutions(enc, tokenizer.pad_token_id, seq_len=max_length,
                                        num_steps=max(8, -(-max(len(e.step_end) for e in enc) // 8) * 8))
    res = batching.fetch(scorer(policy_params, ref_params, batching.place(batching.pad_rows(batch, chunk.rows))))
    for k in keys:
      out[k].extend(res[k][:chunk.n])
    for m in implicit.MODES:
      step_scores[m].extend(res[m][i, :len(e.step_end)] for i, e in enumerate(enc))
  result = {k: np.asarray(v, np.float64).reshape(len(samples), n) for k, v in out.items()}
  for m, v in step_scores.items():
    result[f"steps_{m}"] = [v[i * n:(i + 1) * n] for i in range(len(samples))]
  return result


def best_of_n_report(correct: np.ndarray, classes, scores: Mapping[str, np.ndarray], *, ns: Sequence[int],
                     weighted: str, num_subsets: int, seed: int) -> list[best_of_n.BestOfNRow]:
  """Best-of-n for random, majority, weighted vote (sigmoid of `weighted`), every score, oracle."""
  methods = ["random", "majority", f"weighted:{weighted}", *scores, "oracle"]
  return best_of_n.evaluate_best_of_n(correct, classes, scores, ns=ns, methods=methods, num_subsets=num_subsets,
                                      seed=seed)


def _flat(x):
  return [s for group in x for s in group]


def first_error_report(step_scores: Sequence[Sequence[np.ndarray]], labels: np.ndarray, correct: np.ndarray,
                       tune_problems: int) -> dict:
  """First-error F1 of thresholded step scores, the threshold tuned on the first `tune_problems` problems.

  Also reports, on the same test cases: the best constant predictor (always
  -1 or always step k; its F1 is 0 whenever both kinds of cases occur) and an
  outcome-aware baseline that knows the final-answer label and predicts -1
  for correct answers and the tuning split's most frequent first-error step
  otherwise. Cases whose first error is a missing step (index = number of
  steps) cannot be predicted by any step score and count as misses.
  """
  tune_s, test_s = _flat(step_scores[:tune_problems]), _flat(step_scores[tune_problems:])
  tune_l, test_l = labels[:tune_problems].reshape(-1), labels[tune_problems:].reshape(-1)
  threshold, tune_f1 = processbench.tune_threshold(tune_s, tune_l)
  prm = processbench.processbench_f1(processbench.predict_first_error(test_s, threshold), test_l)
  k_max = max((len(s) for s in test_s), default=1)
  constants = {c: processbench.processbench_f1(np.full(len(test_l), c), test_l)["f1"] for c in range(-1, k_max)}
  best_const = max(constants, key=lambda c: constants[c])
  errs = tune_l[tune_l >= 0]
  modal = int(np.bincount(errs).argmax()) if errs.size else 0
  test_ok = correct[tune_problems:].reshape(-1)
  outcome = processbench.processbench_f1(np.where(test_ok, -1, modal), test_l)
  missing = int(sum(int(l) == len(s) for l, s in zip(test_l, test_s)))
  return {"threshold": threshold, "tune_f1": tune_f1, "prm": prm, "constant": constants[best_const],
          "constant_prediction": best_const, "outcome_baseline": outcome, "outcome_baseline_step": modal,
          "missing_step_cases": missing, "cases": len(test_l)}
