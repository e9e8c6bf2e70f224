"""A plain (deterministic) autoencoder, PCA as its linear special case, and principal angles.

Lesson 01 derives and uses all three:

* :class:`Autoencoder` -- an MLP encoder ``x -> z`` and decoder ``z -> x_hat`` trained to
  reconstruct its input, with the backward pass written out like the VAE's. With no hidden
  layers and ``output="linear"`` it is the *linear autoencoder* of lesson 01, Exercise 1.1.
* :func:`pca` -- the mean and principal directions of a data set (lesson 01, Exercise 1.2);
  projecting onto the first ``k`` of them is the best rank-``k`` linear reconstruction.
* :func:`principal_angles` -- the angles between two subspaces (lesson 01, Exercise 1.3),
  which is how the lesson shows that the linear autoencoder finds the PCA subspace.
* :func:`fit` -- Adam on shuffled mini-batches, the short loop lesson 01 trains with.

Loss convention, as everywhere in the course: for each example a sum over pixels, then the
mean over the batch. ``output="linear"`` uses the squared error ``sum_j (x_hat_j - x_j)^2``;
``output="bernoulli"`` treats the decoder's output as logits and uses the cross-entropy
``-sum_j [x_j log s_j + (1 - x_j) log(1 - s_j)]`` with ``s = sigmoid(logits)``.

Parameters, in ``ae.params`` with ``W`` of shape (D_in, D_out): ``enc.{i}.W/b`` hidden
layers of the encoder, ``enc.z.W/b`` its output layer (the code), ``dec.{i}.W/b`` hidden
layers of the decoder and ``dec.out.W/b`` its output layer. The code ``z`` and the linear
output have no activation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.layers import ACTIVATIONS, sigmoid
from vae_from_scratch.networks import Layer, Network, dense_layers
from vae_from_scratch.optim import Adam

__all__ = ["Autoencoder", "OUTPUTS", "fit", "pca", "principal_angles"]

OUTPUTS = ("linear", "bernoulli")


class Autoencoder:
    """An MLP autoencoder ``x -> z -> x_hat`` with hand-derived gradients (lesson 01).

    Args:
        input_dim: D, the length of a data vector.
        hidden_dims: widths of the encoder's hidden layers; the decoder mirrors them.
            ``()`` gives a linear encoder and decoder.
        latent_dim: K, the length of the code ``z``.
        activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"`` for the hidden layers.
        output: ``"linear"`` (squared error on the raw output) or ``"bernoulli"``
            (output = logits, cross-entropy loss; :meth:`decode` returns probabilities).
        seed: seeds the initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as in the VAE.
        dtype: ``np.float32`` or ``np.float64``.
        params: use these parameters instead of fresh ones (checked against the shapes).

    Example::

        ae = Autoencoder(784, (256,), 2, output="bernoulli", seed=0)
        loss, grads = ae.loss_and_grads(x)      # grads has the keys of ae.params
        z = ae.encode(x)                        # (N, 2)
        x_hat = ae.decode(z)                    # (N, 784), pixel probabilities
    """

    def __init__(self, input_dim: int = 784, hidden_dims: Sequence[int] = (256,),
                 latent_dim: int = 2, *, activation: str = "relu", output: str = "bernoulli",
                 seed: int = 0, dtype: Any = np.float32, params: dict | None = None) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{', '.join(ACTIVATIONS)}")
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; expected one of {', '.join(OUTPUTS)}")
        dims = (input_dim, latent_dim, *hidden_dims)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
               for d in dims):
            raise ValueError(f"dimensions must be positive integers, got input_dim="
                             f"{input_dim!r}, hidden_dims={hidden_dims!r}, "
                             f"latent_dim={latent_dim!r}")
        self.input_dim = int(input_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.output = output
        self.dtype = np.dtype(dtype).type
        enc = (self.input_dim, *self.hidden_dims)
        dec = (self.latent_dim, *reversed(self.hidden_dims))
        # the code z and the output layer have no activation
        code = Layer("linear", "enc.z", (enc[-1], self.latent_dim))
        out = Layer("linear", "dec.out", (dec[-1], self.input_dim))
        self.encoder = Network(dense_layers("enc", enc, activation) + [code],
                               self.input_dim, self.latent_dim)
        self.decoder = Network(dense_layers("dec", dec, activation) + [out],
                               self.latent_dim, self.input_dim)
        shapes = self.param_shapes()
        if params is None:
            params = {}
            rng = np.random.default_rng(seed)
            self.encoder.init_params(rng, params)
            self.decoder.init_params(rng, params)
            params = {name: value.astype(self.dtype) for name, value in params.items()}
        else:
            if set(params) != set(shapes):
                raise ValueError(f"params must have the keys {sorted(shapes)}, "
                                 f"got {sorted(params)}")
            for name, shape in shapes.items():
                if np.shape(params[name]) != shape:
                    raise ValueError(f"params[{name!r}] must have shape {shape}, "
                                     f"got {np.shape(params[name])}")
        self.params = params

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """dict name -> shape, in initialisation order (W before b for each layer)."""
        return {**self.encoder.param_shapes(), **self.decoder.param_shapes()}

    # --- forward -------------------------------------------------------------------------------

    def _encode(self, x):
        return self.encoder.forward(self.params, x)

    def _decode(self, z):
        return self.decoder.forward(self.params, z)

    def _as_batch(self, a, width, name):
        a = np.asarray(a)
        if a.ndim != 2 or a.shape[1] != width:
            raise ValueError(f"{name} must have shape (N, {width}), got {a.shape}")
        return a.astype(self.dtype, copy=False)

    def encode(self, x: Any) -> np.ndarray:
        """x (N, D) -> the codes z (N, K)."""
        return self._encode(self._as_batch(x, self.input_dim, "x"))[0]

    def decode(self, z: Any) -> np.ndarray:
        """z (N, K) -> reconstructions (N, D): the output itself for ``output="linear"``,
        pixel probabilities sigmoid(logits) for ``output="bernoulli"``."""
        out = self._decode(self._as_batch(z, self.latent_dim, "z"))[0]
        return sigmoid(out) if self.output == "bernoulli" else out

    def reconstruct(self, x: Any) -> np.ndarray:
        """x (N, D) -> decode(encode(x)), (N, D)."""
        return self.decode(self.encode(x))

    def per_example_loss(self, x: Any) -> np.ndarray:
        """x (N, D) -> (N,): each example's loss, summed over pixels."""
        x = self._as_batch(x, self.input_dim, "x")
        out = self._decode(self._encode(x)[0])[0]
        return self._per_example(x, out)

    def _per_example(self, x, out):
        if self.output == "bernoulli":
            return -dist.bernoulli_log_likelihood(x, out)
        diff = out - x
        return np.sum(diff * diff, axis=1)

    def loss(self, x: Any) -> float:
        """The batch mean of :meth:`per_example_loss`, a float."""
        return float(np.mean(self.per_example_loss(x)))

    # --- backward ------------------------------------------------------------------------------

    def loss_and_grads(self, x: Any) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads): the batch-mean loss (float) and dloss/dparams (same keys, shapes).

        Squared error: loss = (1/N) sum_n sum_j (out_nj - x_nj)^2, so dloss/dout =
        2 (out - x) / N. Cross-entropy with logits: dloss/dout = (sigmoid(out) - x) / N.
        From there, backward through the decoder, the code layer and the encoder.
        """
        x = self._as_batch(x, self.input_dim, "x")
        n = x.shape[0]
        z, enc_caches = self._encode(x)
        out, dec_caches = self._decode(z)
        loss = float(np.mean(self._per_example(x, out)))
        if self.output == "bernoulli":
            d_out = (sigmoid(out) - x) / n
        else:
            d_out = 2.0 * (out - x) / n
        grads = {}
        dz = self.decoder.backward(d_out, dec_caches, grads)
        self.encoder.backward(dz, enc_caches, grads, need_dx=False)
        grads = {k: grads[k].astype(self.dtype, copy=False) for k in self.params}
        return loss, grads

    def __repr__(self):
        dims = " -> ".join(str(d) for d in (self.input_dim, *self.hidden_dims, self.latent_dim))
        return (f"Autoencoder({dims} -> ... -> {self.input_dim}, activation={self.activation!r}, "
                f"output={self.output!r}, dtype={np.dtype(self.dtype).name})")


def pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the first ``k`` principal directions of the rows of ``x`` (lesson 01).

    x (N, D), 1 <= k <= min(N, D) -> (mean (D,), components (k, D)). The components are
    orthonormal rows ordered by decreasing variance: the top right singular vectors of the
    centred data ``x - mean``. Each is defined up to its sign; here the sign is fixed so
    that the entry of largest magnitude of every component is positive.

    The best rank-``k`` reconstruction of a row is ``mean + (x - mean) @ C.T @ C``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {x.shape}")
    if isinstance(k, bool) or not 1 <= k <= min(x.shape):
        raise ValueError(f"k must be between 1 and {min(x.shape)}, got {k!r}")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:k]
    rows = np.arange(k)
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    return mean, components * signs[:, None]


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The principal angles, in radians and ascending, between the column spaces of ``a``
    (D, k) and ``b`` (D, m), each of full column rank (lesson 01).

    With orthonormal bases ``Qa``, ``Qb`` (from QR), the cosines of the angles are the
    singular values of ``Qa.T @ Qb``. Returns min(k, m) angles in [0, pi/2].
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need two (D, k) matrices with the same D, got {a.shape}, {b.shape}")
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return np.arccos(np.clip(cosines, -1.0, 1.0))


def fit(ae: Autoencoder, x: np.ndarray, epochs: int, *,
        lr: float | Callable[[int], float] = 1e-3, batch_size: int = 100, seed: int = 0,
        loss_and_grads: Callable | None = None,
        on_epoch: Callable[[int, Autoencoder], Any] | None = None) -> list[float]:

    """Train ``ae`` in place with Adam on shuffled mini-batches; returns the per-epoch mean
    of the mini-batch losses (a list of floats).

    Args:
        ae: an :class:`Autoencoder`.
        x: (N, D) training data.
        epochs: passes over the data.
        lr: Adam's step size: a number, or a function ``epoch -> step size``.
        batch_size: rows per step; the last batch of an epoch may be smaller.
        seed: seeds the shuffling, so a run repeats exactly.
        loss_and_grads: ``f(params, x_batch) -> (loss, grads)`` to use instead of
            ``ae.loss_and_grads`` (lesson 01 trains with the learner's own function).
        on_epoch: ``f(epoch, ae)`` called after every epoch (to record anything).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    x = ae._as_batch(x, ae.input_dim, "x")
    schedule = lr if callable(lr) else (lambda epoch: lr)
    opt = Adam(ae.params, lr=schedule(0))
    rng = np.random.default_rng(seed)
    step = (lambda xb: ae.loss_and_grads(xb)) if loss_and_grads is None \
        else (lambda xb: loss_and_grads(ae.params, xb))
    history = []
    for epoch in range(epochs):
        opt.lr = schedule(epoch)
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch_size):
            loss, grads = step(x[order[start:start + batch_size]])
            if not np.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss} in epoch {epoch}; "
                                         "try a smaller learning rate")
            opt.step(grads)
            losses.append(loss)
        history.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(epoch, ae)
    return history
