r"""The flow bottlenecks of lesson 12: the Gaussian q(z_0|x) followed by K planar or inverse
autoregressive steps, as configuration of the same VAE (``bottleneck="planar"`` or
``"iaf"``, ``flow_steps=K``).

    h --local--> the per-example variational parameters ("local": mu, log_var and the
                 flow's amortized parameters, a dict of (N, ...) arrays)
      --sample--> z_0 = mu + sigma eps, z_K = f_K(...f_1(z_0)), and
                  log q(z_K|x) = log q_0(z_0) - sum_k log|det J_k|
    rate = log q(z_K|x) - log p(z_K)     (one sample: a flow's density has no closed-form KL)

The posterior families themselves (their forward, backward and parameters) are in
``posteriors.py``; this module makes them bottlenecks (``bottleneck.py``'s interface) and
adds the prior's side of the rate. ``forward`` is :meth:`FlowBottleneck.local` then
:meth:`FlowBottleneck.sample`, and ``backward`` their two backwards in reverse, so that the
per-example optimisation of the gap estimate (``gaps.py``) can start from the encoder's local
parameters and climb the ELBO in them with the decoder frozen.

:class:`GaussianFamily` is the VAE's own Gaussian bottleneck written the same way (same
parameters, same numbers: a test checks it), so ``gaps.py`` measures a lesson-05 model and
a flow model with one code path. It is not registered: ``bottleneck="gaussian"`` names
``bottleneck.GaussianBottleneck``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vae_from_scratch.bottleneck import (
    QUANTIZER_FIELDS,
    Bottleneck,
    refuse_fields,
    register_bottleneck,
)
from vae_from_scratch.posteriors import GaussianPosterior, make_posterior


class FlowBottleneck(Bottleneck):
    """A posterior family of ``posteriors.py`` (``family`` names it) as a bottleneck."""

    family: ClassVar[str] = ""
    analytic_kl = False

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior)
        self._families = {}

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        refuse_fields(config, "top_latent_dim", *QUANTIZER_FIELDS)
        if config.flow_steps < 1:
            raise ValueError(f"the {cls.name} bottleneck needs flow_steps >= 1 (try 8), got "
                             f"{config.flow_steps}; bottleneck='gaussian' has no flow")
        if config.free_bits > 0:
            raise ValueError(f"free bits charge each latent dimension's KL, and a flow's KL "
                             f"does not split over dimensions: use free_bits=0 with the "
                             f"{cls.name} bottleneck")
        return {}

    def posterior(self, h_dim: int) -> GaussianPosterior:
        """The posterior family for features of width ``h_dim`` (made once per width)."""
        if h_dim not in self._families:
            self._families[h_dim] = self._make_family(h_dim)
        return self._families[h_dim]

    def _make_family(self, h_dim: int) -> GaussianPosterior:
        c = self.config
        return make_posterior(self.family, h_dim, c.latent_dim, c.flow_steps)

    # --- parameters ------------------------------------------------------------------------

    def param_shapes(self, h_dim: int) -> dict[str, tuple[int, ...]]:
        return self.posterior(h_dim).param_shapes()

    def init_params(self, rng: np.random.Generator, params: dict, h_dim: int) -> None:
        """The Gaussian heads (as ``GaussianBottleneck`` draws them), then the flow's."""
        self.posterior(h_dim).init_params(rng, params)

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, self.config.latent_dim)

    # --- the two halves of forward and backward ----------------------------------------------

    def local(self, params: dict, h: np.ndarray) -> tuple[dict, tuple]:
        """h (N, H) -> the local parameters (dict of (N, ...) arrays), cache."""
        return self.posterior(h.shape[1]).local(params, h)

    def local_backward(self, dlocal: dict, cache: tuple, grads: dict, h_dim: int) -> np.ndarray:
        """The gradients of ``local``'s dict -> dh (N, H); the heads' gradients into grads."""
        return self.posterior(h_dim).local_backward(dlocal, cache, grads)

    def sample(self, params: dict, local: dict, eps: np.ndarray, c: np.ndarray | None,
               kl_mode: str, h_dim: int) -> tuple[np.ndarray, tuple]:
        """local, eps (N, L) -> z_K (N, L), cache (for :meth:`rate` and the backward)."""
        z, log_q, cache = self.posterior(h_dim).sample(params, local, eps)
        return z, (params, local, z, log_q, c, kl_mode, cache, h_dim)

    def sample_backward(self, dz: np.ndarray, dkl: np.ndarray, cache: tuple,
                        grads: dict) -> dict:
        """dz (N, L) from the decoder, dkl (N,) -> the gradients of the local parameters;
        the flow's own (global) parameters' and the prior's gradients go into ``grads``."""
        params, local, z, log_q, c, kl_mode, family_cache, h_dim = cache
        family = self.posterior(h_dim)
        if kl_mode == "analytic":  # the Gaussian family only (configure refuses it else)
            dlocal = family.sample_backward(dz, np.zeros_like(dkl), family_cache, grads)
            dmu, dlog_var = self.prior.kl_backward(dkl, params, local["mu"], local["log_var"],
                                                   c, grads)
            dlocal["mu"] = dlocal["mu"] + dmu
            dlocal["log_var"] = dlocal["log_var"] + dlog_var
            return dlocal
        # kl = log q(z_K|x) - log p(z_K): the prior's part reaches z_K
        dz = dz + self.prior.log_prob_backward(-dkl, params, z, c, grads)
        return family.sample_backward(dz, dkl, family_cache, grads)

    # --- the bottleneck interface ----------------------------------------------------------

    def encode(self, params: dict, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h (N, H) -> mu (N, L), log_var (N, L) of the base Gaussian q_0(z_0|x)."""
        local, _ = self.local(params, h)
        return local["mu"], local["log_var"]

    def code(self, params: dict, h: np.ndarray) -> np.ndarray:
        """The flow applied to the base Gaussian's mean (eps = 0): (N, L)."""
        local, _ = self.local(params, h)
        mu = local["mu"]
        return self.posterior(h.shape[1]).sample(params, local, np.zeros_like(mu))[0]

    def forward(self, params: dict, h: np.ndarray, eps: np.ndarray, c: np.ndarray | None,
                kl_mode: str) -> tuple[np.ndarray, tuple]:
        """h (N, H), eps (N, L) -> z_K (N, L), cache."""
        local, local_cache = self.local(params, h)
        z, cache = self.sample(params, local, eps, c, kl_mode, h.shape[1])
        return z, (local_cache, cache)

    def rate(self, cache: tuple) -> np.ndarray:
        """log q(z_K|x) - log p(z_K) per example (N,) (the analytic KL for the Gaussian
        family with kl_mode 'analytic'). Takes forward's cache or sample's."""
        if len(cache) == 2:
            cache = cache[1]
        params, local, z, log_q, c, kl_mode, _, _ = cache
        if kl_mode == "analytic":
            return self.prior.kl(params, local["mu"], local["log_var"], c)
        return log_q - self.prior.log_prob(params, z, c)

    def charged_kl(self, kl: np.ndarray, cache: tuple) -> tuple[float, None]:
        """The batch mean of kl (a flow takes no free bits)."""
        return float(np.mean(kl)), None

    def backward(self, dz: np.ndarray, dkl: np.ndarray, cache: tuple, grads: dict,
                 floors: None = None) -> np.ndarray:
        """dz (N, L), dkl (N,) -> dh (N, H); every parameter's gradient into ``grads``."""
        local_cache, sample_cache = cache
        dlocal = self.sample_backward(dz, dkl, sample_cache, grads)
        return self.local_backward(dlocal, local_cache, grads, sample_cache[-1])


@register_bottleneck
class PlanarBottleneck(FlowBottleneck):
    """K planar steps whose (u, w, b) the encoder outputs (head ``enc.flow``)."""

    name = "planar"
    family = "planar"


@register_bottleneck
class IAFBottleneck(FlowBottleneck):
    """K inverse autoregressive steps (``flow.{k}``: a MADE each, hidden layers
    :data:`IAF_HIDDEN`), reading a context of :data:`IAF_CONTEXT` numbers from the encoder
    (head ``enc.context``); the gate starts at sigmoid(``flows.IAF_GATE_BIAS``)."""

    name = "iaf"
    family = "iaf"

    def _make_family(self, h_dim: int) -> GaussianPosterior:
        c = self.config
        return make_posterior("iaf", h_dim, c.latent_dim, c.flow_steps,
                              context_dim=IAF_CONTEXT, hidden_sizes=IAF_HIDDEN)


#: The IAF bottleneck's MADE hidden layers and the width of the context from the encoder.
IAF_HIDDEN = (40, 40)
IAF_CONTEXT = 20


class GaussianFamily(FlowBottleneck):
    """The Gaussian bottleneck in this module's form (local parameters mu and log_var, no
    flow), with ``GaussianBottleneck``'s parameters and numbers; for ``gaps.py``."""

    name = "gaussian"
    family = "gaussian"
    analytic_kl = True

    def _make_family(self, h_dim: int) -> GaussianPosterior:
        return make_posterior("gaussian", h_dim, self.config.latent_dim)

    def charged_kl(self, kl: np.ndarray, cache: tuple) -> tuple[float, None]:
        if self.config.free_bits > 0:
            raise ValueError("GaussianFamily does not train with free bits: use the VAE's "
                             "own bottleneck (bottleneck.GaussianBottleneck)")
        return float(np.mean(kl)), None


def local_bottleneck(vae: Any) -> FlowBottleneck:
    """The bottleneck of ``vae`` in the local form that ``gaps.py`` optimizes: a flow
    bottleneck itself, :class:`GaussianFamily` for the Gaussian one; ValueError else."""
    b = vae.bottleneck
    if isinstance(b, FlowBottleneck):
        return b
    if b.name == "gaussian":
        return GaussianFamily(vae.config, vae.prior)
    raise ValueError(f"the per-example optimisation needs a bottleneck with local "
                     f"parameters (gaussian, planar, iaf); the {b.name} bottleneck has none")
