"""Checks for lesson 07, when a unimodal prior fails (``solutions/07_bimodal_prior.ipynb``).

* Exercise 7.1: ``aggregate_posterior_log_density(z, mu, log_var)`` - log of the average of
  the N posteriors N(mu_n, diag exp(log_var_n)) at M points, as ``diagnostics``.
* Exercise 7.2: ``mixture_log_density(z, means, log_vars, logits)`` - log p(z) under a
  mixture of diagonal Gaussians, as ``distributions``.
* Exercise 7.3: ``mixture_log_density_backward(dout, z, means, log_vars, logits)`` - its
  gradients in z and in the three parameter arrays, as ``distributions`` (the tests also
  check the reference against central differences).
* Exercise 7.4 is a written answer.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import diagnostics
from vae_from_scratch import distributions as dist
from vae_from_scratch.checks.core import Case, Checker


def _aggregate_posterior_log_density(z, mu, log_var):
    """z (M, L); mu, log_var (N, L) -> (M,): log (1/N) sum_n N(z_m; mu_n, diag exp(log_var_n))."""
    return diagnostics.aggregate_posterior_log_density(z, mu, log_var)


def _mixture_log_density(z, means, log_vars, logits):
    """z (N, L); means, log_vars (K, L); logits (K,) -> (N,):
    log sum_k softmax(logits)_k N(z_n; means_k, diag exp(log_vars_k))."""
    return dist.mixture_log_density(z, means, log_vars, logits)


def _mixture_log_density_backward(dout, z, means, log_vars, logits):
    """dout (N,) -> (dz (N, L), dmeans (K, L), dlog_vars (K, L), dlogits (K,))."""
    return dist.mixture_log_density_backward(dout, z, means, log_vars, logits)


def _r(a, decimals=2):
    return np.round(a, decimals) + 0.0


_rng = np.random.default_rng(70)

# A mixture of three components in two dimensions, and four points.
_Z = _r(_rng.normal(0, 1.5, (4, 2)))
_MEANS = _r(_rng.normal(0, 1.5, (3, 2)))
_LOG_VARS = _r(_rng.normal(0, 0.4, (3, 2)))
_LOGITS = _r(_rng.normal(0, 1, 3))
_DOUT = _r(_rng.normal(0, 1, 4))

aggregate_posterior_log_density = Checker(
    "7.1",
    reference=_aggregate_posterior_log_density,
    cases=[
        # One posterior: q is that Gaussian.
        Case(np.array([[0.0], [1.0], [-2.0]]), np.array([[0.5]]), np.array([[-0.5]])),
        # Three posteriors in two dimensions, one point so far from all of them that a
        # direct log(mean(exp(...))) underflows to -inf.
        Case(np.vstack([_Z[:2], [[40.0, -40.0]]]), _MEANS, _LOG_VARS).strict(
            "a point so far from every posterior that each density underflows to 0"),
    ],
    sizes={"N": "mu.shape[0]"},
)

mixture_log_density = Checker(
    "7.2",
    reference=_mixture_log_density,
    cases=[
        # One component with logit 0: the plain Gaussian log-density.
        Case(np.array([[0.5], [-1.0]]), np.array([[0.0]]), np.array([[0.0]]), np.array([0.0])),
        # Two equal components at -2 and 2 in 1-D.
        Case(np.array([[0.0], [2.0], [-3.0]]), np.array([[-2.0], [2.0]]),
             np.array([[-1.0], [-1.0]]), np.array([0.0, 0.0])),
        Case(_Z, _MEANS, _LOG_VARS, _LOGITS),
        # Far in a tail: a naive log(sum(exp(...))) underflows to -inf here.
        Case(np.array([[40.0, -40.0]]), _MEANS, _LOG_VARS, _LOGITS).strict(
            "a point so far in the tail that every component's density underflows to 0"),
    ],
)

mixture_log_density_backward = Checker(
    "7.3",
    reference=_mixture_log_density_backward,
    cases=[
        Case(np.array([1.0, 1.0]), np.array([[0.5], [-1.0]]), np.array([[0.0]]),
             np.array([[0.0]]), np.array([0.0])),
        Case(np.array([1.0, -0.5, 2.0]), np.array([[0.0], [2.0], [-3.0]]),
             np.array([[-2.0], [2.0]]), np.array([[-1.0], [0.5]]), np.array([0.3, -0.3])),
        Case(_DOUT, _Z, _MEANS, _LOG_VARS, _LOGITS),
        # Far in a tail, the responsibilities are 0/0 unless the maximum is subtracted first.
        Case(np.array([1.0, 0.5]), np.array([[40.0, -40.0], [0.5, 0.5]]), _MEANS, _LOG_VARS,
             _LOGITS).strict(
            "a point so far in the tail that every component's density underflows to 0"),
    ],
    outputs=("dz", "dmeans", "dlog_vars", "dlogits"),
)
