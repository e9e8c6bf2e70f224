"""A masked autoencoder for distribution estimation (MADE; Germain et al., 2015), by hand.

One masked network serves every autoregressive model of the course: the inverse
autoregressive flow of lesson 12 (one input unit per latent dimension, two outputs per
dimension) and the prior over a grid of discrete codes of lesson 11 (K one-hot input units
per position, K logits per position).

**Degrees.** Every unit carries an integer *degree*. An input unit's degree is the
autoregressive position it belongs to, 1..P (several units may share a position: a group).
An output unit of degree d must depend only on inputs of degree < d. A hidden unit of degree
m may see inputs of degree <= m, and an output unit of degree d sees hidden units of degree
< d. So a path input -> hidden -> ... -> output exists only when

    degree(input) <= m_1 <= m_2 <= ... <= m_last < degree(output),

that is degree(input) < degree(output): the output at position d is a function of the inputs
at positions 1..d-1 alone, and its Jacobian with respect to the input is strictly
triangular in position order. The masks say which weights exist::

    input  -> hidden   M[i, k] = 1 if m(k) >= d(i)        (D_in, H)
    hidden -> hidden   M[k, k'] = 1 if m(k') >= m(k)       (H, H')
    hidden -> output   M[k, j] = 1 if d(j) > m(k)          (H, D_out)   strictly greater

The one strict inequality is on the way out; make it >= and an output sees its own input.

**Context.** An optional context vector c (N, C), such as the encoder's features in an IAF,
enters the first hidden layer through an unmasked weight: it has "degree 0", before every
position, so every unit may see it. Hidden units of degree 0 see the context alone; with
them, even the first position's outputs depend on the context.

**Layout.** Groups are position-major: with G units per position, unit ``p * G + g`` is
unit g of position ``order[p]`` (:func:`position_degrees`), so ``out.reshape(N, P, G)``
separates them. Reversing ``order`` reverses the autoregressive order, with no data moved.

Parameters live in the caller's ``params`` dict, as everywhere in the package:
``{name}.{i}.W`` (D_in, D_out) and ``{name}.{i}.b`` (D_out,) for layer i (the last one is
the output layer) and ``{name}.context.W`` (C, H_1) with a context. The masks are not
parameters: the forward multiplies W by its mask, so an entry outside the mask never matters
and its gradient is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vae_from_scratch.layers import ACTIVATIONS


def _int_vector(name, value, low):
    """``value`` as a 1-D int64 array with every entry >= ``low``, or ValueError."""
    a = np.asarray(value)
    if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a non-empty 1-D array of integers, got "
                         f"{a.dtype} array of shape {a.shape}")
    if a.min() < low:
        raise ValueError(f"{name} must be integers >= {low}, got a minimum of {a.min()}")
    return a.astype(np.int64)


def position_degrees(order: np.ndarray, group_size: int = 1) -> np.ndarray:
    """The degrees of units grouped by position, position-major.

    order (P,): the degree (1..P) of each position, e.g. ``np.arange(1, P + 1)`` or its
    reverse. Returns (P * group_size,): unit ``p * group_size + g`` has degree ``order[p]``.
    """
    order = _int_vector("order", order, 1)
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or (
            group_size < 1):
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    return np.repeat(order, int(group_size))


def cyclic_degrees(n_units: int, low: int, high: int) -> np.ndarray:
    """(n_units,) degrees low, low+1, ..., high, low, ... : every degree in [low, high]
    about equally often (deterministic, where Germain et al. draw them at random)."""
    if high < low:
        raise ValueError(f"no hidden degree fits between {low} and {high}")
    return low + np.arange(n_units, dtype=np.int64) % (high - low + 1)


def hidden_degrees(hidden_sizes: Sequence[int], n_positions: int,
                   context: bool = False) -> list[np.ndarray]:
    """Degrees for hidden layers of the given sizes, each cycling through [low, P - 1].

    low is 1 without a context; with one it is 0, so that some units see only the
    context. A hidden unit of degree P could reach no output, so P - 1 is the top. Returns
    a list of (H_l,) arrays. With one position and no context no hidden unit can be of use,
    which is refused.
    """
    low = 0 if context else 1
    if n_positions - 1 < low:
        raise ValueError(f"with {n_positions} position(s) and no context every output is "
                         "a constant: a MADE needs at least 2 positions or a context")
    return [cyclic_degrees(int(h), low, n_positions - 1) for h in hidden_sizes]


def layer_mask(in_degrees: np.ndarray, out_degrees: np.ndarray, strict: bool) -> np.ndarray:
    """(D_in, D_out) mask of 0s and 1s: M[i, j] = 1 where unit j may see unit i, i.e.
    out_degrees[j] > in_degrees[i] (``strict``, the output layer) or >= (hidden layers)."""
    a, b = np.asarray(in_degrees)[:, None], np.asarray(out_degrees)[None, :]
    return (b > a if strict else b >= a).astype(np.float64)


def connectivity(masks: list[np.ndarray]) -> np.ndarray:
    """The number of paths from each input to each output through the masked layers:
    the product of the masks, (D_in, D_out). Zero where an output cannot depend on an
    input, whatever the weights."""
    paths = masks[0]
    for m in masks[1:]:
        paths = paths @ m
    return paths


class MaskedLinear:
    """``out = x @ (W * mask) + b``: a Linear layer whose weight outside the mask is 0."""

    @staticmethod
    def forward(x: np.ndarray, W: np.ndarray, b: np.ndarray,
                mask: np.ndarray) -> tuple[np.ndarray, tuple]:
        """x (N, D_in), W (D_in, D_out), b (D_out,), mask (D_in, D_out) -> out (N, D_out),
        cache."""
        Wm = W * mask.astype(W.dtype, copy=False)
        return x @ Wm + b, (x, Wm, mask)

    @staticmethod
    def backward(dout: np.ndarray, cache: tuple,
                 need_dx: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """dout (N, D_out) -> (dx (N, D_in) or None, dW (D_in, D_out), db (D_out,)).

        As for Linear with W * mask in place of W: dx = dout (W * mask)^T,
        dW = (x^T dout) * mask (0 outside the mask), db = the batch sum of dout.
        """
        x, Wm, mask = cache
        dx = dout @ Wm.T if need_dx else None
        dW = (x.T @ dout) * mask.astype(dout.dtype, copy=False)
        return dx, dW, dout.sum(axis=0)


class MADE:
    """A masked MLP: x (N, D_in) [and a context (N, C)] -> out (N, D_out), in which output
    unit j depends only on input units of smaller degree (and on the context).

    in_degrees (D_in,) and out_degrees (D_out,): integers >= 1 (:func:`position_degrees`);
    hidden_degrees: one (H_l,) array per hidden layer, integers >= 0
    (:func:`hidden_degrees`); context_dim: C, 0 for none; activation: a name from
    ``layers.ACTIVATIONS``; name: the prefix of the parameters.

    Example, IAF style (L latent dimensions, two outputs each, a context of size C)::

        order = np.arange(1, L + 1)
        made = MADE(order, hidden_degrees((40, 40), L, context=True),
                    position_degrees(order, 2), context_dim=C, name="flow.0")

    and a prior over P positions of K codes each (one-hot in, K logits out)::

        deg = position_degrees(np.arange(1, P + 1), K)
        made = MADE(deg, hidden_degrees((256,), P), deg, name="prior")
    """

    def __init__(self, in_degrees: np.ndarray, hidden_degrees: list[np.ndarray],
                 out_degrees: np.ndarray, *, context_dim: int = 0,
                 activation: str = "relu", name: str = "made") -> None:
        self.in_degrees = _int_vector("in_degrees", in_degrees, 1)
        self.out_degrees = _int_vector("out_degrees", out_degrees, 1)
        self.hidden_degrees = [_int_vector(f"hidden_degrees[{i}]", h, 0)
                               for i, h in enumerate(hidden_degrees)]
        if not self.hidden_degrees:
            raise ValueError("a MADE needs at least one hidden layer (hidden_degrees is empty)")
        if isinstance(context_dim, bool) or not isinstance(context_dim, (int, np.integer)) or (
                context_dim < 0):
            raise ValueError(f"context_dim must be an integer >= 0, got {context_dim!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{', '.join(ACTIVATIONS)}")
        self.context_dim = int(context_dim)
        self.activation = activation
        self.name = name
        degrees = [self.in_degrees, *self.hidden_degrees, self.out_degrees]
        n = len(degrees) - 1
        #: One (D_in, D_out) mask per layer, the last the output layer's (strict).
        self.masks = [layer_mask(degrees[i], degrees[i + 1], strict=i == n - 1)
                      for i in range(n)]

    @property
    def in_dim(self) -> int:
        return len(self.in_degrees)

    @property
    def out_dim(self) -> int:
        return len(self.out_degrees)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """dict name -> shape, in initialisation order."""
        shapes = {}
        for i, m in enumerate(self.masks):
            shapes[f"{self.name}.{i}.W"] = m.shape
            shapes[f"{self.name}.{i}.b"] = (m.shape[1],)
        if self.context_dim:
            shapes[f"{self.name}.context.W"] = (self.context_dim, len(self.hidden_degrees[0]))
        return shapes

    def init_params(self, rng: np.random.Generator, params: dict) -> None:
        """Draw the parameters into ``params`` in float64 (the caller casts them): each
        weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for its
        Linear, fan_in the layer's full input width; entries outside a mask are set to 0."""
        for i, m in enumerate(self.masks):
            bound = 1.0 / math.sqrt(m.shape[0])
            params[f"{self.name}.{i}.W"] = rng.uniform(-bound, bound, size=m.shape) * m
            params[f"{self.name}.{i}.b"] = rng.uniform(-bound, bound, size=m.shape[1])
        if self.context_dim:
            bound = 1.0 / math.sqrt(self.context_dim)
            shape = (self.context_dim, len(self.hidden_degrees[0]))
            params[f"{self.name}.context.W"] = rng.uniform(-bound, bound, size=shape)

    def _check_context(self, context, n):
        if self.context_dim == 0:
            if context is not None:
                raise ValueError(f"MADE {self.name!r} has no context (context_dim=0), got one")
            return
        if context is None or np.shape(context) != (n, self.context_dim):
            got = None if context is None else np.shape(context)
            raise ValueError(f"MADE {self.name!r} needs a context of shape ({n}, "
                             f"{self.context_dim}), got {got}")

    def forward(self, params: dict, x: np.ndarray, context: int = None) -> tuple[np.ndarray, tuple]:
        """x (N, D_in) [, context (N, C)] -> out (N, D_out), cache.

        h_1 = act(x @ (W_0 * M_0) + c @ W_context + b_0), h_l = act(h_{l-1} @ (W * M) + b),
        out = h_last @ (W_out * M_out) + b_out (no activation on the output).
        """
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MADE {self.name!r} takes inputs of shape (N, {self.in_dim}), "
                             f"got {x.shape}")
        self._check_context(context, x.shape[0])
        act = ACTIVATIONS[self.activation]
        caches, h, W_context = [], x, None
        last = len(self.masks) - 1
        for i, m in enumerate(self.masks):
            h, lin = MaskedLinear.forward(h, params[f"{self.name}.{i}.W"],
                                          params[f"{self.name}.{i}.b"], m)
            if i == 0 and self.context_dim:
                W_context = params[f"{self.name}.context.W"]
                h = h + context @ W_context
            act_cache = None
            if i < last:
                h, act_cache = act.forward(h)
            caches.append((lin, act_cache))
        return h, (caches, context, W_context)

    def backward(self, dout: np.ndarray, cache: tuple, grads: dict,
                 need_dx: bool = True) -> np.ndarray | None:
        """dout (N, D_out) -> (dx (N, D_in) or None, dcontext (N, C) or None).

        Writes dW (masked: 0 outside the mask), db and d context.W into ``grads`` under the
        parameters' names. ``need_dx=False`` skips dx (when x is data, as in a prior).
        """
        caches, context, W_context = cache
        act = ACTIVATIONS[self.activation]
        d = dout
        dcontext = None
        for i in reversed(range(len(self.masks))):
            lin, act_cache = caches[i]
            if act_cache is not None:
                d = act.backward(d, act_cache)
            if i == 0 and self.context_dim:
                grads[f"{self.name}.context.W"] = context.T @ d
                dcontext = d @ W_context.T
            want_dx = i > 0 or need_dx
            d, grads[f"{self.name}.{i}.W"], grads[f"{self.name}.{i}.b"] = (
                MaskedLinear.backward(d, lin, need_dx=want_dx))
        dx = d if need_dx else None
        return dx, dcontext
