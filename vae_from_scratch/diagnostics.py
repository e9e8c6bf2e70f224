"""Where a VAE's prior and its encoder disagree: the gap fraction and the prior's holes.

Lesson 07 derives and uses these. A VAE generates by drawing z from the prior p(z) and
decoding it; it was trained on codes drawn from the encoder, whose average over the
training set is the *aggregate posterior*

    q(z) = (1/N) sum_n q(z | x_n) = (1/N) sum_n N(z; mu_n, diag exp(log_var_n)).

Where p(z) has mass and q(z) has almost none (a "hole"), the decoder was never trained,
and what it produces there need not look like the data. For data with two separated modes
the holes are what put generated samples in the empty gap between them.

    x_gen = generate(vae, 10_000, seed=1)                 # (n, D), observation noise included
    gap_fraction(x_gen, low=-1.0, high=1.0)               # share of samples in the gap
    prior_hole_mass(vae, x_train, n=5_000, seed=2)        # share of prior samples in a hole
"""

from __future__ import annotations

import math

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.vae import VAE

__all__ = [
    "gap_fraction",
    "generate",
    "prior_log_density",
    "aggregate_posterior_log_density",
    "prior_holes",
    "prior_hole_mass",
]


def gap_fraction(x: np.ndarray, low: float = -1.0, high: float = 1.0, axis: int = 0) -> float:
    """The share of the rows of ``x`` whose coordinate ``axis`` lies strictly between
    ``low`` and ``high``.

    x: (N, D) samples (a 1-D array is read as (N, 1)). Returns a float in [0, 1].
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must have shape (N, D) with N >= 1, got {x.shape}")
    if not low < high:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    values = x[:, axis]
    return float(np.mean((values > low) & (values < high)))


def generate(vae: VAE, n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Draw ``n`` new data points from the model: z ~ p(z), then x ~ p(x | z).

    Unlike ``vae.sample`` (which returns the decoder's means), the observation noise is
    included: the likelihood draws the pixels (a Gaussian decoder adds N(0, obs_var) noise
    to the mean, a Bernoulli decoder draws 0/1 pixels). Returns (n, D) in float64.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    z = vae.sample_prior(int(n), rng)
    return vae.likelihood.sample(vae.params, vae.decode(z), rng)


def prior_log_density(vae: VAE, z: np.ndarray) -> np.ndarray:
    """log p(z) under the model's prior, in float64: (M, L) -> (M,)."""
    z = np.asarray(z, dtype=np.float64)
    params = {name: vae.params[name].astype(np.float64) for name in vae.prior.param_shapes()}
    return vae.prior.log_prob(params, z)


def aggregate_posterior_log_density(z: np.ndarray, mu: np.ndarray, log_var: np.ndarray,
                                    batch_size: int = 1024) -> np.ndarray:
    """log q(z) for the aggregate posterior q(z) = (1/N) sum_n N(z; mu_n, diag exp(log_var_n)).

    z: (M, L) points; mu, log_var: (N, L) the encoder's outputs for N data points.
    Returns (M,) = logsumexp_n log N(z_m; mu_n, var_n) - log N, computed in float64 and in
    batches of ``batch_size`` points so that memory stays at batch_size * N * L numbers.
    """
    z = np.asarray(z, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    log_var = np.asarray(log_var, dtype=np.float64)
    if z.ndim != 2 or mu.ndim != 2 or mu.shape != log_var.shape or z.shape[1] != mu.shape[1]:
        raise ValueError(
            f"need z (M, L) and mu, log_var (N, L); got {z.shape}, {mu.shape}, {log_var.shape}"
        )
    inv_var = np.exp(-log_var)  # (N, L)
    const = -0.5 * np.sum(dist.LOG_2PI + log_var, axis=1)  # (N,)
    out = np.empty(len(z))
    for start in range(0, len(z), batch_size):
        zb = z[start : start + batch_size]
        diff = zb[:, None, :] - mu[None, :, :]  # (B, N, L)
        log_comp = const[None, :] - 0.5 * np.sum(diff * diff * inv_var[None], axis=2)
        out[start : start + batch_size] = dist.logsumexp(log_comp, axis=1)
    return out - math.log(len(mu))


def prior_holes(vae: VAE, x: np.ndarray, n: int = 5000, seed: int | np.random.Generator = 0,
                ratio: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` codes z ~ p(z) and mark those that fall in a hole of the aggregate
    posterior of the data ``x`` (N, D): where q(z) < ratio * p(z).

    Returns (z (n, L) float64, in_hole (n,) bool).
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    z = vae.sample_prior(int(n), rng).astype(np.float64)
    mu, log_var = vae.encode(x)
    log_q = aggregate_posterior_log_density(z, mu, log_var)
    log_p = prior_log_density(vae, z)
    return z, log_q < log_p + math.log(ratio)


def prior_hole_mass(vae: VAE, x: np.ndarray, n: int = 5000,
                    seed: int | np.random.Generator = 0, ratio: float = 0.1) -> float:

    """The prior's mass in holes of the aggregate posterior: the share of ``n`` codes
    z ~ p(z) at which the aggregate posterior of the data ``x`` (N, D) has less than
    ``ratio`` times the prior's density, q(z) < ratio * p(z) (see :func:`prior_holes`).

    0 means the encoder's codes cover everywhere the prior samples from; a standard normal
    prior whose mass is spread over the space between two clusters of codes scores high.
    Returns a float in [0, 1].
    """
    _, in_hole = prior_holes(vae, x, n=n, seed=seed, ratio=ratio)
    return float(np.mean(in_hole))
