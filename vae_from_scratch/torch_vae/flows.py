"""Lesson 12 in PyTorch: flows, posterior families, the flow and two-level bottlenecks of the
mirror, and the per-example optimisation of the gap estimate.

The same operations as ``flows.py``, ``posteriors.py``, ``flow_bottleneck.py``,
``hierarchical.py`` and ``gaps.optimize_local``, written with torch operations so that
autograd computes what those modules derive by hand. Each class wraps the NumPy object it
mirrors (its networks, masks, names and sizes) and reads a dict of tensors with the NumPy
parameter names (:func:`tensors`, or a ``TorchVAE``'s ``params``), so parity is checked from
the very same numbers. The bottlenecks are registered under the NumPy classes' names, so
``TorchVAE(bottleneck="iaf", flow_steps=8)`` is the mirror of the NumPy model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vae_from_scratch.bottleneck import BOTTLENECKS
from vae_from_scratch.flow_bottleneck import GaussianFamily
from vae_from_scratch.hierarchical import TwoLevelBottleneck
from vae_from_scratch.torch_vae.bottleneck import TorchBottleneck, register_torch_bottleneck
from vae_from_scratch.torch_vae.made import TorchMADE
from vae_from_scratch.torch_vae.mirror import network_forward

LOG_2PI = math.log(2.0 * math.pi)
_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def tensors(params: dict, requires_grad: bool = False, dtype: Any = torch.float64,
            device: Any = None) -> dict[str, torch.Tensor]:
    """A NumPy params dict as a dict of tensors with the same names (copies)."""
    return {k: torch.tensor(np.asarray(v), dtype=dtype, device=device,
                            requires_grad=requires_grad) for k, v in params.items()}


# --- flows ---------------------------------------------------------------------------------


def planar_u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u, w (N, L) -> u_hat = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a)."""
    alpha = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(alpha) - 1.0 - alpha) * w / (w * w).sum(-1, keepdim=True)


def planar(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor,
           b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z, u, w (N, L), b (N,) -> z_new (N, L), log|det J| (N,) of z + u_hat tanh(w^T z + b).

    The log-determinant is log|1 + u_hat^T psi| with psi = (1 - tanh^2) w, computed
    directly here (the NumPy side uses an equal, cancellation-free form)."""
    u_hat = planar_u_hat(u, w)
    t = torch.tanh((w * z).sum(-1) + b)
    psi = (1.0 - t * t)[:, None] * w
    log_det = torch.log(torch.abs(1.0 + (u_hat * psi).sum(-1)))
    return z + u_hat * t[:, None], log_det


class TorchIAFStep:
    """A NumPy ``flows.IAFStep`` in torch: forward(params, z, context) -> z_new, log_det."""

    def __init__(self, step: Any) -> None:
        self.step = step
        self.made = TorchMADE(step.made)

    def __call__(self, params, z, context=None):
        out = self.made(params, z, context).reshape(len(z), self.step.latent_dim, 2)
        m, s = out[..., 0], out[..., 1]
        gate = torch.sigmoid(s)
        return gate * z + (1.0 - gate) * m, F.logsigmoid(s).sum(-1)


# --- posteriors ----------------------------------------------------------------------------


def _linear(params, name, h):
    return h @ params[f"{name}.W"] + params[f"{name}.b"]


class TorchPosterior:
    """A NumPy posterior (``posteriors.py``) in torch: local(params, h) -> dict;
    sample(params, local, eps) -> z (N, L), log q(z|x) (N,)."""

    def __init__(self, posterior: Any) -> None:
        self.posterior = posterior
        self.flow = [TorchIAFStep(s) for s in getattr(posterior, "flow", [])]

    def local(self, params: dict, h: torch.Tensor) -> dict:
        post = self.posterior
        local = {"mu": _linear(params, "enc.mu", h), "log_var": _linear(params, "enc.log_var", h)}
        if post.kind == "planar":
            L = post.latent_dim
            out = _linear(params, "enc.flow", h).reshape(len(h), post.steps, 2 * L + 1)
            local.update(u=out[:, :, :L], w=out[:, :, L:2 * L], b=out[:, :, 2 * L])
        elif post.kind == "iaf" and post.context_dim:
            local["context"] = _linear(params, "enc.context", h)
        return local

    def sample(self, params: dict, local: dict,
               eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = local["mu"] + torch.exp(0.5 * local["log_var"]) * eps
        log_q = -0.5 * (LOG_2PI + local["log_var"] + eps * eps).sum(-1)
        if self.posterior.kind == "planar":
            for k in range(self.posterior.steps):
                z, log_det = planar(z, local["u"][:, k], local["w"][:, k], local["b"][:, k])
                log_q = log_q - log_det
        for step in self.flow:
            z, log_det = step(params, z, local.get("context"))
            log_q = log_q - log_det
        return z, log_q


# --- the bottlenecks ---------------------------------------------------------------------------


def mlp_forward(network: Any, params: dict, x: torch.Tensor) -> torch.Tensor:
    """Run a NumPy ``networks.Network`` of linear layers and activations with torch ops."""
    for layer in network.layers:
        if layer.kind == "linear":
            x = _linear(params, layer.name, x)
        elif layer.kind in _ACTIVATIONS:
            x = _ACTIVATIONS[layer.kind](x)
        else:
            raise ValueError(f"mlp_forward runs linear layers and activations, not "
                             f"{layer.kind!r}")
    return x


class TorchFlowBottleneck(TorchBottleneck):
    """``flow_bottleneck.FlowBottleneck`` in torch: local(params, h) -> dict;
    sample(params, local, eps, c, kl_mode) -> z (N, L), cache; and the bottleneck interface.
    The NumPy bottleneck (``self.numpy``) gives the structure: names, sizes, masks."""

    def __init__(self, config: Any, prior: Any, numpy_bottleneck: Any = None) -> None:
        super().__init__(config, prior)
        self.numpy = numpy_bottleneck or BOTTLENECKS[config.bottleneck](config, None)
        self._posteriors = {}
        # sampling does not read the heads, so the family for any feature width serves
        self.sampler = self.posterior(1)

    def posterior(self, h_dim: int) -> TorchPosterior:
        if h_dim not in self._posteriors:
            self._posteriors[h_dim] = TorchPosterior(self.numpy.posterior(h_dim))
        return self._posteriors[h_dim]

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, self.config.latent_dim)

    def local(self, params: dict, h: torch.Tensor) -> dict:
        return self.posterior(h.shape[1]).local(params, h)

    def sample(self, params: dict, local: dict, eps: torch.Tensor, c: torch.Tensor | None,
               kl_mode: str) -> tuple[torch.Tensor, tuple]:
        z, log_q = self.sampler.sample(params, local, eps)
        return z, (params, local, z, log_q, c, kl_mode)

    def encode(self, params: dict, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local = self.local(params, h)
        return local["mu"], local["log_var"]

    def code(self, params: dict, h: torch.Tensor) -> torch.Tensor:
        local = self.local(params, h)
        return self.sampler.sample(params, local, torch.zeros_like(local["mu"]))[0]

    def forward(self, params: dict, h: torch.Tensor, eps: torch.Tensor, c: torch.Tensor | None,
                kl_mode: str) -> tuple[torch.Tensor, tuple]:
        return self.sample(params, self.local(params, h), eps, c, kl_mode)

    def rate(self, cache: tuple) -> torch.Tensor:
        params, local, z, log_q, c, kl_mode = cache
        if kl_mode == "analytic":
            return self.prior.kl(params, local["mu"], local["log_var"], c)
        return log_q - self.prior.log_prob(params, z, c)

    def charged_kl(self, kl: torch.Tensor, cache: tuple) -> torch.Tensor:
        return kl.mean()


@register_torch_bottleneck
class TorchPlanarBottleneck(TorchFlowBottleneck):
    name = "planar"


@register_torch_bottleneck
class TorchIAFBottleneck(TorchFlowBottleneck):
    name = "iaf"


class TorchGaussianFamily(TorchFlowBottleneck):
    """``flow_bottleneck.GaussianFamily`` in torch (for the per-example optimisation)."""

    name = "gaussian"

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior, GaussianFamily(config, None))


def _gaussian_net(net: Any, params: dict, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A ``hierarchical._GaussianNet`` in torch: x -> mu, log_var."""
    h = mlp_forward(net.net, params, x)
    return tuple(_linear(params, head.name, h) for head in net.heads)


def _gaussian_log_density(x: torch.Tensor, mu: Any, log_var: Any) -> torch.Tensor:
    """Per dimension: -1/2 (log 2 pi + log_var + (x - mu)^2 / var)."""
    return -0.5 * (LOG_2PI + log_var + (x - mu) ** 2 * torch.exp(-torch.as_tensor(log_var)))


@register_torch_bottleneck
class TorchTwoLevelBottleneck(TorchBottleneck):
    """``hierarchical.TwoLevelBottleneck`` in torch; its networks come from the NumPy one."""

    name = "two_level"

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior)
        self.numpy = TwoLevelBottleneck(config, None)
        self.latent_dims = self.numpy.latent_dims

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, sum(self.latent_dims))

    def encode(self, params: dict, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _linear(params, "enc.mu", h), _linear(params, "enc.log_var", h)

    def code(self, params: dict, h: torch.Tensor) -> torch.Tensor:
        return self.encode(params, h)[0]

    def forward(self, params: dict, h: torch.Tensor, eps: torch.Tensor, c: torch.Tensor | None,
                kl_mode: str) -> tuple[torch.Tensor, tuple]:
        l1 = self.latent_dims[0]
        eps1, eps2 = eps[:, :l1], eps[:, l1:]
        mu1, lv1 = self.encode(params, h)
        z1 = mu1 + torch.exp(0.5 * lv1) * eps1
        mu2, lv2 = _gaussian_net(self.numpy.enc2, params, z1)
        z2 = mu2 + torch.exp(0.5 * lv2) * eps2
        mu_p, lv_p = _gaussian_net(self.numpy.prior1, params, z2)
        kl1 = -0.5 * (LOG_2PI + lv1 + eps1 * eps1) - _gaussian_log_density(z1, mu_p, lv_p)
        if kl_mode == "analytic":
            kl2 = 0.5 * (mu2 * mu2 + torch.exp(lv2) - 1.0 - lv2)
        else:
            kl2 = -0.5 * (LOG_2PI + lv2 + eps2 * eps2) + 0.5 * (LOG_2PI + z2 * z2)
        return z1, (kl1, kl2)

    def rate(self, cache: tuple) -> torch.Tensor:
        kl1, kl2 = cache
        return kl1.sum(-1) + kl2.sum(-1)

    def charged_kl(self, kl: torch.Tensor, cache: tuple) -> torch.Tensor:
        if self.config.free_bits <= 0:
            return kl.mean()
        return sum(torch.clamp(k.mean(0), min=self.config.free_bits).sum() for k in cache)

    def sample_prior(self, params: dict, n: int, generator: torch.Generator,
                     c: torch.Tensor | None, device: Any, dtype: torch.dtype) -> torch.Tensor:
        kw = dict(generator=generator, device=device, dtype=dtype)
        z2 = torch.randn((n, self.latent_dims[1]), **kw)
        mu_p, lv_p = _gaussian_net(self.numpy.prior1, params, z2)
        return mu_p + torch.exp(0.5 * lv_p) * torch.randn(mu_p.shape, **kw)


# --- the per-example optimisation of gaps.py ---------------------------------------------------


def local_bottleneck(tvae: Any) -> TorchFlowBottleneck:
    """The mirror's bottleneck in local form (``flow_bottleneck.local_bottleneck``)."""
    if isinstance(tvae.bottleneck, TorchFlowBottleneck):
        return tvae.bottleneck
    if tvae.config.bottleneck == "gaussian":
        return TorchGaussianFamily(tvae.config, tvae.bottleneck.prior)
    raise ValueError(f"the per-example optimisation needs a bottleneck with local "
                     f"parameters (gaussian, planar, iaf), not {tvae.config.bottleneck}")


def encode_local(tvae: Any, x: torch.Tensor) -> dict:
    """x (N, D) -> the encoder's local parameters, a dict of (N, ...) tensors."""
    return local_bottleneck(tvae).local(tvae.params, network_forward(tvae.encoder, tvae.params,
                                                                     x, None))


def local_elbo(tvae: Any, params: dict, x: torch.Tensor, local: dict, eps: torch.Tensor,
               kl_mode: str | None = None) -> torch.Tensor:
    """The one-sample ELBO of each example (N,) from given local parameters."""
    bottleneck = local_bottleneck(tvae)
    z, cache = bottleneck.sample(params, local, eps, None, kl_mode or tvae.config.kl_mode)
    recon = -tvae.likelihood.log_prob(params, x, network_forward(tvae.decoder, params, z, None))
    return -(recon + bottleneck.rate(cache))


def optimize_local(tvae: Any, x: torch.Tensor, local: dict, noises: list, lr: float = 3e-2,
                   decay: bool = True) -> dict:
    """``gaps.optimize_local`` with autograd and ``torch.optim.Adam``: each example's local
    parameters climb its one-sample ELBO, the model's parameters frozen.

    tvae: a ``TorchVAE``; local: a dict of tensors; x (N, D); noises: one (N, L) noise tensor
    per step (their number is the number of steps), which lets a test feed the NumPy run's
    very draws. ``decay``: the rate falls linearly to 0, as in NumPy. Returns the optimized
    local parameters (new tensors).
    """
    local = {k: v.detach().clone().requires_grad_(True) for k, v in local.items()}
    params = {k: v.detach() for k, v in tvae.params.items()}
    opt = torch.optim.Adam(list(local.values()), lr=lr)
    steps = len(noises)
    for step, eps in enumerate(noises, start=1):
        if decay:
            for group in opt.param_groups:
                group["lr"] = lr * (steps + 1 - step) / steps
        opt.zero_grad()
        (-local_elbo(tvae, params, x, local, eps).sum()).backward()
        opt.step()
    return {k: v.detach() for k, v in local.items()}
