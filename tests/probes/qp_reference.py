"""Reference solutions of the probes' SVM problems by a general QP solver (cvxopt), in float64.

`svm_reference(x, y, rho, u)` solves the dual

  max_alpha rho . alpha - 1/2 |sum_i alpha_i y_i x_i|^2,  0 <= alpha <= u,  y . alpha = 0

with cvxopt's interior-point QP (tolerances 1e-11) over the points with
u > 0, and returns w = sum_i alpha_i y_i x_i and the bias from the KKT
conditions: the mean of y_i rho_i - w . x_i over free support vectors
(0 < alpha_i < u_i), or, without free support vectors, the centre of the
kinks that minimise the hinge sum (brute force); all independent of
`pragjax.methods.probes.svm`.
"""

from __future__ import annotations

import numpy as np
import pytest


def svm_reference(x, y, rho, u, *, free_tol: float = 1e-6):
  cvxopt = pytest.importorskip("cvxopt")
  x, y, rho, u = (np.asarray(a, np.float64) for a in (x, y, rho, u))
  act = u > 0
  xa, ya, ra, ua = x[act], y[act], rho[act], u[act]
  n = len(ya)
  yx = ya[:, None] * xa
  p = cvxopt.matrix(yx @ yx.T + 1e-12 * np.eye(n))
  q = cvxopt.matrix(-ra)
  g = cvxopt.matrix(np.vstack([-np.eye(n), np.eye(n)]))
  h = cvxopt.matrix(np.concatenate([np.zeros(n), ua]))
  a = cvxopt.matrix(ya[None, :])
  sol = cvxopt.solvers.qp(p, q, g, h, a, cvxopt.matrix(0.0),
                          options={"show_progress": False, "abstol": 1e-11, "reltol": 1e-11, "feastol": 1e-11})
  assert sol["status"] == "optimal", sol["status"]
  alpha = np.asarray(sol["x"]).ravel()
  w = yx.T @ alpha
  free = (alpha > free_tol * ua) & (alpha < (1 - free_tol) * ua)
  if free.any():  # KKT: y_i (w . x_i + b) = rho_i on free support vectors.
    b = float(np.mean(ya[free] * ra[free] - xa[free] @ w))
  else:  # Every alpha at a bound: b minimises the hinge sum; take the centre of the minimisers (brute force).
    s = xa @ w
    kinks = ya * (ra - ya * s)
    h = np.array([np.sum(ua * np.maximum(0.0, ra - ya * (s + k))) for k in kinks])
    best = kinks[h <= h.min() + 1e-9 * max(1.0, abs(h.min()))]
    b = float(0.5 * (best.min() + best.max()))
  full = np.zeros(len(u))
  full[act] = alpha
  dual = float(ra @ alpha - 0.5 * w @ w)
  return w, b, full, dual
