"""The MLP VAE in NumPy: forward, loss and every gradient, written out by hand.

    x --encoder MLP--> h --Linear--> mu, log_var
    z = mu + exp(log_var / 2) * eps                      (reparameterization, lesson 04)
    z --decoder MLP--> logits (Bernoulli) or mean (Gaussian)

Loss, per example: sum over pixels of -log p(x|z) plus beta * KL(q(z|x) || p(z)) summed
over latent dimensions; the figure reported is the mean over the batch, in nats per
example (lesson 03 derives it, lesson 05 trains it).

Parameters, all in ``vae.params`` (the model's only state), with ``W`` of shape (D_in, D_out):
``enc.{i}.W/b`` hidden layers of the encoder, ``enc.mu.W/b`` and ``enc.log_var.W/b`` its
heads, ``dec.{i}.W/b`` hidden layers of the decoder, ``dec.out.W/b`` its output layer,
``dec.log_var`` (D,) for a Gaussian decoder with learned per-pixel variance, and
``prior.means`` (K, L), ``prior.log_vars`` (K, L), ``prior.logits`` (K,) for the mixture prior.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.layers import Linear, mlp_backward, mlp_forward, sigmoid

ACTIVATIONS = ("relu", "tanh")
LIKELIHOODS = ("bernoulli", "gaussian")
KL_MODES = ("auto", "analytic", "monte_carlo")
PRIORS = ("standard", "mixture")
DTYPES = {"float32": np.float32, "float64": np.float64}


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _choose(name, value, options):
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
    return value


@dataclass(frozen=True)
class VAEConfig:
    """Everything that fixes the model's architecture and loss; saved with checkpoints.

    ``obs_var`` is the Gaussian decoder's variance: a positive number (fixed) or
    ``"learned"`` (one log-variance per pixel, ``params["dec.log_var"]``).
    ``kl="auto"`` means analytic for the standard prior, Monte Carlo for the mixture.
    """

    input_dim: int = 784
    hidden_dims: tuple = (400,)
    latent_dim: int = 20
    activation: str = "relu"
    likelihood: str = "bernoulli"
    obs_var: float | str = 1.0
    beta: float = 1.0
    kl: str = "auto"
    prior: str = "standard"
    n_components: int = 10
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("input_dim", "latent_dim", "n_components"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        dims = tuple(self.hidden_dims)
        for h in dims:
            if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
                raise ValueError(f"hidden_dims must be positive integers, got {self.hidden_dims!r}")
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in dims))
        _choose("activation", self.activation, ACTIVATIONS)
        _choose("likelihood", self.likelihood, LIKELIHOODS)
        _choose("kl", self.kl, KL_MODES)
        _choose("prior", self.prior, PRIORS)
        _choose("dtype", self.dtype, tuple(DTYPES))
        if self.obs_var != "learned":
            if not _is_number(self.obs_var) or not (
                self.obs_var > 0 and math.isfinite(self.obs_var)
            ):
                raise ValueError(
                    f"obs_var must be a positive number or 'learned', got {self.obs_var!r}"
                )
        if not (_is_number(self.beta) and math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if self.kl == "analytic" and self.prior == "mixture":
            raise ValueError(
                "the KL to a mixture-of-Gaussians prior has no closed form; "
                "use kl='monte_carlo' (or 'auto')"
            )

    @property
    def kl_mode(self):
        """The KL estimator actually used: 'analytic' or 'monte_carlo'."""
        if self.kl == "auto":
            return "analytic" if self.prior == "standard" else "monte_carlo"
        return self.kl

    def to_dict(self):
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["hidden_dims"] = tuple(d.get("hidden_dims", ()))
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class LossTerms:
    """Batch means, in nats per example: ``loss = recon + beta * kl``."""

    loss: float
    recon: float
    kl: float


def init_params(config, rng):
    """Fresh parameters for ``config``: dict name -> array in the model's dtype.

    Linear layers use nn.Linear's default in PyTorch, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for W and b, so the NumPy and PyTorch models start from the same distribution.
    Numbers are drawn in float64 and then cast, so float32 and float64 models with the
    same seed hold the same values up to rounding.
    """
    dtype = DTYPES[config.dtype]
    params = {}

    def linear(name, d_in, d_out):
        bound = 1.0 / math.sqrt(d_in)
        params[f"{name}.W"] = rng.uniform(-bound, bound, size=(d_in, d_out))
        params[f"{name}.b"] = rng.uniform(-bound, bound, size=(d_out,))

    enc_dims = (config.input_dim, *config.hidden_dims)
    for i in range(len(config.hidden_dims)):
        linear(f"enc.{i}", enc_dims[i], enc_dims[i + 1])
    linear("enc.mu", enc_dims[-1], config.latent_dim)
    linear("enc.log_var", enc_dims[-1], config.latent_dim)
    dec_dims = (config.latent_dim, *reversed(config.hidden_dims))
    for i in range(len(config.hidden_dims)):
        linear(f"dec.{i}", dec_dims[i], dec_dims[i + 1])
    linear("dec.out", dec_dims[-1], config.input_dim)
    if config.likelihood == "gaussian" and config.obs_var == "learned":
        params["dec.log_var"] = np.zeros(config.input_dim)
    if config.prior == "mixture":
        k, l = config.n_components, config.latent_dim
        params["prior.means"] = rng.normal(0.0, 1.0, size=(k, l))
        params["prior.log_vars"] = np.zeros((k, l))
        params["prior.logits"] = np.zeros(k)
    return {name: value.astype(dtype) for name, value in params.items()}


class VAE:
    """A variational autoencoder with MLP encoder and decoder, gradients by hand.

    Example::

        vae = VAE(input_dim=784, hidden_dims=(400,), latent_dim=20, seed=0)
        eps = np.random.default_rng(1).standard_normal((len(x), 20)).astype(np.float32)
        loss, grads = vae.loss_and_grads(x, eps)   # grads: same keys/shapes as vae.params
    """

    def __init__(
        self,
        input_dim=784,
        hidden_dims=(400,),
        latent_dim=20,
        *,
        activation="relu",
        likelihood="bernoulli",
        obs_var=1.0,
        beta=1.0,
        kl="auto",
        prior="standard",
        n_components=10,
        seed=0,
        dtype=np.float32,
        config=None,
        params=None,
    ):
        if config is None:
            config = VAEConfig(
                input_dim=input_dim,
                hidden_dims=tuple(hidden_dims),
                latent_dim=latent_dim,
                activation=activation,
                likelihood=likelihood,
                obs_var=obs_var,
                beta=beta,
                kl=kl,
                prior=prior,
                n_components=n_components,
                dtype=_dtype_name(dtype),
            )
        self.config = config
        self.dtype = DTYPES[config.dtype]
        if params is None:
            params = init_params(config, np.random.default_rng(seed))
        else:
            params = check_params(params, config)
        self.params = params

    # --- shapes and validation -------------------------------------------------------------

    @property
    def latent_dim(self):
        return self.config.latent_dim

    def param_shapes(self):
        """dict name -> shape that this configuration requires."""
        return param_shapes(self.config)

    def _check_x(self, x, name="x"):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"{name} must have shape (N, {self.config.input_dim}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty: expected at least one row")
        x = x.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.config.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"a Bernoulli decoder needs pixel values in [0, 1]; {name} ranges over "
                f"[{x.min():.4g}, {x.max():.4g}] (scale images by 1/255, or use "
                "likelihood='gaussian')"
            )
        return x

    def _check_latent(self, a, n, name):
        a = np.asarray(a)
        expected = (n, self.latent_dim) if n is not None else (a.shape[0], self.latent_dim)
        if a.ndim != 2 or a.shape != expected:
            raise ValueError(f"{name} must have shape {expected}, got {a.shape}")
        a = a.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return a

    # --- the forward pass ------------------------------------------------------------------

    def encode(self, x):
        """x (N, D) -> mu (N, L), log_var (N, L): the parameters of q(z|x)."""
        x = self._check_x(x)
        mu, log_var, _ = self._encode(x)
        return mu, log_var

    def _encode(self, x):
        p, n_hidden = self.params, len(self.config.hidden_dims)
        h, mlp_caches = mlp_forward(p, "enc", n_hidden, x, self.config.activation)
        mu, mu_cache = Linear.forward(h, p["enc.mu.W"], p["enc.mu.b"])
        log_var, lv_cache = Linear.forward(h, p["enc.log_var.W"], p["enc.log_var.b"])
        return mu, log_var, (mlp_caches, mu_cache, lv_cache)

    def decode(self, z):
        """z (N, L) -> Bernoulli logits (N, D), or the Gaussian mean (N, D)."""
        z = self._check_latent(z, None, "z")
        return self._decode(z)[0]

    def _decode(self, z):
        p, n_hidden = self.params, len(self.config.hidden_dims)
        h, mlp_caches = mlp_forward(p, "dec", n_hidden, z, self.config.activation)
        out, out_cache = Linear.forward(h, p["dec.out.W"], p["dec.out.b"])
        return out, (mlp_caches, out_cache)

    def _obs_log_var(self):
        if self.config.obs_var == "learned":
            return self.params["dec.log_var"]
        return self.dtype(math.log(self.config.obs_var))

    def _log_prior(self, z):
        if self.config.prior == "mixture":
            p = self.params
            return dist.mixture_log_density(
                z, p["prior.means"], p["prior.log_vars"], p["prior.logits"]
            )
        return dist.gaussian_log_density(z, 0.0, 0.0)

    def _forward(self, x, eps, kl_mode):
        """Per-example terms and the caches backward needs. x (N, D), eps (N, L)."""
        mu, log_var, enc_cache = self._encode(x)
        z, rep_cache = dist.reparameterize(mu, log_var, eps)
        out, dec_cache = self._decode(z)
        if self.config.likelihood == "bernoulli":
            recon = -dist.bernoulli_log_likelihood(x, out)
        else:
            recon = -dist.gaussian_log_density(x, out, self._obs_log_var())
        if kl_mode == "analytic":
            kl = dist.kl_standard_normal(mu, log_var)
        else:  # one-sample estimate log q(z|x) - log p(z) at the reparameterized z
            kl = dist.gaussian_log_density(z, mu, log_var) - self._log_prior(z)
        caches = (x, mu, log_var, z, out, enc_cache, rep_cache, dec_cache)
        return recon, kl, caches

    def elbo_terms(self, x, eps, kl=None):
        """Per-example ``recon`` (N,) = -log p(x|z) and ``kl`` (N,); kl=None uses the
        model's estimator, 'monte_carlo' gives log q(z|x) - log p(z) at the sampled z."""
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        kl_mode = self.config.kl_mode if kl is None else _choose("kl", kl, KL_MODES[1:])
        if kl_mode == "analytic" and self.config.prior == "mixture":
            raise ValueError("the mixture prior has no analytic KL; use kl='monte_carlo'")
        recon, kl_values, _ = self._forward(x, eps, kl_mode)
        return recon, kl_values

    def loss(self, x, eps):
        """Loss terms for a batch: means over examples of recon, KL and recon + beta * KL.

        x (N, D) data, eps (N, L) reparameterization noise (drawn from N(0, I) by the caller).
        """
        recon, kl = self.elbo_terms(x, eps)
        return self._terms(recon, kl)

    def _terms(self, recon, kl, beta=None):
        beta = self.config.beta if beta is None else beta
        recon_mean, kl_mean = float(np.mean(recon)), float(np.mean(kl))
        return LossTerms(recon_mean + beta * kl_mean, recon_mean, kl_mean)

    # --- the backward pass -------------------------------------------------------------------

    def loss_and_grads(self, x, eps, beta=None):
        """(LossTerms, grads) with grads[name] = dLoss/dparams[name], same shapes.

        The loss is the batch mean of recon_n + beta * kl_n, so each example's terms get
        upstream gradient 1/N (recon) and beta/N (kl). ``beta`` overrides the configured
        weight for this call (KL warm-up).
        """
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        cfg, p = self.config, self.params
        recon, kl, caches = self._forward(x, eps, cfg.kl_mode)
        x, mu, log_var, z, out, enc_cache, rep_cache, dec_cache = caches
        n = x.shape[0]
        d_recon = np.full(n, 1.0 / n, dtype=self.dtype)
        beta = cfg.beta if beta is None else float(beta)
        d_kl = np.full(n, beta / n, dtype=self.dtype)
        grads = {}

        # reconstruction: recon = -log p(x|z), so its gradient flips the sign
        if cfg.likelihood == "bernoulli":
            d_out = dist.bernoulli_log_likelihood_backward(-d_recon, x, out)
        else:
            _, d_out, d_obs = dist.gaussian_log_density_backward(
                -d_recon, x, out, self._obs_log_var()
            )
            if cfg.obs_var == "learned":
                grads["dec.log_var"] = d_obs.sum(axis=0)

        # decoder
        mlp_caches, out_cache = dec_cache
        dh, grads["dec.out.W"], grads["dec.out.b"] = Linear.backward(d_out, out_cache)
        dz = mlp_backward(dh, mlp_caches, "dec", cfg.activation, grads)

        # KL
        if cfg.kl_mode == "analytic":
            dmu, dlog_var = dist.kl_standard_normal_backward(d_kl, mu, log_var)
        else:  # kl = log q(z|x) - log p(z): z depends on (mu, log_var) through eps too
            dz_q, dmu, dlog_var = dist.gaussian_log_density_backward(d_kl, z, mu, log_var)
            dz = dz + dz_q
            if cfg.prior == "mixture":
                dz_p, grads["prior.means"], grads["prior.log_vars"], grads["prior.logits"] = (
                    dist.mixture_log_density_backward(
                        -d_kl, z, p["prior.means"], p["prior.log_vars"], p["prior.logits"]
                    )
                )
            else:  # log N(z; 0, I) has d/dz = -z
                dz_p = d_kl[:, None] * z
            dz = dz + dz_p

        # reparameterization and encoder
        dmu_z, dlog_var_z = dist.reparameterize_backward(dz, rep_cache)
        dmu, dlog_var = dmu + dmu_z, dlog_var + dlog_var_z
        mlp_caches, mu_cache, lv_cache = enc_cache
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(dmu, mu_cache)
        dh_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(dlog_var, lv_cache)
        mlp_backward(dh_mu + dh_lv, mlp_caches, "enc", cfg.activation, grads, need_dx=False)

        grads = {name: grads[name].astype(self.dtype, copy=False) for name in p}
        return self._terms(recon, kl, beta), grads

    # --- using a trained model ----------------------------------------------------------------

    def _mean_from_out(self, out):
        return sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def decode_mean(self, z):
        """z (N, L) -> the decoder's pixel means (N, D): sigmoid(logits) for Bernoulli."""
        return self._mean_from_out(self.decode(z))

    def sample_prior(self, n, rng):
        """n latent vectors drawn from p(z): (n, L)."""
        if self.config.prior == "mixture":
            p = self.params
            pi = np.exp(p["prior.logits"] - dist.logsumexp(p["prior.logits"], axis=0))
            k = rng.choice(len(pi), size=n, p=pi / pi.sum())
            std = np.exp(0.5 * p["prior.log_vars"][k])
            z = p["prior.means"][k] + std * rng.standard_normal((n, self.latent_dim))
        else:
            z = rng.standard_normal((n, self.latent_dim))
        return z.astype(self.dtype)

    def sample(self, n, seed=0):
        """Decode n draws from the prior; returns pixel means (n, D) (probabilities for
        a Bernoulli decoder)."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self._mean_from_out(self._decode(self.sample_prior(int(n), rng))[0])

    def reconstruct(self, x):
        """Decode the posterior mean: x (N, D) -> pixel means (N, D)."""
        mu, _ = self.encode(x)
        return self._mean_from_out(self._decode(mu)[0])

    def __repr__(self):
        c = self.config
        dims = " -> ".join(str(d) for d in (c.input_dim, *c.hidden_dims, c.latent_dim))
        return (
            f"VAE({dims}, {c.activation}, {c.likelihood}, kl={c.kl_mode}, "
            f"prior={c.prior}, beta={c.beta}, {c.dtype})"
        )


def _dtype_name(dtype):
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return name


def param_shapes(config):
    """dict name -> shape for ``config`` (built without drawing any random numbers)."""

    class _Shapes:
        def uniform(self, low, high, size):
            return np.zeros(size)

        normal = uniform

    return {k: v.shape for k, v in init_params(config, _Shapes()).items()}


def check_params(params, config):
    """Validate a params dict against ``config``: the same names, shapes and finite values.

    Returns a new dict of arrays in the configuration's dtype.
    """
    expected = param_shapes(config)
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"parameters do not match the configuration: missing {missing}, unexpected {extra}"
        )
    out = {}
    for name, shape in expected.items():
        value = np.asarray(params[name])
        if value.shape != shape:
            raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"parameter {name!r} contains NaN or infinite values")
        out[name] = np.array(value, dtype=DTYPES[config.dtype])
    return out
