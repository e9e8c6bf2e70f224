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


@register_torch_prior
class TorchClassGaussian(TorchPrior):
    """p(z | y) = N(m_y, A_y A_y^T), the twin of :class:`vae_from_scratch.priors.ClassGaussian`:
    the same formulas through triangular solves, and the same closed-form :meth:`refit`."""

    name = "class_gaussian"

    @staticmethod
    def _parts(params: dict, c: torch.Tensor | None) -> tuple:
        """(y (N,), m_y (N, L), A_y (N, L, L) lower-triangular, log det C_y (N,))."""
        if c is None:
            raise ValueError("the class_gaussian prior needs the labels: p(z | y) is one "
                             "Gaussian per class")
        y = torch.argmax(c, dim=1)
        a = torch.tril(params["prior.class_chol"])[y]
        log_det = 2.0 * torch.log(torch.abs(torch.diagonal(a, dim1=1, dim2=2))).sum(dim=1)
        return y, params["prior.class_means"][y], a, log_det

    @staticmethod
    def _whitened(a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """A^-1 delta, row by row: (N, L)."""
        return torch.linalg.solve_triangular(a, delta[:, :, None], upper=False)[:, :, 0]

    def log_prob(self, params: dict, z: torch.Tensor,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        _, m, a, log_det = self._parts(params, c)
        u = self._whitened(a, z - m)
        return -0.5 * (z.shape[1] * tdist.LOG_2PI + log_det + torch.sum(u * u, dim=1))

    def kl(self, params: dict, mu: torch.Tensor, log_var: torch.Tensor,
           c: torch.Tensor | None = None) -> torch.Tensor:
        _, m, a, log_det = self._parts(params, c)
        u = self._whitened(a, mu - m)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
        a_inv = torch.linalg.solve_triangular(a, eye, upper=False)
        trace = torch.sum(torch.sum(a_inv * a_inv, dim=1) * torch.exp(log_var), dim=1)
        return 0.5 * (trace + torch.sum(u * u, dim=1) - mu.shape[1] + log_det
                      - torch.sum(log_var, dim=1))

    def sample(self, params: dict, n: int, generator: torch.Generator, c: torch.Tensor | None,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        _, m, a, _ = self._parts(params, c)
        eps = torch.randn((n, self.config.latent_dim), generator=generator, device=device,
                          dtype=dtype)
        return m + torch.einsum("nij,nj->ni", a, eps)

    @torch.no_grad()
    def refit(self, params: dict, mu: torch.Tensor, log_var: torch.Tensor,
              c: torch.Tensor | None) -> None:
        """The moment match of each class's aggregate posterior, in float64, copied into the
        parameters in place (see the NumPy class)."""
        if c is None:
            raise ValueError("the class_gaussian prior needs the labels to be refitted")
        mu, var = mu.to(torch.float64), torch.exp(log_var.to(torch.float64))
        y = torch.argmax(c, dim=1)
        for k in torch.unique(y).tolist():
            rows = y == k
            m = mu[rows].mean(dim=0)
            centred = mu[rows] - m
            cov = centred.T @ centred / rows.sum() + torch.diag(var[rows].mean(dim=0))
            params["prior.class_means"][k] = m.to(params["prior.class_means"].dtype)
            params["prior.class_chol"][k] = torch.linalg.cholesky(cov).to(
                params["prior.class_chol"].dtype)
