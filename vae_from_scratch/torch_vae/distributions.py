"""The densities of :mod:`vae_from_scratch.distributions`, written with torch operations.

Autograd differentiates them, so no backward is written here; the tests hold each against
the NumPy formula and its hand-derived gradient. The continuous Bernoulli sums the very
Taylor coefficients the NumPy code uses below ``CB_TAYLOR_BELOW``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vae_from_scratch.distributions import CB_LOG_NORM_SERIES, CB_MEAN_SERIES, CB_TAYLOR_BELOW

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x: torch.Tensor, mu: torch.Tensor | float,
                         log_var: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mu, diag(exp(log_var))) summed over the last axis; log_var may be a float."""
    inv_var = math.exp(-log_var) if isinstance(log_var, float) else torch.exp(-log_var)
    diff = x - mu
    return -0.5 * torch.sum(LOG_2PI + log_var + diff * diff * inv_var, dim=-1)


def gaussian_log_density_per_dim(x: torch.Tensor, mu: torch.Tensor,
                                 log_var: torch.Tensor) -> torch.Tensor:
    """The log-density of each coordinate, elementwise."""
    diff = x - mu
    return -0.5 * (LOG_2PI + log_var + diff * diff * torch.exp(-log_var))


def _series_in_u(u: torch.Tensor, coefs: tuple[float, ...]) -> torch.Tensor:
    """sum_k coefs[k] u^k by Horner."""
    p = torch.zeros_like(u)
    for c in reversed(coefs):
        p = p * u + c
    return p


def _split(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(small, l_small, a_large): the Taylor-branch mask |l| < CB_TAYLOR_BELOW, the logits
    with the other entries set to 0, and |l| with the small entries set to the threshold.
    Each branch of a torch.where sees only inputs it handles, so neither branch sends NaN or
    inf back through autograd from the entries it does not own."""
    small = logits.abs() < CB_TAYLOR_BELOW
    l_small = torch.where(small, logits, 0.0)
    a_large = torch.where(small, CB_TAYLOR_BELOW, logits.abs())
    return small, l_small, a_large


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) of the continuous Bernoulli, elementwise: log(|l| / tanh(|l|/2)), from its
    Taylor series below CB_TAYLOR_BELOW (distributions.cb_log_norm)."""
    small, l, a = _split(logits)
    u = l * l
    taylor = math.log(2.0) + u * _series_in_u(u, CB_LOG_NORM_SERIES)
    return torch.where(small, taylor, torch.log(a / torch.tanh(0.5 * a)))


def continuous_bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log CB(x; l) = x l - softplus(l) + log C(l), summed over the last dim: (N, D) -> (N,)."""
    bernoulli = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return torch.sum(bernoulli + cb_log_norm(logits), dim=-1)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = 1/(1 - exp(-l)) - 1/l, elementwise; 1/2 + l/12 - ... below CB_TAYLOR_BELOW
    (distributions.continuous_bernoulli_mean)."""
    small, l, a = _split(logits)
    taylor = 0.5 + l * _series_in_u(l * l, CB_MEAN_SERIES)
    e = torch.exp(-a)
    m = 1.0 / a - e / (1.0 - e)  # the mean at -|l|
    return torch.where(small, taylor, torch.where(logits < 0, m, 1.0 - m))


def continuous_bernoulli_quantile(u: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The inverse of CB(x; l)'s CDF at u in [0, 1), elementwise
    (distributions.continuous_bernoulli_quantile): log1p(u expm1(l)) / l for l <= 1,
    1 + log(u + (1 - u) exp(-l)) / l above, u at l = 0."""
    large, zero = logits > 1, logits == 0
    l_mid = torch.where(large | zero, -1.0, logits)  # each branch on inputs it handles
    l_large = torch.where(large, logits, 2.0)
    mid = torch.log1p(u * torch.expm1(l_mid)) / l_mid
    high = 1 + torch.log(u + (1 - u) * torch.exp(-l_large)) / l_large
    return torch.where(zero, u, torch.where(large, high, mid)).clamp(0.0, 1.0)
