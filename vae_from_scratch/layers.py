"""Layers of the MLP, each a forward and a hand-derived backward (lesson 04).

Every layer follows one pattern::

    out, cache = Layer.forward(x, ...)     # cache holds what backward needs
    grads = Layer.backward(dout, cache)    # dout = dL/dout, same shape as out

Shapes: ``x`` is (N, D_in) -- a batch of N rows. Layers hold no state: the
parameters live in the model's ``params`` dict and are passed in.
"""

from __future__ import annotations

import numpy as np


class Linear:
    """Affine map ``out = x @ W + b`` with ``W`` (D_in, D_out) and ``b`` (D_out,)."""

    @staticmethod
    def forward(x, W, b):
        """x (N, D_in), W (D_in, D_out), b (D_out,) -> out (N, D_out), cache."""
        return x @ W + b, (x, W)

    @staticmethod
    def backward(dout, cache):
        """dout (N, D_out) -> (dx (N, D_in), dW (D_in, D_out), db (D_out,)).

        out[n, j] = sum_i x[n, i] W[i, j] + b[j], so
        dL/dx = dout W^T,  dL/dW = x^T dout,  dL/db = sum over the batch of dout.
        """
        x, W = cache
        return dout @ W.T, x.T @ dout, dout.sum(axis=0)


class ReLU:
    """``out = max(x, 0)``; the gradient passes where the input was positive."""

    @staticmethod
    def forward(x):
        """x (N, D) -> out (N, D), cache."""
        mask = x > 0
        return x * mask, mask

    @staticmethod
    def backward(dout, cache):
        """dout (N, D) -> dx (N, D)."""
        return dout * cache


class Tanh:
    """``out = tanh(x)``; d tanh(x)/dx = 1 - tanh(x)^2, so we cache the output."""

    @staticmethod
    def forward(x):
        out = np.tanh(x)
        return out, out

    @staticmethod
    def backward(dout, cache):
        return dout * (1.0 - cache * cache)


class Sigmoid:
    """``out = 1 / (1 + exp(-x))``; d sigmoid/dx = sigmoid (1 - sigmoid)."""

    @staticmethod
    def forward(x):
        out = sigmoid(x)
        return out, out

    @staticmethod
    def backward(dout, cache):
        return dout * cache * (1.0 - cache)


def sigmoid(x):
    """Logistic function that never overflows: exp is only taken of -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def mlp_forward(params, prefix, n_layers, x, activation):
    """Run ``n_layers`` Linear+activation blocks named ``{prefix}.{i}.W/.b``.

    x (N, D_in) -> h (N, D_last), caches (a list, one entry per block).
    """
    act = ACTIVATIONS[activation]
    caches = []
    h = x
    for i in range(n_layers):
        a, lin_cache = Linear.forward(h, params[f"{prefix}.{i}.W"], params[f"{prefix}.{i}.b"])
        h, act_cache = act.forward(a)
        caches.append((lin_cache, act_cache))
    return h, caches


def mlp_backward(dh, caches, prefix, activation, grads, need_dx=True):
    """Backward through the blocks of :func:`mlp_forward`; writes dW, db into ``grads``.

    dh (N, D_last) -> dx (N, D_in), or None with ``need_dx=False``: when the input is the
    data, its gradient is never used, and skipping it saves one large matrix product.
    """
    act = ACTIVATIONS[activation]
    for i in reversed(range(len(caches))):
        lin_cache, act_cache = caches[i]
        da = act.backward(dh, act_cache)
        if i == 0 and not need_dx:
            x, _ = lin_cache
            grads[f"{prefix}.0.W"], grads[f"{prefix}.0.b"] = x.T @ da, da.sum(axis=0)
            return None
        dh, grads[f"{prefix}.{i}.W"], grads[f"{prefix}.{i}.b"] = Linear.backward(da, lin_cache)
    return dh
