"""The PyTorch mirror of :mod:`vae_from_scratch.quantize` (lesson 11): the same operations,
with autograd doing the backward passes that ``quantize.py`` derives by hand.

Where ``quantize.py`` writes a backward, this module writes a stop-gradient (``.detach()``):

* the straight-through estimator is ``z_e + (z_q - z_e).detach()``: its value is z_q, its
  derivative in z_e the identity, and no gradient reaches the codebook through it;
* the codebook loss is ``||z_e.detach() - e_k||^2``, the commitment loss
  ``||z_e - e_k.detach()||^2``;
* finite scalar quantization rounds with ``b + (round(b - o) + o - b).detach()``.

Shapes, codes, normalisation (each loss summed over D and an example's positions, one
number per example) and the row order of a grid are those of ``quantize.py``, so the two
agree to float64 round-off (``tests/test_torch_quantize.py``). Like the rest of
``torch_vae``, it is the part of the package that imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vae_from_scratch.quantize import EMA_DECAY, EMA_EPS

__all__ = [
    "codebook_loss",
    "commitment_loss",
    "ema_update",
    "from_rows",
    "fsq",
    "nearest_codes",
    "perplexity",
    "squared_distances",
    "to_rows",
    "vector_quantize",
]


def to_rows(z: torch.Tensor) -> torch.Tensor:
    """z (N, D, H, W) -> (N*H*W, D), row (n*H + h)*W + w = z[n, :, h, w]; (M, D) unchanged."""
    if z.dim() == 2:
        return z
    if z.dim() != 4:
        raise ValueError(f"z must be (N, D, H, W) or (M, D), got shape {tuple(z.shape)}")
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def from_rows(rows: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The inverse of :func:`to_rows` for z of ``shape``."""
    if len(shape) == 2:
        return rows.reshape(shape)
    n, d, h, w = shape
    return rows.reshape(n, h, w, d).permute(0, 3, 1, 2)


def _codes_shape(shape):
    return (shape[0], shape[2], shape[3]) if len(shape) == 4 else (shape[0],)


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_m - e_k||^2: z (M, D) or (N, D, H, W), codebook (K, D) -> (M, K), by the expansion
    ||z||^2 - 2 z.e + ||e||^2, clipped at 0."""
    z = to_rows(z)
    d = (z * z).sum(1, keepdim=True) - 2.0 * (z @ codebook.T) + (codebook * codebook).sum(1)
    return d.clamp_min(0.0)


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The nearest codebook vector's index per row, (M,) int64."""
    return squared_distances(z, codebook).argmin(dim=1)


def vector_quantize(z_e: torch.Tensor,
                    codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_e (N, D, H, W) or (M, D), codebook (K, D) -> (z_q, codes).

    z_q has z_e's shape and the value of the nearest codebook vectors; its gradient flows to
    z_e unchanged (straight-through) and not at all to the codebook. codes: (N, H, W) or (M,).
    """
    rows = to_rows(z_e)
    with torch.no_grad():
        codes = nearest_codes(rows, codebook)
    z_q = codebook[codes]
    st = rows + (z_q - rows).detach()
    return from_rows(st, tuple(z_e.shape)), codes.reshape(_codes_shape(tuple(z_e.shape)))


def _per_example(z_e, codebook, codes, detach_z, detach_e):
    rows = to_rows(z_e)
    e = codebook[codes.reshape(-1)]
    rows = rows.detach() if detach_z else rows
    e = e.detach() if detach_e else e
    err = rows - e
    positions = z_e.shape[2] * z_e.shape[3] if z_e.dim() == 4 else 1
    return (err * err).sum(1).reshape(-1, positions).sum(1)


def codebook_loss(z_e: torch.Tensor, codebook: torch.Tensor,
                  codes: torch.Tensor) -> torch.Tensor:
    """||sg[z_e] - e_k||^2 summed over D and each example's positions -> (N,)."""
    return _per_example(z_e, codebook, codes, detach_z=True, detach_e=False)


def commitment_loss(z_e: torch.Tensor, codebook: torch.Tensor,
                    codes: torch.Tensor) -> torch.Tensor:
    """||z_e - sg[e_k]||^2 summed over D and each example's positions -> (N,)."""
    return _per_example(z_e, codebook, codes, detach_z=False, detach_e=True)


@torch.no_grad()
def ema_update(cluster_size: torch.Tensor, embed_sum: torch.Tensor, z_e: torch.Tensor,
               codes: torch.Tensor, decay: float = EMA_DECAY,
               eps: float = EMA_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA codebook step, as ``quantize.ema_update``: returns (codebook, cluster_size,
    embed_sum), new tensors."""
    rows = to_rows(z_e)
    flat = codes.reshape(-1)
    k = cluster_size.shape[0]
    n_k = torch.bincount(flat, minlength=k).to(rows.dtype)
    s_k = torch.zeros_like(embed_sum).index_add_(0, flat, rows)
    cluster_size = decay * cluster_size + (1.0 - decay) * n_k
    embed_sum = decay * embed_sum + (1.0 - decay) * s_k
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + k * eps) * n
    return embed_sum / smoothed[:, None], cluster_size, embed_sum


def perplexity(codes: torch.Tensor, k: int) -> float:
    """exp(entropy) of the codes' empirical distribution (a float), in 1..K."""
    counts = torch.bincount(codes.reshape(-1), minlength=k).double()
    p = counts[counts > 0] / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def fsq(z: torch.Tensor, levels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite scalar quantization, as ``quantize.FSQ``: z (N, d, H, W) or (M, d) -> (z_q,
    codes). Per channel with L levels: b = (L/2) tanh(z), rounded straight-through to the
    L bin centres, scaled to [-1, 1]; codes are the digits' mixed-radix numbers, the last
    channel fastest."""
    rows = to_rows(z)
    L = torch.tensor(levels, dtype=rows.dtype, device=rows.device)
    offset, half_range = 0.5 * (1 - L % 2), (L - 1) / 2
    b = (L / 2) * torch.tanh(rows)
    q = torch.minimum(torch.maximum(torch.round(b - offset) + offset, -half_range), half_range)
    st = b + (q - b).detach()
    digits = torch.round(q.detach() + half_range).long()
    codes = torch.zeros(len(rows), dtype=torch.long, device=rows.device)
    for i, n_levels in enumerate(levels):
        codes = codes * n_levels + digits[:, i]
    return from_rows(st / half_range, tuple(z.shape)), codes.reshape(_codes_shape(tuple(z.shape)))
