"""Checks for lesson 01, autoencoders and their latent space (``solutions/01_autoencoders.ipynb``).

* Exercise 1.1: ``linear_ae_loss_and_grads(params, x)`` - loss and gradients of the linear
  autoencoder, built from ``layers.Linear``.
* Exercise 1.2: ``pca(x, k)`` - the mean and the first ``k`` principal directions (each
  direction is right up to its sign).
* Exercise 1.3: ``principal_angles(a, b)`` - the angles between two column spaces.
* Exercise 1.4: ``nearest_distances(a, b)`` - each row's distance to the nearest row of
  another set.

The references are :mod:`vae_from_scratch.autoencoder` (1.1 to 1.3) and
:func:`_nearest_distances` here (1.4).
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import autoencoder
from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.checks.values import compare_values

# -- references ------------------------------------------------------------------------------


def _linear_ae_loss_and_grads(params, x):
    """params: 'enc.z.W' (D, K), 'enc.z.b' (K,), 'dec.out.W' (K, D), 'dec.out.b' (D,);
    x (N, D) -> (loss, grads): loss = (1/N) sum_n ||x_hat_n - x_n||^2, grads like params."""
    d, k = np.shape(params["enc.z.W"])
    x = np.asarray(x)
    dtype = np.result_type(x.dtype, params["enc.z.W"].dtype)
    ae = autoencoder.Autoencoder(d, (), k, output="linear", dtype=dtype, params=params)
    return ae.loss_and_grads(x)


def _pca(x, k):
    """x (N, D) -> (mean (D,), components (k, D)), components orthonormal rows."""
    return autoencoder.pca(x, k)


def _principal_angles(a, b):
    """a (D, k), b (D, k) -> (k,) principal angles in radians, ascending."""
    return autoencoder.principal_angles(a, b)


def _nearest_distances(a, b):
    """a (N, D), b (M, D) -> (N,): the Euclidean distance from each row of ``a`` to the
    nearest row of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2: one matrix product instead of an (N, M, D)
    # array of differences; round-off can make a true 0 slightly negative, hence the clip.
    b_sq = np.sum(b * b, axis=1)
    out = np.empty(len(a))
    for start in range(0, len(a), 1024):
        rows = a[start:start + 1024]
        d2 = np.sum(rows * rows, axis=1)[:, None] - 2.0 * rows @ b.T + b_sq[None, :]
        out[start:start + 1024] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


# -- comparison for answers that are right up to signs ----------------------------------------


def _compare_pca(expected, got):
    """PCA directions are defined up to sign: row k of the components may be flipped."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return "expected a tuple (mean, components)"
    mismatch = compare_values(expected[0], got[0], rtol=1e-6, atol=1e-8, path="[0] (mean)")
    if mismatch is not None:
        return mismatch.describe()
    want = np.asarray(expected[1])
    try:
        have = np.asarray(got[1], dtype=np.float64)
    except (TypeError, ValueError):
        return "[1] (components): expected an array"
    if have.shape != want.shape:
        hint = " (one component per row: did you return V instead of V.T?)" \
            if have.shape == want.shape[::-1] else ""
        return (f"[1] (components): expected shape {want.shape}, got shape {have.shape}"
                f"{hint}")
    for i, (w, h) in enumerate(zip(want, have, strict=True)):
        if not (np.allclose(h, w, rtol=1e-6, atol=1e-6)
                or np.allclose(h, -w, rtol=1e-6, atol=1e-6)):
            return (f"[1] (components): row {i} is neither the expected direction nor its "
                    "negative (rows must be ordered by decreasing variance and have length 1)")
    return None


# -- the checkers ------------------------------------------------------------------------------


def _linear_ae_case(n, d, k, seed):
    rng = np.random.default_rng(seed)
    params = {
        "enc.z.W": rng.normal(0.0, 0.5, size=(d, k)),
        "enc.z.b": rng.normal(0.0, 0.5, size=k),
        "dec.out.W": rng.normal(0.0, 0.5, size=(k, d)),
        "dec.out.b": rng.normal(0.0, 0.5, size=d),
    }
    x = np.round(rng.uniform(0.0, 1.0, size=(n, d)), 2)
    return Case(params, x)


linear_ae_loss_and_grads = Checker(
    "1.1",
    reference=_linear_ae_loss_and_grads,
    cases=[
        _linear_ae_case(n=3, d=4, k=2, seed=0),
        _linear_ae_case(n=1, d=5, k=1, seed=1),  # a batch of one
        _linear_ae_case(n=6, d=3, k=2, seed=2),
    ],
    outputs=("loss", "grads"),
    sizes={"N": "x.shape[0]", "D": "x.shape[1]"},
)


def _pca_data(n, d, seed):
    """Data with clearly distinct variances along its directions, so PCA is unique up to
    signs."""
    rng = np.random.default_rng(seed)
    scales = np.array([3.0, 2.0, 1.0, 0.5, 0.25, 0.1])[:d]
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return np.round(rng.normal(size=(n, d)) * scales @ rotation + rng.normal(size=d), 3)


pca = Checker(
    "1.2",
    reference=_pca,
    cases=[
        Case(_pca_data(8, 3, seed=0), 2),
        Case(_pca_data(10, 4, seed=1), 1),
        Case(_pca_data(12, 5, seed=2), 5),  # all the directions
    ],
    compare=_compare_pca,
    outputs=("mean", "components"),
)


def _angle_case(seed):
    rng = np.random.default_rng(seed)
    return Case(np.round(rng.normal(size=(5, 2)), 2), np.round(rng.normal(size=(5, 2)), 2))


_SAME = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
# A 3-D subspace of R^5 given by two bases: its three cosines are 1, and round-off pushes
# at least one of them a hair above 1 (on x86-64 with OpenBLAS, whichever of QR or SVD
# orthonormalizes the bases).
_SAME_3D = np.array([[0.0, 1.8, -1.4], [1.8, -0.8, -0.3], [1.3, -0.4, 0.2],
                     [-1.9, 1.0, 0.2], [-0.7, 1.2, -0.8]])
_UNCLIPPED = "the same subspace twice: every cosine is 1, and round-off can push one past 1"

principal_angles = Checker(
    "1.3",
    reference=_principal_angles,
    cases=[
        # Two planes in 3-D that share the x axis and meet at 45 degrees.
        Case(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
             np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])),
        _angle_case(0),
        # The same plane described by two different, non-orthonormal bases: both angles
        # are 0 (round-off can push a cosine a hair above 1).
        Case(_SAME, _SAME @ np.array([[2.0, 1.0], [-1.0, 3.0]])).strict(_UNCLIPPED),
        Case(_SAME_3D, _SAME_3D @ np.array([[0.0, -1.0, 0.0], [-1.0, -1.0, 1.0],
                                            [-1.0, 0.0, 2.0]])).strict(_UNCLIPPED),
        # One direction each: the ordinary angle between two vectors.
        Case(np.array([[1.0], [0.0]]), np.array([[-1.0], [1.0]])),
    ],
    atol=1e-6,
)

# 40 points, each 1e-9 (per coordinate) from a point of b: the squared distance, about 3e-18,
# is far below the round-off of ||a||^2 - 2 a.b + ||b||^2 (about 1e-14), so that difference
# comes out negative for some of them whatever the BLAS kernel (14 to 17 of the 40 under each
# kernel tried, docs/portability.md). Exact duplicates would not do: without FMA, a kernel
# computes a.a in the order of ||a||^2 and the difference is exactly 0.
_ROUND_OFF = np.round(np.random.default_rng(0).uniform(-10, 10, size=(40, 3)), 2)

nearest_distances = Checker(
    "1.4",
    reference=_nearest_distances,
    cases=[
        Case(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]]),
             np.array([[0.0, 1.0], [3.0, 0.0]])),
        Case(np.array([[0.5, -1.0, 2.0]]),
             np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])),  # a point found in b: 0
        Case(np.round(np.random.default_rng(0).normal(size=(4, 3)), 2),
             np.round(np.random.default_rng(1).normal(size=(5, 3)), 2)),
        # Points almost in b: ||a||^2 - 2 a.b + ||b||^2 is then a difference of almost equal
        # numbers, which round-off makes slightly negative for some of them.
        Case(_ROUND_OFF, np.vstack([(_ROUND_OFF + 1e-9)[::-1], [[0.0, 0.0, 0.0]]])).strict(
            "points 1e-9 from points of b: round-off makes some squared distances slightly "
            "negative"),
    ],
    atol=1e-6,
)
