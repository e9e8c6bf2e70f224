"""The bottleneck of :mod:`vae_from_scratch.bottleneck` in PyTorch; see that module for what
a bottleneck provides. The mirror's has no backward (autograd computes it) and no parameters
of its own to declare or draw (the mirror takes the NumPy model's), and its charged_kl returns
the charged tensor alone."""

from __future__ import annotations

from typing import Any

import torch

from vae_from_scratch.torch_vae import distributions as tdist
from vae_from_scratch.torch_vae.priors import TorchPrior


class TorchGaussianBottleneck:
    """q(z|x) = N(mu, diag exp(log_var)) with the Linear heads ``enc.mu`` and ``enc.log_var``,
    and the reparameterized z = mu + exp(log_var / 2) * eps."""

    def __init__(self, config: Any, prior: TorchPrior) -> None:
        self.config, self.prior = config, prior

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, self.config.latent_dim)

    def encode(self, params: dict, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (N, H) -> mu (N, L), log_var (N, L)."""
        mu = torch.addmm(params["enc.mu.b"], h, params["enc.mu.W"])
        log_var = torch.addmm(params["enc.log_var.b"], h, params["enc.log_var.W"])
        return mu, log_var

    def code(self, params: dict, h: torch.Tensor) -> torch.Tensor:
        return self.encode(params, h)[0]

    def forward(self, params: dict, h: torch.Tensor, eps: torch.Tensor, c: torch.Tensor | None,
                kl_mode: str) -> tuple[torch.Tensor, tuple]:
        """h (N, H), eps (N, L) -> z (N, L), cache."""
        mu, log_var = self.encode(params, h)
        z = mu + torch.exp(0.5 * log_var) * eps  # the reparameterization
        return z, (params, mu, log_var, z, c, kl_mode)

    def rate(self, cache: tuple) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per example (N,), or its one-sample estimate."""
        params, mu, log_var, z, c, kl_mode = cache
        if kl_mode == "analytic":
            return self.prior.kl(params, mu, log_var, c)
        # log q(z|x) - log p(z) at the reparameterized z
        return tdist.gaussian_log_density(z, mu, log_var) - self.prior.log_prob(params, z, c)

    def charged_kl(self, kl: torch.Tensor, cache: tuple) -> torch.Tensor:
        """The KL the loss charges, a scalar: the batch mean, or with free bits
        sum_j max(free_bits, mean over the batch of KL_j)."""
        if self.config.free_bits <= 0:
            return kl.mean()
        params, mu, log_var, z, c, kl_mode = cache
        if kl_mode == "analytic":
            per_dim = self.prior.kl_per_dim(params, mu, log_var, c)
        else:
            per_dim = self.prior.sample_kl_per_dim(params, z, mu, log_var, c)
        return torch.clamp(per_dim.mean(dim=0), min=self.config.free_bits).sum()
