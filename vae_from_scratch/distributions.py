"""Densities, KL terms and the reparameterization, each with its hand-derived backward.

Derivations: lesson 02 (KL), lesson 04 (reparameterization, likelihood backward),
lesson 07 (mixture prior). Conventions:

* a batch has N rows; latent vectors have L entries, data vectors D;
* ``log_var`` is the log of a diagonal variance, so ``var = exp(log_var)``;
* every density is summed over its last axis and returns one number per row, shape (N,);
* ``*_backward(dout, ...)`` takes ``dout`` = dL/d(output), shape (N,), and the forward's
  inputs, and returns dL/d(each input) in the same order as the forward's arguments.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch.layers import sigmoid

LOG_2PI = float(np.log(2.0 * np.pi))


# --- small numerically stable helpers -------------------------------------------------


def softplus(a):
    """log(1 + exp(a)) without overflow: max(a, 0) + log1p(exp(-|a|))."""
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def logsumexp(a, axis=-1):
    """log(sum(exp(a), axis)) computed after subtracting the maximum."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


# --- reparameterization -----------------------------------------------------------------


def reparameterize(mu, log_var, eps):
    """z = mu + exp(log_var / 2) * eps.   mu, log_var, eps: (N, L) -> z (N, L), cache.

    The noise eps ~ N(0, I) is an input, so z is a deterministic, differentiable
    function of (mu, log_var): that is the whole trick.
    """
    std = np.exp(0.5 * log_var)
    return mu + std * eps, (std, eps)


def reparameterize_backward(dz, cache):
    """dz (N, L) -> (dmu, dlog_var), each (N, L).

    dz/dmu = 1 and dz/dlog_var = 0.5 * exp(log_var / 2) * eps.
    """
    std, eps = cache
    return dz, dz * 0.5 * std * eps


# --- KL divergences -----------------------------------------------------------------------


def kl_standard_normal(mu, log_var):
    """KL( N(mu, diag(exp(log_var))) || N(0, I) ), summed over L.  (N, L) -> (N,).

    = 1/2 sum_j ( mu_j^2 + exp(log_var_j) - 1 - log_var_j )   (derived in lesson 02)
    """
    return np.sum(kl_standard_normal_per_dim(mu, log_var), axis=-1)


def kl_standard_normal_per_dim(mu, log_var):
    """The KL of each latent dimension, (N, L) -> (N, L): the prior and q are both
    diagonal, so the KL is a sum of these one-dimensional KLs (free bits use them)."""
    return 0.5 * (mu * mu + np.exp(log_var) - 1.0 - log_var)


def kl_standard_normal_backward(dkl, mu, log_var):
    """dkl (N,) -> (dmu, dlog_var), each (N, L).

    d/dmu = mu,  d/dlog_var = (exp(log_var) - 1) / 2.
    """
    d = dkl[:, None]
    return d * mu, d * 0.5 * (np.exp(log_var) - 1.0)


def kl_diag_gaussians(mu_q, log_var_q, mu_p, log_var_p):
    """KL( N(mu_q, var_q) || N(mu_p, var_p) ) for diagonal Gaussians, summed over the
    last axis. Arrays broadcast against each other; returns shape (...,).

    = 1/2 sum ( log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1 )
    """
    diff = mu_q - mu_p
    inside = log_var_p - log_var_q + (np.exp(log_var_q) + diff * diff) * np.exp(-log_var_p)
    return 0.5 * np.sum(inside - 1.0, axis=-1)


# --- Gaussian log-density -------------------------------------------------------------------


def gaussian_log_density(x, mu, log_var):
    """log N(x; mu, diag(exp(log_var))), summed over the last axis.

    x (N, K); mu and log_var broadcast to (N, K) (a (K,) or scalar log_var is allowed).
    Returns (N,).  = -1/2 sum ( log 2pi + log_var + (x - mu)^2 / var ).
    """
    return np.sum(gaussian_log_density_per_dim(x, mu, log_var), axis=-1)


def gaussian_log_density_per_dim(x, mu, log_var):
    """The log-density of each coordinate, (N, K): a diagonal Gaussian's log-density is
    their sum."""
    diff = x - mu
    return -0.5 * (LOG_2PI + log_var + diff * diff * np.exp(-log_var))


def gaussian_log_density_backward(dout, x, mu, log_var):
    """dout (N,) -> (dx, dmu, dlog_var), each (N, K). For a ``log_var`` shared by all
    rows, the caller sums dlog_var over the rows.

    d/dx = -(x - mu) / var,  d/dmu = (x - mu) / var,
    d/dlog_var = -1/2 + (x - mu)^2 / (2 var).
    """
    d = dout[:, None]
    diff = x - mu
    inv_var = np.exp(-log_var)
    dmu = d * diff * inv_var
    dlog_var = d * 0.5 * (diff * diff * inv_var - 1.0)
    return -dmu, dmu, dlog_var


# --- Bernoulli likelihood with logits ---------------------------------------------------------


def bernoulli_log_likelihood(x, logits):
    """log Bernoulli(x; sigmoid(logits)), summed over D.  x, logits (N, D) -> (N,).

    log p = x log s + (1 - x) log(1 - s) with s = sigmoid(l) simplifies to
    x * l - softplus(l), which never takes the log of 0 and never overflows.
    For x strictly between 0 and 1 this is the (negative) binary cross-entropy,
    not a normalized density (lesson 05).
    """
    return np.sum(x * logits - softplus(logits), axis=-1)


def bernoulli_log_likelihood_backward(dout, x, logits):
    """dout (N,) -> dlogits (N, D).   d/dl (x l - softplus(l)) = x - sigmoid(l)."""
    return dout[:, None] * (x - sigmoid(logits))


# --- mixture-of-Gaussians prior ------------------------------------------------------------------


def mixture_log_density(z, means, log_vars, logits):
    """log p(z) for p(z) = sum_k pi_k N(z; means_k, diag(exp(log_vars_k))).

    z (N, L); means, log_vars (K, L); logits (K,) with pi = softmax(logits). Returns (N,).
    log p(z) = logsumexp_k ( log pi_k + log N(z; means_k, var_k) ).
    """
    return logsumexp(_mixture_component_logits(z, means, log_vars, logits), axis=1)


def _mixture_component_logits(z, means, log_vars, logits):
    """(N, K) array of log pi_k + log N(z_n; means_k, var_k)."""
    log_pi = logits - logsumexp(logits, axis=0)
    diff = z[:, None, :] - means[None, :, :]  # (N, K, L)
    log_comp = -0.5 * np.sum(LOG_2PI + log_vars + diff * diff * np.exp(-log_vars), axis=2)
    return log_pi + log_comp


def mixture_log_density_backward(dout, z, means, log_vars, logits):
    """dout (N,) -> (dz (N, L), dmeans (K, L), dlog_vars (K, L), dlogits (K,)).

    With responsibilities r_nk = softmax_k(log pi_k + log N_k(z_n)) and pi = softmax(logits):
      d/dz_n        = sum_k r_nk (means_k - z_n) / var_k
      d/dmeans_k    = sum_n dout_n r_nk (z_n - means_k) / var_k
      d/dlog_vars_k = sum_n dout_n r_nk ((z_n - means_k)^2 / var_k - 1) / 2
      d/dlogits_k   = sum_n dout_n (r_nk - pi_k)
    """
    a = _mixture_component_logits(z, means, log_vars, logits)
    r = np.exp(a - logsumexp(a, axis=1)[:, None])  # (N, K)
    w = dout[:, None] * r  # (N, K)
    diff = z[:, None, :] - means[None, :, :]  # (N, K, L)
    scaled = diff * np.exp(-log_vars)[None]  # (z - m) / var
    dz = -np.einsum("nk,nkl->nl", w, scaled)
    dmeans = np.einsum("nk,nkl->kl", w, scaled)
    dlog_vars = 0.5 * np.einsum("nk,nkl->kl", w, diff * scaled - 1.0)
    pi = np.exp(logits - logsumexp(logits, axis=0))
    dlogits = w.sum(axis=0) - dout.sum() * pi
    return dz, dmeans, dlog_vars, dlogits
