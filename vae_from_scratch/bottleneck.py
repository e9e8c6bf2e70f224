"""The latent bottleneck: from the encoder's features h to the decoder's input z, with the
rate it costs (lessons 04 and 05).

The VAE is three parts in a row, and this module is the middle one::

    x --encoder network--> h --bottleneck--> z --decoder network--> out --likelihood--> recon
                                 |
                                 +--> the rate: KL(q(z|x) || p(z)) per example, or its estimate

:class:`GaussianBottleneck` is the VAE of lessons 04-10: two Linear heads give the diagonal
Gaussian q(z|x) = N(mu, diag exp(log_var)), z = mu + exp(log_var / 2) * eps is the
reparameterized draw, and the rate is the KL to the prior, analytic where the prior has a
closed form, else the one-sample estimate log q(z|x) - log p(z) at that z.

**What a bottleneck provides.** The VAE calls only these, so another bottleneck is one more
class (plus the configuration that chooses it), never a change to ``VAE``::

    Bottleneck(config, prior)     prior: the model's Prior object (priors.py)
    param_shapes(h_dim)           its parameters: name -> shape, in initialisation order
    init_params(rng, params, h_dim)   draws them into ``params``
    noise_shape(n)                the shape of the noise ``eps`` that forward takes for n
                                  examples (the caller draws it: N(0, I) here)
    encode(params, h)             the posterior's parameters, what ``VAE.encode`` returns
    code(params, h)               a deterministic code for h (``VAE.reconstruct``)
    forward(params, h, eps, c, kl_mode) -> (z, cache)
                                  z (N, L) for the decoder; c the one-hot label or None,
                                  handed to the prior; kl_mode 'analytic' or 'monte_carlo'
    rate(cache) -> kl             the rate per example (N,): KL(q(z|x) || p(z)) or its
                                  estimate, reported as ``kl``
    charged_kl(kl, cache) -> (charged, floors)
                                  the rate the loss charges, a float (the batch mean of kl,
                                  or free bits' sum_j max(free_bits, mean_n KL_nj)), and what
                                  backward needs to know of it (None without free bits)
    backward(dz, dkl, cache, grads, floors) -> dh
                                  dz (N, L) from the decoder, dkl (N,) = dLoss/dkl; writes
                                  its own parameters' gradients (and the prior's) into grads

The VAE calls forward, runs the decoder on z, then calls rate; the training backends and the
evaluation draw their noise in ``noise_shape``. :class:`Bottleneck` gives every bottleneck
these too, with defaults that suit a Gaussian one::

    name, description         its key in :data:`BOTTLENECKS`; words for messages
    stochastic                True if z is drawn (the importance-weighted bound applies)
    configure(config)         classmethod: {field: value} it resolves; ValueError for
                              fields it cannot take
    code_shape(config)        classmethod: (D, H, W) when z is a grid of D-vectors that the
                              conv decoder reads position by position; None for a flat z
    sample_prior(params, n, rng, c)   n draws of z from the model's prior (n, L)
    after_step(params, step, rng)     what training changes besides the gradient step,
                              called by the backends after each optimizer step (step: steps
                              done; rng: the backend's generator): the EMA codebook and
                              dead-code restarts of lesson 11
    report(params, h)         figures for a run's report: {} here; the rate in bits and the
                              codes' usage perplexity for a quantizer
 The PyTorch mirror's twin
(``torch_vae/bottleneck.py``) has noise_shape, encode, code, forward, rate and charged_kl
(the charged tensor alone), called in the same order; autograd is its backward.
The loss is ``mean(recon) + beta * charged``; the figure reported as ``kl`` is ``mean(kl)``.
The configuration's ``bottleneck`` field names the class: ``vae.build_parts`` looks it up in
:data:`BOTTLENECKS` (and the mirror in ``TORCH_BOTTLENECKS``), where each class is registered
with :func:`register_bottleneck` under its ``name``. A bottleneck class also says whether its
rate has a closed form (``analytic_kl``, for ``kl="auto"``), checks and fills in the
configuration fields that belong to it (``configure``, as likelihoods and priors do), and may
draw codes from the model's prior its own way (``sample_prior``: a two-level latent draws z2,
then z1 given z2). The same interface carries the bottlenecks that lessons 11 and 12 add
(lesson 11's are in :mod:`vae_from_scratch.discrete`, lesson 12's in
:mod:`vae_from_scratch.flow_bottleneck` and :mod:`vae_from_scratch.hierarchical`):

* **vector quantization** (VQ-VAE): encode gives z_e per spatial position; forward snaps it
  to the nearest codebook vector (the codebook is its parameter, noise_shape is (n, 0));
  rate is the constant log K per position; charged_kl returns the codebook and commitment
  terms instead of a KL, and backward passes dz straight through to z_e and differentiates
  those terms. Finite scalar quantization likewise, without a codebook.
* **a normalizing-flow posterior**: forward draws z0 as here, then applies k invertible steps
  (planar or IAF, their parameters its own) and keeps their log-determinants in the cache;
  kl_mode is Monte Carlo, rate = log q(z0|x) - sum of the log-determinants - log p(z_k), and
  backward runs the steps in reverse.
* **a two-level latent**: forward draws z1 ~ q(z1|x), then z2 ~ q(z2|z1) with heads of its
  own; rate = log q(z1|x) + log q(z2|z1) - log p(z2) - log p(z1|z2), with p(z1|z2) a small
  network among its parameters, and the prior object p(z2).

A label-dependent prior p(z|y) needs no new bottleneck: every prior call gets ``c``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.layers import Linear
from vae_from_scratch.networks import Layer
from vae_from_scratch.priors import Prior
from vae_from_scratch.registry import Registry


class Bottleneck:
    """The part between the encoder's features and the decoder's input; see the module
    docstring for the interface. An instance holds the configuration and the prior."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: True if the rate has a closed form for priors that have one
    analytic_kl: ClassVar[bool] = True
    #: True if z is drawn (the importance-weighted bound applies)
    stochastic: ClassVar[bool] = True

    def __init__(self, config: Any, prior: Prior) -> None:
        self.config, self.prior = config, prior
        self.dtype = np.dtype(config.dtype).type

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        """The configuration fields this bottleneck resolves: {field: value}; ValueError
        for fields that do not fit it."""
        return {}

    @classmethod
    def code_shape(cls, config: Any) -> tuple[int, int, int] | None:
        return None

    def sample_prior(self, params: dict, n: int, rng: np.random.Generator,
                     c: np.ndarray | None = None) -> np.ndarray:
        """n codes z (n, L) for the decoder, drawn from the model's prior."""
        return self.prior.sample(params, n, rng, c)

    def after_step(self, params: dict, step: int, rng: np.random.Generator) -> None:
        """Nothing: the gradient step is all the training there is."""

    def report(self, params: dict, h: np.ndarray) -> dict[str, Any]:
        return {}


#: The bottlenecks the configuration may name: name -> class.
BOTTLENECKS: Registry = Registry(Bottleneck, "bottleneck")
#: Add a Bottleneck subclass to BOTTLENECKS under its name (a class decorator).
register_bottleneck = BOTTLENECKS.register


@register_bottleneck
class GaussianBottleneck(Bottleneck):
    """q(z|x) = N(mu, diag exp(log_var)) with Linear heads ``enc.mu`` and ``enc.log_var``
    (each W (H, L), b (L,)), and the reparameterized z (lesson 04)."""

    name = "gaussian"
    description = "a diagonal Gaussian posterior (lessons 04-10)"

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        refuse_fields(config, *QUANTIZER_FIELDS, *FLOW_FIELDS)
        return {}

    def _heads(self, h_dim: int) -> list[Layer]:
        shape = (h_dim, self.config.latent_dim)
        return [Layer("linear", f"enc.{name}", shape) for name in ("mu", "log_var")]

    def param_shapes(self, h_dim: int) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for head in self._heads(h_dim):
            shapes.update(head.param_shapes())
        return shapes

    def init_params(self, rng: np.random.Generator, params: dict, h_dim: int) -> None:
        for head in self._heads(h_dim):
            head.init_params(rng, params)

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, self.config.latent_dim)

    def encode(self, params: dict, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h (N, H) -> mu (N, L), log_var (N, L)."""
        return self._heads_forward(params, h)[:2]

    def code(self, params: dict, h: np.ndarray) -> np.ndarray:
        """The posterior mean mu (N, L)."""
        return self._heads_forward(params, h)[0]

    def _heads_forward(self, params: dict, h: np.ndarray) -> tuple:
        mu, mu_cache = Linear.forward(h, params["enc.mu.W"], params["enc.mu.b"])
        log_var, lv_cache = Linear.forward(h, params["enc.log_var.W"], params["enc.log_var.b"])
        return mu, log_var, (mu_cache, lv_cache)

    def forward(self, params: dict, h: np.ndarray, eps: np.ndarray, c: np.ndarray | None,
                kl_mode: str) -> tuple[np.ndarray, tuple]:
        """h (N, H), eps (N, L) -> z (N, L), cache. ``kl_mode``: how :meth:`rate` estimates
        the KL, 'analytic' (the prior's closed form) or 'monte_carlo' (at this z)."""
        mu, log_var, heads_cache = self._heads_forward(params, h)
        z, rep_cache = dist.reparameterize(mu, log_var, eps)
        return z, (params, mu, log_var, z, c, kl_mode, heads_cache, rep_cache)

    def rate(self, cache: tuple) -> np.ndarray:
        """KL(q(z|x) || p(z)) per example (N,), or its one-sample estimate
        log q(z|x) - log p(z) at the z of :meth:`forward`."""
        params, mu, log_var, z, c, kl_mode, _, _ = cache
        if kl_mode == "analytic":
            return self.prior.kl(params, mu, log_var, c)
        return dist.gaussian_log_density(z, mu, log_var) - self.prior.log_prob(params, z, c)

    def charged_kl(self, kl: np.ndarray, cache: tuple) -> tuple[float, np.ndarray | None]:
        """(charged, floors): the batch mean of kl and None; with free bits, the sum over
        dimensions of max(free_bits, each dimension's batch-mean KL) and those means (L,)."""
        if self.config.free_bits <= 0:
            return float(np.mean(kl)), None
        params, mu, log_var, z, c, kl_mode, _, _ = cache
        if kl_mode == "analytic":
            per_dim = self.prior.kl_per_dim(params, mu, log_var, c)
        else:
            per_dim = self.prior.sample_kl_per_dim(params, z, mu, log_var, c)
        per_dim = per_dim.mean(axis=0)
        return float(np.sum(np.maximum(per_dim, self.config.free_bits))), per_dim

    def backward(self, dz: np.ndarray, dkl: np.ndarray, cache: tuple, grads: dict,
                 floors: np.ndarray | None = None) -> np.ndarray:
        """dz (N, L) from the decoder, dkl (N,) -> dh (N, H); the heads' gradients (and the
        prior's) go into ``grads``. ``floors``: the per-dimension KL means of free bits."""
        params, mu, log_var, z, c, kl_mode, (mu_cache, lv_cache), rep_cache = cache
        if kl_mode == "analytic":
            dmu, dlog_var = self.prior.kl_backward(dkl, params, mu, log_var, c, grads)
            dz_kl = ()
        else:  # kl = log q(z|x) - log p(z): z depends on (mu, log_var) through eps too
            dz_q, dmu, dlog_var = dist.gaussian_log_density_backward(dkl, z, mu, log_var)
            dz_p = self.prior.log_prob_backward(-dkl, params, z, c, grads)
            dz_kl = (dz_q, dz_p)
        if floors is not None:
            # sum_j max(free_bits, KL_j): no gradient reaches a dimension below the floor;
            # the KL splits over dimensions, so masking each column's gradient is exact
            keep = (floors >= self.config.free_bits).astype(self.dtype)
            dmu, dlog_var = dmu * keep, dlog_var * keep
            dz_kl = tuple(d * keep for d in dz_kl)
        for d in dz_kl:
            dz = dz + d
        dmu_z, dlog_var_z = dist.reparameterize_backward(dz, rep_cache)
        dmu, dlog_var = dmu + dmu_z, dlog_var + dlog_var_z
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(dmu, mu_cache)
        dh_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(dlog_var, lv_cache)
        return dh_mu + dh_lv


#: The configuration fields that belong to some bottlenecks only, and which those are.
FIELD_OWNERS = {"codebook_size": "'vq'", "code_dim": "'vq' or 'fsq'", "levels": "'fsq'",
                "commitment": "'vq'", "codebook_update": "'vq'", "restart_every": "'vq'",
                "restart_below": "'vq'", "flow_steps": "'planar' or 'iaf'",
                "top_latent_dim": "'two_level'"}
#: Lesson 11's: None means "not set" (the bottleneck resolves it).
QUANTIZER_FIELDS = ("codebook_size", "code_dim", "levels", "commitment", "codebook_update",
                    "restart_every", "restart_below")
#: Lesson 12's.
FLOW_FIELDS = ("flow_steps", "top_latent_dim")


def refuse_fields(config: Any, *names: str) -> None:
    """ValueError if one of the fields ``names`` is set (not 0 or None): they belong to
    other bottlenecks (:data:`FIELD_OWNERS`)."""
    for name in names:
        value = getattr(config, name)
        if value:
            raise ValueError(f"{name} belongs to bottleneck={FIELD_OWNERS[name]}; the "
                             f"{config.bottleneck} bottleneck takes none, got {value!r}")
