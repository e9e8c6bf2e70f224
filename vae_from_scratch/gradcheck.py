"""Numerical gradients by central differences, and the relative error used everywhere.

The VAE's loss is random only through ``eps``; freezing it makes the loss an ordinary
deterministic function of the parameters, which finite differences can check (lesson 04).
Work in float64: in float32 the round-off of the difference quotient swamps the check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of a scalar function ``f()`` with respect to the array
    ``x``, which ``f`` reads. Each entry is perturbed in place and restored exactly.

    x (any shape) -> array of the same shape with (f(x + h e_i) - f(x - h e_i)) / 2h.
    ``x`` must be a floating-point NumPy array (float64 for an accurate check): an integer
    array cannot hold x + h, so its differences would be silently wrong.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"x must be the NumPy array that f reads (it is changed in place), got "
            f"{type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"x must be a floating-point array (float64 for an accurate check), got {x.dtype}: "
            f"an integer array cannot hold x + h; use x.astype(np.float64) and let f read that"
        )
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i].copy()
        x[i] = old + h
        f_plus = float(f())
        x[i] = old - h
        f_minus = float(f())
        x[i] = old  # restore the very same value, not old + h - h
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad


def rel_error(a: Any, b: Any, floor: float = 1e-12) -> float:
    """||a - b|| / max(||a|| + ||b||, floor) over the whole array: 0 when equal, 1 when
    one is zero and the other is not. Measured on the whole array rather than entry by
    entry, so an entry that is ~0 in both does not turn round-off into a large ratio."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / max(scale, floor))


def check_model_gradients(vae: Any, x: np.ndarray, eps: np.ndarray, h: float = 1e-5,
                          max_entries: int | None = None, seed: int = 0,
                          y: np.ndarray | None = None) -> dict[str, float]:

    """Compare ``vae.loss_and_grads`` with central differences of ``vae.loss``.

    Returns dict name -> relative error. ``max_entries`` limits how many entries of each
    parameter are checked (chosen at random with ``seed``) to keep large models quick.
    ``y``: the labels of a conditional model. The model must be float64.
    """
    if vae.dtype != np.float64:
        raise ValueError("gradient checks need a float64 model (VAE(..., dtype=np.float64))")
    _, grads = vae.loss_and_grads(x, eps, y)
    rng = np.random.default_rng(seed)
    errors = {}
    for name, value in vae.params.items():
        flat = value.reshape(-1)  # a view: writing into it changes the parameter
        idx = np.arange(flat.size)
        if max_entries is not None and flat.size > max_entries:
            idx = np.sort(rng.choice(flat.size, size=max_entries, replace=False))
        numeric = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + h
            f_plus = vae.loss(x, eps, y).loss
            flat[i] = old - h
            f_minus = vae.loss(x, eps, y).loss
            flat[i] = old
            numeric[j] = (f_plus - f_minus) / (2.0 * h)
        errors[name] = rel_error(grads[name].reshape(-1)[idx], numeric)
    return errors
