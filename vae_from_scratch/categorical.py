"""The categorical distribution over K classes from logits: log-softmax, the softmax
cross-entropy with its gradient, and sampling (lessons 09 and 11).

Lesson 09 derives the cross-entropy and its gradient for its classifier (exercise 9.3);
lesson 11's priors over discrete codes use the same loss at every position of a code grid.

    loss, dlogits = softmax_cross_entropy(logits, y)   # logits (N, K), y (N,) ints

Stability: every exponential is taken of logits minus their row maximum, so logits in the
hundreds neither overflow nor lose a probability to underflow before its log is taken.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "sample", "softmax_cross_entropy"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis: logits (..., K) -> (..., K),
    logits - logsumexp(logits), with the row maximum subtracted before exponentiating."""
    logits = np.asarray(logits)
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _check_labels(y, n, k):
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"y must be integer labels of shape ({n},), got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"y must be in 0..{k - 1}, got values from {y.min()} to {y.max()}")
    return y


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean over the batch of -log softmax(logits)[y], and its gradient.

    logits (N, K), y (N,) integers in 0..K-1 -> (loss, dlogits): loss a float, dlogits (N, K)
    = (softmax(logits) - one_hot(y)) / N. With log p_nk = o_nk - logsumexp_j o_nj,
    d(-log p_{n y_n}) / d o_nk = p_nk - [k = y_n].
    """
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {logits.shape}")
    n, k = logits.shape
    y = _check_labels(y, n, k)
    log_p = log_softmax(logits)
    rows = np.arange(n)
    loss = -float(np.mean(log_p[rows, y]))
    dlogits = np.exp(log_p)
    dlogits[rows, y] -= 1.0
    return loss, dlogits / n


def sample(logits: np.ndarray, rng: np.random.Generator,
           temperature: float = 1.0) -> np.ndarray:
    """One class per row drawn from softmax(logits / temperature): logits (..., K) -> (...,)
    int64. Inverse-CDF sampling: the first class whose cumulative probability exceeds a
    uniform draw. temperature < 1 sharpens the distribution, > 1 flattens it."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    p = np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature))
    cdf = np.cumsum(p, axis=-1)
    u = rng.random(cdf.shape[:-1] + (1,)) * cdf[..., -1:]  # scaled: the sum may be 1 - 1e-16
    return np.minimum(np.sum(cdf <= u, axis=-1), p.shape[-1] - 1).astype(np.int64)
