"""The likelihoods of :mod:`vae_from_scratch.likelihoods` in PyTorch, one class each.

The mirror looks its likelihood up in :data:`TORCH_LIKELIHOODS` under the configuration's
``likelihood``, the same name as the NumPy class. What does not depend on the arithmetic --
the configuration it resolves, the parameters it adds, the pixel range it needs -- is the
NumPy class's, which the mirror also holds; a torch likelihood provides::

    name                          its key, the NumPy class's name
    log_prob(params, x, out)      log p(x | z) per example, (N,); autograd differentiates it
    mean(params, out)             E[x | z], (N, D)
    sample(params, out, generator)    x ~ p(x | z), (N, D)

``params`` maps the NumPy parameter names to the mirror's tensors. Register a new one with
:func:`register_torch_likelihood`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from vae_from_scratch.registry import Registry
from vae_from_scratch.torch_vae import distributions as tdist


class TorchLikelihood:
    """p(x | z) in torch; see the module docstring. ``self.config``: the model's."""

    name: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    def log_prob(self, params: dict, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.log_prob")

    def mean(self, params: dict, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.mean")

    def sample(self, params: dict, out: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.sample")


#: name -> class, the torch twin of likelihoods.LIKELIHOODS.
TORCH_LIKELIHOODS: Registry = Registry(TorchLikelihood, "torch likelihood")
#: Add a TorchLikelihood subclass under its name (a class decorator).
register_torch_likelihood = TORCH_LIKELIHOODS.register


@register_torch_likelihood
class TorchBernoulli(TorchLikelihood):
    name = "bernoulli"

    def log_prob(self, params: dict, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # x * l - softplus(l) summed over pixels, computed without overflow
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dim=-1)

    def mean(self, params: dict, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def sample(self, params: dict, out: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        return torch.bernoulli(self.mean(params, out), generator=generator)


@register_torch_likelihood
class TorchGaussian(TorchLikelihood):
    name = "gaussian"

    def log_var(self, params: dict) -> torch.Tensor | float:
        if self.config.obs_var == "learned":
            return params["dec.log_var"]
        return math.log(self.config.obs_var)

    def log_prob(self, params: dict, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return tdist.gaussian_log_density(x, out, self.log_var(params))

    def mean(self, params: dict, out: torch.Tensor) -> torch.Tensor:
        return out

    def sample(self, params: dict, out: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        log_var = self.log_var(params)
        std = math.exp(0.5 * log_var) if isinstance(log_var, float) else torch.exp(0.5 * log_var)
        noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return out + std * noise


@register_torch_likelihood
class TorchContinuousBernoulli(TorchLikelihood):
    name = "continuous_bernoulli"

    def log_prob(self, params: dict, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return tdist.continuous_bernoulli_log_prob(x, out)

    def mean(self, params: dict, out: torch.Tensor) -> torch.Tensor:
        return tdist.continuous_bernoulli_mean(out)

    def sample(self, params: dict, out: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return tdist.continuous_bernoulli_quantile(u, out)
