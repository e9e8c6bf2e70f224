"""Checks for lesson 04, the reparameterization trick and backprop by hand
(``solutions/04_reparameterization_backprop.ipynb``).

* Exercise 4.1: ``score_function_gradient(f, mu, log_var, eps)`` - the score-function
  estimate of the gradient of E_q[f(z)] in (mu, log_var).
* Exercise 4.2: ``reparameterize_backward(dz, cache)`` - as ``distributions``.
* Exercise 4.3: ``kl_standard_normal_backward(dkl, mu, log_var)`` - as ``distributions``.
* Exercise 4.4: ``bernoulli_log_likelihood_backward(dout, x, logits)`` - as ``distributions``.
* Exercise 4.5: ``linear_backward(dout, cache)`` - ``layers.Linear.backward``.
* Exercise 4.6: ``vae_loss_and_grads(params, x, eps)`` - the whole backward pass of a VAE with
  one ReLU hidden layer each side, a Bernoulli decoder and the analytic KL; compared with
  ``VAE.loss_and_grads``.
* Exercise 4.7 is a written answer.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.layers import Linear
from vae_from_scratch.vae import VAE


def _score_function_gradient(f, mu, log_var, eps):
    """Score-function (REINFORCE) estimate of d/d(mu, log_var) E_q[f(z)], q = N(mu, diag var).

    mu, log_var (L,); eps (S, L) standard normal noise, z_s = mu + exp(log_var / 2) eps_s;
    f maps (S, L) -> (S,). Returns (dmu (L,), dlog_var (L,)), each the mean over the S
    samples of f(z_s) times the score: d log q / d mu = eps / std and
    d log q / d log_var = (eps^2 - 1) / 2.
    """
    std = np.exp(0.5 * log_var)
    fz = f(mu + std * eps)[:, None]
    return np.mean(fz * eps / std, axis=0), np.mean(fz * 0.5 * (eps * eps - 1.0), axis=0)


def sum_of_squares(z: np.ndarray) -> np.ndarray:
    """f(z) = sum_j z_j^2, (S, L) -> (S,)."""
    return np.sum(z * z, axis=-1)


def sine_of_sum(z: np.ndarray) -> np.ndarray:

    """f(z) = sin(sum_j z_j), (S, L) -> (S,)."""
    return np.sin(np.sum(z, axis=-1))


def _vae_loss_and_grads(params, x, eps):
    """Loss and gradients of the VAE with one ReLU hidden layer on each side, a Bernoulli
    decoder and the analytic KL, by ``VAE.loss_and_grads``: returns (loss float, grads)."""
    d, h = params["enc.0.W"].shape
    vae = VAE(d, (h,), params["enc.mu.W"].shape[1], activation="relu", likelihood="bernoulli",
              kl="analytic", dtype=np.float64, params=params)
    terms, grads = vae.loss_and_grads(x, eps)
    return terms.loss, grads


def _r(a, decimals=2):
    return np.round(a, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0, so cases print cleanly


_rng = np.random.default_rng(4)
_MU, _LV = _r(_rng.normal(0, 1, (3, 2))), _r(_rng.normal(0, 0.5, (3, 2)))
_EPS = _r(_rng.normal(0, 1, (3, 2)))
_DZ = _r(_rng.normal(0, 1, (3, 2)))
_X = _r(_rng.uniform(0, 1, (2, 4)))
_X[0, :2] = [0.0, 1.0]
_LOGITS = _r(_rng.normal(0, 2, (2, 4)))
_LIN_X, _LIN_W = _r(_rng.normal(0, 1, (3, 4))), _r(_rng.normal(0, 1, (4, 2)))
_LIN_DOUT = _r(_rng.normal(0, 1, (3, 2)))

score_function_gradient = Checker(
    "4.1",
    reference=_score_function_gradient,
    cases=[
        Case(sum_of_squares, np.array([1.0]), np.array([np.log(0.5)]),
             np.array([[0.3], [-1.2], [0.8], [2.0]])),
        Case(sine_of_sum, _MU[0], _LV[0], _r(_rng.normal(0, 1, (5, 2)))),
        Case(sum_of_squares, np.array([0.5, -1.0, 0.0]), np.array([0.0, 0.4, -0.6]),
             _r(_rng.normal(0, 1, (6, 3)))),
    ],
    outputs=("dmu", "dlog_var"),
    sizes={"S": "eps.shape[0]"},
)

reparameterize_backward = Checker(
    "4.2",
    reference=dist.reparameterize_backward,
    cases=[
        Case(_DZ, (_r(np.exp(0.5 * _LV), 4), _EPS)),
        Case(np.array([[1.0, -2.0, 0.5]]), (np.array([[0.5, 1.0, 2.0]]),
                                             np.array([[1.5, -0.5, 0.0]]))),
    ],
    outputs=("dmu", "dlog_var"),
)

kl_standard_normal_backward = Checker(
    "4.3",
    reference=dist.kl_standard_normal_backward,
    cases=[
        Case(np.array([1.0, 0.5, -2.0]), _MU, _LV),
        Case(np.array([0.25]), np.array([[0.0, 1.0, -1.0, 2.0]]), np.array([[0.0, 0.0, 1.0,
                                                                              -1.0]])),
    ],
    outputs=("dmu", "dlog_var"),
)

bernoulli_log_likelihood_backward = Checker(
    "4.4",
    reference=dist.bernoulli_log_likelihood_backward,
    cases=[
        Case(np.array([1.0, -0.5]), _X, _LOGITS),
        Case(np.array([1.0]), np.array([[1.0, 0.0, 1.0]]),
             np.array([[800.0, 800.0, -800.0]])).strict(
            "logits of +-800, where exp(-logits) overflows: the sigmoid must not"),
    ],
)

linear_backward = Checker(
    "4.5",
    name="linear_backward",
    reference=Linear.backward,
    cases=[
        Case(_LIN_DOUT, (_LIN_X, _LIN_W)),
        Case(np.array([[1.0, 2.0, 3.0]]), (np.array([[1.0, -1.0]]),
                                          np.array([[0.5, 0.0, 1.0], [2.0, 1.0, -1.0]]))),
    ],
    outputs=("dx", "dW", "db"),
    sizes={"N": "dout.shape[0]"},
)


def _vae_case(seed, d, h, latent, n):
    rng = np.random.default_rng(seed)
    params = VAE(d, (h,), latent, seed=seed, dtype=np.float64).params
    x = _r(rng.uniform(0, 1, (n, d)))
    x[x < 0.3] = 0.0  # some exact zeros, as in MNIST
    eps = _r(rng.normal(0, 1, (n, latent)))
    return Case(params, x, eps)


#: The gradients in the order backpropagation computes them: the output layer first.
BACKPROP_ORDER = [
    "dec.out.W", "dec.out.b", "dec.0.W", "dec.0.b",
    "enc.mu.W", "enc.mu.b", "enc.log_var.W", "enc.log_var.b",
    "enc.0.W", "enc.0.b",
]

vae_loss_and_grads = Checker(
    "4.6",
    name="vae_loss_and_grads",
    reference=_vae_loss_and_grads,
    cases=[_vae_case(0, 5, 4, 2, 3), _vae_case(1, 4, 3, 3, 2)],
    rtol=1e-6,
    atol=1e-9,
    outputs=("loss", "grads"),
    key_order=BACKPROP_ORDER,
    key_order_note="the first in backpropagation order, output layer first",
    sizes={"N": "x.shape[0]"},
)
