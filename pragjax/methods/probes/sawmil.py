"""sAwMIL (Savcisens & Eliassi-Rad, 2025): sparse-aware multiple-instance learning of a linear probe.

A statement is a bag of its tokens' activations at one layer: `bags` [B, T, D]
with `bag_mask` [B, T] (1 = a real token) and a binary bag label (1 = the
probed class). Fitting has three stages after standardisation (per-feature
mean and standard deviation over the real tokens of the training bags; a
zero deviation counts as 1):

1. sMIL (Bunescu & Mooney, 2007). Every token of a negative bag is a -1
   point; every positive bag B is one +1 point, its mean token x_B, with the
   relaxed margin (2 - |B|) / |B| (one positive token among |B| makes the mean
   at least that):

     min_{w,b}  1/2 |w|^2 + C/L_n sum_{i in neg tokens} xi_i + C/X_p sum_{B pos} xi_B
     s.t.  -(w . x_i + b) >= 1 - xi_i,   w . x_B + b >= (2 - |B|)/|B| - xi_B,   xi >= 0,

   with L_n the number of negative tokens and X_p of positive bags.
2. Relabelling. Score the tokens of positive bags with the sMIL hyperplane;
   the cutoff is the k-th largest score, k = round(eta L_p) clipped to
   [X_p, L_p] (L_p tokens in positive bags; eta defaults to the share of
   "possible positive" tokens, sum(intrabag) / sum(real tokens), about 0.2
   with the last-2 rule and 10-token bags). A token becomes +1 if its score
   is >= the cutoff AND it is marked in `intrabag_mask` (default: the last 2
   real tokens of its bag, the last-2 rule). If fewer than
   `min_positive_fraction` (5%) of L_p qualify, the intra-bag rule is dropped:
   every token at or above the cutoff becomes +1. Every other token is -1.
3. Final soft-margin linear SVM on all N training tokens with those labels:
     min 1/2 |w|^2 + C/N sum_i max(0, 1 - y_i (w . x_i + b)),
   returned as a unit-norm direction w/|w| (in standardised space) and the
   authors' bias: the midpoint between the mean direction scores of the
   positive and of the negative support vectors (`svm.unit_linearization`).
   The score of a bag is the max over its real tokens of direction . z + bias.

Both SVMs are solved by `pragjax.methods.probes.svm.solve` (over-relaxed dual
coordinate descent on CPU, preconditioned FISTA on accelerators; `solver`) to
a certified duality gap, gap <= tol * primal (tol 1e-4 by default; the
iteration caps are safety nets, and a fit or cross-validation fold that
reaches one warns with `NotConvergedWarning`). C (both stages) is
chosen from `C_grid` = (0.05, 0.1, 0.5, 1, 10) by `n_folds`-fold
cross-validation over training bags on bag average precision with the
one-standard-error rule: the smallest C whose mean AP is at least the best
mean minus the best C's standard error (std / sqrt(n_folds)). As in the
authors' code, training bags may be capped at `max_bag_size` tokens (the
intra-bag tokens plus a seeded random sample of the rest), the final fit at
`max_train_bags` bags and cross-validation at `cv_max_bags` bags.

Differences from the `sawmil` 0.2.1 package (the authors' later release),
which follow the authors' paper code (misvm-based) instead: the package's
sMIL uses the margin (|B| - 2)/|B| for positive bags (the linear term of its
dual has the opposite sign to misvm's), its final SVM uses C unscaled, and its
cutoff is the (1 - eta) quantile without the lower bound X_p. Its sMIL stage
also ignores the `solver` argument (falls back to Gurobi), and with its
default normalizer="none" its bag kernel (`WeightedMeanBagKernel.__call__`)
weights instances by 1, i.e. the QP sees bag sums, while its primal recovery
(`NSK._phi`) uses bag means: the recovered sMIL hyperplane is not the QP's
solution (measured: |cosine| <= 0.22 with this module's stage 1, test mAP near
chance on the benchmark's bags; with the class's own mean-weighted kernel and
the paper's margin, cosine 1.000). See `benchmarks/sawmil_fit.py`.

Everything after the inputs' validation is jitted; the C grid is one `vmap`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from pragjax.methods.probes import metrics, svm

DEFAULT_C_GRID = (0.05, 0.1, 0.5, 1.0, 10.0)
_BAG_PAD = 256


class Standardization(NamedTuple):
  mean: Array  # [D]
  scale: Array  # [D]


class Fit(NamedTuple):
  """Fitted probes for a batch of C values (leading axis [nC] on every field but `standardization`, `eta`).

  direction: [nC, D] unit-norm; bias: [nC]; eta: [] share used for the
  cutoff; cutoff: [nC] sMIL score cutoff; selected: [nC] tokens relabelled +1;
  fallback: [nC] whether the intra-bag rule was dropped; stage1, stage2:
  `svm.SVMSolution` per C (gap, iterations, converged, ...).
  """
  standardization: Standardization
  direction: Array
  bias: Array
  eta: Array
  cutoff: Array
  selected: Array
  fallback: Array
  stage1: svm.SVMSolution
  stage2: svm.SVMSolution


class Tokens(NamedTuple):
  """Bags as a flat token list (what the solvers see; padding rows allowed).

  x: [N, D] activations; bag: [N] int32 bag index in 0..B-1; valid: [N] bool
  (False = a padding row); intrabag: [N] bool (possible positives, e.g. the
  last-2 rule).
  """
  x: Array
  bag: Array
  valid: Array
  intrabag: Array


def last_tokens_mask(bag_mask: Bool[Array, "B T"], k: int = 2) -> Bool[Array, "B T"]:
  """The last `k` real tokens of each bag (any padding side): the last-k rule's intra-bag mask."""
  m = jnp.asarray(bag_mask, bool)
  from_end = jnp.cumsum(m[:, ::-1].astype(jnp.int32), axis=1)[:, ::-1]  # 1 at the last real token.
  return m & (from_end <= k)


def flatten_bags(bags, bag_mask, intrabag_mask, *, pad_multiple: int = 1024) -> Tokens:
  """Dense bags [B, T, D] + masks -> `Tokens` of the real tokens (numpy, on the host), padded to a multiple
  of `pad_multiple` rows so that problems of similar size share one compilation."""
  m = np.asarray(bag_mask, bool)
  bag_idx, tok_idx = np.nonzero(m)
  x = np.asarray(bags)[bag_idx, tok_idx]
  n = len(bag_idx)
  pad = (-n) % pad_multiple if pad_multiple else 0
  return Tokens(x=np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]),
                bag=np.concatenate([bag_idx, np.zeros(pad, np.int64)]).astype(np.int32),
                valid=np.r_[np.ones(n, bool), np.zeros(pad, bool)],
                intrabag=np.r_[np.asarray(intrabag_mask, bool)[bag_idx, tok_idx], np.zeros(pad, bool)])


def standardization(x: Float[Array, "N D"], used: Bool[Array, "N"]) -> Standardization:
  """Mean and standard deviation of every feature over the `used` rows (a zero deviation counts as 1)."""
  w = jnp.asarray(used, jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  x = x.astype(jnp.float32)
  mean = jnp.sum(w * x, axis=0) / n
  var = jnp.sum(w * (x - mean) ** 2, axis=0) / n
  scale = jnp.sqrt(var)
  return Standardization(mean, jnp.where(scale > 0, scale, 1.0))


def standardize(x, st: Standardization):
  """(x - mean) / scale in float32."""
  return (x.astype(jnp.float32) - st.mean) / st.scale


def smil_problem(z: Float[Array, "N D"], tokens: Tokens, positive, bag_weight):
  """Stage 1 as `svm.solve` inputs for C = 1: (points [N + B, D], y, rho, u); scale u by C.

  Rows 0..N-1 are tokens (active: valid tokens of weighted negative bags,
  y = -1, rho = 1, u = 1/L_n); rows N.. are bag means (active: weighted
  positive bags, y = +1, rho = (2 - |B|)/|B|, u = 1/X_p). Inactive rows have u = 0.
  """
  num_bags = positive.shape[0]
  used_bag = jnp.asarray(bag_weight) > 0
  pos = jnp.asarray(positive, bool)
  tok = tokens.valid & used_bag[tokens.bag]
  sizes = jax.ops.segment_sum(tok.astype(jnp.float32), tokens.bag, num_bags)
  means = jax.ops.segment_sum(jnp.where(tok[:, None], z, 0.0), tokens.bag, num_bags) / jnp.maximum(sizes, 1.0)[:, None]
  neg_tokens = tok & ~pos[tokens.bag]
  pos_bags = used_bag & pos & (sizes > 0)
  l_n = jnp.maximum(jnp.sum(neg_tokens), 1)
  x_p = jnp.maximum(jnp.sum(pos_bags), 1)
  n = z.shape[0]
  points = jnp.concatenate([jnp.where(tok[:, None], z, 0.0), means], axis=0)
  y = jnp.concatenate([-jnp.ones((n,)), jnp.ones((num_bags,))])
  rho = jnp.concatenate([jnp.ones((n,)), (2.0 - sizes) / jnp.maximum(sizes, 1.0)])
  u = jnp.concatenate([jnp.where(neg_tokens, 1.0 / l_n, 0.0), jnp.where(pos_bags, 1.0 / x_p, 0.0)])
  return points, y, rho, u


def auto_eta(tokens: Tokens, bag_weight) -> Float[Array, ""]:
  """Share of possible-positive tokens: sum(intrabag) / sum(tokens) over bags with weight > 0."""
  tok = tokens.valid & (jnp.asarray(bag_weight) > 0)[tokens.bag]
  return jnp.sum(tok & tokens.intrabag) / jnp.maximum(jnp.sum(tok), 1)


def relabel(scores: Float[Array, "N"], tokens: Tokens, positive, bag_weight, eta,
            min_positive_fraction: float = 0.05):
  """Stage 2 (see the module docstring) -> (selected [N] bool, cutoff [], fallback [] bool)."""
  num_bags = positive.shape[0]
  cand = tokens.valid & ((jnp.asarray(bag_weight) > 0) & jnp.asarray(positive, bool))[tokens.bag]
  l_p = jnp.sum(cand)
  x_p = jnp.sum(jax.ops.segment_max(cand.astype(jnp.int32), tokens.bag, num_bags) > 0)
  k = jnp.clip(jnp.round(eta * l_p).astype(jnp.int32), jnp.maximum(x_p, 1), jnp.maximum(l_p, 1))
  ranked = jnp.sort(jnp.where(cand, scores, -jnp.inf))[::-1]
  cutoff = ranked[k - 1]
  top = cand & (scores >= cutoff)
  selected = top & tokens.intrabag
  fallback = jnp.sum(selected) < min_positive_fraction * l_p
  return jnp.where(fallback, top, selected), cutoff, fallback


def final_problem(z: Float[Array, "N D"], tokens: Tokens, bag_weight, selected):
  """Stage 3 as `svm.solve` inputs for C = 1: (points [N, D], y, rho, u) with u = 1/N_used on used tokens."""
  tok = tokens.valid & (jnp.asarray(bag_weight) > 0)[tokens.bag]
  y = jnp.where(selected, 1.0, -1.0)
  u = jnp.where(tok, 1.0 / jnp.maximum(jnp.sum(tok), 1), 0.0)
  return jnp.where(tok[:, None], z, 0.0), y, jnp.ones(y.shape), u


@functools.partial(jax.jit, static_argnames=("check_every", "method"))
def fit_path(tokens: Tokens, positive, bag_weight, Cs, eta=-1.0, min_positive_fraction=0.05,
             tol=svm.DEFAULT_TOL, max_iters=svm.DEFAULT_MAX_ITERS, max_epochs=svm.DEFAULT_MAX_EPOCHS,
             check_every=svm.DEFAULT_CHECK_EVERY, method="dcd") -> Fit:
  """All three stages for every C in `Cs` [nC] on the bags with `bag_weight` > 0; eta <= 0 means `auto_eta`.

  positive: [B] bool bag labels; bag_weight: [B] (0 = bag left out, e.g. a
  cross-validation fold). C scales both stages' costs (C/L_n, C/X_p, C/N).
  """
  used = tokens.valid & (jnp.asarray(bag_weight) > 0)[tokens.bag]
  st = standardization(tokens.x, used)
  z = standardize(tokens.x, st)
  eta = jnp.where(eta > 0, eta, auto_eta(tokens, bag_weight))
  solve = functools.partial(svm.solve, tol=tol, max_iters=max_iters, max_epochs=max_epochs,
                            check_every=check_every, method=method)
  p1, y1, rho1, u1 = smil_problem(z, tokens, positive, bag_weight)
  s1 = jax.vmap(lambda c: solve(p1, y1, rho1, c * u1))(Cs)
  token_scores = jnp.matmul(z, s1.w.T, precision=jax.lax.Precision.HIGHEST) + s1.b  # [N, nC]
  selected, cutoff, fallback = jax.vmap(
      lambda s: relabel(s, tokens, positive, bag_weight, eta, min_positive_fraction))(token_scores.T)
  p2, _, rho2, u2 = final_problem(z, tokens, bag_weight, selected[0])
  y2 = jnp.where(selected, 1.0, -1.0)
  s2 = jax.vmap(lambda c, y: solve(p2, y, rho2, c * u2))(Cs, y2)
  direction, bias = jax.vmap(lambda s, y, c: svm.unit_linearization(s.w, s.b, p2, y, s.alpha, c * u2))(s2, y2, Cs)
  return Fit(st, direction, bias, eta, cutoff, jnp.sum(selected, axis=1), fallback, s1, s2)


@jax.jit
def bag_scores(bags, bag_mask, st: Standardization, direction: Float[Array, "D"], bias) -> Float[Array, "B"]:
  """Max over real tokens of direction . standardized(x) + bias; `bias` for a bag without tokens."""
  m = jnp.asarray(bag_mask, bool)
  s = jnp.einsum("btd,d->bt", standardize(bags, st), direction, precision=jax.lax.Precision.HIGHEST) + bias
  return jnp.where(jnp.any(m, axis=1), jnp.max(jnp.where(m, s, -jnp.inf), axis=1), bias)


def subsample_tokens(bag_mask, intrabag_mask, max_tokens: int, rng: np.random.Generator) -> np.ndarray:
  """[B, T] bool: every bag capped at `max_tokens` real tokens, its intra-bag tokens first, then uniformly
  drawn other real tokens (the authors' `max_bag_size`)."""
  m = np.asarray(bag_mask, bool)
  keep = m & np.asarray(intrabag_mask, bool)
  other = m & ~keep
  room = np.maximum(max_tokens - keep.sum(axis=1), 0)
  priority = np.where(other, rng.random(m.shape), np.inf)
  rank = np.argsort(np.argsort(priority, axis=1, kind="stable"), axis=1, kind="stable")
  return keep | (other & (rank < room[:, None]))


def one_standard_error(means: Sequence[float], stds: Sequence[float], n_folds: int) -> int:
  """Index of the first grid value (grid ascending in C: most regularised first) whose mean is within
  one standard error (std / sqrt(n_folds)) of the best mean; NaN means are skipped."""
  means = np.asarray(means, np.float64)
  if np.all(np.isnan(means)):
    raise ValueError("every cross-validation score is NaN (folds without positive bags?)")
  best = int(np.nanargmax(means))
  threshold = means[best] - np.asarray(stds, np.float64)[best] / np.sqrt(n_folds)
  return int(np.flatnonzero(means >= threshold)[0])


def kfold_ids(num: int, n_folds: int, seed: int) -> np.ndarray:
  """[num] fold index of every item: a seeded permutation cut into `n_folds` near-equal parts."""
  if not 2 <= n_folds <= num:
    raise ValueError(f"n_folds={n_folds} needs 2 <= n_folds <= {num} items")
  ids = np.empty(num, np.int64)
  ids[np.random.default_rng(seed).permutation(num)] = np.arange(num) % n_folds
  return ids


def _check_inputs(bags, bag_mask, labels=None):
  bag_mask = np.asarray(bag_mask).astype(bool)
  if np.ndim(bags) != 3 or bag_mask.shape != np.shape(bags)[:2]:
    raise ValueError(f"need bags [B, T, D] and bag_mask [B, T], got {np.shape(bags)} and {bag_mask.shape}")
  if labels is None:
    return bag_mask, None
  labels = np.asarray(labels).ravel()
  if labels.shape != (bag_mask.shape[0],):
    raise ValueError(f"labels must be [B] = [{bag_mask.shape[0]}], got {labels.shape}")
  if not np.isin(labels, (-1, 0, 1)).all():
    raise ValueError("labels must be binary: 1 for the probed class, 0 (or -1) otherwise")
  positive = labels > 0
  if positive.all() or not positive.any():
    raise ValueError(f"need positive and negative bags, got {positive.sum()} positive of {positive.size}")
  if not bag_mask.any(axis=1).all():
    raise ValueError(f"{int((~bag_mask.any(axis=1)).sum())} bag(s) have no real token")
  return bag_mask, positive


class NotConvergedWarning(UserWarning):
  """An SVM stage of `SAwMIL.fit` hit its iteration cap before its duality-gap stopping rule."""


@dataclasses.dataclass
class SAwMIL:
  """sklearn-like sAwMIL probe (see the module docstring for every stage and parameter).

  C: fixed C, or None to choose it from `C_grid` by cross-validation.
  eta: share of top-scored positive-bag tokens, or None for `auto_eta`.
  num_known_positives: the last-k rule's k when no intra-bag mask is given.
  max_bag_size, max_train_bags, cv_max_bags: caps (None = no cap).
  tol: SVM stopping rule (relative duality gap, `pragjax.methods.probes.svm`); max_iters, max_epochs: the
    FISTA step and DCD epoch caps; solver: "dcd", "fista" or "auto" (DCD on CPU, FISTA on accelerators).
  pad_multiple: token rows are padded to a multiple of this (fewer compilations).
  """
  C: float | None = None
  C_grid: tuple[float, ...] = DEFAULT_C_GRID
  n_folds: int = 3
  eta: float | None = None
  num_known_positives: int = 2
  min_positive_fraction: float = 0.05
  max_bag_size: int | None = 10
  max_train_bags: int | None = 1800
  cv_max_bags: int | None = 600
  tol: float = svm.DEFAULT_TOL
  max_iters: int = svm.DEFAULT_MAX_ITERS
  max_epochs: int = svm.DEFAULT_MAX_EPOCHS
  solver: str = "auto"
  pad_multiple: int = 1024
  seed: int = 0

  def _fit(self, bags, mask, intrabag, positive, Cs, bag_weight=None) -> Fit:
    """fit_path on the bags with weight > 0 (default all); bag indices (and so shapes) stay those of `bags`."""
    weight = np.ones(len(positive), np.float32) if bag_weight is None else np.asarray(bag_weight, np.float32)
    flat = flatten_bags(bags, mask & (weight > 0)[:, None], intrabag, pad_multiple=self.pad_multiple)
    # Padding the bag axis too (weight 0) lets folds, probes, layers and datasets share compilations.
    pad = (-len(positive)) % _BAG_PAD
    positive, weight = np.r_[positive, np.zeros(pad, bool)], np.r_[weight, np.zeros(pad, np.float32)]
    return fit_path(Tokens(*(jnp.asarray(a) for a in flat)), jnp.asarray(positive), jnp.asarray(weight),
                    jnp.asarray(Cs, jnp.float32), eta=-1.0 if self.eta is None else float(self.eta),
                    min_positive_fraction=self.min_positive_fraction, tol=self.tol, max_iters=self.max_iters,
                    max_epochs=self.max_epochs, method=self._method())

  def _method(self) -> str:
    return svm.default_method() if self.solver == "auto" else self.solver

  def _subset(self, num: int, cap: int | None, stream: int) -> np.ndarray:
    if cap is None or num <= cap:
      return np.arange(num)
    return np.sort(np.random.default_rng([self.seed, stream]).permutation(num)[:cap])

  def fit(self, bags, bag_mask, labels, intrabag_mask=None) -> "SAwMIL":
    """Fits on bags [B, T, D] (numpy or JAX, any float dtype), bag_mask [B, T], labels [B] (1 = probed class).

    intrabag_mask: [B, T] possible positives (default: the last
    `num_known_positives` real tokens of every bag).
    """
    mask, positive = _check_inputs(bags, bag_mask, labels)
    if intrabag_mask is None:
      intrabag = np.asarray(last_tokens_mask(mask, self.num_known_positives))
    else:
      intrabag = np.asarray(intrabag_mask).astype(bool)
      if intrabag.shape != mask.shape:
        raise ValueError(f"intrabag_mask must be [B, T] = {mask.shape}, got {intrabag.shape}")
      intrabag &= mask
    idx = self._subset(len(positive), self.max_train_bags, 1)
    bags, mask, positive, intrabag = np.asarray(bags)[idx], mask[idx], positive[idx], intrabag[idx]
    if self.max_bag_size is not None:
      mask = subsample_tokens(mask, intrabag, self.max_bag_size, np.random.default_rng([self.seed, 3]))
    self.cv_results_ = None
    self.C_ = float(self.C) if self.C is not None else self._cross_validate(bags, mask, intrabag, positive)
    fit = self._fit(bags, mask, intrabag, positive, [self.C_])
    self.fit_ = fit
    self.standardization_ = fit.standardization
    self.coef_ = fit.direction[0]
    self.intercept_ = fit.bias[0]
    self.eta_ = float(fit.eta)
    self.diagnostics_ = {
        "C": self.C_, "eta": self.eta_, "cutoff": float(fit.cutoff[0]), "selected": int(fit.selected[0]),
        "fallback": bool(fit.fallback[0]), "solver": self._method(), "stage1_gap": float(fit.stage1.gap[0]),
        "stage1_primal": float(fit.stage1.primal[0]), "stage2_primal": float(fit.stage2.primal[0]),
        "stage1_iterations": int(fit.stage1.iterations[0]), "stage1_converged": bool(fit.stage1.converged[0]),
        "stage2_gap": float(fit.stage2.gap[0]), "stage2_iterations": int(fit.stage2.iterations[0]),
        "stage2_converged": bool(fit.stage2.converged[0]), "train_bags": int(len(positive)),
        "train_tokens": int(mask.sum())}
    for stage, sol in (("stage 1 (sMIL)", fit.stage1), ("stage 2 (SVM)", fit.stage2)):
      if not bool(sol.converged[0]):
        rel = float(sol.gap[0]) / max(abs(float(sol.primal[0])), 1e-30)
        warnings.warn(
            f"sAwMIL {stage} stopped after {int(sol.iterations[0])} iterations with relative duality gap "
            f"{rel:.2e} > tol={self.tol:g}: not solved to the stopping rule; raise max_epochs "
            f"({self.max_epochs}, DCD solver) or max_iters ({self.max_iters}, FISTA)", NotConvergedWarning,
            stacklevel=2)
    return self

  def _cross_validate(self, bags, mask, intrabag, positive) -> float:
    """Grid search over `C_grid` on held-out bag AP (one-standard-error rule); fills `cv_results_`."""
    idx = self._subset(len(positive), self.cv_max_bags, 2)
    bags, mask, intrabag, positive = bags[idx], mask[idx], intrabag[idx], positive[idx]
    folds = kfold_ids(len(positive), self.n_folds, self.seed)
    grid = sorted(float(c) for c in self.C_grid)
    aps = np.full((self.n_folds, len(grid)), np.nan)
    iterations, unconverged = [], []
    for f in range(self.n_folds):
      held = folds == f
      fit = self._fit(bags, mask, intrabag, positive, grid, bag_weight=~held)
      iterations.append((np.asarray(fit.stage1.iterations).tolist(), np.asarray(fit.stage2.iterations).tolist()))
      for stage, sol in (("stage 1", fit.stage1), ("stage 2", fit.stage2)):
        unconverged += [f"fold {f} {stage} C={grid[j]:g}" for j in np.flatnonzero(~np.asarray(sol.converged))]
      for j in range(len(grid)):  # Scoring every bag keeps one shape (one compilation) across folds.
        s = np.asarray(bag_scores(bags, mask, fit.standardization, fit.direction[j], fit.bias[j]))
        aps[f, j] = metrics.average_precision(positive[held], s[held])
    if unconverged:
      warnings.warn(f"sAwMIL cross-validation: {len(unconverged)} SVM(s) stopped at their iteration cap before the "
                    f"duality-gap rule ({', '.join(unconverged[:5])}{', ...' if len(unconverged) > 5 else ''}); "
                    f"raise max_epochs ({self.max_epochs}, DCD) or max_iters ({self.max_iters}, FISTA)",
                    NotConvergedWarning, stacklevel=3)
    means, stds = np.nanmean(aps, axis=0), np.nanstd(aps, axis=0)
    chosen = one_standard_error(means, stds, self.n_folds)
    self.cv_results_ = {"C": grid, "mean_ap": means.tolist(), "std_ap": stds.tolist(), "chosen": grid[chosen],
                        "iterations": iterations}
    return grid[chosen]

  def decision_function(self, bags, bag_mask, *, batch_size: int = 512) -> np.ndarray:
    """[B] bag scores: max over real tokens of the unit-direction score (in chunks of `batch_size` bags)."""
    if not hasattr(self, "coef_"):
      raise RuntimeError("SAwMIL is not fitted; call fit first")
    mask, _ = _check_inputs(bags, bag_mask)
    out = [bag_scores(jnp.asarray(bags[i:i + batch_size]), mask[i:i + batch_size], self.standardization_,
                      self.coef_, self.intercept_) for i in range(0, len(mask), batch_size)]
    return np.concatenate([np.asarray(o) for o in out]) if out else np.zeros((0,), np.float32)

  def predict(self, bags, bag_mask) -> np.ndarray:
    """[B] 1 where the bag score is >= 0, else 0."""
    return (self.decision_function(bags, bag_mask) >= 0).astype(np.int64)
