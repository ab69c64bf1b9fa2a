"""Single-instance baseline probes on the last token of each statement.

All three read `last_token(bags, bag_mask)` [B, D] (the residual stream of
the statement's last real token) and give decision values whose sign is the
prediction (>= 0: the probed class):

- `MeanDifference` (mass-mean probe, Marks & Tegmark 2023): direction
  d = mu_1 - mu_0 (class means of the raw activations), normalised to unit
  norm; f(x) = d . (x - (mu_1 + mu_0) / 2).
- `LinearSVMProbe`: standardised features (training mean and deviation),
  min 1/2 |w|^2 + C/n sum_i max(0, 1 - y_i (w . z_i + b)) solved by
  `pragjax.methods.probes.svm.solve` (certified duality gap); unit-norm direction and
  the authors' support-vector midpoint bias (`svm.unit_linearization`).
- `LogisticProbe`: standardised features,
  min 1/2 |w|^2 + C sum_i [log(1 + exp(f_i)) - y_i f_i], f_i = w . z_i + b
  (scikit-learn's convention for C; bias unpenalised), by Newton's method
  with backtracking, stopped when half the squared Newton decrement is
  <= `tol` * max(1, objective) (or when no backtracking step decreases the
  objective: float32 rounding then dominates).
The SVM and logistic probes choose C from `C_grid` like sAwMIL: k-fold
cross-validation on average precision with the one-standard-error rule.
"""

from __future__ import annotations

import abc
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pragjax.methods.probes import metrics, svm
from pragjax.methods.probes.sawmil import DEFAULT_C_GRID, kfold_ids, one_standard_error

_LINE_SEARCH_STEPS = 12


def last_token(bags, bag_mask) -> np.ndarray:
  """[B, D]: each bag's last real token (any padding side)."""
  m = np.asarray(bag_mask, bool)
  if not m.any(axis=1).all():
    raise ValueError("every bag needs at least one real token")
  last = m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
  return np.asarray(bags[np.arange(m.shape[0]), last])


def _binary(labels) -> np.ndarray:
  y = np.asarray(labels).ravel()
  if not np.isin(y, (-1, 0, 1)).all():
    raise ValueError("labels must be binary: 1 for the probed class, 0 (or -1) otherwise")
  y = (y > 0).astype(np.int64)
  if y.all() or not y.any():
    raise ValueError(f"need both classes, got {y.sum()} positive of {y.size}")
  return y


@dataclasses.dataclass
class MeanDifference:
  """Mass-mean probe on raw last-token activations (see the module docstring)."""

  def fit(self, x, labels) -> "MeanDifference":
    x, y = np.asarray(x, np.float64), _binary(labels)
    mu1, mu0 = x[y == 1].mean(axis=0), x[y == 0].mean(axis=0)
    d = mu1 - mu0
    self.coef_ = d / max(np.linalg.norm(d), 1e-30)
    self.intercept_ = float(-self.coef_ @ (mu1 + mu0) / 2)
    return self

  def decision_function(self, x) -> np.ndarray:
    return np.asarray(x, np.float64) @ self.coef_ + self.intercept_


_ROW_PAD = 256  # rows are padded (weight 0) to a multiple of this: folds and datasets share compilations


def _standardize_stats(x: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation over the rows with weight > 0 (a zero deviation counts as 1)."""
  rows = x if weight is None else x[weight > 0]
  mean, std = rows.mean(axis=0), rows.std(axis=0)
  return mean, np.where(std > 0, std, 1.0)


@functools.partial(jax.jit, static_argnames=("check_every", "method"))
def _svm_path(z, y, weight, Cs, tol, max_iters, max_epochs, check_every=svm.DEFAULT_CHECK_EVERY, method="dcd"):
  """The SVM for every C: rows with weight 0 are left out; each other row costs C/n (n = rows with weight > 0)."""
  ys = jnp.where(y > 0, 1.0, -1.0)
  unit = weight / jnp.maximum(jnp.sum(weight), 1.0)
  sol = jax.vmap(lambda c: svm.solve(z, ys, jnp.ones(ys.shape), c * unit, tol=tol, max_iters=max_iters,
                                     max_epochs=max_epochs, check_every=check_every, method=method))(Cs)
  direction, bias = jax.vmap(lambda s, c: svm.unit_linearization(s.w, s.b, z, ys, s.alpha, c * unit))(sol, Cs)
  return direction, bias, sol


def _logistic_objective(theta, za, y, weight, c):
  f = za @ theta
  return 0.5 * jnp.sum(theta[:-1] ** 2) + c * jnp.sum(weight * (jnp.logaddexp(0.0, f) - y * f))


@jax.jit
def _logistic_path(z, y, weight, Cs, tol, max_iters):
  """Newton's method for every C; rows with weight 0 are left out."""
  za = jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], axis=1)
  y = y.astype(za.dtype)
  weight = weight.astype(za.dtype)
  reg = jnp.ones((za.shape[1],), za.dtype).at[-1].set(0.0)

  def one(c):
    def step(carry):
      theta, _, it = carry
      f = za @ theta
      p = jax.nn.sigmoid(f)
      grad = reg * theta + c * za.T @ (weight * (p - y))
      hess = jnp.diag(reg) + c * (za.T * (weight * p * (1 - p))) @ za + 1e-8 * jnp.eye(za.shape[1])
      delta = -jnp.linalg.solve(hess, grad)
      dec = -grad @ delta  # squared Newton decrement
      obj = _logistic_objective(theta, za, y, weight, c)
      ts = 0.5 ** jnp.arange(_LINE_SEARCH_STEPS)
      objs = jax.vmap(lambda t: _logistic_objective(theta + t * delta, za, y, weight, c))(ts)
      ok = objs <= obj - 0.25 * ts * dec
      t = jnp.where(jnp.any(ok), ts[jnp.argmax(ok)], 0.0)
      # No acceptable step means float32 rounding dominates the decrease: stop (crit -1).
      return theta + t * delta, jnp.where(t > 0, 0.5 * dec / jnp.maximum(1.0, obj), -1.0), it + 1

    def cond(carry):
      _, crit, it = carry
      return (crit > tol) & (it < max_iters)

    theta0 = jnp.zeros((za.shape[1],), za.dtype)
    theta, crit, it = jax.lax.while_loop(cond, step, (theta0, jnp.asarray(jnp.inf, za.dtype), 0))
    return theta, crit <= tol, it

  return jax.vmap(one)(Cs)


class _CVProbe(abc.ABC):
  """Shared standardisation, C selection and scoring of the SVM and logistic probes."""
  C: float | None
  C_grid: tuple[float, ...]
  n_folds: int
  seed: int

  @abc.abstractmethod
  def _path(self, z, y, weight, grid):
    """Fits every C of `grid` -> (directions [nC, D], biases [nC], diagnostics)."""

  def _fit_rows(self, x, y, weight, grid):
    """Standardises on the rows with weight > 0 and fits every C -> (mean, scale, directions, biases, diag)."""
    mean, scale = _standardize_stats(x, weight)
    z = np.where((weight > 0)[:, None], (x - mean) / scale, 0.0).astype(np.float32)
    w, b, diag = self._path(jnp.asarray(z), jnp.asarray(y), jnp.asarray(weight, jnp.float32),
                            jnp.asarray(grid, jnp.float32))
    return mean, scale, np.asarray(w, np.float64), np.asarray(b, np.float64), diag

  def fit(self, x, labels):
    x, y = np.asarray(x, np.float32), _binary(labels)
    n = len(y)
    pad = (-n) % _ROW_PAD
    xp, yp = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)]), np.r_[y, np.zeros(pad, np.int64)]
    grid = sorted(float(c) for c in self.C_grid)
    self.cv_results_ = None
    if self.C is None:
      folds = np.r_[kfold_ids(n, self.n_folds, self.seed), np.full(pad, -1)]
      aps = np.full((self.n_folds, len(grid)), np.nan)
      for f in range(self.n_folds):
        train, held = (folds != f) & (folds >= 0), folds == f
        mean, scale, w, b, _ = self._fit_rows(xp, yp, train.astype(np.float32), grid)
        s = ((xp[held] - mean) / scale) @ w.T + b
        aps[f] = [metrics.average_precision(yp[held], s[:, j]) for j in range(len(grid))]
      means, stds = np.nanmean(aps, axis=0), np.nanstd(aps, axis=0)
      chosen = grid[one_standard_error(means, stds, self.n_folds)]
      self.cv_results_ = {"C": grid, "mean_ap": means.tolist(), "std_ap": stds.tolist(), "chosen": chosen}
      self.C_ = chosen
    else:
      self.C_ = float(self.C)
    self.mean_, self.scale_, w, b, diag = self._fit_rows(xp, yp, (np.arange(n + pad) < n).astype(np.float32),
                                                         [self.C_])
    self.coef_, self.intercept_ = w[0], float(b[0])
    self.diagnostics_ = {k: np.asarray(v)[0].item() for k, v in diag.items()}
    return self

  def decision_function(self, x) -> np.ndarray:
    return ((np.asarray(x, np.float64) - self.mean_) / self.scale_) @ self.coef_ + self.intercept_


@dataclasses.dataclass
class LinearSVMProbe(_CVProbe):
  """Soft-margin linear SVM on standardised last tokens, C/n per point (see the module docstring)."""
  C: float | None = None
  C_grid: tuple[float, ...] = DEFAULT_C_GRID
  n_folds: int = 3
  tol: float = svm.DEFAULT_TOL
  max_iters: int = svm.DEFAULT_MAX_ITERS
  max_epochs: int = svm.DEFAULT_MAX_EPOCHS
  solver: str = "auto"
  seed: int = 0

  def _path(self, z, y, weight, grid):
    method = svm.default_method() if self.solver == "auto" else self.solver
    w, b, sol = _svm_path(z, y, weight, grid, self.tol, self.max_iters, self.max_epochs, method=method)
    return w, b, {"gap": sol.gap, "iterations": sol.iterations, "converged": sol.converged}


@dataclasses.dataclass
class LogisticProbe(_CVProbe):
  """L2 logistic regression on standardised last tokens, Newton's method (see the module docstring)."""
  C: float | None = None
  C_grid: tuple[float, ...] = DEFAULT_C_GRID
  n_folds: int = 3
  tol: float = 1e-7
  max_iters: int = 50
  seed: int = 0

  def _path(self, z, y, weight, grid):
    theta, converged, it = _logistic_path(z, y, weight, grid, self.tol, self.max_iters)
    return theta[:, :-1], theta[:, -1], {"iterations": it, "converged": converged}


def logistic_objective(theta: Float[Array, "D1"], z, y, c: float):
  """The logistic probe's objective at theta = (w, b) for standardised z [n, D], labels y in {0, 1}."""
  za = jnp.concatenate([jnp.asarray(z), jnp.ones((len(y), 1), jnp.asarray(z).dtype)], axis=1)
  return _logistic_objective(jnp.asarray(theta), za, jnp.asarray(y, za.dtype), jnp.ones((len(y),), za.dtype), c)
