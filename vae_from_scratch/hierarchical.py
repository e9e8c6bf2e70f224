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

Networks (MLPs of ``networks.dense_layers``): the encoder x -> hidden_dims -> (mu1, log_var1)
and the decoder z1 -> reversed(hidden_dims) -> x are those of ``vae.VAE`` (``self.base``,
same names); q(z2|z1): ``enc2`` z1 -> top_hidden -> heads ``enc2.mu``, ``enc2.log_var``;
p(z1|z2): ``prior1`` z2 -> reversed(top_hidden) -> heads ``prior1.mu``, ``prior1.log_var``.

Noise: one array eps (N, L1 + L2), eps1 its first L1 columns; so ``latent_dim`` (the noise
width the training loop and ``evaluate`` draw) is L1 + L2, and ``latent_dims`` is (L1, L2).
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.composed import ComposedVAE
from vae_from_scratch.layers import Linear
from vae_from_scratch.networks import Layer, Network, dense_layers
from vae_from_scratch.vae import VAE, LossTerms, check_beta

#: TwoLevelVAE(seed=s) draws its top layer's parameters from default_rng([s, TOP_STREAM]).
TOP_STREAM = 3


def _log_q(log_var, eps):
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


class TwoLevelVAE(ComposedVAE):
    """The two-stochastic-layer VAE. latent_dims: (L1, L2); top_hidden: the hidden layers of
    q(z2|z1) and (reversed) of p(z1|z2); free_bits: nats per dimension that each layer's KL
    is charged at least (as in ``vae.VAE``), 0 for none. Other arguments as for ``VAE``
    (MLP, standard prior on z2). Follows the duck type of ``train.NumpyBackend`` and
    ``evaluate`` (``latent_dim`` = L1 + L2, the noise width).

    Example::

        model = TwoLevelVAE(784, (400,), (20, 10), top_hidden=(100,))
        terms, grads = model.loss_and_grads(x, eps)    # eps (N, 30)
        recon, kl1, kl2 = model.kl_terms(x, eps)       # per example
    """

    def __init__(self, input_dim=784, hidden_dims=(400,), latent_dims=(20, 10), *,
                 top_hidden=(100,), activation="relu", likelihood="bernoulli", obs_var=None,
                 beta=1.0, free_bits=0.0, seed=0, dtype=np.float32, params=None):
        if (len(latent_dims) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1
                                             for v in latent_dims)):
            raise ValueError(f"latent_dims must be two positive integers (L1, L2), got "
                             f"{latent_dims!r}")
        self.latent_dims = tuple(int(v) for v in latent_dims)
        l1, l2 = self.latent_dims
        self.free_bits = check_beta(free_bits, "free_bits")
        base = VAE(input_dim, hidden_dims, l1, activation=activation, likelihood=likelihood,
                   obs_var=obs_var, beta=beta, seed=seed, dtype=dtype)
        top_hidden = tuple(top_hidden)
        self.enc2 = _GaussianNet("enc2", l1, top_hidden, l2, activation)
        self.prior1 = _GaussianNet("prior1", l2, top_hidden[::-1], l1, activation)

        def init_top(rng, params):
            self.enc2.init_params(rng, params)
            self.prior1.init_params(rng, params)

        self._compose(base, {**self.enc2.param_shapes(), **self.prior1.param_shapes()},
                      init_top, seed, TOP_STREAM, params)

    @property
    def latent_dim(self):
        """The noise width, L1 + L2 (eps1 and eps2 side by side)."""
        return sum(self.latent_dims)

    # --- forward ------------------------------------------------------------------------------

    def _forward(self, x, eps, kl2_mode):
        """Per-dimension terms and the caches. x (N, D), eps (N, L1 + L2)."""
        p = self.params
        l1 = self.latent_dims[0]
        eps1, eps2 = eps[:, :l1], eps[:, l1:]
        h, enc_cache = self.base.encoder.forward(p, x)
        mu1, mu1_cache = Linear.forward(h, p["enc.mu.W"], p["enc.mu.b"])
        lv1, lv1_cache = Linear.forward(h, p["enc.log_var.W"], p["enc.log_var.b"])
        std1 = np.exp(0.5 * lv1)
        z1 = mu1 + std1 * eps1
        mu2, lv2, enc2_cache = self.enc2.forward(p, z1)
        std2 = np.exp(0.5 * lv2)
        z2 = mu2 + std2 * eps2
        mu_p, lv_p, prior_cache = self.prior1.forward(p, z2)
        out, dec_cache = self.base.decoder.forward(p, z1)
        recon = -self.base.likelihood.log_prob(self.params, x, out)
        kl1 = _log_q(lv1, eps1) - dist.gaussian_log_density_per_dim(z1, mu_p, lv_p)
        if kl2_mode == "analytic":
            kl2 = dist.kl_standard_normal_per_dim(mu2, lv2)
        else:
            kl2 = _log_q(lv2, eps2) - dist.gaussian_log_density_per_dim(z2, 0.0, 0.0)
        cache = (x, eps1, eps2, std1, std2, z1, z2, mu2, lv2, mu_p, lv_p, out, enc_cache,
                 mu1_cache, lv1_cache, enc2_cache, prior_cache, dec_cache, kl2_mode)
        return recon, kl1, kl2, cache

    def _checked(self, x, eps, y):
        x = self._check_x(x)
        eps = self._check_eps(eps, len(x))
        self._check_y(y, len(x))
        return x, eps

    def _check_eps(self, eps, n):
        eps = np.asarray(eps)
        if eps.ndim != 2 or eps.shape != (n, self.latent_dim):
            raise ValueError(f"eps must have shape ({n}, {self.latent_dim}) (L1 + L2 = "
                             f"{self.latent_dims[0]} + {self.latent_dims[1]} columns), got "
                             f"{eps.shape}")
        if eps.dtype.kind not in "biuf" or not np.all(np.isfinite(eps)):
            raise ValueError("eps must hold finite real numbers")
        return eps.astype(self.dtype, copy=False)

    def kl_terms(self, x, eps, y=None, *, kl=None):
        """Per example: recon (N,), kl1 (N,), kl2 (N,). kl="monte_carlo" gives the
        one-sample kl2 = log q(z2|z1) - log p(z2) instead of the exact KL given z1."""
        x, eps = self._checked(x, eps, y)
        recon, kl1, kl2, _ = self._forward(x, eps, kl or "analytic")
        return recon, kl1.sum(axis=1), kl2.sum(axis=1)

    def elbo_terms(self, x, eps, y=None, *, kl=None):
        """recon (N,) and kl (N,) = kl1 + kl2; with kl="monte_carlo", recon + kl is minus the
        log importance weight log p(x, z1, z2) - log q(z1, z2 | x)."""
        recon, kl1, kl2 = self.kl_terms(x, eps, y, kl=kl)
        return recon, kl1 + kl2

    def loss(self, x, eps, y=None):
        x, eps = self._checked(x, eps, y)
        recon, kl1, kl2, _ = self._forward(x, eps, "analytic")
        return self._terms(recon, kl1, kl2, self.config.beta)[0]

    def _terms(self, recon, kl1, kl2, beta):
        """LossTerms and the free-bits masks (None without free bits). kl1, kl2 (N, L)."""
        kl = kl1.sum(axis=1) + kl2.sum(axis=1)
        charged, keeps = float(np.mean(kl)), None
        if self.free_bits > 0:  # each dimension of each layer pays at least free_bits nats
            per_dim = [k.mean(axis=0) for k in (kl1, kl2)]
            charged = float(sum(np.sum(np.maximum(d, self.free_bits)) for d in per_dim))
            keeps = [(d >= self.free_bits).astype(self.dtype) for d in per_dim]
        recon_mean = float(np.mean(recon))
        return LossTerms(recon_mean + beta * charged, recon_mean, float(np.mean(kl))), keeps

    # --- backward -----------------------------------------------------------------------------

    def loss_and_grads(self, x, eps, y=None, *, beta=None):
        """(LossTerms, grads): the batch mean of recon + beta (kl1 + kl2), kl2 exact given z1,
        and its gradient for every parameter.

        Upstream: d recon = 1/N, d kl = beta/N per example. Backward, top to bottom:
          kl1 = log q(z1|x) - log N(z1; mu_p(z2), var_p(z2)):  d log_var1 += -1/2 d kl1 (the
            eps form of log q), and d z1, d mu_p, d log_var_p from -log N(...), then through
            p(z1|z2)'s network to d z2;
          kl2 = KL(N(mu2, var2) || N(0, I)):  d mu2 = mu2, d log_var2 = (var2 - 1) / 2;
          z2 = mu2 + sigma2 eps2:  d mu2 += d z2, d log_var2 += d z2 sigma2 eps2 / 2, then
            q(z2|z1)'s network to d z1;
          recon: the decoder to d z1;  z1 = mu1 + sigma1 eps1: to mu1, log_var1, the encoder.
        With free bits, a dimension whose batch-mean KL is below the floor passes no KL
        gradient (its columns are masked, as in the one-level VAE).
        """
        x, eps = self._checked(x, eps, y)
        beta = self.config.beta if beta is None else check_beta(beta)
        recon, kl1, kl2, cache = self._forward(x, eps, "analytic")
        (x, eps1, eps2, std1, std2, z1, z2, mu2, lv2, mu_p, lv_p, out, enc_cache, mu1_cache,
         lv1_cache, enc2_cache, prior_cache, dec_cache, _) = cache
        terms, keeps = self._terms(recon, kl1, kl2, beta)
        n = len(x)
        p, grads = self.params, {}
        d_kl = np.full((n, 1), beta / n, dtype=self.dtype)
        keep1, keep2 = keeps if keeps is not None else (1.0, 1.0)
        d_kl1, d_kl2 = d_kl * keep1, d_kl * keep2  # (N, L1), (N, L2)

        # kl1 = log q(z1|x) - log p(z1|z2)
        dlv1 = -0.5 * d_kl1
        # log p(z1|z2)'s derivatives for a unit upstream gradient, then weighted per
        # dimension by -d kl1 (the derivatives of a diagonal density are per dimension)
        dz1_unit, dmu_unit, dlv_unit = dist.gaussian_log_density_backward(
            np.ones(n, dtype=self.dtype), z1, mu_p, lv_p)
        dz1, dmu_p, dlv_p = -d_kl1 * dz1_unit, -d_kl1 * dmu_unit, -d_kl1 * dlv_unit
        dz2 = self.prior1.backward(dmu_p, dlv_p, prior_cache, grads)
        # kl2, exact given z1
        dmu2 = d_kl2 * mu2
        dlv2 = d_kl2 * 0.5 * (np.exp(lv2) - 1.0)
        # z2 = mu2 + sigma2 eps2, and q(z2|z1)'s network
        dmu2 = dmu2 + dz2
        dlv2 = dlv2 + 0.5 * dz2 * std2 * eps2
        dz1 = dz1 + self.enc2.backward(dmu2, dlv2, enc2_cache, grads)
        # recon and the decoder
        d_out = self.base.likelihood.log_prob_backward(
            np.full(n, -1.0 / n, dtype=self.dtype), p, x, out, grads)
        dz1 = dz1 + self.base.decoder.backward(d_out, dec_cache, grads)
        # z1 = mu1 + sigma1 eps1, the heads and the encoder
        dmu1 = dz1
        dlv1 = dlv1 + 0.5 * dz1 * std1 * eps1
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(dmu1, mu1_cache)
        dh_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(dlv1,
                                                                                  lv1_cache)
        self.base.encoder.backward(dh_mu + dh_lv, enc_cache, grads, need_dx=False)
        return terms, {k: grads[k].astype(self.dtype, copy=False) for k in p}

    # --- using the model -----------------------------------------------------------------------

    def encode(self, x, y=None):
        """x (N, D) -> mu1, log_var1 (N, L1): q(z1|x)."""
        x = self._check_x(x)
        h, _ = self.base.encoder.forward(self.params, x)
        p = self.params
        return (Linear.forward(h, p["enc.mu.W"], p["enc.mu.b"])[0],
                Linear.forward(h, p["enc.log_var.W"], p["enc.log_var.b"])[0])

    def active_units(self, x, threshold=0.01, samples=10, seed=0):
        """Active units of each layer (Burda et al.): dimensions whose posterior mean
        E_q[z_l | x] varies across x by more than ``threshold`` (variance). For z1 the mean
        is mu1(x); for z2 it is E_{q(z1|x)}[mu2(z1)], averaged over ``samples`` draws of z1.
        Returns (active in z1, active in z2)."""
        mu1, lv1 = self.encode(x)
        rng = np.random.default_rng(seed)
        std1 = np.exp(0.5 * lv1)
        mean2 = 0.0
        for _ in range(samples):
            z1 = mu1 + std1 * rng.standard_normal(mu1.shape).astype(self.dtype)
            mean2 = mean2 + self.enc2.forward(self.params, z1)[0] / samples
        return tuple(int(np.sum(np.var(np.asarray(m, dtype=np.float64), axis=0) > threshold))
                     for m in (mu1, mean2))

    def sample(self, n, seed=0):
        """Ancestral samples: z2 ~ N(0, I), z1 ~ p(z1|z2), pixel means of p(x|z1): (n, D)."""
        rng = np.random.default_rng(seed)
        z2 = rng.standard_normal((n, self.latent_dims[1])).astype(self.dtype)
        mu_p, lv_p, _ = self.prior1.forward(self.params, z2)
        z1 = mu_p + np.exp(0.5 * lv_p) * rng.standard_normal(mu_p.shape).astype(self.dtype)
        return self.base.decode_mean(z1)

    def __repr__(self):
        l1, l2 = self.latent_dims
        return (f"TwoLevelVAE({self.base!r}, z1 {l1} <- z2 {l2}, enc2 {self.enc2.net!r}, "
                f"prior1 {self.prior1.net!r}, free_bits={self.free_bits})")
