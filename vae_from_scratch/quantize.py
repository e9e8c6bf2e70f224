"""Discrete codes: the vector quantizer and finite scalar quantization, each with a forward and
a hand-derived backward (lesson 11).

Same pattern as :mod:`vae_from_scratch.layers` and :mod:`vae_from_scratch.conv`::

    z_q, cache = VectorQuantizer.forward(z_e, codebook)   # cache.codes: the chosen codes
    dz_e = VectorQuantizer.backward(dz_q, cache)          # the straight-through estimator

**Shapes.** The encoder's output ``z_e`` is a grid of vectors, (N, D, H, W) in NCHW as
:mod:`conv` makes it (7 x 7 positions for MNIST), or a plain batch of rows (M, D). The
codebook is (K, D): K vectors of size D. The codes are integers in 0..K-1, one per position:
(N, H, W) for a grid, (M,) for rows. Inside, a grid is handled as the rows of
:func:`to_rows`, (N*H*W, D), the position (h, w) of example n at row (n*H + h)*W + w.

**The quantizer.** Each position's vector is replaced by its nearest codebook vector,

    k(z) = argmin_k ||z - e_k||^2,        z_q = e_{k(z)}.

**Its gradient is not one.** z_q is piecewise constant in z_e: a small change of z_e leaves
the nearest code, hence z_q, unchanged, so dz_q/dz_e = 0 wherever it exists (everywhere but
on the boundaries between codes, where z_q jumps). Backpropagation would hand the encoder
nothing. The straight-through estimator (Bengio et al. 2013; van den Oord et al. 2017)
instead copies the decoder's gradient to the encoder, dL/dz_e := dL/dz_q: it is the exact
gradient of the *surrogate* z_e + sg[e_k - z_e], whose value is e_k and whose derivative in
z_e is the identity (sg: stop-gradient, a constant for differentiation).

**The two losses** (van den Oord, Vinyals and Kavukcuoglu 2017, equation 3). The decoder's
gradient never reaches the codebook (it stops in sg[e_k - z_e]), so two more terms train the
codebook and hold the encoder near it:

    codebook loss     ||sg[z_e] - e_k||^2     gradient for e_k only:   2 (e_k - z_e)
    commitment loss   ||z_e - sg[e_k]||^2     gradient for z_e only:   2 (z_e - e_k)

equal in value and opposite in gradient. The training loss is recon + codebook + beta *
commitment with beta = :data:`COMMITMENT_BETA` = 0.25. **Normalisation**, the course's
convention (``vae.py``): each term is summed over D and over the H*W positions of an
example, one number per example (N,), and the figure reported is the mean over the batch,
as the reconstruction's nats per example are. Each ``*_backward(dout, ...)`` takes dout =
dL/d(per-example loss), shape (N,), e.g. ``np.full(N, 1/N)`` for the batch mean.

**The VAE it is.** The posterior q(k | x) puts probability 1 on the nearest code at each
position (one-hot), and the prior is uniform over the K codes, so per position
KL(q || p) = sum_k q_k log(q_k / (1/K)) = 1 * log(1 / (1/K)) = log K exactly, whatever x:
the rate of the code is H*W log2 K bits per image, 49 log2 K on a 7 x 7 grid
(:func:`rate_bits`). Being constant, it drops out of the gradient.

**The codebook by moving averages** (the paper's appendix; :func:`ema_update`) and **dead
codes** (:func:`restart_dead_codes`, :func:`perplexity`) are below, then **finite scalar
quantization** (Mentzer et al. 2023; :class:`FSQ`), which needs no codebook at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "COMMITMENT_BETA",
    "EMA_DECAY",
    "EMA_EPS",
    "FSQ",
    "FSQCache",
    "VQCache",
    "VectorQuantizer",
    "code_counts",
    "codebook_loss",
    "codebook_loss_backward",
    "commitment_loss",
    "commitment_loss_backward",
    "ema_init",
    "ema_update",
    "from_rows",
    "fsq_codes",
    "fsq_values",
    "lookup",
    "nearest_codes",
    "perplexity",
    "rate_bits",
    "dead_code_threshold",
    "restart_dead_codes",
    "squared_distances",
    "to_rows",
]

#: The commitment loss's weight, van den Oord et al. (2017)'s choice; they report results
#: robust to values from 0.1 to 2.0.
COMMITMENT_BETA = 0.25
#: The EMA codebook's decay gamma and Laplace-smoothing constant epsilon (the paper's appendix
#: uses gamma = 0.99).
EMA_DECAY = 0.99
EMA_EPS = 1e-5


# -- shapes -----------------------------------------------------------------------------------


def _float_array(a, name):
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    return a


def to_rows(z: np.ndarray) -> np.ndarray:
    """A grid of vectors as rows: z (N, D, H, W) -> (N*H*W, D), row (n*H + h)*W + w holding
    z[n, :, h, w]; rows (M, D) are returned as they are."""
    z = _float_array(z, "z")
    if z.ndim == 2:
        return z
    if z.ndim != 4:
        raise ValueError(f"z must be (N, D, H, W) or (M, D), got shape {z.shape}")
    return z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])


def from_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of :func:`to_rows`: rows (N*H*W, D) -> (N, D, H, W) for ``shape`` = (N, D, H,
    W); for a 2-D ``shape`` the rows themselves."""
    if len(shape) == 2:
        return rows.reshape(shape)
    n, d, h, w = shape
    return rows.reshape(n, h, w, d).transpose(0, 3, 1, 2)


def _positions_per_example(shape):
    """H*W for a grid (N, D, H, W); 1 for rows (M, D), each row an example."""
    return shape[2] * shape[3] if len(shape) == 4 else 1


def _codes_shape(shape):
    """The codes' shape for z of ``shape``: (N, H, W) for a grid, (M,) for rows."""
    return (shape[0], shape[2], shape[3]) if len(shape) == 4 else (shape[0],)


def _check_codebook(codebook, d):
    codebook = _float_array(codebook, "codebook")
    if codebook.ndim != 2 or codebook.shape[1] != d or codebook.shape[0] < 1:
        raise ValueError(f"codebook must be (K, D) with D = {d}, the size of z's vectors; got "
                         f"shape {codebook.shape}")
    return codebook


def _check_codes(codes, shape, k):
    """codes of z's grid (N, H, W) or rows (M,), as an int64 array of flat rows (M,)."""
    codes = np.asarray(codes)
    want = _codes_shape(shape)
    if codes.shape != want or codes.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers of shape {want} (one per position of z "
                         f"{tuple(shape)}), got {codes.dtype} {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise ValueError(f"codes must be in 0..{k - 1} (K = {k} codebook vectors), got values "
                         f"from {codes.min()} to {codes.max()}")
    return codes.reshape(-1).astype(np.int64, copy=False)


# -- the vector quantizer ---------------------------------------------------------------------


def squared_distances(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """||z_m - e_k||^2 for every row and every codebook vector: z (M, D), codebook (K, D) ->
    (M, K).

    Expanded, ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2: one matrix product z @ codebook.T for
    the cross terms and two vectors of squared norms, broadcast. No Python loop, and no
    (M, K, D) array of differences (at M = 128*49 rows, K = 512 and D = 64 that would be 205
    million numbers; the (M, K) result is 3.2 million). Round-off can leave a distance a
    little below 0 where z is on a code; those are clipped to 0.
    """
    z = to_rows(z)
    codebook = _check_codebook(codebook, z.shape[1])
    d = np.sum(z * z, axis=1)[:, None] - 2.0 * (z @ codebook.T)
    d += np.sum(codebook * codebook, axis=1)[None, :]
    return np.maximum(d, 0.0, out=d)


def nearest_codes(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The index of the nearest codebook vector for each row: z (M, D) -> (M,) int64 (ties go
    to the lower index)."""
    return np.argmin(squared_distances(z, codebook), axis=1)


def lookup(codes: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Codebook vectors for given codes: codes (N, H, W) -> (N, D, H, W), codes (M,) -> (M, D).
    Decodes a grid of codes drawn from a prior."""
    codes = np.asarray(codes)
    codebook = _float_array(codebook, "codebook")
    if codes.ndim not in (1, 3) or codebook.ndim != 2:
        raise ValueError(f"codes must be (N, H, W) or (M,) and codebook (K, D), got shapes "
                         f"{codes.shape} and {codebook.shape}")
    k, d = codebook.shape
    shape = (codes.shape[0], d, *codes.shape[1:]) if codes.ndim == 3 else (codes.shape[0], d)
    return from_rows(codebook[_check_codes(codes, shape, k)], shape)


@dataclass(frozen=True)
class VQCache:
    """What :meth:`VectorQuantizer.backward` and the losses need.

    codes: the chosen code per position, (N, H, W) for a grid, (M,) for rows.
    shape: the shape of z_e.
    """

    codes: np.ndarray
    shape: tuple


class VectorQuantizer:
    """The nearest codebook vector at each position, with the straight-through gradient."""

    @staticmethod
    def forward(z_e: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, VQCache]:
        """z_e (N, D, H, W) or (M, D), codebook (K, D) -> z_q (shape of z_e), cache.

        z_q[n, :, h, w] = codebook[k] with k = argmin_k ||z_e[n, :, h, w] - codebook[k]||^2;
        ``cache.codes`` holds k, (N, H, W) (or (M,) for rows).
        """
        z_e = _float_array(z_e, "z_e")
        rows = to_rows(z_e)
        codebook = _check_codebook(codebook, rows.shape[1]).astype(z_e.dtype, copy=False)
        codes = nearest_codes(rows, codebook)
        z_q = from_rows(codebook[codes], z_e.shape)
        return z_q, VQCache(codes.reshape(_codes_shape(z_e.shape)), z_e.shape)

    @staticmethod
    def backward(dz_q: np.ndarray, cache: VQCache) -> np.ndarray:
        """dz_q (shape of z_e) -> dz_e, the straight-through estimate: dz_q itself.

        The true derivative dz_q/dz_e is 0 almost everywhere. The estimator is the exact
        derivative of the surrogate z_e + sg[e_k - z_e], which equals z_q in value: the
        decoder's gradient at z_q is handed to z_e as if the quantizer were the identity.
        """
        dz_q = np.asarray(dz_q)
        if dz_q.shape != tuple(cache.shape):
            raise ValueError(f"dz_q must have z_e's shape {tuple(cache.shape)}, got "
                             f"{dz_q.shape}")
        return dz_q.copy()


# -- the codebook and commitment losses ------------------------------------------------------


def _errors(z_e, codebook, codes):
    """Rows z_e - e_k (M, D) for the given codes, and the positions per example."""
    z_e = _float_array(z_e, "z_e")
    rows = to_rows(z_e)
    codebook = _check_codebook(codebook, rows.shape[1])
    flat = _check_codes(codes, z_e.shape, codebook.shape[0])
    return rows - codebook[flat], flat, _positions_per_example(z_e.shape)


def _per_example(values, positions):
    """Per-row values (M,) summed over each example's positions -> (N,)."""
    return values.reshape(-1, positions).sum(axis=1)


def _row_weights(dout, n_rows, positions, dtype):
    """dout (N,) repeated for each of an example's positions -> (M, 1)."""
    dout = np.asarray(dout, dtype=dtype)
    n = n_rows // positions
    if dout.shape != (n,):
        raise ValueError(f"dout must have one entry per example, shape ({n},), got {dout.shape}")
    return np.repeat(dout, positions)[:, None]


def codebook_loss(z_e: np.ndarray, codebook: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """||sg[z_e] - e_k||^2 summed over D and each example's positions -> (N,).

    z_e (N, D, H, W) or (M, D) (then each row is an example), codebook (K, D), codes of the
    grid (N, H, W) or rows (M,). Trains the codebook: its gradient reaches e_k only.
    """
    err, _, positions = _errors(z_e, codebook, codes)
    return _per_example(np.sum(err * err, axis=1), positions)


def codebook_loss_backward(dout: np.ndarray, z_e: np.ndarray, codebook: np.ndarray,
                           codes: np.ndarray) -> np.ndarray:
    """dout (N,) -> dcodebook (K, D); z_e gets no gradient (it sits inside the stop-gradient).

    d/de_j sum over positions with code j of ||z - e_j||^2 = sum of 2 (e_j - z) over the
    positions assigned to j, each weighted by its example's dout; a code nobody chose gets 0.
    """
    err, flat, positions = _errors(z_e, codebook, codes)
    w = _row_weights(dout, len(flat), positions, err.dtype)
    dcodebook = np.zeros(np.shape(codebook), dtype=err.dtype)
    np.add.at(dcodebook, flat, -2.0 * w * err)  # repeated codes add up (lesson 09's 9.2)
    return dcodebook


def commitment_loss(z_e: np.ndarray, codebook: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """||z_e - sg[e_k]||^2 summed over D and each example's positions -> (N,); the training
    loss weighs it by beta (:data:`COMMITMENT_BETA`). Its gradient reaches z_e only: it keeps
    the encoder's outputs near the codes they chose, so they do not grow away from them."""
    return codebook_loss(z_e, codebook, codes)  # the same number; the gradients differ


def commitment_loss_backward(dout: np.ndarray, z_e: np.ndarray, codebook: np.ndarray,
                             codes: np.ndarray) -> np.ndarray:
    """dout (N,) -> dz_e (shape of z_e) = 2 dout_n (z_e - e_k) at each position; the codebook
    gets no gradient (it sits inside the stop-gradient)."""
    err, flat, positions = _errors(z_e, codebook, codes)
    w = _row_weights(dout, len(flat), positions, err.dtype)
    return from_rows(2.0 * w * err, np.shape(z_e))


# -- the codebook by exponential moving averages ---------------------------------------------


def ema_init(codebook: np.ndarray, count: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The moving averages of :func:`ema_update` for a fresh codebook (K, D): cluster_size
    (K,) = ``count`` and embed_sum (K, D) = count * codebook, as if each code were the mean of
    ``count`` encoder outputs at its own position (so that embed_sum / cluster_size is the
    codebook itself)."""
    codebook = _float_array(codebook, "codebook")
    if codebook.ndim != 2:
        raise ValueError(f"codebook must be (K, D), got shape {codebook.shape}")
    if not (math.isfinite(count) and count > 0):
        raise ValueError(f"count must be a positive number, got {count!r}")
    return np.full(codebook.shape[0], count, dtype=codebook.dtype), count * codebook


def code_counts(codes: np.ndarray, k: int) -> np.ndarray:
    """How often each of the K codes occurs in ``codes`` (any shape): (K,) int64."""
    codes = np.asarray(codes).reshape(-1)
    if codes.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers in 0..{k - 1}, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise ValueError(f"codes must be integers in 0..{k - 1}, got values from "
                         f"{codes.min()} to {codes.max()}")
    return np.bincount(codes, minlength=k)


def ema_update(cluster_size: np.ndarray, embed_sum: np.ndarray, z_e: np.ndarray,
               codes: np.ndarray, decay: float = EMA_DECAY,
               eps: float = EMA_EPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the codebook by exponential moving averages (van den Oord et al. 2017,
    appendix A.1). Returns the new (codebook (K, D), cluster_size (K,), embed_sum (K, D)).

    cluster_size (K,), embed_sum (K, D): the moving averages (:func:`ema_init`); z_e (N, D,
    H, W) or (M, D), codes (N, H, W) or (M,): this batch's encoder outputs and their codes.

    **Online k-means.** With the assignments fixed, the sum of squared distances
    sum_i ||z_i - e_{k_i}||^2 is smallest at e_k = s_k / n_k, the mean of the n_k outputs
    assigned to code k (s_k their sum): the k-means update. Over a stream of batches, whose
    encoder outputs drift as the encoder trains, keep moving averages of both sums and divide:

        N_k <- gamma N_k + (1 - gamma) n_k,     m_k <- gamma m_k + (1 - gamma) s_k,
        e_k = m_k / N_k.

    gamma = 0 is one k-means step on the batch; gamma close to 1 averages over about
    1 / (1 - gamma) batches. Writing m_k = e_k N_k_old, the step is
    e_k <- e_k - (1 - gamma) / (2 N_k_new) * d/de_k sum_{i: k_i = k} ||z_i - e_k||^2: gradient
    descent on the codebook loss with a step size of its own for each code.

    **Laplace smoothing.** A code no output chose has n_k = 0 and N_k shrinking towards 0;
    without smoothing, m_k / N_k is 0/0 once both underflow (and huge while N_k is tiny). The
    counts are smoothed as a categorical's with pseudo-count eps,
    N_k' = (N_k + eps) / (n + K eps) * n with n = sum_k N_k, which keeps every N_k' > 0 and
    their sum n; the codebook is m_k / N_k'. Returned are the unsmoothed N_k and m_k.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay!r}")
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    rows = to_rows(z_e)
    cluster_size, embed_sum = np.asarray(cluster_size), np.asarray(embed_sum)
    k = cluster_size.shape[0]
    if cluster_size.shape != (k,) or embed_sum.shape != (k, rows.shape[1]):
        raise ValueError(f"cluster_size must be (K,) and embed_sum (K, D) = ({k}, "
                         f"{rows.shape[1]}), got {cluster_size.shape} and {embed_sum.shape}")
    flat = _check_codes(codes, np.shape(z_e), k)
    n_k = np.bincount(flat, minlength=k).astype(rows.dtype)
    s_k = np.zeros_like(embed_sum, dtype=rows.dtype)
    np.add.at(s_k, flat, rows)
    cluster_size = decay * cluster_size + (1.0 - decay) * n_k
    embed_sum = decay * embed_sum + (1.0 - decay) * s_k
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + k * eps) * n
    return embed_sum / smoothed[:, None], cluster_size, embed_sum


# -- codebook usage ----------------------------------------------------------------------------


def perplexity(codes: np.ndarray, k: int) -> float:
    """exp(entropy) of the codes' empirical distribution, in 1..K: K when every code is used
    equally often, 1 when one code takes everything (codebook collapse). codes: any shape.

    With p_k = count_k / total, perplexity = exp(-sum_k p_k log p_k) (0 log 0 = 0): the
    number of equally used codes that would have the same entropy.
    """
    counts = code_counts(codes, k)
    if counts.sum() == 0:
        raise ValueError("perplexity needs at least one code")
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def dead_code_threshold(positions: float, share: float) -> float:
    """The use below which a code counts as dead at a restart: ``share`` of the ``positions``
    assigned since the last restart, and never less than 1, so an unused code is always dead
    (``share`` = 0: the unused codes only). Both backends' restarts ask it."""
    return max(1.0, share * positions)


def restart_dead_codes(codebook: np.ndarray, counts: np.ndarray, z_e: np.ndarray,
                       rng: np.random.Generator,
                       threshold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Re-seed the codes used fewer than ``threshold`` times with encoder outputs.

    codebook (K, D); counts (K,): each code's use since the last restart (:func:`code_counts`
    summed over steps, or the EMA cluster sizes); z_e (N, D, H, W) or (M, D): encoder
    outputs to draw from; rng: a ``np.random.Generator``. Returns (new codebook (K, D), the
    restarted codes' indices (R,)).

    A dead code sits where no encoder output is nearest to it, so neither the codebook loss
    nor the EMA ever moves it: placing it on an actual output (distinct outputs, drawn
    without replacement while there are enough) puts it where the data are, and the next
    assignments share that output's cluster between the two.
    """
    rows = to_rows(z_e)
    codebook = _check_codebook(codebook, rows.shape[1])
    counts = np.asarray(counts)
    if counts.shape != (codebook.shape[0],):
        raise ValueError(f"counts must be (K,) = ({codebook.shape[0]},), got {counts.shape}")
    dead = np.flatnonzero(counts < threshold)
    out = codebook.copy()
    if dead.size:
        picks = rng.choice(len(rows), size=dead.size, replace=dead.size > len(rows))
        out[dead] = rows[picks]
    return out, dead


# -- the rate ------------------------------------------------------------------------------------


def rate_bits(n_codes: int, positions: int = 49) -> float:
    """Bits per image of a grid of ``positions`` codes from ``n_codes`` possibilities, under the
    uniform prior: positions * log2(n_codes). It is the KL(q || p) of the one-hot posterior
    (log K nats per position), in bits: 49 log2 K on a 7 x 7 grid. For FSQ, n_codes is the
    product of the levels."""
    if n_codes < 1 or positions < 1:
        raise ValueError(f"n_codes and positions must be >= 1, got {n_codes}, {positions}")
    return positions * math.log2(n_codes)


# -- finite scalar quantization ----------------------------------------------------------------


def _check_levels(levels, d):
    levels = tuple(levels)
    if len(levels) != d or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   and v >= 2 for v in levels):
        raise ValueError(f"levels must be {d} integers >= 2, one per channel of z (D = {d}), "
                         f"got {levels}")
    return tuple(int(v) for v in levels)


def _fsq_constants(levels, dtype):
    """Per channel, broadcastable over rows (M, d): L / 2, the offset o (1/2 for even L, 0 for
    odd) and the half-range (L - 1) / 2 of the rounded values."""
    L = np.asarray(levels, dtype=np.float64)
    return tuple(a.astype(dtype) for a in (L / 2, 0.5 * (1 - L % 2), (L - 1) / 2))


@dataclass(frozen=True)
class FSQCache:
    """What :meth:`FSQ.backward` and :func:`fsq_codes` need: the slope of the bounding at each
    entry (M, d), the digit (level index 0..L-1) chosen at each entry (M, d), z's shape and
    the levels."""

    slope: np.ndarray
    digits: np.ndarray
    shape: tuple
    levels: tuple


class FSQ:
    """Finite scalar quantization (Mentzer, Minnen, Agustsson and Tschannen 2023).

    Each of a few channels d (3 to 5) of z is bounded and rounded to one of L_i levels: the
    grid of prod_i L_i points is an implicit codebook, fixed, so there is no codebook loss,
    no commitment loss and no code that can die. Per channel, with L levels:

        bounded  b = (L / 2) tanh(z)          in (-L/2, L/2): room for L bins of width 1
        rounded  q = round(b - o) + o         o = 1/2 for even L, 0 for odd: the bin centres
                                              -(L-1)/2, ..., (L-1)/2, one apart (clipped to
                                              them where tanh rounds to +-1)
        output   z_q = q / ((L - 1) / 2)      L evenly spaced values from -1 to 1

    (L = 2: z_q = sign(z); L = 3: -1, 0, 1.) Rounding has derivative 0 almost everywhere;
    the straight-through estimator treats it as the identity, so

        dz_q/dz := (L / 2) (1 - tanh^2 z) / ((L - 1) / 2) = L / (L - 1) (1 - tanh^2 z).

    A position's code is the mixed-radix number of its digits q + (L - 1)/2 in 0..L-1
    (:func:`fsq_codes`); its rate is log2 prod_i L_i bits (:func:`rate_bits`).

    Mentzer et al. bound with (L - 1)/2 tanh (plus a shift for even L) instead of L/2 tanh;
    then the two outermost levels get bins half as wide as the others. Here every level's bin
    has width 1 in b.
    """

    @staticmethod
    def forward(z: np.ndarray, levels: Sequence[int]) -> tuple[np.ndarray, FSQCache]:
        """z (N, d, H, W) or (M, d), levels: d ints >= 2 -> z_q (shape of z), cache."""
        z = _float_array(z, "z")
        rows = to_rows(z)
        levels = _check_levels(levels, rows.shape[1])
        half_l, offset, half_range = _fsq_constants(levels, rows.dtype)
        t = np.tanh(rows)
        # tanh rounds to exactly +-1 for |z| > 9 (float32) or 19 (float64): b = +-L/2 then
        # sits on the outer edge of the outermost bin, and the clip keeps it in that bin
        q = np.clip(np.round(half_l * t - offset) + offset, -half_range, half_range)
        digits = np.rint(q + half_range).astype(np.int64)
        z_q = from_rows(q / half_range, z.shape)
        slope = (half_l / half_range) * (1.0 - t * t)
        return z_q, FSQCache(slope, digits, z.shape, levels)

    @staticmethod
    def backward(dz_q: np.ndarray, cache: FSQCache) -> np.ndarray:
        """dz_q (shape of z) -> dz (shape of z): straight through the rounding, exactly
        through the bounding: dz = dz_q L / (L - 1) (1 - tanh^2 z)."""
        dz_q = _float_array(dz_q, "dz_q")
        if dz_q.shape != tuple(cache.shape):
            raise ValueError(f"dz_q must have z's shape {tuple(cache.shape)}, got {dz_q.shape}")
        return from_rows(to_rows(dz_q) * cache.slope, cache.shape)


def fsq_codes(cache: FSQCache) -> np.ndarray:
    """Each position's code from :meth:`FSQ.forward`'s cache: (N, H, W) (or (M,)) ints in
    0..prod(levels) - 1, the digits read as a mixed-radix number, the last channel fastest
    (``np.ravel_multi_index``)."""
    flat = np.ravel_multi_index(tuple(cache.digits.T), cache.levels)
    return flat.reshape(_codes_shape(cache.shape))


def fsq_values(codes: np.ndarray, levels: Sequence[int],
               dtype: Any = np.float64) -> np.ndarray:
    """The inverse of :func:`fsq_codes`: the quantized values of given codes, (N, H, W) ->
    z_q (N, d, H, W) or (M,) -> (M, d), d = len(levels). Decodes a grid drawn from a prior."""
    codes = np.asarray(codes)
    if codes.ndim not in (1, 3):
        raise ValueError(f"codes must be (N, H, W) or (M,), got shape {codes.shape}")
    levels = _check_levels(levels, len(tuple(levels)))
    d = len(levels)
    shape = (codes.shape[0], d, *codes.shape[1:]) if codes.ndim == 3 else (codes.shape[0], d)
    flat = _check_codes(codes, shape, math.prod(levels))
    digits = np.stack(np.unravel_index(flat, levels), axis=1).astype(dtype)
    half_range = (np.asarray(levels, dtype=dtype) - 1) / 2
    return from_rows(digits / half_range - 1.0, shape)
