"""Checks for lesson 03, the ELBO (``solutions/03_elbo.ipynb``).

The model is the linear-Gaussian one of :mod:`vae_from_scratch.linear_gaussian`:
z ~ N(0, I_L), x | z ~ N(W z + b, sigma2 I_D).

* Exercise 3.1: ``posterior(x, W, b, sigma2)`` - the exact posterior, (m (N, L), S (L, L)).
* Exercise 3.2: ``log_marginal(x, W, b, sigma2)`` - the exact log p(x), (N,).
* Exercise 3.3: ``log_importance_weights(x, W, b, sigma2, mu, log_var, eps)`` - log p(x, z_k)
  - log q(z_k | x) at reparameterized samples, (N, K).
* Exercise 3.4: ``iwae_bound(log_weights)`` - log of the mean weight over the last axis,
  computed stably.
* Exercise 3.5 is a written answer.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import linear_gaussian as lg
from vae_from_scratch.checks.core import Case, Checker


def _small_model(seed, data_dim, latent_dim, n):
    """A small model and a few observations drawn from it (rounded, so they print well)."""
    rng = np.random.default_rng(seed)
    W = np.round(rng.standard_normal((data_dim, latent_dim)), 2) + 0.0
    b = np.round(rng.standard_normal(data_dim), 2) + 0.0
    x = np.round(rng.standard_normal((n, data_dim)) * 1.5 + b, 2) + 0.0  # + 0.0: no "-0."
    return x, W, b


_X1, _W1, _B1 = _small_model(0, 4, 2, 3)
_X2, _W2, _B2 = _small_model(1, 3, 3, 2)
_X3, _W3, _B3 = _small_model(2, 2, 1, 2)
# Three models, from square to a one-dimensional latent; a checker copies each case
# before every call, so two exercises can share them.
_MODEL_CASES = [
    Case(_X1, _W1, _B1, 0.5),
    Case(_X2, _W2, _B2, sigma2=2.0),
    Case(_X3, _W3, _B3, sigma2=0.1),
]

posterior = Checker(
    "3.1",
    reference=lg.posterior,
    cases=_MODEL_CASES,
    outputs=("m", "S"),
    rtol=1e-6,
    atol=1e-9,
)

log_marginal = Checker(
    "3.2",
    reference=lg.log_marginal,
    cases=[
        *_MODEL_CASES,
        Case(_X1, _W1, _B1, sigma2=1e100).strict(
            "a noise variance so large that det C (about 1e400) overflows: use slogdet"),
    ],
    rtol=1e-6,
    atol=1e-9,
)


def _q_and_eps(seed, n, k, latent_dim):
    rng = np.random.default_rng(seed)
    mu = np.round(rng.standard_normal((n, latent_dim)), 2)
    log_var = np.round(0.5 * rng.standard_normal((n, latent_dim)), 2)
    eps = np.round(rng.standard_normal((n, k, latent_dim)), 2)
    return mu, log_var, eps


_Q1 = _q_and_eps(10, 3, 2, 2)
_Q2 = _q_and_eps(11, 2, 3, 3)

log_importance_weights = Checker(
    "3.3",
    reference=lg.log_importance_weights,
    cases=[
        Case(_X1, _W1, _B1, 0.5, *_Q1),
        Case(_X2, _W2, _B2, 2.0, *_Q2),
    ],
    rtol=1e-6,
    atol=1e-9,
)

iwae_bound = Checker(
    "3.4",
    reference=lg.iwae_bound,
    cases=[
        Case(np.log(np.array([[1.0, 3.0], [0.5, 0.5]]))),
        Case(np.array([[-1.2, -0.3, -2.5, -0.9], [0.4, 0.1, -0.6, 0.0]])),
        Case(np.array([-3.0, -1.0, -2.0])),  # one example: (K,) -> a scalar
        # weights as small as those of 784 pixels: exp underflows to 0 without the max shift
        Case(np.array([[-1000.0, -1001.0, -1002.0], [-850.0, -850.0, -850.0]])).strict(
            "log-weights of about -1000, whose exp underflows to 0"),
    ],
    sizes={"K": "log_weights.shape[-1]"},
    rtol=1e-9,
    atol=1e-9,
)
