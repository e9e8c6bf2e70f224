"""Layers of the MLP, each a forward and a hand-derived backward (lesson 04).

Every layer follows one pattern::

    out, cache = Layer.forward(x, ...)     # cache holds what backward needs
    grads = Layer.backward(dout, cache)    # dout = dL/dout, same shape as out

Shapes: ``x`` is (N, D_in) -- a batch of N rows. Layers hold no state: the
parameters live in the model's ``params`` dict and are passed in. ``networks.py`` chains
them into the encoder and decoder; ``conv.py`` adds the convolutional layers (lesson 08).
"""

from __future__ import annotations

import numpy as np


class Linear:
    """Affine map ``out = x @ W + b`` with ``W`` (D_in, D_out) and ``b`` (D_out,)."""

    @staticmethod
    def forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
        """x (N, D_in), W (D_in, D_out), b (D_out,) -> out (N, D_out), cache."""
        return x @ W + b, (x, W)

    @staticmethod
    def backward(dout: np.ndarray, cache: tuple,
                 need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """dout (N, D_out) -> (dx (N, D_in), dW (D_in, D_out), db (D_out,)).

        out[n, j] = sum_i x[n, i] W[i, j] + b[j], so
        dL/dx = dout W^T,  dL/dW = x^T dout,  dL/db = sum over the batch of dout.
        With ``need_dx=False`` dx is None: when x is the data its gradient is never used,
        and skipping it saves the largest matrix product of the encoder's first layer.
        """
        x, W = cache
        dx = dout @ W.T if need_dx else None
        return dx, x.T @ dout, dout.sum(axis=0)


class ReLU:
    """``out = max(x, 0)``; the gradient passes where the input was positive."""

    @staticmethod
    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (N, D) -> out (N, D), cache."""
        mask = x > 0
        return x * mask, mask

    @staticmethod
    def backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
        """dout (N, D) -> dx (N, D)."""
        return dout * cache


class Tanh:
    """``out = tanh(x)``; d tanh(x)/dx = 1 - tanh(x)^2, so we cache the output."""

    @staticmethod
    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.tanh(x)
        return out, out

    @staticmethod
    def backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
        return dout * (1.0 - cache * cache)


class Sigmoid:
    """``out = 1 / (1 + exp(-x))``; d sigmoid/dx = sigmoid (1 - sigmoid)."""

    @staticmethod
    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = sigmoid(x)
        return out, out

    @staticmethod
    def backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
        return dout * cache * (1.0 - cache)


def sigmoid(x: np.ndarray) -> np.ndarray:

    """Logistic function that never overflows: exp is only taken of -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
