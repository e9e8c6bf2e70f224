"""A VAE whose posterior is a family from ``posteriors.py``: Gaussian, planar or IAF (lesson 12).

    x --encoder--> h --posterior.local--> local (mu, log_var[, flow parameters or context])
    z_K, log q(z_K|x) = posterior.sample(local, eps)   (z_0 = mu + sigma eps, then K steps)
    z_K --decoder--> logits;  loss = -log p(x|z_K) + beta (log q(z_K|x) - log p(z_K))

The encoder and decoder networks, the likelihood and the input checks are those of a
``vae.VAE`` (``self.base``), so with ``posterior="gaussian"`` the model is the VAE itself,
parameter for parameter. The KL is the one-sample estimate log q(z_K|x) - log p(z_K) for a
flow (no closed form exists); for the Gaussian it is analytic by default, as in the VAE.
The prior is N(0, I).

It follows the duck type that ``train.NumpyBackend``, ``train.fit`` and ``evaluate`` use
(``params``, ``config``, ``latent_dim``, ``dtype``, ``loss_and_grads``, ``elbo_terms``), so
it trains and is evaluated by the package's own loop. (This composition is the first phase:
the second moves the posterior into ``VAE`` itself, as configuration.)
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.composed import ComposedVAE
from vae_from_scratch.posteriors import make_posterior
from vae_from_scratch.vae import VAE, LossTerms, check_beta

#: FlowVAE(seed=s) draws the flow's parameters from default_rng([s, FLOW_STREAM]), after the
#: VAE's own from default_rng(s), so that the two share everything else.
FLOW_STREAM = 2


def _terms(recon, kl, beta):
    """LossTerms from per-example recon and kl, summed as ``vae.VAE`` sums them."""
    recon_mean, kl_mean = float(np.mean(recon)), float(np.mean(kl))
    return LossTerms(recon_mean + beta * kl_mean, recon_mean, kl_mean)


class FlowVAE(ComposedVAE):
    """A VAE with a normalizing-flow posterior (or the plain Gaussian one).

    Arguments as for :class:`~vae_from_scratch.vae.VAE` (input_dim, hidden_dims, latent_dim,
    activation, likelihood, obs_var, beta, seed, dtype; MLP, standard prior), plus
    ``posterior`` ("gaussian", "planar", "iaf"), ``flow_steps`` and the IAF's options
    (``context_dim``, ``hidden_sizes``, ``gate_bias``). ``kl``: the training loss's KL
    estimator, "auto" (analytic for the Gaussian, one sample for a flow) or "monte_carlo"
    (the Gaussian with a flow's estimator, for comparisons). ``params``: a dict to use
    instead of fresh ones (checked against the shapes).

    Example::

        model = FlowVAE(784, (400,), 20, posterior="iaf", flow_steps=8, context_dim=20)
        terms, grads = model.loss_and_grads(x, eps)       # eps (N, 20)
        fit(NumpyBackend(model, x_train), x_test)        # the package's training loop
    """

    def __init__(self, input_dim=784, hidden_dims=(400,), latent_dim=20, *,
                 posterior="gaussian", flow_steps=0, activation="relu", likelihood="bernoulli",
                 obs_var=None, beta=1.0, kl="auto", seed=0, dtype=np.float32, params=None,
                 **posterior_options):
        base = VAE(input_dim, hidden_dims, latent_dim, activation=activation,
                   likelihood=likelihood, obs_var=obs_var, beta=beta, seed=seed, dtype=dtype)
        self.posterior = make_posterior(posterior, base.encoder.out_dim, latent_dim,
                                        flow_steps, **posterior_options)
        if kl not in ("auto", "monte_carlo", "analytic"):
            raise ValueError(f"unknown kl {kl!r}; expected auto, analytic or monte_carlo")
        #: The training loss's KL estimator: "auto" is analytic for the Gaussian posterior
        #: and the one-sample log q - log p for a flow, which has no closed form.
        self.kl = self._kl_mode(None if kl == "auto" else kl)
        self._compose(base, self.posterior.extra_shapes(), self.posterior.init_extra, seed,
                      FLOW_STREAM, params)

    @classmethod
    def from_vae(cls, vae):
        """The same model as the trained ``vae.VAE`` (copied parameters), Gaussian posterior:
        what lesson 12 measures the gaps of."""
        c = vae.config
        if c.architecture != "mlp" or c.prior != "standard" or c.n_classes or c.free_bits:
            raise ValueError("FlowVAE.from_vae takes an unconditional MLP VAE with the "
                             "standard prior and no free bits")
        return cls(c.input_dim, c.hidden_dims, c.latent_dim, activation=c.activation,
                   likelihood=c.likelihood, obs_var=c.obs_var, beta=c.beta, kl=c.kl_mode,
                   dtype=vae.dtype, params={k: v.copy() for k, v in vae.params.items()})

    @property
    def latent_dim(self):
        return self.config.latent_dim

    def _check_eps(self, eps, n):
        return self.base.check_latent(eps, n, "eps")

    def _kl_mode(self, kl):
        mode = kl or getattr(self, "kl", None) or (
            "analytic" if self.posterior.kind == "gaussian" else "monte_carlo")
        if mode not in ("analytic", "monte_carlo"):
            raise ValueError(f"unknown kl {kl!r}; expected analytic or monte_carlo")
        if mode == "analytic" and self.posterior.kind != "gaussian":
            raise ValueError("a flow posterior has no analytic KL; use kl='monte_carlo'")
        return mode

    # --- forward and backward, from the local parameters ----------------------------------

    def encode_local(self, x):
        """x (N, D) -> the per-example variational parameters (dict of (N, ...) arrays)."""
        x = self._check_x(x)
        h, _ = self.base.encoder.forward(self.params, x)
        return self.posterior.local(self.params, h)[0]

    def encode(self, x, y=None):
        """x (N, D) -> mu, log_var (N, L) of the flow's base Gaussian q_0(z_0|x)."""
        local = self.encode_local(x)
        return local["mu"], local["log_var"]

    def _from_local(self, x, local, eps, kl_mode):
        """recon (N,), kl (N,) and the caches, from the local parameters."""
        z, log_q, s_cache = self.posterior.sample(self.params, local, eps)
        out, dec_cache = self.base.decoder.forward(self.params, z)
        recon = -self.base.likelihood.log_prob(self.params, x, out)
        if kl_mode == "analytic":
            kl = dist.kl_standard_normal(local["mu"], local["log_var"])
        else:
            kl = log_q - dist.gaussian_log_density(z, 0.0, 0.0)
        return recon, kl, (x, local, z, out, s_cache, dec_cache, kl_mode)

    def _from_local_backward(self, d_recon, d_kl, cache, grads):
        """d_recon, d_kl (N,) -> dlocal; decoder and flow gradients go into ``grads``."""
        x, local, z, out, s_cache, dec_cache, kl_mode = cache
        d_out = self.base.likelihood.log_prob_backward(-d_recon, self.params, x, out, grads)
        dz = self.base.decoder.backward(d_out, dec_cache, grads)
        if kl_mode == "analytic":
            dlocal = self.posterior.sample_backward(dz, np.zeros_like(d_kl), s_cache, grads)
            dmu, dlog_var = dist.kl_standard_normal_backward(d_kl, local["mu"],
                                                             local["log_var"])
            dlocal["mu"] = dlocal["mu"] + dmu
            dlocal["log_var"] = dlocal["log_var"] + dlog_var
            return dlocal
        dz = dz + d_kl[:, None] * z  # -log N(z; 0, I) = |z|^2 / 2 + const
        return self.posterior.sample_backward(dz, d_kl, s_cache, grads)

    def local_elbo(self, x, local, eps, kl=None):
        """The one-sample ELBO of each example, -(recon + kl), (N,), for given local
        parameters (any, not only the encoder's) and noise eps (N, L)."""
        recon, kl_values, _ = self._from_local(x, local, eps, self._kl_mode(kl))
        return -(recon + kl_values)

    def local_elbo_and_grads(self, x, local, eps, kl=None):
        """(elbo (N,), dlocal): dlocal[k] = d elbo_n / d local[k][n] for every example n,
        the gradient that the per-example optimisation of ``gaps.py`` climbs. The decoder's
        and the flow's parameters are held fixed (their gradients are not returned)."""
        recon, kl_values, cache = self._from_local(x, local, eps, self._kl_mode(kl))
        minus = -np.ones_like(recon)
        return -(recon + kl_values), self._from_local_backward(minus, minus, cache, {})

    # --- the VAE's interface ----------------------------------------------------------------

    def _forward(self, x, eps, kl_mode):
        h, enc_cache = self.base.encoder.forward(self.params, x)
        local, local_cache = self.posterior.local(self.params, h)
        recon, kl, cache = self._from_local(x, local, eps, kl_mode)
        return recon, kl, (enc_cache, local_cache, cache)

    def elbo_terms(self, x, eps, y=None, *, kl=None):
        """Per-example recon (N,) = -log p(x|z_K) and kl (N,); kl="monte_carlo" gives
        log q(z_K|x) - log p(z_K) at the sample (what importance weights need)."""
        x = self._check_x(x)
        eps = self._check_eps(eps, len(x))
        self._check_y(y, len(x))
        recon, kl_values, _ = self._forward(x, eps, self._kl_mode(kl))
        return recon, kl_values

    def loss(self, x, eps, y=None):
        """LossTerms of the batch: means of recon and kl, loss = recon + beta kl."""
        recon, kl = self.elbo_terms(x, eps, y)
        return _terms(recon, kl, self.config.beta)

    def loss_and_grads(self, x, eps, y=None, *, beta=None):
        """(LossTerms, grads): the batch mean of recon + beta kl and its gradient for every
        parameter (same keys and shapes as ``params``)."""
        x = self._check_x(x)
        eps = self._check_eps(eps, len(x))
        self._check_y(y, len(x))
        beta = self.config.beta if beta is None else check_beta(beta)
        recon, kl, (enc_cache, local_cache, cache) = self._forward(x, eps, self._kl_mode(None))
        n = len(x)
        grads = {}
        d_recon = np.full(n, 1.0 / n, dtype=self.dtype)
        dlocal = self._from_local_backward(d_recon, d_recon * beta, cache, grads)
        dh = self.posterior.local_backward(dlocal, local_cache, grads)
        self.base.encoder.backward(dh, enc_cache, grads, need_dx=False)
        grads = {k: grads[k].astype(self.dtype, copy=False) for k in self.params}
        return _terms(recon, kl, beta), grads

    def sample(self, n, seed=0):
        """Decode n draws from the prior: pixel means (n, D)."""
        rng = np.random.default_rng(seed)
        return self.base.decode_mean(rng.standard_normal((n, self.latent_dim)).astype(self.dtype))

    def __repr__(self):
        return f"FlowVAE({self.base!r}, {self.posterior!r})"
