"""Optimizers written out: SGD with momentum and Adam. Both update ``params`` in place.

opt = Adam(vae.params, lr=1e-3)
loss, grads = vae.loss_and_grads(x, eps)
opt.step(grads)
"""

from __future__ import annotations

import numpy as np


class SGD:
    """v <- momentum * v + g;  p <- p - lr * v   (momentum=0 is plain gradient descent)."""

    def __init__(self, params, lr=1e-2, momentum=0.0):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads):
        for k, p in self.params.items():
            v = self.velocity[k]
            v *= self.momentum
            v += grads[k]
            p -= self.lr * v


class Adam:
    """Adam (Kingma & Ba, 2015), the same update as torch.optim.Adam:

    m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if lr <= 0 or not all(0 <= b < 1 for b in betas) or eps <= 0:
            raise ValueError(f"need lr > 0, 0 <= betas < 1, eps > 0; got {lr}, {betas}, {eps}")
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for k, p in self.params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def state_dict(self):
        """Arrays and step count, for checkpoints: {'t': int, 'm.<name>': ..., 'v.<name>': ...}."""
        state = {f"m.{k}": v for k, v in self.m.items()}
        state.update({f"v.{k}": v for k, v in self.v.items()})
        return self.t, state
