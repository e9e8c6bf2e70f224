"""The quantized bottlenecks of :mod:`vae_from_scratch.discrete` in PyTorch (lesson 11).

The same parameters and the same arithmetic, with autograd in place of the hand-written
backward: the straight-through estimator is ``z_e + (z_q - z_e).detach()`` and the
codebook and commitment losses detach z_e and the codebook respectively
(:mod:`vae_from_scratch.torch_vae.quantize`). The EMA codebook and the dead-code restarts
run after each optimizer step (:meth:`TorchVQBottleneck.after_step`), without gradients.
With the same parameters, loss and gradients agree with the NumPy model to round-off
(``tests/test_discrete.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from vae_from_scratch import quantize as vq
from vae_from_scratch.discrete import grid_shape
from vae_from_scratch.torch_vae import quantize as tq
from vae_from_scratch.torch_vae.bottleneck import TorchBottleneck, register_torch_bottleneck
from vae_from_scratch.torch_vae.priors import TorchPrior


class _TorchQuantized(TorchBottleneck):
    """What VQ and FSQ share: the 1x1 head ``enc.code``, no noise, a constant rate."""

    n_codes: int

    def __init__(self, config: Any, prior: TorchPrior) -> None:
        super().__init__(config, prior)
        self.feature_shape = grid_shape(config)
        self.positions = self.feature_shape[1] * self.feature_shape[2]
        self.last = None  # (z_e, codes) of the last forward, detached, for after_step

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, 0)

    def z_e(self, params: dict, h: torch.Tensor) -> torch.Tensor:
        """h (N, C*H*W) -> z_e (N, D, H, W) by the 1x1 convolution."""
        feature = h.reshape(h.shape[0], *self.feature_shape)
        return F.conv2d(feature, params["enc.code.W"], params["enc.code.b"])

    def quantize(self, params: dict, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_e -> (z_q with the straight-through gradient, codes (N, H, W))."""
        raise NotImplementedError

    def encode(self, params: dict, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h -> z_e (N, D, H, W) and the codes (N, H, W)."""
        z_e = self.z_e(params, h)
        return z_e, self.quantize(params, z_e)[1]

    def code(self, params: dict, h: torch.Tensor) -> torch.Tensor:
        z_q = self.quantize(params, self.z_e(params, h))[0]
        return z_q.reshape(z_q.shape[0], -1)

    def forward(self, params: dict, h: torch.Tensor, eps: torch.Tensor, c: torch.Tensor | None,
                kl_mode: str) -> tuple[torch.Tensor, tuple]:
        """h (N, C*H*W) -> z = z_q flattened (N, D*H*W), cache."""
        z_e = self.z_e(params, h)
        z_q, codes = self.quantize(params, z_e)
        self.last = (z_e.detach(), codes)
        return z_q.reshape(z_q.shape[0], -1), (params, z_e, codes)

    def rate(self, cache: tuple) -> torch.Tensor:
        """log(n_codes) nats per position, per example (N,)."""
        z_e = cache[1]
        return torch.full((z_e.shape[0],), self.positions * math.log(self.n_codes),
                          dtype=z_e.dtype, device=z_e.device)

    def sample_prior(self, params: dict, n: int, generator: torch.Generator,
                     c: torch.Tensor | None, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
        """n grids of uniformly drawn codes as z (n, D*H*W)."""
        codes = torch.randint(0, self.n_codes, (n, *self.feature_shape[1:]),
                              generator=generator, device=device)
        return self.values(params, codes).reshape(n, -1).to(dtype)

    def values(self, params: dict, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_torch_bottleneck
class TorchVQBottleneck(_TorchQuantized):
    """:class:`vae_from_scratch.discrete.VQBottleneck` in torch."""

    name = "vq"

    def __init__(self, config: Any, prior: TorchPrior) -> None:
        super().__init__(config, prior)
        self.n_codes = config.codebook_size
        self.ema = config.codebook_update == "ema"
        self.restarts = config.restart_every > 0

    def quantize(self, params: dict, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tq.vector_quantize(z_e, params["vq.codebook"])

    def values(self, params: dict, codes: torch.Tensor) -> torch.Tensor:
        z_q = params["vq.codebook"][codes.reshape(-1)]
        return tq.from_rows(z_q, (codes.shape[0], z_q.shape[1], *codes.shape[1:]))

    def charged_kl(self, kl: torch.Tensor, cache: tuple) -> torch.Tensor:
        """The batch mean of codebook loss + commitment * commitment loss (the commitment
        term alone with the EMA codebook)."""
        params, z_e, codes = cache
        charged = self.config.commitment * tq.commitment_loss(z_e, params["vq.codebook"], codes)
        if not self.ema:
            charged = charged + tq.codebook_loss(z_e, params["vq.codebook"], codes)
        return charged.mean()

    @torch.no_grad()
    def after_step(self, params: dict, step: int, generator: torch.Generator) -> None:
        """The EMA step and the dead-code restarts of the NumPy twin, in place; a restart
        draws its encoder outputs with ``generator`` (other draws than NumPy's)."""
        if self.last is None:
            return
        z_e, codes = self.last
        codebook = params["vq.codebook"]
        if self.ema:
            new, count, total = tq.ema_update(params["vq.ema_count"], params["vq.ema_sum"],
                                              z_e, codes)
            codebook.copy_(new)
            params["vq.ema_count"].copy_(count)
            params["vq.ema_sum"].copy_(total)
        if self.restarts:
            usage = params["vq.usage"]
            usage += torch.bincount(codes.reshape(-1), minlength=self.n_codes).to(usage.dtype)
            if step % self.config.restart_every == 0:
                threshold = vq.dead_code_threshold(float(usage.sum()),
                                                   self.config.restart_below)
                dead = torch.nonzero(usage < threshold).reshape(-1)
                if dead.numel():
                    rows = tq.to_rows(z_e)
                    if dead.numel() <= rows.shape[0]:
                        picks = torch.randperm(rows.shape[0], generator=generator,
                                               device=rows.device)[: dead.numel()]
                    else:
                        picks = torch.randint(0, rows.shape[0], (dead.numel(),),
                                              generator=generator, device=rows.device)
                    codebook[dead] = rows[picks].to(codebook.dtype)
                    if self.ema:
                        params["vq.ema_count"][dead] = 1.0
                        params["vq.ema_sum"][dead] = codebook[dead]
                usage.zero_()


@register_torch_bottleneck
class TorchFSQBottleneck(_TorchQuantized):
    """:class:`vae_from_scratch.discrete.FSQBottleneck` in torch."""

    name = "fsq"

    def __init__(self, config: Any, prior: TorchPrior) -> None:
        super().__init__(config, prior)
        self.n_codes = math.prod(config.levels)

    def quantize(self, params: dict, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tq.fsq(z_e, self.config.levels)

    def values(self, params: dict, codes: torch.Tensor) -> torch.Tensor:
        digits, rest = [], codes.reshape(-1)
        for n_levels in reversed(self.config.levels):
            digits.append(rest % n_levels)
            rest = torch.div(rest, n_levels, rounding_mode="floor")
        digits = torch.stack(digits[::-1], dim=1).to(params["enc.code.W"].dtype)
        half_range = (torch.tensor(self.config.levels, dtype=digits.dtype,
                                   device=digits.device) - 1) / 2
        return tq.from_rows(digits / half_range - 1.0,
                            (codes.shape[0], len(self.config.levels), *codes.shape[1:]))

    def charged_kl(self, kl: torch.Tensor, cache: tuple) -> torch.Tensor:
        return torch.zeros((), dtype=kl.dtype, device=kl.device)
