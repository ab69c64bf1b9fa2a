"""Single-instance baseline probes on the last token of each statement.

All three read `last_token(bags, bag_mask)` [B, D] (the residual stream of
the statement's last real token) and give decision values whose sign is the
prediction (>= 0: the probed class):

- `MeanDifference` (mass-mean probe, Marks & Tegmark 2023): direction
  d = mu_1 - mu_0 (class means of the raw activations), normalised to unit
  norm; f(x) = d . (x - (mu_1 + mu_0) / 2).
- `LinearSVMProbe`: standardised features (training mean and deviation),
  min 1/2 |w|^2 + C/n sum_i max(0, 1 - y_i (w . z_i + b)) solved by
  `pragjax.probes.svm.solve` (certified duality gap); unit-norm direction and
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

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pragjax.probes import metrics, svm
from pragjax.probes.sawmil import DEFAULT_C_GRID, kfold_ids, one_standard_error

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


def _standardize_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean, std = x.mean(axis=0), x.std(axis=0)
  return mean, np.where(std > 0, std, 1.0)


@functools.partial(jax.jit, static_argnames=("check_every", "method"))
def _svm_path(z, y, Cs, tol, max_iters, max_epochs, check_every=svm.DEFAULT_CHECK_EVERY, method="dcd"):
  n = z.shape[0]
  ys = jnp.where(y > 0, 1.0, -1.0)
  sol = jax.vmap(lambda c: svm.solve(z, ys, jnp.ones((n,)), jnp.full((n,), c / n), tol=tol, max_iters=max_iters,
                                     max_epochs=max_epochs, check_every=check_every, method=method))(Cs)
  direction, bias = jax.vmap(lambda s, c: svm.unit_linearization(s.w, s.b, z, ys, s.alpha, jnp.full((n,), c / n)))(
      sol, Cs)
  return direction, bias, sol


def _logistic_objective(theta, za, y, c):
  f = za @ theta
  return 0.5 * jnp.sum(theta[:-1] ** 2) + c * jnp.sum(jnp.logaddexp(0.0, f) - y * f)


@jax.jit
def _logistic_path(z, y, Cs, tol, max_iters):
  za = jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], axis=1)
  y = y.astype(za.dtype)
  reg = jnp.ones((za.shape[1],), za.dtype).at[-1].set(0.0)

  def one(c):
    def step(carry):
      theta, _, it = carry
      f = za @ theta
      p = jax.nn.sigmoid(f)
      grad = reg * theta + c * za.T @ (p - y)
      hess = jnp.diag(reg) + c * (za.T * (p * (1 - p))) @ za + 1e-8 * jnp.eye(za.shape[1])
      delta = -jnp.linalg.solve(hess, grad)
      dec = -grad @ delta  # squared Newton decrement
      obj = _logistic_objective(theta, za, y, c)
      ts = 0.5 ** jnp.arange(_LINE_SEARCH_STEPS)
      objs = jax.vmap(lambda t: _logistic_objective(theta + t * delta, za, y, c))(ts)
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


class _CVProbe:
  """Shared standardisation, C selection and scoring of the SVM and logistic probes."""
  C: float | None
  C_grid: tuple[float, ...]
  n_folds: int
  seed: int

  def _path(self, z, y, grid):  # -> (directions [nC, D], biases [nC], diagnostics)
    raise NotImplementedError

  def fit(self, x, labels):
    x, y = np.asarray(x, np.float32), _binary(labels)
    grid = sorted(float(c) for c in self.C_grid)
    self.cv_results_ = None
    if self.C is None:
      folds = kfold_ids(len(y), self.n_folds, self.seed)
      aps = np.full((self.n_folds, len(grid)), np.nan)
      for f in range(self.n_folds):
        tr, te = folds != f, folds == f
        mean, scale = _standardize_stats(x[tr])
        w, b, _ = self._path((x[tr] - mean) / scale, y[tr], grid)
        s = ((x[te] - mean) / scale) @ np.asarray(w).T + np.asarray(b)
        aps[f] = [metrics.average_precision(y[te], s[:, j]) for j in range(len(grid))]
      means, stds = np.nanmean(aps, axis=0), np.nanstd(aps, axis=0)
      chosen = grid[one_standard_error(means, stds, self.n_folds)]
      self.cv_results_ = {"C": grid, "mean_ap": means.tolist(), "std_ap": stds.tolist(), "chosen": chosen}
      self.C_ = chosen
    else:
      self.C_ = float(self.C)
    self.mean_, self.scale_ = _standardize_stats(x)
    w, b, diag = self._path((x - self.mean_) / self.scale_, y, [self.C_])
    self.coef_, self.intercept_ = np.asarray(w[0], np.float64), float(b[0])
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

  def _path(self, z, y, grid):
    method = svm.default_method() if self.solver == "auto" else self.solver
    w, b, sol = _svm_path(jnp.asarray(z), jnp.asarray(y), jnp.asarray(grid, jnp.float32), self.tol, self.max_iters,
                          self.max_epochs, method=method)
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

  def _path(self, z, y, grid):
    theta, converged, it = _logistic_path(jnp.asarray(z), jnp.asarray(y), jnp.asarray(grid, jnp.float32),
                                          self.tol, self.max_iters)
    return theta[:, :-1], theta[:, -1], {"iterations": it, "converged": converged}


def logistic_objective(theta: Float[Array, "D1"], z, y, c: float):
  """The logistic probe's objective at theta = (w, b) for standardised z [n, D], labels y in {0, 1}."""
  za = jnp.concatenate([jnp.asarray(z), jnp.ones((len(y), 1), jnp.asarray(z).dtype)], axis=1)
  return _logistic_objective(jnp.asarray(theta), za, jnp.asarray(y, za.dtype), c)
