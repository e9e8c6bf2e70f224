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

from typing import Any

import numpy as np

from vae_from_scratch.layers import sigmoid

LOG_2PI = float(np.log(2.0 * np.pi))


# --- small numerically stable helpers -------------------------------------------------


def softplus(a: np.ndarray) -> np.ndarray:
    """log(1 + exp(a)) without overflow: max(a, 0) + log1p(exp(-|a|))."""
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(sum(exp(a), axis)) computed after subtracting the maximum."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


# --- reparameterization -----------------------------------------------------------------


def reparameterize(mu: np.ndarray, log_var: np.ndarray,
                   eps: np.ndarray) -> tuple[np.ndarray, tuple]:
    """z = mu + exp(log_var / 2) * eps.   mu, log_var, eps: (N, L) -> z (N, L), cache.

    The noise eps ~ N(0, I) is an input, so z is a deterministic, differentiable
    function of (mu, log_var): that is the whole trick.
    """
    std = np.exp(0.5 * log_var)
    return mu + std * eps, (std, eps)


def reparameterize_backward(dz: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """dz (N, L) -> (dmu, dlog_var), each (N, L).

    dz/dmu = 1 and dz/dlog_var = 0.5 * exp(log_var / 2) * eps.
    """
    std, eps = cache
    return dz, dz * 0.5 * std * eps


# --- KL divergences -----------------------------------------------------------------------


def kl_standard_normal(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL( N(mu, diag(exp(log_var))) || N(0, I) ), summed over L.  (N, L) -> (N,).

    = 1/2 sum_j ( mu_j^2 + exp(log_var_j) - 1 - log_var_j )   (derived in lesson 02)
    """
    return np.sum(kl_standard_normal_per_dim(mu, log_var), axis=-1)


def kl_standard_normal_per_dim(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """The KL of each latent dimension, (N, L) -> (N, L): the prior and q are both
    diagonal, so the KL is a sum of these one-dimensional KLs (free bits use them)."""
    return 0.5 * (mu * mu + np.exp(log_var) - 1.0 - log_var)


def kl_standard_normal_backward(dkl: np.ndarray, mu: np.ndarray,
                                log_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dkl (N,) -> (dmu, dlog_var), each (N, L).

    d/dmu = mu,  d/dlog_var = (exp(log_var) - 1) / 2.
    """
    d = dkl[:, None]
    return d * mu, d * 0.5 * (np.exp(log_var) - 1.0)


def kl_diag_gaussians(mu_q: np.ndarray, log_var_q: np.ndarray, mu_p: np.ndarray,
                      log_var_p: np.ndarray) -> np.ndarray:
    """KL( N(mu_q, var_q) || N(mu_p, var_p) ) for diagonal Gaussians, summed over the
    last axis. Arrays broadcast against each other; returns shape (...,).

    = 1/2 sum ( log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1 )
    """
    diff = mu_q - mu_p
    inside = log_var_p - log_var_q + (np.exp(log_var_q) + diff * diff) * np.exp(-log_var_p)
    return 0.5 * np.sum(inside - 1.0, axis=-1)


# --- Gaussian log-density -------------------------------------------------------------------


def gaussian_log_density(x: np.ndarray, mu: Any, log_var: Any) -> np.ndarray:
    """log N(x; mu, diag(exp(log_var))), summed over the last axis.

    x (N, K); mu and log_var broadcast to (N, K) (a (K,) or scalar log_var is allowed).
    Returns (N,).  = -1/2 sum ( log 2pi + log_var + (x - mu)^2 / var ).
    """
    return np.sum(gaussian_log_density_per_dim(x, mu, log_var), axis=-1)


def gaussian_log_density_per_dim(x: np.ndarray, mu: Any, log_var: Any) -> np.ndarray:
    """The log-density of each coordinate, (N, K): a diagonal Gaussian's log-density is
    their sum."""
    diff = x - mu
    return -0.5 * (LOG_2PI + log_var + diff * diff * np.exp(-log_var))


def gaussian_log_density_backward(dout: np.ndarray, x: np.ndarray, mu: Any,
                                  log_var: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def bernoulli_log_likelihood(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log Bernoulli(x; sigmoid(logits)), summed over D.  x, logits (N, D) -> (N,).

    log p = x log s + (1 - x) log(1 - s) with s = sigmoid(l) simplifies to
    x * l - softplus(l), which never takes the log of 0 and never overflows.
    For x strictly between 0 and 1 this is the (negative) binary cross-entropy,
    not a normalized density (lesson 05).
    """
    return np.sum(x * logits - softplus(logits), axis=-1)


def bernoulli_log_likelihood_backward(dout: np.ndarray, x: np.ndarray,
                                      logits: np.ndarray) -> np.ndarray:
    """dout (N,) -> dlogits (N, D).   d/dl (x l - softplus(l)) = x - sigmoid(l)."""
    return dout[:, None] * (x - sigmoid(logits))


# --- mixture-of-Gaussians prior ------------------------------------------------------------------


def mixture_log_density(z: np.ndarray, means: np.ndarray, log_vars: np.ndarray,
                        logits: np.ndarray) -> np.ndarray:
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


def mixture_log_density_backward(
    dout: np.ndarray, z: np.ndarray, means: np.ndarray, log_vars: np.ndarray,
    logits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:

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


# --- continuous Bernoulli likelihood with logits ---------------------------------------------
#
# CB(x; l) is the density on [0, 1] proportional to exp(l x); it has the shape of the
# Bernoulli "likelihood" of a grey pixel, and is normalized. log C(l), its derivative and
# the mean are each a closed form that is 0/0 or loses digits to cancellation near l = 0, so
# below |l| = CB_TAYLOR_BELOW each is summed from its Taylor series instead (derivations in
# :func:`cb_log_norm`). Each branch is evaluated only on the entries that use it.

#: |logit| below which log C, its derivative and the mean come from their Taylor series.
#: The closed form of the derivative, 1/l - 1/sinh(l), cancels: it loses about
#: log10(6 / l^2) digits, ~1 ulp at |l| = 1 but 4 digits at |l| = 0.01, and the mean's
#: 1/(1 - exp(-l)) - 1/l loses log10(4 / |l|). At |l| = 1 the closed forms are accurate to a
#: few ulp, and the series, which converge for |l| < pi (2 pi for the mean), need 11 to 18
#: terms to reach 2^-60 there. One threshold for all three keeps them consistent.
CB_TAYLOR_BELOW = 1.0


def cb_series(below: float, tol: float = 2.0**-60) -> tuple[tuple[float, ...], ...]:
    """Taylor coefficients around l = 0, from the Bernoulli numbers B_2n, exact until the
    final rounding. Returns three tuples of floats, lowest power first, each cut where a
    term at |l| = ``below`` (the Taylor branch's threshold, at most 1.85) falls below ``tol``:

      log C(l) - log 2 = sum_n (4^n - 2) B_2n / (2n (2n)!) l^(2n)     (coefficients of u^(n-1)
      d log C / dl     = sum_n (4^n - 2) B_2n / (2n)!      l^(2n-1)    with u = l^2, after
      mean - 1/2       = sum_n           B_2n / (2n)!      l^(2n-1)    dividing by l^2 or l)
    """
    from fractions import Fraction
    from math import comb, factorial

    n_max = 40  # 18 are needed at |l| = 1, 37 at 1.8: the terms shrink like (|l|/pi)^(2n)
    bern = [Fraction(1)]
    for m in range(1, 2 * n_max + 1):  # sum_{k<=m} C(m+1, k) B_k = 0
        bern.append(-sum(comb(m + 1, k) * bern[k] for k in range(m)) / (m + 1))

    def cut(coef, power):
        terms = [coef(n) for n in range(1, n_max + 1)]
        keep = [abs(c) * below ** power(n) >= tol for n, c in enumerate(terms, 1)]
        return tuple(float(c) for c in terms[: keep.index(False)])

    log_norm = cut(lambda n: (4**n - 2) * bern[2 * n] / (2 * n * factorial(2 * n)), lambda n: 2 * n)
    grad = cut(lambda n: (4**n - 2) * bern[2 * n] / factorial(2 * n), lambda n: 2 * n - 1)
    mean = cut(lambda n: bern[2 * n] / factorial(2 * n), lambda n: 2 * n - 1)
    return log_norm, grad, mean


#: The Taylor coefficients of log C, its derivative and the mean below CB_TAYLOR_BELOW
#: (:func:`cb_series`); the PyTorch mirror sums the same ones.
CB_LOG_NORM_SERIES, CB_LOG_NORM_GRAD_SERIES, CB_MEAN_SERIES = cb_series(CB_TAYLOR_BELOW)
LOG_2 = float(np.log(2.0))


def _cb_float(logits):
    """``logits`` as a floating array (integers become float64; float32 stays float32)."""
    logits = np.asarray(logits)
    return logits if logits.dtype.kind == "f" else logits.astype(np.float64)


def _cb_branches(logits, taylor, closed):
    """taylor(l) on the entries with |l| < CB_TAYLOR_BELOW, closed(l) on the others, each
    computed only on its own entries (so neither sees an input it cannot handle)."""
    l = _cb_float(logits)
    small = np.abs(l) < CB_TAYLOR_BELOW
    out = np.empty_like(l)
    out[small] = taylor(l[small])
    out[~small] = closed(l[~small])
    return out[()]  # a NumPy scalar for a scalar input, like a ufunc


def _cb_even_series(l, coefs):
    """(u, sum_k coefs[k] u^k) with u = l^2, by Horner. u is set to 0 where l^2 < eps: there
    the u-terms change nothing at working precision, and skipping them keeps l^2 (and the
    products of u with the small coefficients) from underflowing."""
    l = np.where(np.abs(l) < np.sqrt(np.finfo(l.dtype).eps), 0, l)
    u = l * l
    p = np.zeros_like(u)
    for c in reversed(coefs):
        p = p * u + c
    return u, p


def _cb_exp_neg(a):
    """exp(-a) for a >= 1, set to 0 where it would be below sqrt(tiny): there it is far
    below round-off of every closed form here, and its square cannot underflow."""
    cutoff = -0.5 * np.log(np.finfo(a.dtype).tiny)
    return np.where(a > cutoff, 0, np.exp(-np.minimum(a, cutoff)))


def cb_log_norm(logits: Any) -> np.ndarray:
    r"""log C(l), the log normalizing constant of the continuous Bernoulli, elementwise.

    logits (any shape) -> same shape and dtype. log C(0) = log 2; stable for every l.

    **The density.** For a pixel x in [0, 1] and lambda = sigmoid(l) in (0, 1),

    $$\mathcal{CB}(x;\lambda) = C(\lambda)\,\lambda^x (1-\lambda)^{1-x},\qquad
      \frac{1}{C(\lambda)} = \int_0^1 \lambda^x (1-\lambda)^{1-x}\,dx .$$

    With $l = \log\frac{\lambda}{1-\lambda}$, $\lambda^x(1-\lambda)^{1-x} = (1-\lambda)e^{lx}$ and
    $\int_0^1 e^{lx}dx = \frac{e^l-1}{l}$, so $\frac{1}{C} = \frac{(1-\lambda)(e^l-1)}{l}
    = \frac{2\lambda-1}{l}$, i.e.

    $$C(\lambda) = \frac{\log\frac{\lambda}{1-\lambda}}{2\lambda-1}, \qquad
      C(l) = \frac{l}{\tanh(l/2)} \quad (2\sigma(l)-1 = \tanh(l/2)),\qquad C(0) = 2 .$$

    In logits, using $\log(1-\sigma(l)) = -\mathrm{softplus}(l)$,

    $$\log \mathcal{CB}(x; l) = \underbrace{x\,l - \mathrm{softplus}(l)}_{\text{Bernoulli}}
      + \log C(l) = x\,l - A(l),\qquad A(l) = \log\frac{e^l-1}{l},$$

    an exponential family with natural parameter $l$ and log-partition $A$ ($A(0) = 0$).

    **Why binary cross-entropy on grey pixels is not a density.** The Bernoulli term alone
    integrates over $x\in[0,1]$ to $\frac{2\pi-1}{\log(\pi/(1-\pi))} = 1/C(\pi) \le 1/2$
    (lesson 05): it is missing at least a factor 2, and a factor that depends on the decoder's
    output $\pi$, so its "log-likelihood" cannot be compared with a true density's. Its
    total mass $1/C(\pi)$ is largest at $\pi = 1/2$, so maximizing it favours $\pi$ near
    1/2: for a pixel value $x$ the cross-entropy is best at $\pi = x$, while the continuous
    Bernoulli fitted to the same $x$ puts its *mean* at $x$, with $\lambda$ further from 1/2.
    Adding $\log C(l)$ is exactly the correction.

    **Gradients.** $\frac{d}{dl}\log C = \frac1l - \frac{1}{2}\frac{\mathrm{sech}^2(l/2)}
    {\tanh(l/2)} = \frac1l - \frac{1}{\sinh l}$ (0 at $l=0$), and

    $$\frac{\partial}{\partial l}\log\mathcal{CB}(x;l) = x - \sigma(l) + \frac1l - \frac1{\sinh l}
      = x - A'(l),\qquad A'(l) = \mathbb{E}[x] = \frac{1}{1-e^{-l}} - \frac1l ,$$

    the mean of the distribution (1/2 at $l=0$), which is not $\lambda$: it lies between
    1/2 and $\lambda$ (e.g. $\lambda = 0.9$ gives a mean of 0.67).

    **Stable evaluation.** $C(-l) = C(l)$, and $\log\frac{|l|}{\tanh(|l|/2)}$ neither
    overflows ($\tanh \to 1$, $\log C \approx \log|l|$) nor cancels. It is 0/0 only at
    $l = 0$, so below $|l| = $ ``CB_TAYLOR_BELOW`` the series
    $\log C(l) = \log 2 + \sum_{n\ge1}\frac{(4^n-2)B_{2n}}{2n\,(2n)!}l^{2n}
    = \log 2 + \frac{l^2}{12} - \frac{7l^4}{1440} + \dots$ is summed instead
    ($B_{2n}$: Bernoulli numbers; from $\log C = \mathrm{softplus}(l) - A(l)$ and the series of
    $\log\cosh$ and of $t/(e^t-1)$). Its derivative and the mean share that threshold
    (see ``CB_TAYLOR_BELOW``).
    """

    def taylor(l):
        u, p = _cb_even_series(l, CB_LOG_NORM_SERIES)
        return LOG_2 + u * p

    def closed(l):
        a = np.abs(l)
        return np.log(a / np.tanh(0.5 * a))

    return _cb_branches(logits, taylor, closed)


def cb_log_norm_grad(logits: Any) -> np.ndarray:
    """d log C / dl = 1/l - 1/sinh(l), elementwise (derivation in :func:`cb_log_norm`).

    logits (any shape) -> same shape and dtype; odd, 0 at l = 0, about 1/l for large |l|.
    (For |l| < 6 x the smallest normal number, l/6 is subnormal and NumPy's underflow flag
    is set, which is silent unless asked for with np.errstate.)
    Closed form above ``CB_TAYLOR_BELOW``, with 1/sinh(a) = 2 e^-a / (1 - e^-2a) so that
    nothing overflows; below it the series l/6 - 7 l^3/360 + ..., since 1/l - 1/sinh(l)
    cancels there.
    """

    def taylor(l):
        return l * _cb_even_series(l, CB_LOG_NORM_GRAD_SERIES)[1]

    def closed(l):
        a = np.abs(l)
        e = _cb_exp_neg(a)
        return np.sign(l) * (1 / a - 2 * e / (1 - e * e))

    return _cb_branches(logits, taylor, closed)


def continuous_bernoulli_mean(logits: Any) -> np.ndarray:
    """E[x] under CB(x; l) = A'(l) = 1/(1 - exp(-l)) - 1/l, elementwise; 1/2 at l = 0.

    logits (any shape) -> same shape and dtype, in (0, 1). It is not sigmoid(l): it lies
    between 1/2 and sigmoid(l). mean(-l) = 1 - mean(l). For |l| >= ``CB_TAYLOR_BELOW``,
    m = 1/|l| - e^-|l| / (1 - e^-|l|) (the mean at -|l|, which is small and is computed
    without subtracting from 1) and the mean is m for l < 0, 1 - m for l > 0; below, the
    series 1/2 + l/12 - l^3/720 + ... (that of t/(e^t - 1)).
    """

    def taylor(l):
        # below eps, l/12 is under half an ulp of 1/2 (and l * ... could underflow)
        l_used = np.where(np.abs(l) < np.finfo(l.dtype).eps, 0, l)
        return 0.5 + l_used * _cb_even_series(l, CB_MEAN_SERIES)[1]

    def closed(l):
        a = np.abs(l)
        e = _cb_exp_neg(a)
        m = 1 / a - e / (1 - e)
        return np.where(l < 0, m, 1 - m)

    return _cb_branches(logits, taylor, closed)


def continuous_bernoulli_log_likelihood(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log CB(x; sigmoid(logits)), summed over D.  x in [0, 1], logits (N, D) -> (N,).

    = x l - softplus(l) + log C(l): the Bernoulli log-likelihood of
    :func:`bernoulli_log_likelihood` plus the log normalizing constant that makes it a
    density on [0, 1] (:func:`cb_log_norm`).
    """
    return bernoulli_log_likelihood(x, logits) + np.sum(cb_log_norm(logits), axis=-1)


def continuous_bernoulli_log_likelihood_backward(dout: np.ndarray, x: np.ndarray,
                                                 logits: np.ndarray) -> np.ndarray:
    """dout (N,) -> dlogits (N, D).

    d/dl (x l - softplus(l) + log C(l)) = x - sigmoid(l) + 1/l - 1/sinh(l) = x - mean(l),
    the data minus the distribution's mean (exponential family: d/dl (x l - A(l))).
    """
    return dout[:, None] * (x - continuous_bernoulli_mean(logits))


def continuous_bernoulli_quantile(u: Any, logits: Any) -> np.ndarray:
    """The inverse of CB(x; l)'s CDF, F(x) = (exp(l x) - 1) / (exp(l) - 1), elementwise:
    u in [0, 1), logits broadcasting to it -> x in [0, 1], float64. With u ~ U(0, 1) it
    draws x ~ CB(l).

    x = log1p(u expm1(l)) / l for l <= 1 (no cancellation near l = 0, and expm1(l) is in
    (-1, e - 1]); for l > 1, where expm1 may overflow, the same number written as
    x = 1 + log(u + (1 - u) exp(-l)) / l; x = u at l = 0 (the uniform density).
    """
    u = np.asarray(u, dtype=np.float64)
    l = np.broadcast_to(np.asarray(logits, dtype=np.float64), u.shape)
    x = u.copy()
    large, mid = l > 1, (l <= 1) & (l != 0)
    with np.errstate(divide="ignore"):  # u = 0 and exp(-l) = 0 give log 0 = -inf: x = 0
        x[large] = 1 + np.log(u[large] + (1 - u[large]) * np.exp(-l[large])) / l[large]
    x[mid] = np.log1p(u[mid] * np.expm1(l[mid])) / l[mid]
    return np.clip(x, 0.0, 1.0)
