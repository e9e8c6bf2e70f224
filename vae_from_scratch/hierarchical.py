r"""A VAE with two stochastic layers (Burda et al., 2016), every gradient by hand (lesson 12).

Generative model and inference network (bottom-up, as in Burda et al.'s two-layer model)::

    p(z2) = N(0, I)        p(z1|z2) = N(mu_p(z2), diag exp(log_var_p(z2)))      p(x|z1)
    q(z1|x) = N(mu1(x), diag exp(log_var1(x)))     q(z2|z1) = N(mu2(z1), diag exp(log_var2(z1)))

$$\mathrm{ELBO} = \mathbb E_{q(z_1|x)\,q(z_2|z_1)}\big[\log p(x|z_1) + \log p(z_1|z_2) + \log p(z_2)
   - \log q(z_1|x) - \log q(z_2|z_1)\big] = -(\text{recon} + \text{kl}_1 + \text{kl}_2)$$

with z1 = mu1 + sigma1 eps1 and z2 = mu2(z1) + sigma2(z1) eps2, and, per example,

* recon = -log p(x|z1);
* kl2 = KL(q(z2|z1) || p(z2)) at the sampled z1: exact given z1, since z2 is drawn given z1
  and nothing else about z2 enters;
* kl1 = log q(z1|x) - log p(z1|z2) at the samples: a one-sample estimate. **There is no
  closed form here**: z2 was drawn *from z1*, so under q the two are dependent, and
  E_q[log q(z1|x) - log p(z1|z2)] is not E_{q(z2)} KL(q(z1|x) || p(z1|z2)). Plugging the
  Gaussian KL formula in for this term (as if z1 were drawn after z2, as in a top-down
  ladder model) is the "wrong conditioning" slip of lesson 12.

Why bottom-up rather than the ladder VAE's top-down inference (Sønderby et al., 2016): each
piece is a network and a Gaussian head the course already has, the gradient is one more
reparameterization stacked on the first, and it shows the top layer's collapse that the
ladder was built to fix (measured: ``benchmarks/README.md``). The ladder is a further exercise.

It is the VAE's bottleneck ``two_level`` (``bottleneck.py``'s interface): the VAE's encoder
gives h, the bottleneck's heads ``enc.mu``, ``enc.log_var`` give q(z1|x) (the Gaussian
bottleneck's, same names), the decoder reads z1 (``latent_dim`` = L1), and the bottleneck
holds the top layer: q(z2|z1), ``enc2``: z1 -> :data:`TOP_HIDDEN` -> heads ``enc2.mu``,
``enc2.log_var``; p(z1|z2), ``prior1``: z2 -> reversed(TOP_HIDDEN) -> heads ``prior1.mu``,
``prior1.log_var``. L2 is the configuration's ``top_latent_dim``; p(z2) = N(0, I) (the
``standard`` prior). Free bits charge each dimension of each layer at least ``free_bits``.

Noise: one array eps (N, L1 + L2) (``noise_shape``), eps1 its first L1 columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.bottleneck import (
    QUANTIZER_FIELDS,
    Bottleneck,
    refuse_fields,
    register_bottleneck,
)
from vae_from_scratch.layers import Linear
from vae_from_scratch.networks import Layer, Network, dense_layers

#: The hidden layers of the top networks q(z2|z1) and (reversed) p(z1|z2), as in Burda et
#: al.'s two-stochastic-layer model (100 units).
TOP_HIDDEN = (100,)
#: The top code's size when the configuration leaves ``top_latent_dim`` unset.
DEFAULT_TOP_LATENT_DIM = 10


def _log_q(log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """log N(z; mu, exp(log_var)) per dimension at z = mu + sigma eps: (N, L) -> (N, L)."""
    return -0.5 * (dist.LOG_2PI + log_var + eps * eps)


class _GaussianNet:
    """An MLP ``name``: input -> hidden (activation) -> heads ``{name}.mu``,
    ``{name}.log_var``. forward -> (mu, log_var, cache); backward -> d input."""

    def __init__(self, name, in_dim, hidden, out_dim, activation):
        self.net = Network(dense_layers(name, (in_dim, *hidden), activation), in_dim,
                           hidden[-1] if hidden else in_dim)
        h = self.net.out_dim
        self.heads = [Layer("linear", f"{name}.{head}", (h, out_dim))
                      for head in ("mu", "log_var")]

    def param_shapes(self):
        shapes = self.net.param_shapes()
        for head in self.heads:
            shapes.update(head.param_shapes())
        return shapes

    def init_params(self, rng, params):
        self.net.init_params(rng, params)
        for head in self.heads:
            head.init_params(rng, params)

    def forward(self, params, x):
        h, net_cache = self.net.forward(params, x)
        (mu, c_mu), (log_var, c_lv) = (
            Linear.forward(h, params[f"{head.name}.W"], params[f"{head.name}.b"])
            for head in self.heads)
        return mu, log_var, (net_cache, c_mu, c_lv)

    def backward(self, dmu, dlog_var, cache, grads):
        net_cache, c_mu, c_lv = cache
        mu_head, lv_head = (head.name for head in self.heads)
        dh_mu, grads[f"{mu_head}.W"], grads[f"{mu_head}.b"] = Linear.backward(dmu, c_mu)
        dh_lv, grads[f"{lv_head}.W"], grads[f"{lv_head}.b"] = Linear.backward(dlog_var, c_lv)
        return self.net.backward(dh_mu + dh_lv, net_cache, grads)


@register_bottleneck
class TwoLevelBottleneck(Bottleneck):
    """z1 ~ q(z1|x), z2 ~ q(z2|z1); p(z2) = N(0, I), p(z1|z2) Gaussian (module docstring).

    rate = kl1 + kl2 per example, kl1 = log q(z1|x) - log p(z1|z2) (one sample), kl2 =
    KL(q(z2|z1) || N(0, I)) exact given z1 (kl_mode 'analytic') or its one-sample estimate
    ('monte_carlo': then recon + rate is minus the log importance weight).
    """

    name = "two_level"

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior)
        l1, l2 = self.latent_dims = (config.latent_dim, config.top_latent_dim)
        act = config.activation
        self.enc2 = _GaussianNet("enc2", l1, TOP_HIDDEN, l2, act)
        self.prior1 = _GaussianNet("prior1", l2, TOP_HIDDEN[::-1], l1, act)

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        refuse_fields(config, "flow_steps", *QUANTIZER_FIELDS)
        if config.prior != "standard":
            raise ValueError(f"the two_level bottleneck's top prior p(z2) is N(0, I): use "
                             f"prior='standard', got {config.prior!r}")
        top = config.top_latent_dim
        return {"top_latent_dim": DEFAULT_TOP_LATENT_DIM if top is None else top}

    def _head_layers(self, h_dim: int) -> list[Layer]:
        return [Layer("linear", f"enc.{head}", (h_dim, self.latent_dims[0]))
                for head in ("mu", "log_var")]

    def param_shapes(self, h_dim: int) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for head in self._head_layers(h_dim):
            shapes.update(head.param_shapes())
        return {**shapes, **self.enc2.param_shapes(), **self.prior1.param_shapes()}

    def init_params(self, rng: np.random.Generator, params: dict, h_dim: int) -> None:
        for head in self._head_layers(h_dim):
            head.init_params(rng, params)
        self.enc2.init_params(rng, params)
        self.prior1.init_params(rng, params)

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, sum(self.latent_dims))

    def encode(self, params: dict, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h (N, H) -> mu1, log_var1 (N, L1): q(z1|x)."""
        return (Linear.forward(h, params["enc.mu.W"], params["enc.mu.b"])[0],
                Linear.forward(h, params["enc.log_var.W"], params["enc.log_var.b"])[0])

    def code(self, params: dict, h: np.ndarray) -> np.ndarray:
        """mu1 (N, L1), the mean of q(z1|x)."""
        return self.encode(params, h)[0]

    # --- forward -------------------------------------------------------------------------------

    def forward(self, params: dict, h: np.ndarray, eps: np.ndarray, c: np.ndarray | None,
                kl_mode: str) -> tuple[np.ndarray, tuple]:
        """h (N, H), eps (N, L1 + L2) -> z1 (N, L1), cache (with each layer's KL per
        dimension, kl1 (N, L1) and kl2 (N, L2))."""
        p, l1 = params, self.latent_dims[0]
        eps1, eps2 = eps[:, :l1], eps[:, l1:]
        mu1, mu1_cache = Linear.forward(h, p["enc.mu.W"], p["enc.mu.b"])
        lv1, lv1_cache = Linear.forward(h, p["enc.log_var.W"], p["enc.log_var.b"])
        std1 = np.exp(0.5 * lv1)
        z1 = mu1 + std1 * eps1
        mu2, lv2, enc2_cache = self.enc2.forward(p, z1)
        std2 = np.exp(0.5 * lv2)
        z2 = mu2 + std2 * eps2
        mu_p, lv_p, prior_cache = self.prior1.forward(p, z2)
        kl1 = _log_q(lv1, eps1) - dist.gaussian_log_density_per_dim(z1, mu_p, lv_p)
        if kl_mode == "analytic":
            kl2 = dist.kl_standard_normal_per_dim(mu2, lv2)
        else:
            kl2 = _log_q(lv2, eps2) - dist.gaussian_log_density_per_dim(z2, 0.0, 0.0)
        cache = (eps1, eps2, std1, std2, z1, z2, mu2, lv2, mu_p, lv_p, kl1, kl2, mu1_cache,
                 lv1_cache, enc2_cache, prior_cache, kl_mode)
        return z1, cache

    def layer_kls(self, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Each layer's KL per example: kl1 (N,), kl2 (N,), from forward's cache."""
        return cache[10].sum(axis=1), cache[11].sum(axis=1)

    def rate(self, cache: tuple) -> np.ndarray:
        """kl1 + kl2 per example (N,)."""
        kl1, kl2 = self.layer_kls(cache)
        return kl1 + kl2

    def charged_kl(self, kl: np.ndarray, cache: tuple) -> tuple[float, tuple | None]:
        """The batch mean of kl, or with free bits the sum over the dimensions of both
        layers of max(free_bits, the dimension's batch-mean KL), and those means."""
        if self.config.free_bits <= 0:
            return float(np.mean(kl)), None
        per_dim = (cache[10].mean(axis=0), cache[11].mean(axis=0))
        charged = sum(np.sum(np.maximum(d, self.config.free_bits)) for d in per_dim)
        return float(charged), per_dim

    # --- backward ------------------------------------------------------------------------------

    def backward(self, dz1: np.ndarray, dkl: np.ndarray, cache: tuple, grads: dict,
                 floors: tuple | None = None) -> np.ndarray:
        """dz1 (N, L1) from the decoder, dkl (N,) -> dh (N, H); gradients into ``grads``.

        Top to bottom:
          kl1 = log q(z1|x) - log N(z1; mu_p(z2), var_p(z2)):  d log_var1 += -1/2 d kl1 (the
            eps form of log q), and d z1, d mu_p, d log_var_p from -log N(...), then through
            p(z1|z2)'s network to d z2;
          kl2 = KL(N(mu2, var2) || N(0, I)):  d mu2 = mu2, d log_var2 = (var2 - 1) / 2 (or,
            one sample, -log N(z2; 0, I) = |z2|^2 / 2 + const gives d z2 = z2, and
            log q(z2|z1) in the eps form d log_var2 = -1/2);
          z2 = mu2 + sigma2 eps2:  d mu2 += d z2, d log_var2 += d z2 sigma2 eps2 / 2, then
            q(z2|z1)'s network to d z1;
          z1 = mu1 + sigma1 eps1: to mu1, log_var1 and the heads.
        With free bits (``floors``: each layer's per-dimension batch-mean KL), a dimension
        below the floor passes no KL gradient (its columns are masked).
        """
        (eps1, eps2, std1, std2, z1, z2, mu2, lv2, mu_p, lv_p, _, _, mu1_cache, lv1_cache,
         enc2_cache, prior_cache, kl_mode) = cache
        keep1 = keep2 = 1.0
        if floors is not None:
            keep1, keep2 = ((f >= self.config.free_bits).astype(self.dtype) for f in floors)
        d_kl1 = dkl[:, None] * keep1 * np.ones_like(z1)  # (N, L1)
        d_kl2 = dkl[:, None] * keep2 * np.ones_like(z2)  # (N, L2)

        # kl1 = log q(z1|x) - log p(z1|z2)
        dlv1 = -0.5 * d_kl1
        # log p(z1|z2)'s derivatives for a unit upstream gradient, then weighted per
        # dimension by -d kl1 (the derivatives of a diagonal density are per dimension)
        n = len(z1)
        dz1_unit, dmu_unit, dlv_unit = dist.gaussian_log_density_backward(
            np.ones(n, dtype=self.dtype), z1, mu_p, lv_p)
        dz1_kl, dmu_p, dlv_p = -d_kl1 * dz1_unit, -d_kl1 * dmu_unit, -d_kl1 * dlv_unit
        dz2 = self.prior1.backward(dmu_p, dlv_p, prior_cache, grads)
        if kl_mode == "analytic":
            dmu2 = d_kl2 * mu2
            dlv2 = d_kl2 * 0.5 * (np.exp(lv2) - 1.0)
        else:  # one sample: log q(z2|z1) (eps form) - log N(z2; 0, I)
            dmu2 = np.zeros_like(mu2)
            dlv2 = -0.5 * d_kl2
            dz2 = dz2 + d_kl2 * z2
        # z2 = mu2 + sigma2 eps2, and q(z2|z1)'s network
        dmu2 = dmu2 + dz2
        dlv2 = dlv2 + 0.5 * dz2 * std2 * eps2
        dz1 = dz1 + dz1_kl + self.enc2.backward(dmu2, dlv2, enc2_cache, grads)
        # z1 = mu1 + sigma1 eps1, and the heads
        dlv1 = dlv1 + 0.5 * dz1 * std1 * eps1
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(dz1, mu1_cache)
        dh_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(dlv1,
                                                                                  lv1_cache)
        return dh_mu + dh_lv

    # --- using the model -----------------------------------------------------------------------

    def sample_prior(self, params: dict, n: int, rng: np.random.Generator,
                     c: np.ndarray | None = None) -> np.ndarray:
        """Ancestral draws: z2 ~ N(0, I), then z1 ~ p(z1|z2): (n, L1)."""
        z2 = rng.standard_normal((n, self.latent_dims[1])).astype(self.dtype)
        mu_p, lv_p, _ = self.prior1.forward(params, z2)
        return mu_p + np.exp(0.5 * lv_p) * rng.standard_normal(mu_p.shape).astype(self.dtype)

    def layer_means(self, params: dict, h: np.ndarray, rng: np.random.Generator,
                    samples: int = 10) -> list[np.ndarray]:
        """Each layer's posterior mean per example: mu1 (N, L1), and E_{q(z1|x)}[mu2(z1)]
        (N, L2) averaged over ``samples`` draws of z1 (for active units per layer)."""
        mu1, lv1 = self.encode(params, h)
        std1 = np.exp(0.5 * lv1)
        mean2 = 0.0
        for _ in range(samples):
            z1 = mu1 + std1 * rng.standard_normal(mu1.shape).astype(self.dtype)
            mean2 = mean2 + self.enc2.forward(params, z1)[0] / samples
        return [mu1, mean2]
