"""Optimizers written out: SGD with momentum and Adam. Both update ``params`` in place.

opt = Adam(vae.params, lr=1e-3)
loss, grads = vae.loss_and_grads(x, eps)
opt.step(grads)

``step`` checks the gradients before it changes anything: the same keys as the
parameters, each of exactly its parameter's shape (no broadcasting), and finite. A NaN or
infinite gradient raises :class:`NonFiniteGradientError` and leaves the parameters as
they were. ``state_dict()`` / ``load_state_dict()`` save and restore an optimizer exactly
(step count, moments, hyperparameters), so a run can stop and resume bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class NonFiniteGradientError(ValueError):
    """A gradient holds NaN or infinity; the optimizer did not step."""


def _number(name, value, *, low, high=math.inf, low_open=True):
    """``value`` as a float if it is a real number (NumPy scalars too, bools not) within
    (low, high) / [low, high); ValueError naming ``name`` otherwise."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value < high
    if not ok:
        if math.isinf(high):
            expected = f"a finite number > {low:g}" if low_open else f"a finite number >= {low:g}"
        else:
            expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g})"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def _positive(name, value):
    return _number(name, value, low=0.0)


def _fraction(name, value):
    return _number(name, value, low=0.0, high=1.0, low_open=False)


def _same_keys(got, expected, what):
    """ValueError starting with ``what`` unless ``got`` has exactly the ``expected`` keys."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ValueError(f"{what}: missing {missing}, unexpected {extra}")


def check_gradients(params: Mapping[str, np.ndarray], grads: Any) -> None:
    """Raise ValueError unless ``grads`` has exactly the keys of ``params``, each of its
    parameter's shape, and NonFiniteGradientError if one holds NaN or infinity."""
    if not isinstance(grads, Mapping):
        raise ValueError(f"gradients must be a dict name -> array, got {type(grads).__name__}")
    _same_keys(grads, params, "gradients do not match the parameters")
    for name, p in params.items():
        g = grads[name]
        if np.shape(g) != p.shape:
            raise ValueError(
                f"gradient {name!r} has shape {np.shape(g)}, expected {p.shape} "
                "(the shape of its parameter)"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.sum(g)  # NaN or inf when an entry is; a fast test on the whole array
        if not np.isfinite(total) and not np.all(np.isfinite(g)):
            raise NonFiniteGradientError(
                f"gradient {name!r} contains NaN or infinite values; the parameters were "
                "not changed"
            )


def _check_state(state, expected_keys, arrays, what):
    """Validate a state dict: the keys, and each array's shape and dtype."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{what} state must be a dict, got {type(state).__name__}")
    _same_keys(state, expected_keys, f"{what} state does not match its parameters")
    for key, current in arrays.items():
        value = np.asarray(state[key])
        if value.shape != current.shape or value.dtype != current.dtype:
            raise ValueError(
                f"{what} state {key!r} is {value.dtype} {value.shape}, expected "
                f"{current.dtype} {current.shape}"
            )


def _steps(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"the step count t must be an integer >= 0, got {value!r}")
    return int(value)


class _Optimizer:
    """What every optimizer here shares: ``lr``, checked whenever it is set (a schedule may
    change it between steps)."""

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _positive("lr", value)


class SGD(_Optimizer):
    """v <- momentum * v + g;  p <- p - lr * v   (momentum=0 is plain gradient descent)."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-2,
                 momentum: float = 0.0) -> None:
        self.params = params
        self.lr = lr
        self.momentum = _fraction("momentum", momentum)
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        check_gradients(self.params, grads)
        for k, p in self.params.items():
            v = self.velocity[k]
            v *= self.momentum
            v += grads[k]
            p -= self.lr * v

    def state_dict(self) -> dict[str, Any]:
        """{'lr', 'momentum', 'velocity.<name>': array (a copy)}."""
        state = {"lr": self.lr, "momentum": self.momentum}
        state.update({f"velocity.{k}": v.copy() for k, v in self.velocity.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checked in full before anything changes)."""
        arrays = {f"velocity.{k}": v for k, v in self.velocity.items()}
        _check_state(state, ["lr", "momentum", *arrays], arrays, "SGD")
        lr, momentum = _positive("lr", state["lr"]), _fraction("momentum", state["momentum"])
        for key, v in arrays.items():
            v[...] = state[key]
        self.lr, self.momentum = lr, momentum


class Adam(_Optimizer):
    """Adam (Kingma & Ba, 2015), the same update as torch.optim.Adam:

    m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = params
        self.lr = lr
        self.betas = self._check_betas(betas)
        self.eps = _positive("eps", eps)
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self._buf = {k: np.empty_like(v) for k, v in params.items()}  # scratch, reused
        self.t = 0

    @staticmethod
    def _check_betas(betas):
        if isinstance(betas, (str, bytes)) or np.ndim(betas) != 1 or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        return tuple(_fraction(f"betas[{i}]", b) for i, b in enumerate(betas))

    def step(self, grads: dict[str, np.ndarray]) -> None:
        check_gradients(self.params, grads)
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

    def state_dict(self) -> dict[str, Any]:
        """{'t': int, 'lr', 'betas', 'eps', 'm.<name>': array, 'v.<name>': array} (copies)."""
        state = {"t": self.t, "lr": self.lr, "betas": list(self.betas), "eps": self.eps}
        state.update({f"m.{k}": v.copy() for k, v in self.m.items()})
        state.update({f"v.{k}": v.copy() for k, v in self.v.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checked in full before anything changes)."""
        arrays = {f"m.{k}": v for k, v in self.m.items()}

        arrays.update({f"v.{k}": v for k, v in self.v.items()})
        _check_state(state, ["t", "lr", "betas", "eps", *arrays], arrays, "Adam")
        t, lr = _steps(state["t"]), _positive("lr", state["lr"])
        betas, eps = self._check_betas(state["betas"]), _positive("eps", state["eps"])
        for key, a in arrays.items():
            a[...] = state[key]
        self.t, self.lr, self.betas, self.eps = t, lr, betas, eps
