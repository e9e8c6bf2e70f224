r"""Posterior families q(z|x): the diagonal Gaussian, and the Gaussian followed by a flow.

Each family splits the way from the encoder's features h to a latent sample in two:

    local(params, h)               -> the per-example variational parameters ("local"):
                                      a dict of (N, ...) arrays: mu, log_var, and the flow's
                                      amortized parameters
    sample(params, local, eps)     -> z (N, L), log q(z|x) at z (N,)

``local`` is what the encoder amortizes; the per-example optimisation of lesson 12
(``gaps.py``) starts from it and improves it example by example, with everything global
(decoder, the IAF's masked networks) frozen. Each has its backward:
``local_backward(dlocal, cache, grads) -> dh`` and
``sample_backward(dz, dlog_q, cache, grads) -> dlocal``, where ``grads`` receives the
gradients of the family's own parameters.

**Amortized or global flow parameters.** A planar step's (u, w, b) come from the encoder
(a Linear head of h, as in Rezende and Mohamed), so each x gets its own flow; an IAF step's
masked network is shared, and x enters through a context c(h) (a Linear head), as in Kingma
et al. The approximation gap is measured against the best q *of the family* for each x.
With amortized parameters the family is {Gaussian then flow, any local parameters}, the very
set the encoder chooses from, so optimizing the local parameters per example finds the best
member the encoder could have output, and the amortization gap is what the encoder leaves.
With global flow parameters (``context_dim=0`` for the IAF) the per-example optimisation
can move only mu and log_var: the "family" is then "Gaussians pushed through this one trained
map", a set that training chose for the average x, and the approximation gap mixes the
family's limit with that choice. The course's default is amortized.

Noise: eps (N, L) ~ N(0, I) drawn by the caller; z_0 = mu + exp(log_var / 2) eps and
log q_0(z_0) = -1/2 sum(log 2 pi + log_var + eps^2) (the density at z_0 written through eps:
its total derivative in mu is 0, in log_var -1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.flows import IAF_GATE_BIAS, Planar, iaf_steps
from vae_from_scratch.layers import Linear

POSTERIORS = ("gaussian", "planar", "iaf")


def _linear_init(rng, params, name, shape):
    """PyTorch's Linear initialisation, U(-1/sqrt(D_in), 1/sqrt(D_in)) for W then b."""
    bound = 1.0 / math.sqrt(shape[0])
    params[f"{name}.W"] = rng.uniform(-bound, bound, size=shape)
    params[f"{name}.b"] = rng.uniform(-bound, bound, size=shape[1])


def _linear_shapes(name, shape):
    return {f"{name}.W": shape, f"{name}.b": (shape[1],)}


def _log_q0(log_var, eps):
    """log N(z_0; mu, exp(log_var)) at z_0 = mu + sigma eps: (N, L) -> (N,)."""
    return -0.5 * np.sum(dist.LOG_2PI + log_var + eps * eps, axis=-1)


class GaussianPosterior:
    """q(z|x) = N(mu(h), diag exp(log_var(h))): the encoder's two heads ``enc.mu`` and
    ``enc.log_var`` (named and initialised as in ``vae.VAE``)."""

    kind = "gaussian"
    steps = 0

    def __init__(self, h_dim: int, latent_dim: int) -> None:
        self.h_dim, self.latent_dim = h_dim, latent_dim

    def head_shapes(self) -> dict[str, tuple[int, ...]]:
        """The heads' parameters, which ``vae.VAE`` has too (same names and shapes)."""
        shape = (self.h_dim, self.latent_dim)
        return {**_linear_shapes("enc.mu", shape), **_linear_shapes("enc.log_var", shape)}

    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameters beyond ``vae.VAE``'s: none for the Gaussian."""
        return {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self.head_shapes(), **self.extra_shapes()}

    def init_params(self, rng: np.random.Generator, params: dict) -> None:
        """Draw every parameter into ``params`` (float64): the heads ``enc.mu`` then
        ``enc.log_var`` (W then b, as ``networks.Layer`` draws them), then the extra ones."""
        shape = (self.h_dim, self.latent_dim)
        _linear_init(rng, params, "enc.mu", shape)
        _linear_init(rng, params, "enc.log_var", shape)
        self.init_extra(rng, params)

    def init_extra(self, rng: np.random.Generator, params: dict) -> None:
        """Draw the parameters that ``vae.VAE`` does not have into ``params`` (float64)."""

    def local(self, params: dict, h: np.ndarray) -> tuple[dict, tuple]:
        """h (N, H) -> {"mu": (N, L), "log_var": (N, L)}, cache."""
        mu, mu_cache = Linear.forward(h, params["enc.mu.W"], params["enc.mu.b"])
        log_var, lv_cache = Linear.forward(h, params["enc.log_var.W"], params["enc.log_var.b"])
        return {"mu": mu, "log_var": log_var}, (mu_cache, lv_cache)

    def local_backward(self, dlocal: dict, cache: tuple, grads: dict) -> np.ndarray:
        """dlocal (the gradients of ``local``'s dict) -> dh (N, H); head gradients into grads."""
        mu_cache, lv_cache = cache
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(dlocal["mu"], mu_cache)
        dh_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(
            dlocal["log_var"], lv_cache)
        return dh_mu + dh_lv

    def sample(self, params: dict, local: dict,
               eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """local, eps (N, L) -> z (N, L), log q(z|x) (N,), cache."""
        std = np.exp(0.5 * local["log_var"])
        z = local["mu"] + std * eps
        return z, _log_q0(local["log_var"], eps), (std, eps)

    def sample_backward(self, dz: np.ndarray, dlog_q: np.ndarray, cache: tuple,
                        grads: dict) -> dict:
        """dz (N, L), dlog_q (N,) -> dlocal {"mu", "log_var"}."""
        std, eps = cache
        return {"mu": dz, "log_var": 0.5 * dz * std * eps - 0.5 * dlog_q[:, None]}

    def __repr__(self):
        return f"{type(self).__name__}(h_dim={self.h_dim}, latent_dim={self.latent_dim})"


class PlanarPosterior(GaussianPosterior):
    """The Gaussian followed by ``steps`` planar steps whose (u, w, b) the encoder outputs:
    one more head ``enc.flow`` (H, steps * (2L + 1)), read as (N, steps, 2L + 1) = [u, w, b]."""

    kind = "planar"

    def __init__(self, h_dim: int, latent_dim: int, steps: int) -> None:
        super().__init__(h_dim, latent_dim)
        self.steps = steps

    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        return _linear_shapes("enc.flow", (self.h_dim, self.steps * (2 * self.latent_dim + 1)))

    def init_extra(self, rng: np.random.Generator, params: dict) -> None:
        _linear_init(rng, params, "enc.flow", self.extra_shapes()["enc.flow.W"])

    def local(self, params: dict, h: np.ndarray) -> tuple[dict, tuple]:
        """h -> {"mu", "log_var" (N, L), "u", "w" (N, steps, L), "b" (N, steps)}, cache."""
        local, cache = super().local(params, h)
        out, flow_cache = Linear.forward(h, params["enc.flow.W"], params["enc.flow.b"])
        L = self.latent_dim
        out = out.reshape(len(h), self.steps, 2 * L + 1)
        local.update(u=out[:, :, :L], w=out[:, :, L:2 * L], b=out[:, :, 2 * L])
        return local, (cache, flow_cache)

    def local_backward(self, dlocal: dict, cache: tuple, grads: dict) -> np.ndarray:
        gauss_cache, flow_cache = cache
        dh = super().local_backward(dlocal, gauss_cache, grads)
        dout = np.concatenate([dlocal["u"], dlocal["w"], dlocal["b"][:, :, None]], axis=2)
        dh_flow, grads["enc.flow.W"], grads["enc.flow.b"] = Linear.backward(
            dout.reshape(len(dout), -1), flow_cache)
        return dh + dh_flow

    def sample(self, params: dict, local: dict,
               eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """z_0 from the Gaussian, then z_k = planar_k(z_{k-1});
        log q_K(z_K) = log q_0(z_0) - sum_k log|det J_k|."""
        z, log_q, gauss_cache = super().sample(params, local, eps)
        caches = []
        for k in range(self.steps):
            z, log_det, c = Planar.forward(z, local["u"][:, k], local["w"][:, k],
                                           local["b"][:, k])
            log_q = log_q - log_det
            caches.append(c)
        return z, log_q, (gauss_cache, caches)

    def sample_backward(self, dz: np.ndarray, dlog_q: np.ndarray, cache: tuple,
                        grads: dict) -> dict:
        gauss_cache, caches = cache
        du, dw, db = [], [], []
        for c in reversed(caches):
            dz, du_k, dw_k, db_k = Planar.backward(dz, -dlog_q, c)
            du.append(du_k)
            dw.append(dw_k)
            db.append(db_k)
        dlocal = super().sample_backward(dz, dlog_q, gauss_cache, grads)
        dlocal.update(u=np.stack(du[::-1], axis=1), w=np.stack(dw[::-1], axis=1),
                      b=np.stack(db[::-1], axis=1))
        return dlocal

    def __repr__(self):
        return (f"{type(self).__name__}(h_dim={self.h_dim}, latent_dim={self.latent_dim}, "
                f"steps={self.steps})")


class IAFPosterior(GaussianPosterior):
    """The Gaussian followed by ``steps`` IAF steps (``flows.IAFStep``, named ``flow.{k}``).

    context_dim C > 0: the encoder's head ``enc.context`` (H, C) gives each example a
    context c that every step's MADE reads (amortized); C = 0: no context, the steps are
    one global map. hidden_sizes: each MADE's hidden layers.
    """

    kind = "iaf"

    def __init__(self, h_dim: int, latent_dim: int, steps: int, context_dim: int = 20,
                 hidden_sizes: Sequence[int] = (40, 40), *,
                 activation: str = "relu", gate_bias: float = IAF_GATE_BIAS) -> None:
        super().__init__(h_dim, latent_dim)
        self.steps, self.context_dim = steps, context_dim
        self.hidden_sizes = tuple(hidden_sizes)
        self.flow = iaf_steps(latent_dim, steps, hidden_sizes, context_dim,
                              activation=activation, gate_bias=gate_bias)

    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        if self.context_dim:
            shapes.update(_linear_shapes("enc.context", (self.h_dim, self.context_dim)))
        for step in self.flow:
            shapes.update(step.param_shapes())
        return shapes

    def init_extra(self, rng: np.random.Generator, params: dict) -> None:
        if self.context_dim:
            _linear_init(rng, params, "enc.context", (self.h_dim, self.context_dim))
        for step in self.flow:
            step.init_params(rng, params)

    def local(self, params: dict, h: np.ndarray) -> tuple[dict, tuple]:
        """h -> {"mu", "log_var" (N, L)[, "context" (N, C)]}, cache."""
        local, cache = super().local(params, h)
        ctx_cache = None
        if self.context_dim:
            local["context"], ctx_cache = Linear.forward(h, params["enc.context.W"],
                                                         params["enc.context.b"])
        return local, (cache, ctx_cache)

    def local_backward(self, dlocal: dict, cache: tuple, grads: dict) -> np.ndarray:
        gauss_cache, ctx_cache = cache
        dh = super().local_backward(dlocal, gauss_cache, grads)
        if self.context_dim:
            dh_c, grads["enc.context.W"], grads["enc.context.b"] = Linear.backward(
                dlocal["context"], ctx_cache)
            dh = dh + dh_c
        return dh

    def sample(self, params: dict, local: dict,
               eps: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        z, log_q, gauss_cache = super().sample(params, local, eps)
        context = local.get("context")
        caches = []
        for step in self.flow:
            z, log_det, c = step.forward(params, z, context)
            log_q = log_q - log_det
            caches.append(c)
        return z, log_q, (gauss_cache, caches)

    def sample_backward(self, dz: np.ndarray, dlog_q: np.ndarray, cache: tuple,
                        grads: dict) -> dict:
        gauss_cache, caches = cache
        dcontext = 0.0
        for step, c in zip(reversed(self.flow), reversed(caches), strict=True):
            dz, dc = step.backward(dz, -dlog_q, c, grads)
            if dc is not None:
                dcontext = dcontext + dc
        dlocal = super().sample_backward(dz, dlog_q, gauss_cache, grads)
        if self.context_dim:
            dlocal["context"] = dcontext
        return dlocal

    def __repr__(self):
        return (f"{type(self).__name__}(h_dim={self.h_dim}, latent_dim={self.latent_dim}, "
                f"steps={self.steps}, context_dim={self.context_dim}, "
                f"hidden_sizes={self.hidden_sizes})")


def make_posterior(kind: str, h_dim: int, latent_dim: int, steps: int = 0,
                   **options: Any) -> GaussianPosterior:
    """The posterior family by name: "gaussian" (steps must be 0), "planar", "iaf"
    (``options``: context_dim, hidden_sizes, activation, gate_bias)."""
    if kind not in POSTERIORS:
        raise ValueError(f"unknown posterior {kind!r}; expected one of {', '.join(POSTERIORS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"flow_steps must be an integer >= 0, got {steps!r}")
    if kind == "gaussian":
        if steps:
            raise ValueError("a gaussian posterior has no flow steps; use posterior='planar' "
                             "or 'iaf' with flow_steps > 0")
        if options:
            raise ValueError(f"a gaussian posterior takes no options, got {sorted(options)}")
        return GaussianPosterior(h_dim, latent_dim)
    if kind == "planar":
        if options:
            raise ValueError(f"a planar posterior takes no options, got {sorted(options)}")
        return PlanarPosterior(h_dim, latent_dim, int(steps))
    return IAFPosterior(h_dim, latent_dim, int(steps), **options)
