"""Optimizers written out: SGD with momentum and Adam. Both update ``params`` in place.

opt = Adam(vae.params, lr=1e-3)
loss, grads = vae.loss_and_grads(x, eps)
opt.step(grads)
"""

from __future__ import annotations

import math

import numpy as np


def _finite_positive(**values):
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class SGD:
    """v <- momentum * v + g;  p <- p - lr * v   (momentum=0 is plain gradient descent)."""

    def __init__(self, params, lr=1e-2, momentum=0.0):
        _finite_positive(lr=lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
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
        _finite_positive(lr=lr, eps=eps)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self._buf = {k: np.empty_like(v) for k, v in params.items()}  # scratch, reused
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for k, p in self.params.items():
            g, m, v, buf = grads[k], self.m[k], self.v[k], self._buf[k]
            # The formulas above, written with out= so that no temporary array is allocated.
            m *= b1
            m += np.multiply(g, 1.0 - b1, out=buf)  # m <- b1 m + (1 - b1) g
            v *= b2
            np.multiply(g, g, out=buf)
            v += np.multiply(buf, 1.0 - b2, out=buf)  # v <- b2 v + (1 - b2) g^2
            np.sqrt(np.divide(v, c2, out=buf), out=buf)
            buf += self.eps  # sqrt(v_hat) + eps
            np.divide(m, buf, out=buf)
            p -= np.multiply(buf, self.lr / c1, out=buf)

    def state_dict(self):
        """Step count and moment estimates: {'t': int, 'm.<name>': array, 'v.<name>': array}."""
        state = {"t": self.t}
        state.update({f"m.{k}": v for k, v in self.m.items()})
        state.update({f"v.{k}": v for k, v in self.v.items()})
        return state
