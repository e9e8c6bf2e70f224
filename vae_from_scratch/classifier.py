"""A small digit classifier, the judge of generated images (lessons 09 and 11).

Lesson 09 builds it to ask whether a conditional VAE draws the digit it was asked for;
lesson 11 asks how confidently it recognises samples from priors over discrete codes. It is
784-256-10 with ReLU, built from the package's layers (``networks.dense_layers``), trained
with Adam on the softmax cross-entropy (lesson 09's exercise 9.3,
:func:`vae_from_scratch.categorical.softmax_cross_entropy`)::

    judge = train_classifier(ds.x_train, ds.y_train)   # about 93 % on the embedded test set
    judge.predict(images)                               # (N,) labels
    judge.probs(images).max(axis=1)                     # (N,) the maximum class probability
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import categorical
from vae_from_scratch.networks import Layer, Network, dense_layers
from vae_from_scratch.optim import Adam

__all__ = ["Classifier", "train_classifier"]


class Classifier:
    """A trained classifier: a :class:`~vae_from_scratch.networks.Network` from images (N, D)
    to class logits (N, n_classes), and its parameters."""

    def __init__(self, net: Network, params: dict[str, np.ndarray]) -> None:
        self.net, self.params = net, params

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x (N, D) -> logits (N, n_classes)."""
        return self.net.forward(self.params, np.asarray(x, dtype=np.float32))[0]

    def probs(self, x: np.ndarray) -> np.ndarray:
        """x (N, D) -> softmax probabilities (N, n_classes)."""
        return np.exp(categorical.log_softmax(self.logits(x).astype(np.float64)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x (N, D) -> the most probable class of each row, (N,)."""
        return self.logits(x).argmax(axis=1)


def train_classifier(x: np.ndarray, y: np.ndarray, hidden: int = 256, epochs: int = 20,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> Classifier:
    """Train a one-hidden-layer ReLU classifier on images x (N, D) with labels y (N,) in
    0..K-1 (K = y.max() + 1), float32, Adam; the seed drives the initialisation and the
    shuffling, so a run repeats bit for bit. Returns a :class:`Classifier`."""
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    if x.ndim != 2 or y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise ValueError(f"x must be (N, D) and y (N,) integer labels, got {x.shape} and "
                         f"{y.dtype} {y.shape}")
    n_classes = int(y.max()) + 1
    layers = dense_layers("clf", (x.shape[1], hidden), "relu")
    layers.append(Layer("linear", "clf.out", (hidden, n_classes)))
    net = Network(layers, x.shape[1], n_classes)
    rng = np.random.default_rng(seed)
    params = {}
    net.init_params(rng, params)
    params = {name: value.astype(np.float32) for name, value in params.items()}
    optimizer = Adam(params, lr=lr)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            logits, caches = net.forward(params, x[batch])
            _, dlogits = categorical.softmax_cross_entropy(logits, y[batch])
            grads = {}
            net.backward(dlogits.astype(np.float32), caches, grads, need_dx=False)
            optimizer.step(grads)
    return Classifier(net, params)
