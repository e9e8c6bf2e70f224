"""Checks for lesson 02, KL divergence (``solutions/02_kl_divergence.ipynb``).

* Exercise 2.1: ``kl_univariate(mu_q, log_var_q, mu_p, log_var_p)`` - KL between two
  univariate Gaussians, element by element (arrays broadcast).
* Exercise 2.2: ``kl_by_quadrature(log_q, log_p, x)`` - KL(q || p) by the trapezoid rule from
  log-densities on a grid.
* Exercise 2.3: ``kl_diag_standard_normal(mu, log_var)`` - KL from a diagonal Gaussian to
  N(0, I), summed over the last axis.

The references are the package's :mod:`vae_from_scratch.distributions` (2.1, 2.3) and
:func:`_kl_by_quadrature` here (2.2).
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions
from vae_from_scratch.checks.core import Case, Checker

# -- references ------------------------------------------------------------------------------


def _kl_univariate(mu_q, log_var_q, mu_p, log_var_p):
    """KL( N(mu_q, exp(log_var_q)) || N(mu_p, exp(log_var_p)) ), element by element.

    The arguments broadcast against each other; the result has their broadcast shape.
    """
    args = [np.asarray(a, dtype=np.float64)[..., None]
            for a in (mu_q, log_var_q, mu_p, log_var_p)]
    return distributions.kl_diag_gaussians(*args)


def _kl_diag_standard_normal(mu, log_var):
    """KL( N(mu, diag(exp(log_var))) || N(0, I) ): (N, L) -> (N,)."""
    return distributions.kl_standard_normal(mu, log_var)


def _kl_by_quadrature(log_q, log_p, x):
    """KL(q || p) = integral of q (log q - log p) by the trapezoid rule on the grid x.

    log_q, log_p: (..., G) log-densities at the G points of x (ascending); they broadcast
    against each other. Returns (...).
    """
    log_q, log_p, x = np.asarray(log_q), np.asarray(log_p), np.asarray(x)
    f = np.exp(log_q) * (log_q - log_p)
    return np.sum(0.5 * (f[..., 1:] + f[..., :-1]) * np.diff(x), axis=-1)


# -- the checkers ------------------------------------------------------------------------------

kl_univariate = Checker(
    "2.1",
    reference=_kl_univariate,
    cases=[
        Case(0.0, 0.0, 0.0, 0.0),  # the same Gaussian: 0
        Case(1.0, 0.0, 0.0, 0.0),  # a shifted mean only
        Case(0.0, np.log(4.0), 0.0, 0.0),  # a larger variance only
        Case(np.array([0.5, -1.0, 2.0]), np.array([0.2, -0.3, 1.0]),
             np.array([0.0, 1.0, -0.5]), np.array([0.0, 0.5, -1.0])),
        # broadcasting: three q's against one p
        Case(np.array([0.0, 1.0, -2.0]), np.array([-1.0, 0.0, 1.0]), 0.5, np.log(2.0)),
    ],
)

kl_diag_standard_normal = Checker(
    "2.3",
    reference=_kl_diag_standard_normal,
    cases=[
        Case(np.zeros((2, 3)), np.zeros((2, 3))),  # q = p: 0 for each row
        Case(np.array([[0.5, -1.0, 0.0], [2.0, 0.1, -0.3]]),
             np.array([[0.0, 0.4, -1.2], [-0.5, 0.0, 1.5]])),
        Case(np.array([[1.5], [-0.2], [0.0], [0.7]]),
             np.array([[-2.0], [0.3], [1.0], [0.0]])),  # one latent dimension
    ],
    sizes={"L": "mu.shape[-1]"},
)


def _grid_case(xs, mu_q, var_q, mu_p, var_p):
    x = np.asarray(xs, dtype=np.float64)

    def log_normal(mu, var):
        return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)

    return np.round(log_normal(mu_q, var_q), 4), np.round(log_normal(mu_p, var_p), 4), x


_xs = [-1.0, -0.5, 0.0, 0.25, 1.0]  # uneven spacing
_lq1, _lp1, _x1 = _grid_case(_xs, 0.0, 1.0, 0.5, 2.0)
_lq2, _lp2, _ = _grid_case(_xs, -0.3, 0.5, 0.5, 2.0)
# A grid out to +-40, where q = exp(log q) underflows to 0 while p does not.
_lq3, _lp3, _x3 = _grid_case([-40.0, -1.0, 0.0, 1.0, 40.0], 0.0, 1.0, 0.5, 2.0)

kl_by_quadrature = Checker(
    "2.2",
    reference=_kl_by_quadrature,
    cases=[
        Case(_lq1, _lp1, _x1),
        Case(np.zeros(3), np.zeros(3), np.array([0.0, 0.5, 1.0])),  # q = p: 0
        Case(np.stack([_lq1, _lq2]), np.stack([_lp1, _lp2]), _x1),  # two at once, (2, G)
        Case(np.stack([_lq1, _lq2]), _lp1, _x1),  # log_p (G,) broadcasts against (2, G)
        Case(_lp1, np.stack([_lq1, _lq2]), _x1),  # and the other way round
        Case(_lq3, _lp3, _x3).strict(
            "a grid out to 40 standard deviations, where q = exp(log q) underflows to 0: "
            "work with the log-densities, never log(q)"),
    ],
)
