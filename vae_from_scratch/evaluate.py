"""Evaluating a trained VAE: the test negative ELBO and the importance-weighted bound.

Both are in nats per example. For any q, -log p(x) <= IWAE_K <= ... <= IWAE_1 = -ELBO,
where IWAE_K = -log (1/K) sum_k p(x, z_k) / q(z_k | x) with z_k ~ q(z|x) (lesson 03).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from vae_from_scratch.distributions import logsumexp
from vae_from_scratch.vae import VAE

#: Rows (examples x k samples) per batch of :func:`iwae_nll`, by architecture, so that one
#: batch's forward pass stays within a few hundred MB. The MLP's arrays take about 22 KB a
#: row (10,000 rows: 220 MiB); the conv VAE's about 350 KB (the im2col columns of its two
#: wide layers are 100 KB a row each), so 1,000 rows take 350 MiB, where 10,000 took 3 GiB and
#: twice the time (``python benchmarks/iwae_batches.py``). The batching does not change the
#: estimate: the noise is drawn in the same order whatever the batch size.
IWAE_ROWS = {"mlp": 10_000, "conv": 1_000}


def batches(x: Any, y: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """(x, y) in consecutive slices of ``batch_size`` rows; y may be None (no labels)."""
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], None if y is None else y[start : start + batch_size]


def negative_elbo(vae: VAE, x: np.ndarray, seed: int = 0, batch_size: int = 1000,
                  y: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean over examples of recon + KL (beta = 1, whatever the model trains with), using
    one noise draw per example from ``seed``. ``y``: labels of a conditional model.
    Returns (nelbo, recon, kl) as floats."""
    rng = np.random.default_rng(seed)
    recon_sum = kl_sum = 0.0
    for xb, yb in batches(x, y, batch_size):
        eps = rng.standard_normal(vae.bottleneck.noise_shape(len(xb))).astype(vae.dtype)
        recon, kl = vae.elbo_terms(xb, eps, yb)
        recon_sum += float(np.sum(recon, dtype=np.float64))
        kl_sum += float(np.sum(kl, dtype=np.float64))
    n = len(x)
    return (recon_sum + kl_sum) / n, recon_sum / n, kl_sum / n


def log_importance_weights(vae: VAE, x: np.ndarray, k: int, rng: np.random.Generator,
                           y: np.ndarray | None = None) -> np.ndarray:
    """log p(x, z_k) - log q(z_k | x) for k samples per example: x (N, D) -> (N, k).

    Each is -(recon + Monte Carlo KL) at one reparameterized sample z_k. ``y``: labels of
    a conditional model (then the weights are those of p(x | y)).
    """
    n = len(x)
    x_rep = np.repeat(x, k, axis=0)  # row i*k + j is example i, sample j
    y_rep = None if y is None else np.repeat(y, k, axis=0)
    eps = rng.standard_normal(vae.bottleneck.noise_shape(n * k)).astype(vae.dtype)
    recon, kl = vae.elbo_terms(x_rep, eps, y_rep, kl="monte_carlo")
    return -(recon + kl).astype(np.float64).reshape(n, k)


def iwae_nll(vae: VAE, x: np.ndarray, k: int = 100, seed: int = 0,
             batch_size: int | None = None, y: np.ndarray | None = None) -> float:
    """Importance-weighted estimate of -log p(x) (of -log p(x | y) for a conditional
    model with labels ``y``), mean over examples, with k samples.

    k=1 is the single-sample negative ELBO (with the Monte Carlo KL); larger k is a
    tighter bound. By default a batch holds ``IWAE_ROWS[architecture] // k`` examples
    (at least one), k rows each: about 10,000 rows for the MLP, 1,000 for the conv VAE.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer (samples per example), got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    batch_size = batch_size or max(1, IWAE_ROWS[vae.config.architecture] // k)
    total = 0.0
    for xb, yb in batches(x, y, batch_size):
        log_w = log_importance_weights(vae, xb, k, rng, yb)
        total += float(np.sum(logsumexp(log_w, axis=1) - np.log(k)))
    return -total / len(x)


def active_units(vae: VAE, x: np.ndarray, threshold: float = 0.01,
                 y: np.ndarray | None = None) -> int:

    """Number of latent dimensions whose posterior mean varies across the data:
    Cov_x(E_q[z_j]) > threshold (Burda et al., 2016). A collapsed unit has mu ~ const."""
    mu, _ = vae.encode(x, y)
    return int(np.sum(np.var(mu.astype(np.float64), axis=0) > threshold))
