"""Lesson 12 in PyTorch: flows, posteriors, the flow VAE, the two-level VAE and the
per-example optimisation of the gap estimate.

The same functions as ``flows.py``, ``posteriors.py``, ``flow_vae.py``, ``hierarchical.py``
and ``gaps.optimize_local``, written with torch operations so that autograd computes what
those modules derive by hand. Each class wraps the NumPy object it mirrors (its networks,
masks, names and sizes) and works on a dict of tensors with the NumPy parameter names
(:func:`tensors`), so parity is checked from the very same numbers (``tests/test_flows.py``,
``test_flow_vae.py``, ``test_hierarchical.py``, ``test_gaps.py``). Likelihoods: Bernoulli
and Gaussian (the continuous Bernoulli lives in ``torch_vae``, whose helpers are private to
it until the torch subpackage gives them a public home).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vae_from_scratch.torch_vae.made import TorchMADE

LOG_2PI = math.log(2.0 * math.pi)
_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def tensors(params, requires_grad=False, dtype=torch.float64, device=None):
    """A NumPy params dict as a dict of tensors with the same names (copies)."""
    return {k: torch.tensor(np.asarray(v), dtype=dtype, device=device,
                            requires_grad=requires_grad) for k, v in params.items()}


# --- flows ---------------------------------------------------------------------------------


def planar_u_hat(u, w):
    """u, w (N, L) -> u_hat = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a)."""
    alpha = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(alpha) - 1.0 - alpha) * w / (w * w).sum(-1, keepdim=True)


def planar(z, u, w, b):
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

    def __init__(self, step):
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

    def __init__(self, posterior):
        self.posterior = posterior
        self.flow = [TorchIAFStep(s) for s in getattr(posterior, "flow", [])]

    def local(self, params, h):
        post = self.posterior
        local = {"mu": _linear(params, "enc.mu", h), "log_var": _linear(params, "enc.log_var", h)}
        if post.kind == "planar":
            L = post.latent_dim
            out = _linear(params, "enc.flow", h).reshape(len(h), post.steps, 2 * L + 1)
            local.update(u=out[:, :, :L], w=out[:, :, L:2 * L], b=out[:, :, 2 * L])
        elif post.kind == "iaf" and post.context_dim:
            local["context"] = _linear(params, "enc.context", h)
        return local

    def sample(self, params, local, eps):
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


# --- the models ------------------------------------------------------------------------------


def mlp_forward(network, params, x):
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


def _log_likelihood(config, params, x, out):
    """log p(x|z) per example (N,) from the decoder's output (Bernoulli or Gaussian)."""
    if config.likelihood == "bernoulli":
        return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
    if config.likelihood == "gaussian":
        log_var = (params["dec.log_var"] if config.obs_var == "learned"
                   else torch.tensor(math.log(config.obs_var), dtype=out.dtype, device=out.device))
        return _gaussian_log_density(x, out, log_var).sum(-1)
    raise ValueError(f"the torch mirror of lesson 12 has no {config.likelihood} likelihood")


def _gaussian_log_density(x, mu, log_var):
    """Per dimension: -1/2 (log 2 pi + log_var + (x - mu)^2 / var)."""
    return -0.5 * (LOG_2PI + log_var + (x - mu) ** 2 * torch.exp(-log_var))


class TorchFlowVAE:
    """A NumPy ``flow_vae.FlowVAE`` in torch, on a dict of tensors (:func:`tensors`).

    elbo_terms(params, x, eps, kl=None) -> recon (N,), kl (N,);
    loss(params, x, eps, beta=None) -> (loss, recon, kl), batch means;
    local_elbo(params, x, local, eps, kl=None) -> (N,): the ELBO from given local parameters.
    """

    def __init__(self, model):
        self.model = model
        self.posterior = TorchPosterior(model.posterior)

    def _from_local(self, params, x, local, eps, kl):
        mode = self.model._kl_mode(kl)
        z, log_q = self.posterior.sample(params, local, eps)
        out = mlp_forward(self.model.base.decoder, params, z)
        recon = -_log_likelihood(self.model.config, params, x, out)
        if mode == "analytic":
            mu, lv = local["mu"], local["log_var"]
            kl_values = 0.5 * (mu * mu + torch.exp(lv) - 1.0 - lv).sum(-1)
        else:
            kl_values = log_q + 0.5 * (LOG_2PI + z * z).sum(-1)
        return recon, kl_values

    def local(self, params, x):
        h = mlp_forward(self.model.base.encoder, params, x)
        return self.posterior.local(params, h)

    def elbo_terms(self, params, x, eps, kl=None):
        return self._from_local(params, x, self.local(params, x), eps, kl)

    def local_elbo(self, params, x, local, eps, kl=None):
        recon, kl_values = self._from_local(params, x, local, eps, kl)
        return -(recon + kl_values)

    def loss(self, params, x, eps, beta=None):
        beta = self.model.config.beta if beta is None else beta
        recon, kl = self.elbo_terms(params, x, eps)
        return (recon + beta * kl).mean(), recon.mean(), kl.mean()


class TorchTwoLevelVAE:
    """A NumPy ``hierarchical.TwoLevelVAE`` in torch, on a dict of tensors.

    kl_terms(params, x, eps, kl=None) -> recon, kl1, kl2 per example (N,) each;
    loss(params, x, eps, beta=None) -> (loss, recon, kl) with the model's free bits.
    """

    def __init__(self, model):
        self.model = model

    def _gaussian_net(self, net, params, x):
        h = mlp_forward(net.net, params, x)
        return tuple(_linear(params, head.name, h) for head in net.heads)

    def _per_dim(self, params, x, eps, kl):
        m = self.model
        l1 = m.latent_dims[0]
        eps1, eps2 = eps[:, :l1], eps[:, l1:]
        h = mlp_forward(m.base.encoder, params, x)
        mu1, lv1 = _linear(params, "enc.mu", h), _linear(params, "enc.log_var", h)
        z1 = mu1 + torch.exp(0.5 * lv1) * eps1
        mu2, lv2 = self._gaussian_net(m.enc2, params, z1)
        z2 = mu2 + torch.exp(0.5 * lv2) * eps2
        mu_p, lv_p = self._gaussian_net(m.prior1, params, z2)
        out = mlp_forward(m.base.decoder, params, z1)
        recon = -_log_likelihood(m.config, params, x, out)
        log_q1 = -0.5 * (LOG_2PI + lv1 + eps1 * eps1)
        kl1 = log_q1 - _gaussian_log_density(z1, mu_p, lv_p)
        if (kl or "analytic") == "analytic":
            kl2 = 0.5 * (mu2 * mu2 + torch.exp(lv2) - 1.0 - lv2)
        else:
            kl2 = -0.5 * (LOG_2PI + lv2 + eps2 * eps2) + 0.5 * (LOG_2PI + z2 * z2)
        return recon, kl1, kl2

    def kl_terms(self, params, x, eps, kl=None):
        recon, kl1, kl2 = self._per_dim(params, x, eps, kl)
        return recon, kl1.sum(-1), kl2.sum(-1)

    def loss(self, params, x, eps, beta=None):
        m = self.model
        beta = m.config.beta if beta is None else beta
        recon, kl1, kl2 = self._per_dim(params, x, eps, "analytic")
        kl = (kl1.sum(-1) + kl2.sum(-1)).mean()
        charged = kl
        if m.free_bits > 0:
            charged = sum(torch.clamp(k.mean(0), min=m.free_bits).sum() for k in (kl1, kl2))
        return recon.mean() + beta * charged, recon.mean(), kl


# --- the per-example optimisation of gaps.py ---------------------------------------------------


def optimize_local(mirror, params, x, local, noises, lr=3e-2, decay=True):
    """``gaps.optimize_local`` with autograd and ``torch.optim.Adam``: each example's local
    parameters climb its one-sample ELBO, the model's ``params`` frozen.

    mirror: a :class:`TorchFlowVAE`; params, local: dicts of tensors; x (N, D); noises: one
    (N, L) noise tensor per step (their number is the number of steps), which lets a test
    feed the NumPy run's very draws. ``decay``: the rate falls linearly to 0, as in NumPy.
    Returns the optimized local parameters (new tensors).
    """
    local = {k: v.detach().clone().requires_grad_(True) for k, v in local.items()}
    params = {k: v.detach() for k, v in params.items()}
    opt = torch.optim.Adam(list(local.values()), lr=lr)
    steps = len(noises)
    for step, eps in enumerate(noises, start=1):
        if decay:
            for group in opt.param_groups:
                group["lr"] = lr * (steps + 1 - step) / steps
        opt.zero_grad()
        (-mirror.local_elbo(params, x, local, eps).sum()).backward()
        opt.step()
    return {k: v.detach() for k, v in local.items()}
