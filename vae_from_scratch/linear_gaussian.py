"""The linear-Gaussian latent model: a VAE's setting where everything is exact (lesson 03).

    z ~ N(0, I_L),      x | z ~ N(W z + b, sigma2 I_D)

with ``W`` (D, L), ``b`` (D,) and a noise variance ``sigma2 > 0``. Lesson 03 derives

* the marginal  p(x) = N(x; b, C) with C = W W^T + sigma2 I_D;
* the posterior p(z | x) = N(m, S) with S = (I_L + W^T W / sigma2)^-1 and
  m = S W^T (x - b) / sigma2 (S does not depend on x);
* the ELBO of a Gaussian q(z) = N(mu, V) in closed form, and
  log p(x) - ELBO(q) = KL(q || p(z | x)) for every q;
* the Monte Carlo ELBO and the importance-weighted bound (IWAE) from K samples of q.

Shapes: a batch ``x`` is (N, D); posterior means and q's means are (N, L); covariances are
(L, L) (shared by the batch) or (N, L, L). Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch.distributions import LOG_2PI, gaussian_log_density, logsumexp

__all__ = [
    "random_model",
    "sample",
    "log_marginal",
    "posterior",
    "log_joint",
    "gaussian_log_density_full",
    "kl_gaussians_full",
    "diag_cov",
    "elbo_gaussian",
    "best_diagonal_q",
    "log_importance_weights",
    "iwae_bound",
]


def _f64(*arrays):
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def random_model(data_dim: int, latent_dim: int, seed: int = 0,
                 scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A random model: W (D, L) with N(0, scale^2) entries and b (D,) with N(0, 1) entries."""
    rng = np.random.default_rng(seed)
    W = scale * rng.standard_normal((data_dim, latent_dim))
    b = rng.standard_normal(data_dim)
    return W, b


def sample(n: int, W: np.ndarray, b: np.ndarray, sigma2: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw n pairs from the model: returns z (n, L) and x (n, D)."""
    W, b = _f64(W, b)
    z = rng.standard_normal((n, W.shape[1]))
    x = z @ W.T + b + np.sqrt(sigma2) * rng.standard_normal((n, W.shape[0]))
    return z, x


def _logdet(cov):
    """log det of symmetric positive-definite matrices (..., L, L) -> (...,), by Cholesky
    (which also fails loudly when a matrix is not positive definite)."""
    chol = np.linalg.cholesky(cov)
    return 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def gaussian_log_density_full(z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(z; mean, cov) with a full covariance.

    z (..., L); mean broadcasts to (..., L); cov (L, L) or (..., L, L). Returns (...,).
    = -1/2 ( L log 2pi + log det cov + (z - mean)^T cov^-1 (z - mean) ).
    """
    z, mean, cov = _f64(z, mean, cov)
    diff = z - mean
    logdet = _logdet(cov)
    if cov.ndim == 2:  # one covariance for every row: solve all rows at once
        solved = np.linalg.solve(cov, diff.reshape(-1, diff.shape[-1]).T).T.reshape(diff.shape)
    else:
        solved = np.linalg.solve(cov, diff[..., None])[..., 0]
    maha = np.sum(diff * solved, axis=-1)
    return -0.5 * (diff.shape[-1] * LOG_2PI + logdet + maha)


def log_marginal(x: np.ndarray, W: np.ndarray, b: np.ndarray, sigma2: float) -> np.ndarray:
    """Exact log p(x) = log N(x; b, W W^T + sigma2 I).  x (N, D) -> (N,)."""
    x, W, b = _f64(x, W, b)
    cov = W @ W.T + sigma2 * np.eye(W.shape[0])
    return gaussian_log_density_full(x, b, cov)


def posterior(x: np.ndarray, W: np.ndarray, b: np.ndarray,
              sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """The exact posterior p(z | x) = N(m, S).  x (N, D) -> m (N, L), S (L, L).

    Precision Lambda = I + W^T W / sigma2, S = Lambda^-1, m = S W^T (x - b) / sigma2.
    """
    x, W, b = _f64(x, W, b)
    precision = np.eye(W.shape[1]) + W.T @ W / sigma2
    S = np.linalg.inv(precision)
    S = 0.5 * (S + S.T)  # exactly symmetric, for the Cholesky factorizations downstream
    m = (x - b) @ W @ S / sigma2  # rows of (S W^T (x_n - b)), S symmetric
    return m, S


def log_joint(x: np.ndarray, z: np.ndarray, W: np.ndarray, b: np.ndarray,
              sigma2: float) -> np.ndarray:
    """log p(x, z) = log N(x; W z + b, sigma2 I) + log N(z; 0, I).

    x (..., D) and z (..., L) broadcast against each other (e.g. x (N, 1, D) with
    z (N, K, L)); returns the broadcast shape without the last axis.
    """
    x, z, W, b = _f64(x, z, W, b)
    log_lik = gaussian_log_density(x, z @ W.T + b, np.log(sigma2))
    log_prior = gaussian_log_density(z, 0.0, 0.0)
    return log_lik + log_prior


def kl_gaussians_full(mu_q: np.ndarray, cov_q: np.ndarray, mu_p: np.ndarray,
                      cov_p: np.ndarray) -> np.ndarray:
    """KL( N(mu_q, cov_q) || N(mu_p, cov_p) ) with full covariances.

    Means (..., L), covariances (L, L) or (..., L, L), broadcasting. Returns (...,).
    = 1/2 ( tr(cov_p^-1 cov_q) + (mu_p - mu_q)^T cov_p^-1 (mu_p - mu_q) - L
            + log det cov_p - log det cov_q ).
    """
    mu_q, cov_q, mu_p, cov_p = _f64(mu_q, cov_q, mu_p, cov_p)
    L = mu_q.shape[-1]
    diff = mu_p - mu_q
    shape = np.broadcast_shapes(diff.shape[:-1], cov_q.shape[:-2], cov_p.shape[:-2])
    diff = np.broadcast_to(diff, (*shape, L))
    cov_q = np.broadcast_to(cov_q, (*shape, L, L))
    cov_p = np.broadcast_to(cov_p, (*shape, L, L))
    # one solve gives both cov_p^-1 cov_q (first L columns) and cov_p^-1 diff (the last)
    solved = np.linalg.solve(cov_p, np.concatenate([cov_q, diff[..., None]], axis=-1))
    trace = np.trace(solved[..., :L], axis1=-2, axis2=-1)
    maha = np.sum(diff * solved[..., L], axis=-1)
    return 0.5 * (trace + maha - L + _logdet(cov_p) - _logdet(cov_q))


def diag_cov(log_var: np.ndarray) -> np.ndarray:
    """Diagonal covariance matrices from log-variances: (..., L) -> (..., L, L)."""
    var = np.exp(np.asarray(log_var, dtype=np.float64))
    return var[..., None, :] * np.eye(var.shape[-1])


def elbo_gaussian(x: np.ndarray, W: np.ndarray, b: np.ndarray, sigma2: float, mu: np.ndarray,
                  cov: np.ndarray) -> np.ndarray:
    """The ELBO of q(z) = N(mu, cov) for each x, in closed form.  x (N, D), mu (N, L),
    cov (L, L) or (N, L, L) -> (N,).

    ELBO = E_q[log p(x | z)] + E_q[log p(z)] + H[q] with
      E_q[log p(x | z)] = -D/2 log(2 pi sigma2) - (|x - b - W mu|^2 + tr(W cov W^T)) / (2 sigma2)
      E_q[log p(z)]     = -L/2 log(2 pi) - (|mu|^2 + tr cov) / 2
      H[q]              =  L/2 (1 + log 2 pi) + 1/2 log det cov
    """
    x, W, b, mu, cov = _f64(x, W, b, mu, cov)
    D, L = W.shape
    resid = x - b - mu @ W.T
    tr_wcw = np.trace(W @ cov @ W.T, axis1=-2, axis2=-1)
    tr_cov = np.trace(cov, axis1=-2, axis2=-1)
    logdet = _logdet(cov)
    e_log_lik = -0.5 * D * (LOG_2PI + np.log(sigma2)) - (
        np.sum(resid * resid, axis=-1) + tr_wcw
    ) / (2.0 * sigma2)
    e_log_prior = -0.5 * L * LOG_2PI - 0.5 * (np.sum(mu * mu, axis=-1) + tr_cov)
    entropy = 0.5 * L * (1.0 + LOG_2PI) + 0.5 * logdet
    return e_log_lik + e_log_prior + entropy


def best_diagonal_q(x: np.ndarray, W: np.ndarray, b: np.ndarray,
                    sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal Gaussian closest to the posterior in KL(q || p(z|x)):
    mean m and variances 1 / Lambda_jj (Lambda the posterior precision).

    x (N, D) -> mu (N, L), log_var (N, L).
    """
    m, _ = posterior(x, W, b, sigma2)
    W = np.asarray(W, dtype=np.float64)
    precision_diag = 1.0 + np.sum(W * W, axis=0) / sigma2
    return m, np.broadcast_to(-np.log(precision_diag), m.shape).copy()


def log_importance_weights(x: np.ndarray, W: np.ndarray, b: np.ndarray, sigma2: float,
                           mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """log w_k = log p(x, z_k) - log q(z_k) at z_k = mu + exp(log_var / 2) * eps_k.

    x (N, D), mu and log_var (N, L) (a diagonal Gaussian q per example), eps (N, K, L)
    standard normal noise -> (N, K). Their mean over k is the Monte Carlo ELBO.
    """
    x, mu, log_var, eps = _f64(x, mu, log_var, eps)
    z = mu[:, None, :] + np.exp(0.5 * log_var)[:, None, :] * eps
    log_q = gaussian_log_density(z, mu[:, None, :], log_var[:, None, :])
    return log_joint(x[:, None, :], z, W, b, sigma2) - log_q


def iwae_bound(log_weights: np.ndarray) -> np.ndarray:

    """The importance-weighted bound log (1/K) sum_k w_k from log-weights (..., K) -> (...,).

    Computed as logsumexp - log K, so that weights far below 1 do not underflow.
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    return logsumexp(log_weights, axis=-1) - np.log(log_weights.shape[-1])
