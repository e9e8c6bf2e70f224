"""Priors over a grid of discrete codes, fitted after the VQ-VAE (lesson 11).

A trained VQ-VAE turns each image into a grid of P = H*W codes in 0..K-1 (7 x 7 for MNIST).
Training assumed a uniform prior, p(k) = 1/K at every position; sampling from it decodes
noise. To generate, fit a prior to the codes of the training images, draw a grid from it and
decode that. Two priors, both scored in nats per image (the code length of a grid):

* :class:`IndependentPrior`: one categorical per position, p(k) = prod_i p_i(k_i), fitted by
  counting. Each position's marginal is right, but positions are drawn independently: a
  stroke's top half from one digit and its bottom half from another, and the samples look
  wrong.
* :class:`AutoregressivePrior`: p(k) = prod_i p(k_i | k_1, ..., k_{i-1}) in raster order (row
  by row, left to right), each factor a softmax over K codes computed by a masked network
  (:mod:`vae_from_scratch.made`, one group of K one-hot input units and K output logits per
  position). Its loss is the softmax cross-entropy at every position, summed over positions
  (lesson 09's exercise 9.3, :func:`vae_from_scratch.categorical.softmax_cross_entropy`), and
  sampling draws the positions one after the other.

Codes are given as (N, H, W) grids or as (N, P) rows in raster order; samples come back in
the prior's ``grid_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vae_from_scratch import categorical
from vae_from_scratch.made import MADE, hidden_degrees, position_degrees
from vae_from_scratch.optim import Adam

__all__ = ["AutoregressivePrior", "IndependentPrior", "train_prior"]


def _check_codes(codes, grid_shape, k):
    """codes (N, H, W) or (N, P) -> (N, P) int64 in raster order, checked."""
    codes = np.asarray(codes)
    p = math.prod(grid_shape)
    if codes.dtype.kind not in "iu" or codes.ndim < 2 or math.prod(codes.shape[1:]) != p or (
            codes.ndim > 2 and codes.shape[1:] != tuple(grid_shape)):
        raise ValueError(f"codes must be integers of shape (N, {', '.join(map(str, grid_shape))})"
                         f" or (N, {p}), got {codes.dtype} {codes.shape}")
    codes = codes.reshape(len(codes), p).astype(np.int64, copy=False)
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise ValueError(f"codes must be in 0..{k - 1}, got values from {codes.min()} to "
                         f"{codes.max()}")
    return codes


class IndependentPrior:
    """One categorical per position: log p(k) = sum_i log p_i(k_i).

    log_probs (P, K): each position's log-probabilities; grid_shape (H, W) with H*W = P.
    """

    def __init__(self, log_probs: np.ndarray, grid_shape: Sequence[int]) -> None:
        self.log_probs = np.asarray(log_probs, dtype=np.float64)
        self.grid_shape = tuple(grid_shape)
        if self.log_probs.ndim != 2 or self.log_probs.shape[0] != math.prod(self.grid_shape):
            raise ValueError(f"log_probs must be (P, K) with P = {math.prod(self.grid_shape)} "
                             f"positions, got shape {self.log_probs.shape}")

    @property
    def n_codes(self) -> int:
        return self.log_probs.shape[1]

    @classmethod
    def fit(cls, codes: np.ndarray, n_codes: int, alpha: float = 1.0) -> IndependentPrior:
        """The maximum-likelihood fit with ``alpha`` pseudo-counts per code and position
        (Laplace smoothing: a code never seen at a position keeps a probability > 0, so a
        test grid never costs infinitely many nats). codes (N, H, W)."""
        codes = np.asarray(codes)
        if codes.ndim != 3:
            raise ValueError(f"codes must be a grid (N, H, W), got shape {codes.shape}")
        flat = _check_codes(codes, codes.shape[1:], n_codes)
        counts = np.zeros((flat.shape[1], n_codes)) + alpha
        np.add.at(counts, (np.broadcast_to(np.arange(flat.shape[1]), flat.shape), flat), 1.0)
        return cls(np.log(counts / counts.sum(axis=1, keepdims=True)), codes.shape[1:])

    def log_prob(self, codes: np.ndarray) -> np.ndarray:
        """log p(codes) in nats: codes (N, H, W) or (N, P) -> (N,)."""
        flat = _check_codes(codes, self.grid_shape, self.n_codes)
        return self.log_probs[np.arange(flat.shape[1]), flat].sum(axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n grids, every position drawn on its own: (n, H, W) int64."""
        logits = np.broadcast_to(self.log_probs, (n, *self.log_probs.shape))
        return categorical.sample(logits, rng).reshape(n, *self.grid_shape)


class AutoregressivePrior:
    """p(k) = prod_i softmax(logits_i(k_<i))[k_i], the logits from a MADE in raster order.

    grid_shape (H, W); n_codes K; hidden_sizes: the MADE's hidden layers (each unit's degree
    in 1..P-1, cycling); seed and dtype as for :class:`~vae_from_scratch.vae.VAE`.
    Parameters, in ``params``: ``code_prior.{i}.W`` (D_in, D_out) and ``code_prior.{i}.b``,
    with D_in = P*K for the first layer and D_out = P*K for the last.

    The input is the one-hot of every position, (N, P*K), unit p*K + k for code k at
    position p (position-major groups of K, as :func:`made.position_degrees` lays them out);
    the output, the K logits of every position, (N, P*K) likewise, read as (N, P, K). The
    masks make position i's logits a function of positions 1..i-1 only, so one forward pass
    scores a whole grid, and sampling needs P passes, one per position.
    """

    def __init__(self, grid_shape: Sequence[int] = (7, 7), n_codes: int = 16,
                 hidden_sizes: Sequence[int] = (512,), *, seed: int = 0, dtype: Any = np.float32,
                 name: str = "code_prior") -> None:
        self.grid_shape = tuple(grid_shape)
        self.n_codes = int(n_codes)
        if self.n_codes < 2:
            raise ValueError(f"n_codes must be at least 2, got {n_codes!r}")
        p = math.prod(self.grid_shape)
        degrees = position_degrees(np.arange(1, p + 1), self.n_codes)
        self.made = MADE(degrees, hidden_degrees(hidden_sizes, p), degrees, name=name)
        self.dtype = np.dtype(dtype)
        params = {}
        self.made.init_params(np.random.default_rng(seed), params)
        self.params = {k: v.astype(self.dtype) for k, v in params.items()}

    @property
    def n_positions(self) -> int:
        return math.prod(self.grid_shape)

    def one_hot(self, codes: np.ndarray) -> np.ndarray:
        """codes (N, H, W) or (N, P) -> the network's input (N, P*K): 1 at p*K + codes[p]."""
        flat = _check_codes(codes, self.grid_shape, self.n_codes)
        n, p = flat.shape
        x = np.zeros((n, p * self.n_codes), dtype=self.dtype)
        x[np.arange(n)[:, None], np.arange(p) * self.n_codes + flat] = 1.0
        return x

    def logits(self, codes: np.ndarray) -> np.ndarray:
        """The logits of every position given the positions before it: codes -> (N, P, K)."""
        out, _ = self.made.forward(self.params, self.one_hot(codes))
        return out.reshape(len(out), self.n_positions, self.n_codes)

    def log_prob(self, codes: np.ndarray) -> np.ndarray:
        """log p(codes) in nats: codes (N, H, W) or (N, P) -> (N,)."""
        flat = _check_codes(codes, self.grid_shape, self.n_codes)
        log_p = categorical.log_softmax(self.logits(flat).astype(np.float64))
        return np.take_along_axis(log_p, flat[:, :, None], axis=2)[:, :, 0].sum(axis=1)

    def loss_and_grads(self, codes: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads): loss the mean over the batch of -log p(codes), in nats per grid,
        i.e. the softmax cross-entropy summed over positions; grads has the keys and shapes
        of ``params``.

        The cross-entropy of (N*P) rows, averaged over rows, is P times smaller than the
        per-grid sum averaged over grids; so both it and its gradient are multiplied by P.
        """
        flat = _check_codes(codes, self.grid_shape, self.n_codes)
        n, p = flat.shape
        out, cache = self.made.forward(self.params, self.one_hot(flat))
        loss, dlogits = categorical.softmax_cross_entropy(out.reshape(n * p, self.n_codes),
                                                          flat.reshape(-1))
        grads = {}
        self.made.backward((p * dlogits).reshape(out.shape), cache, grads, need_dx=False)
        return p * loss, {k: grads[k].astype(self.dtype, copy=False) for k in self.params}

    def sample(self, n: int, rng: np.random.Generator,
               temperature: float = 1.0) -> np.ndarray:
        """n grids drawn position by position in raster order: (n, H, W) int64.

        Position i is drawn from softmax(logits_i / temperature) given the positions already
        drawn; positions not drawn yet hold code 0, which the masks keep from mattering.
        """
        codes = np.zeros((n, self.n_positions), dtype=np.int64)
        for i in range(self.n_positions):
            logits = self.logits(codes)[:, i].astype(np.float64)
            codes[:, i] = categorical.sample(logits, rng, temperature)
        return codes.reshape(n, *self.grid_shape)


def train_prior(prior: AutoregressivePrior, codes: np.ndarray, epochs: int = 10,
                lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                test_codes: np.ndarray | None = None) -> dict[str, list[float]]:
    """Fit ``prior`` (an :class:`AutoregressivePrior`) to training codes (N, H, W) with Adam.

    Returns {"train": the mean training loss of each epoch, "test": the mean -log p of
    ``test_codes`` after each epoch (empty without them)}, nats per grid.
    """
    flat = _check_codes(codes, prior.grid_shape, prior.n_codes)
    rng = np.random.default_rng(seed)
    optimizer = Adam(prior.params, lr=lr)
    history = {"train": [], "test": []}
    for _ in range(epochs):
        order = rng.permutation(len(flat))
        total = 0.0
        for start in range(0, len(flat), batch_size):
            batch = flat[order[start : start + batch_size]]
            loss, grads = prior.loss_and_grads(batch)
            optimizer.step(grads)
            total += loss * len(batch)
        history["train"].append(total / len(flat))
        if test_codes is not None:
            history["test"].append(float(-prior.log_prob(test_codes).mean()))
    return history
