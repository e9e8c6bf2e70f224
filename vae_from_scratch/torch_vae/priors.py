"""The priors of :mod:`vae_from_scratch.priors` in PyTorch, one class each.

The mirror looks its prior up in :data:`TORCH_PRIORS` under the configuration's ``prior``,
the NumPy class's name; the NumPy class keeps what does not depend on the arithmetic (its
parameters, whether it has an analytic KL or splits over dimensions). A torch prior
provides, with ``c`` the one-hot label (N, K) or None, as in NumPy::

    log_prob(params, z, c)                 log p(z) per example, (N,)
    sample(params, n, generator, c, device, dtype)     n draws, (n, L)
    sample_kl_per_dim(params, z, mu, log_var, c)       log q(z_j|x) - log p(z_j), (N, L)
                                           (priors that split over dimensions: free bits)
    kl(params, mu, log_var, c), kl_per_dim(params, mu, log_var, c)
                                           (priors with an analytic KL)

Autograd differentiates them. Register a new one with :func:`register_torch_prior`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from vae_from_scratch.registry import Registry
from vae_from_scratch.torch_vae import distributions as tdist


class TorchPrior:
    """p(z) in torch; see the module docstring. ``self.config``: the model's."""

    name: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    def log_prob(self, params: dict, z: torch.Tensor,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.log_prob")

    def log_prob_per_dim(self, params: dict, z: torch.Tensor,
                         c: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"the {self.name} prior does not split over dimensions")

    def sample_kl_per_dim(self, params: dict, z: torch.Tensor, mu: torch.Tensor,
                          log_var: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return (tdist.gaussian_log_density_per_dim(z, mu, log_var)
                - self.log_prob_per_dim(params, z, c))

    def sample(self, params: dict, n: int, generator: torch.Generator, c: torch.Tensor | None,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.sample")

    def kl(self, params: dict, mu: torch.Tensor, log_var: torch.Tensor,
           c: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"the {self.name} prior has no analytic KL")

    def kl_per_dim(self, params: dict, mu: torch.Tensor, log_var: torch.Tensor,
                   c: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"the {self.name} prior has no analytic KL")


#: name -> class, the torch twin of priors.PRIORS.
TORCH_PRIORS: Registry = Registry(TorchPrior, "torch prior")
#: Add a TorchPrior subclass under its name (a class decorator).
register_torch_prior = TORCH_PRIORS.register


@register_torch_prior
class TorchStandardNormal(TorchPrior):
    name = "standard"

    def log_prob(self, params: dict, z: torch.Tensor,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        return -0.5 * torch.sum(tdist.LOG_2PI + z * z, dim=-1)

    def sample_kl_per_dim(self, params: dict, z: torch.Tensor, mu: torch.Tensor,
                          log_var: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        # log q - log p per dimension, with the log 2 pi terms cancelled
        return 0.5 * (z * z - log_var - (z - mu) ** 2 * torch.exp(-log_var))

    def sample(self, params: dict, n: int, generator: torch.Generator, c: torch.Tensor | None,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn((n, self.config.latent_dim), generator=generator, device=device,
                           dtype=dtype)

    def kl(self, params: dict, mu: torch.Tensor, log_var: torch.Tensor,
           c: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sum(self.kl_per_dim(params, mu, log_var, c), dim=-1)

    def kl_per_dim(self, params: dict, mu: torch.Tensor, log_var: torch.Tensor,
                   c: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * (mu * mu + torch.exp(log_var) - 1.0 - log_var)


@register_torch_prior
class TorchMixtureOfGaussians(TorchPrior):
    name = "mixture"

    def log_prob(self, params: dict, z: torch.Tensor,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        """log sum_k softmax(logits)_k N(z; means_k, diag(exp(log_vars_k))): (N, L) -> (N,)."""
        means, log_vars = params["prior.means"], params["prior.log_vars"]
        diff = z[:, None, :] - means[None, :, :]  # (N, K, L)
        log_comp = -0.5 * torch.sum(tdist.LOG_2PI + log_vars + diff * diff * torch.exp(-log_vars),
                                    dim=2)
        return torch.logsumexp(torch.log_softmax(params["prior.logits"], dim=0) + log_comp, dim=1)

    def sample(self, params: dict, n: int, generator: torch.Generator, c: torch.Tensor | None,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        pi = torch.softmax(params["prior.logits"], dim=0)
        k = torch.multinomial(pi, n, replacement=True, generator=generator)
        std = torch.exp(0.5 * params["prior.log_vars"][k])
        noise = torch.randn((n, self.config.latent_dim), generator=generator, device=device,
                            dtype=dtype)
        return params["prior.means"][k] + std * noise
