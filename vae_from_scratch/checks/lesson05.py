"""Checks for lesson 05, training a VAE on MNIST (``solutions/05_training_mnist.ipynb``).

* Exercise 5.1: ``adam_update(p, g, m, v, t, lr, beta1, beta2, eps)`` - one Adam step for one
  array, compared with ``optim.Adam``.
* Exercise 5.2: ``train_step(vae, optimizer, x, rng)`` - draw the noise, take the loss and
  its gradients, update the parameters; compared with ``train.NumpyBackend.step``'s recipe.
* Exercise 5.3: ``kl_monte_carlo(mu, log_var, eps)`` - the one-sample estimate of the KL to
  N(0, I), log q(z|x) - log p(z) at z = mu + std * eps.
* Exercise 5.4: ``active_units(mu, threshold)`` - how many latent dimensions' posterior means
  vary across the data (as ``evaluate.active_units``, from the means).
* Exercise 5.5 is a written answer.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.optim import Adam
from vae_from_scratch.vae import VAE


def _adam_update(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step for one parameter array, by ``optim.Adam``.

    p, g, m, v: arrays of one shape (parameter, gradient, first and second moments before
    the step); t: the number of this step, 1 for the first. Returns new (p, m, v); the
    inputs are left unchanged.
    """
    p = np.array(p, dtype=np.float64)
    opt = Adam({"p": p}, lr=lr, betas=(beta1, beta2), eps=eps)
    opt.m["p"][...] = m
    opt.v["p"][...] = v
    opt.t = t - 1
    opt.step({"p": np.asarray(g, dtype=np.float64)})
    return p, opt.m["p"].copy(), opt.v["p"].copy()


def _train_step(vae, optimizer, x, rng):
    """One training step: eps ~ N(0, I) of shape (N, L) drawn from ``rng``, the loss and
    gradients at that noise, one optimizer step. Returns the LossTerms of the batch."""
    eps = rng.standard_normal((len(x), vae.latent_dim)).astype(vae.dtype)
    terms, grads = vae.loss_and_grads(x, eps)
    optimizer.step(grads)
    return terms


def _kl_monte_carlo(mu, log_var, eps):
    """One-sample estimate of KL(N(mu, diag exp(log_var)) || N(0, I)) per row: (N, L) -> (N,).

    z = mu + exp(log_var / 2) * eps; returns log q(z) - log p(z).
    """
    z = mu + np.exp(0.5 * log_var) * eps
    return dist.gaussian_log_density(z, mu, log_var) - dist.gaussian_log_density(z, 0.0, 0.0)


def _active_units(mu, threshold=0.01):
    """mu (N, L) posterior means -> the number of columns whose variance over the N rows
    exceeds ``threshold`` (an int)."""
    return int(np.sum(np.var(np.asarray(mu, dtype=np.float64), axis=0) > threshold))


# A tiny float64 VAE and batch on which to run three training steps.
_X_STEP = np.round(np.random.default_rng(5).uniform(0, 1, (4, 6)), 2)


def _run_steps(train_step, seed, steps=3, lr=0.05):
    """Build a fresh tiny VAE and Adam, run ``train_step`` ``steps`` times on one batch with
    ``np.random.default_rng(seed)`` and return what came of it: the loss, reconstruction and
    KL of each step, and every parameter after the steps (flattened into one array)."""
    vae = VAE(6, (5,), 2, seed=3, dtype=np.float64)
    optimizer = Adam(vae.params, lr=lr)
    rng = np.random.default_rng(seed)
    terms = [train_step(vae, optimizer, _X_STEP.copy(), rng) for _ in range(steps)]
    return {
        "loss": np.array([t.loss for t in terms]),
        "recon": np.array([t.recon for t in terms]),
        "kl": np.array([t.kl for t in terms]),
        "parameters after the steps": np.concatenate([p.ravel() for p in vae.params.values()]),
    }


def _r(a, decimals=2):
    return np.round(a, decimals) + 0.0


_rng = np.random.default_rng(50)

adam_update = Checker(
    "5.1",
    reference=_adam_update,
    cases=[
        # The first step: m and v start at zero.
        Case(np.array([0.5, -1.0, 2.0]), np.array([0.1, -0.2, 0.0]), np.zeros(3), np.zeros(3), 1),
        # A later step with moments already built up, and non-default settings.
        Case(
            _r(_rng.normal(0, 1, (2, 3))),
            _r(_rng.normal(0, 1, (2, 3))),
            _r(_rng.normal(0, 0.1, (2, 3))),
            _r(_rng.uniform(0, 0.1, (2, 3))),
            7,
            lr=0.01,
            beta1=0.8,
            beta2=0.99,
        ),
        # A large eps, so that where it goes (outside the square root) matters.
        Case(np.array([1.0, -2.0]), np.array([0.02, -0.05]), np.array([0.01, 0.0]),
             np.array([1e-4, 2e-4]), 2, lr=0.1, eps=0.01),
    ],
    rtol=1e-7,
    atol=1e-10,
    outputs=("p", "m", "v"),
)

train_step = Checker(
    "5.2",
    reference=_train_step,
    cases=[Case(seed=0), Case(seed=1)],
    call=lambda fn, seed: _run_steps(fn, seed),
    rtol=1e-7,
    atol=1e-10,
)

kl_monte_carlo = Checker(
    "5.3",
    reference=_kl_monte_carlo,
    cases=[
        Case(np.array([[0.0]]), np.array([[0.0]]), np.array([[1.5]])),
        Case(_r(_rng.normal(0, 1, (3, 2))), _r(_rng.normal(0, 0.5, (3, 2))),
             _r(_rng.normal(0, 1, (3, 2)))),
    ],
    sizes={"L": "mu.shape[-1]"},
)

active_units = Checker(
    "5.4",
    reference=_active_units,
    cases=[
        # Columns 1 and 3 barely move: two active units.
        Case(np.array([[0.5, 0.00, -1.0, 0.01],
                       [-0.5, 0.01, 1.0, 0.00],
                       [1.0, -0.01, 0.5, 0.01],
                       [-1.0, 0.00, -0.5, 0.00]])),
        Case(np.array([[0.2, 0.0, 3.0], [0.0, 0.1, 3.0], [-0.2, -0.1, 3.0]]), threshold=0.005),
        # Column 1 has variance 0.0064 (inactive at 0.01) but standard deviation 0.08: a
        # threshold on the standard deviation counts it.
        Case(np.array([[1.0, 0.08, 0.0], [-1.0, -0.08, 0.0],
                       [0.5, 0.08, 0.001], [-0.5, -0.08, 0.0]])),
    ],
)
