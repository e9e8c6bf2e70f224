"""Checks for lesson 11, discrete codes: the VQ-VAE, the straight-through estimator and a
prior over codes (``solutions/11_vq_vae.ipynb``).

* Exercise 11.1: ``squared_distances(z, codebook)`` - ||z_m - e_k||^2 for rows z (M, D) and a
  codebook (K, D), (M, K), by the expansion ||z||^2 - 2 z.e + ||e||^2
  (``quantize.squared_distances``).
* Exercise 11.2: ``nearest_codes(z, codebook)`` - the index of each row's nearest codebook
  vector, (M,) (``quantize.nearest_codes``).
* Exercise 11.3: ``vq_backward(dz_q, z_e, codebook, codes, beta)`` - (dz_e, dcodebook), the
  gradients of the batch mean of recon + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 for rows
  (N, D), given dz_q, the decoder's gradient at z_q (already of the batch mean).
* Exercise 11.4: ``ema_update(cluster_size, embed_sum, z, codes, decay, eps)`` - one step of
  the codebook by moving averages with Laplace-smoothed counts (``quantize.ema_update``).
* Exercise 11.5: ``perplexity(codes, k)`` - exp(entropy) of the codes' empirical distribution
  (``quantize.perplexity``).
* Exercise 11.6 is a written answer.

Each checker names the lesson's slips by recomputing them on its cases: the cross term
without its factor 2, argmin over the wrong axis, the stop-gradient on the wrong side (or
none), commitment and codebook swapped, a fancy-indexed += that drops repeated codes, the
EMA without Laplace smoothing (strict: a dead code's 0/0), the decay on the wrong term, the
entropy in place of its exponential, and 0 log 0 (strict).
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import quantize
from vae_from_scratch.checks.core import Case, Checker


def _r(a, decimals=2):
    return np.round(a, decimals) + 0.0


_rng = np.random.default_rng(110)

# -- 11.1 and 11.2 ---------------------------------------------------------------------------


def _norms(z, codebook):
    return np.sum(z * z, axis=1)[:, None], np.sum(codebook * codebook, axis=1)[None, :]


def _distances_without_the_2(z, codebook):
    zz, ee = _norms(z, codebook)
    return zz - z @ codebook.T + ee


def _distances_without_z_norm(z, codebook):
    _, ee = _norms(z, codebook)
    return ee - 2 * z @ codebook.T


_DIST_CASES = [
    Case(np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.5]]),
         np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])),
    Case(_r(_rng.normal(0, 1, (5, 3))), _r(_rng.normal(0, 1, (4, 3)))),
]

squared_distances = Checker(
    "11.1",
    reference=quantize.squared_distances,
    cases=_DIST_CASES,
    slips=[
        ("It is ||z||^2 - z.e + ||e||^2: the cross term needs its factor 2, "
         "||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2.", _distances_without_the_2),
        ("It lacks ||z||^2: the argmin would not notice (it is the same for every code), but "
         "these are not distances.", _distances_without_z_norm),
    ],
)

_NEAREST_CASES = [
    Case(np.array([[0.9, 0.1], [0.1, 2.1], [-1.0, 1.8], [0.2, 0.1], [1.2, 0.8]]),
         np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])),
    Case(_r(_rng.normal(0, 1, (6, 3))), _r(_rng.normal(0, 1, (4, 3)))),
]

nearest_codes = Checker(
    "11.2",
    reference=quantize.nearest_codes,
    cases=_NEAREST_CASES,
    slips=[
        ("It is the argmin over axis 0: for each code, its nearest row. The distances are "
         "(M, K), one row per z; the nearest code of each row is the argmin over axis 1.",
         lambda z, e: np.argmin(quantize.squared_distances(z, e), axis=0)),
        ("It is the argmax: the farthest code of each row.",
         lambda z, e: np.argmax(quantize.squared_distances(z, e), axis=1)),
    ],
    rtol=0,
    atol=0,
)

# -- 11.3 the backward pass of the quantizer and its two losses ------------------------------


def _vq_parts(dz_q, z_e, codebook, codes):
    """The pieces of every variant: the straight-through term, 2 (z - e) / N per row, and
    the codebook's sum of 2 (e - z) / N over the rows of each code."""
    n = len(z_e)
    err = 2.0 * (z_e - codebook[codes]) / n
    dcodebook = np.zeros_like(codebook)
    np.add.at(dcodebook, codes, -err)
    return dz_q, err, dcodebook


def _vq_backward(dz_q, z_e, codebook, codes, beta):
    """Gradients of the batch mean of recon + ||sg[z_e] - e_k||^2 + beta ||z_e - sg[e_k]||^2.

    dz_q (N, D): the decoder's gradient at z_q, of the batch mean already; z_e (N, D); codebook
    (K, D); codes (N,); beta. Returns (dz_e (N, D), dcodebook (K, D)):
    dz_e = dz_q + 2 beta (z_e - e_k) / N (straight-through plus the commitment),
    dcodebook[j] = sum over rows with code j of 2 (e_j - z_e) / N (the codebook loss).
    """
    st, err, dcodebook = _vq_parts(dz_q, z_e, codebook, codes)
    return st + beta * err, dcodebook


def _vq_slip(st_to_z=True, z_factor="beta", codebook_factor=1.0, st_to_codebook=False,
             fancy=False):
    def slip(dz_q, z_e, codebook, codes, beta):
        st, err, dcodebook = _vq_parts(dz_q, z_e, codebook, codes)
        if fancy:  # one row per code survives a fancy-indexed +=
            dcodebook = np.zeros_like(codebook)
            dcodebook[codes] += -err
        factor = {"beta": beta, "one": 1.0, "both": 1.0 + beta}[z_factor]
        dz_e = (st if st_to_z else 0.0) + factor * err
        dcb = {"beta": beta, 1.0: 1.0, "both": 1.0 + beta}[codebook_factor] * dcodebook
        if st_to_codebook:
            np.add.at(dcb, codes, dz_q)
        return dz_e, dcb
    return slip


_N, _D, _K = 5, 2, 3
_ZE = _r(_rng.normal(0, 1, (_N, _D)))
_CB = _r(_rng.normal(0, 1, (_K, _D)))
_VQ_CASES = [
    Case(_r(_rng.normal(0, 0.2, (_N, _D))), _ZE, _CB, quantize.nearest_codes(_ZE, _CB), 0.25),
    # codes 0 and 2 repeat, code 1 is used once
    Case(_r(_rng.normal(0, 0.2, (4, 2))), np.array([[0.1, 0.2], [0.3, -0.1], [1.1, 0.9],
                                                    [0.0, 0.1]]),
         np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]), np.array([0, 0, 1, 0]), 0.5),
]

vq_backward = Checker(
    "11.3",
    reference=_vq_backward,
    cases=_VQ_CASES,
    outputs=("dz_e", "dcodebook"),
    slips=[
        ("dz_e lacks the decoder's gradient: the straight-through estimator copies dz_q to "
         "z_e (z_q = z_e + sg[e - z_e] has derivative 1 in z_e).", _vq_slip(st_to_z=False)),
        ("Commitment and codebook are swapped: beta weighs the commitment ||z_e - sg[e]||^2, "
         "whose gradient goes to z_e; the codebook loss has weight 1.",
         _vq_slip(z_factor="one", codebook_factor="beta")),
        ("The stop-gradient is on the wrong side: the codebook loss ||sg[z_e] - e||^2 sends "
         "no gradient to z_e, and the commitment beta ||z_e - sg[e]||^2 none to the codebook.",
         _vq_slip(z_factor="both", codebook_factor="both")),
        ("The codebook loss's gradient reached z_e: its sg[z_e] stops it.",
         _vq_slip(z_factor="both")),
        ("The commitment's gradient reached the codebook: its sg[e] stops it.",
         _vq_slip(codebook_factor="both")),
        ("The decoder's gradient reached the codebook: in z_e + sg[e - z_e] the codebook sits "
         "inside the stop-gradient.", _vq_slip(st_to_codebook=True)),
        ("dcodebook keeps one row per code: dcodebook[codes] += ... adds each repeated index "
         "once. Use np.add.at (lesson 09's exercise 9.2).", _vq_slip(fancy=True)),
    ],
)

# -- 11.4 the EMA codebook -------------------------------------------------------------------


def _ema_slip(smoothed=True, swap_decay=False, return_smoothed=False):
    def slip(cluster_size, embed_sum, z, codes, decay, eps):
        k = len(cluster_size)
        n_k = np.bincount(codes, minlength=k).astype(z.dtype)
        s_k = np.zeros_like(embed_sum)
        np.add.at(s_k, codes, z)
        a, b = (1.0 - decay, decay) if swap_decay else (decay, 1.0 - decay)
        size, total = a * cluster_size + b * n_k, a * embed_sum + b * s_k
        n = size.sum()
        smooth = (size + eps) / (n + k * eps) * n if smoothed else size
        return total / smooth[:, None], smooth if return_smoothed else size, total
    return slip


def _ema_update(cluster_size, embed_sum, z, codes, decay, eps):
    """One EMA step (``quantize.ema_update``): returns (codebook, cluster_size, embed_sum)."""
    return quantize.ema_update(cluster_size, embed_sum, z, codes, decay, eps)


_EMA_Z = np.array([[0.0, 1.0], [0.5, 1.5], [2.0, -1.0], [2.5, -0.5], [1.0, 0.0]])
_EMA_CASES = [
    Case(np.array([2.0, 1.0, 3.0]), np.array([[0.0, 2.0], [1.0, 1.0], [6.0, -3.0]]), _EMA_Z,
         np.array([0, 0, 2, 2, 1]), 0.9, 0.1),
    Case(np.array([1.0, 4.0, 0.5]), np.array([[1.0, 1.0], [0.0, 4.0], [1.0, 0.0]]), _EMA_Z,
         np.array([1, 0, 0, 1, 1]), 0.5, 0.2),
    # code 2: no output chose it and its moving averages have decayed to 0
    Case(np.array([2.0, 3.0, 0.0]), np.array([[1.0, 1.0], [3.0, -3.0], [0.0, 0.0]]), _EMA_Z,
         np.array([0, 0, 1, 1, 0]), 0.8, 1e-3).strict(
        "code 2 has no outputs and its moving averages are 0: without Laplace smoothing its "
        "vector is 0/0. Smooth the counts, (N_k + eps) / (n + K eps) * n"),
]

ema_update = Checker(
    "11.4",
    reference=_ema_update,
    cases=_EMA_CASES,
    outputs=("codebook", "cluster_size", "embed_sum"),
    slips=[
        ("The codebook is m_k / N_k without Laplace smoothing: divide by the smoothed counts "
         "(N_k + eps) / (n + K eps) * n, n = sum of N_k, which stay above 0 for a dead code.",
         _ema_slip(smoothed=False)),
        ("The decay is on the wrong term: N_k <- gamma N_k + (1 - gamma) n_k keeps most of "
         "the old average (gamma is close to 1).", _ema_slip(swap_decay=True)),
        ("cluster_size is the smoothed count: return the moving average N_k itself, and "
         "smooth it only to divide.", _ema_slip(return_smoothed=True)),
    ],
)

# -- 11.5 perplexity -------------------------------------------------------------------------


def _entropy(codes, k):
    return np.log(quantize.perplexity(codes, k))


_PERP_CASES = [
    Case(np.array([0, 1, 2, 3]), 4),
    Case(np.array([[0, 0, 1], [2, 2, 2]]), 3),
    Case(np.array([1, 1, 4, 1, 0, 4]), 6).strict(
        "codes 2, 3 and 5 never occur: p log p is 0 there (its limit), but log 0 is -inf "
        "and 0 * -inf is NaN. Leave out the unused codes"),
]

perplexity = Checker(
    "11.5",
    reference=quantize.perplexity,
    cases=_PERP_CASES,
    slips=[
        ("It is the entropy -sum p log p; the perplexity is its exponential, exp(entropy).",
         _entropy),
        ("It is exp of the entropy in bits: bases mixed. exp(-sum p ln p) = 2^(-sum p log2 p).",
         lambda codes, k: float(np.exp(_entropy(codes, k) / np.log(2)))),
        ("It is the number of codes used, not exp(entropy): unequal use counts less.",
         lambda codes, k: float(len(np.unique(codes)))),
    ],
)
