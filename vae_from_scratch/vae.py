"""The VAE in NumPy: forward, loss and every gradient, written out by hand.

    x --encoder--> h --Linear heads--> mu, log_var
    z = mu + exp(log_var / 2) * eps                      (reparameterization, lesson 04)
    z --decoder--> logits (Bernoulli, continuous Bernoulli) or mean (Gaussian)

Loss, per example: sum over pixels of -log p(x|z) plus beta * KL(q(z|x) || p(z)) summed
over latent dimensions; the figure reported is the mean over the batch, in nats per
example (lesson 03 derives it, lesson 05 trains it).

The encoder and decoder are networks (``networks.py``): an MLP (lessons 04-07) or a
convolutional pair (lesson 08), chosen by ``architecture``; a conditional VAE (lesson 09)
feeds a one-hot label to both. Everything else -- likelihoods, KL, priors, free bits,
sampling -- is here, once, whatever the networks.

Parameters, all in ``vae.params`` (the model's only state): the networks' layers
``enc.{i}.W/b`` and ``dec.{i}.W/b`` (Linear W is (D_in, D_out); convolution weights are
4-D, as in PyTorch), the encoder's heads ``enc.mu.W/b`` and ``enc.log_var.W/b``, the
decoder's output layer ``dec.out.W/b``, ``dec.log_var`` (D,) for a Gaussian decoder with
learned per-pixel variance, and ``prior.means`` (K, L), ``prior.log_vars`` (K, L),
``prior.logits`` (K,) for the mixture prior.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.layers import Linear, sigmoid
from vae_from_scratch.networks import Layer, build_networks, conv_sizes

ACTIVATIONS = ("relu", "tanh")
LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")
KL_MODES = ("auto", "analytic", "monte_carlo")
PRIORS = ("standard", "mixture")
ARCHITECTURES = ("mlp", "conv")
DTYPES = {"float32": np.float32, "float64": np.float64}

#: Defaults of the networks' sizes, per architecture.
DEFAULT_HIDDEN_DIMS = (400,)
DEFAULT_CHANNELS = (32, 64)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _choose(name, value, options):
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
    return value


def _int_tuple(name, value, example, allow_empty=True):
    """``value`` as a tuple of positive ints, or ValueError naming ``name``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a sequence of positive integers such as {example}, "
                         f"got {value!r}")
    items = tuple(value)
    if not all(_is_int(v) and v >= 1 for v in items) or (not items and not allow_empty):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}sequence of "
                         f"positive integers such as {example}, got {value!r}")
    return tuple(int(v) for v in items)


def check_beta(beta, name="beta"):
    """A KL weight is a finite number >= 0 (not a bool); returns it as a float."""
    if not (_is_number(beta) and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {beta!r}")
    return float(beta)


@dataclass(frozen=True)
class VAEConfig:
    """Everything that fixes the model's architecture and loss; saved with checkpoints.

    ``architecture``: ``"mlp"`` (``hidden_dims``, default (400,)) or ``"conv"``
    (``image_shape`` (C, H, W), default (1, s, s) for D = s^2, and ``channels``, default
    (32, 64): one 4x4 stride-2 convolution per entry). ``n_classes``: labels 0..K-1 that
    a conditional VAE takes (None: unconditional). ``obs_var`` is the Gaussian decoder's
    variance: a positive number (fixed) or ``"learned"`` (one log-variance per pixel,
    ``params["dec.log_var"]``); other likelihoods have none (None). ``kl="auto"`` means
    analytic for the standard prior, Monte Carlo for the mixture. ``free_bits`` (nats per
    latent dimension, standard prior only): the training loss charges each dimension at
    least this much KL, so dimensions below it get no push towards the prior.
    """

    input_dim: int = 784
    hidden_dims: tuple | None = None
    latent_dim: int = 20
    activation: str = "relu"
    likelihood: str = "bernoulli"
    obs_var: float | str | None = None
    beta: float = 1.0
    kl: str = "auto"
    prior: str = "standard"
    n_components: int = 10
    dtype: str = "float32"
    architecture: str = "mlp"
    image_shape: tuple | None = None
    channels: tuple | None = None
    n_classes: int | None = None
    free_bits: float = 0.0

    def __post_init__(self):
        for name in ("input_dim", "latent_dim", "n_components"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _choose("architecture", self.architecture, ARCHITECTURES)
        _choose("activation", self.activation, ACTIVATIONS)
        _choose("likelihood", self.likelihood, LIKELIHOODS)
        _choose("kl", self.kl, KL_MODES)
        _choose("prior", self.prior, PRIORS)
        _choose("dtype", self.dtype, tuple(DTYPES))
        self._resolve_networks()
        if self.n_classes is not None and (not _is_int(self.n_classes) or self.n_classes < 2):
            raise ValueError(
                f"n_classes must be an integer >= 2, or None for an unconditional VAE; "
                f"got {self.n_classes!r}"
            )
        self._resolve_obs_var()
        check_beta(self.beta)
        check_beta(self.free_bits, "free_bits")
        if self.kl == "analytic" and self.prior == "mixture":
            raise ValueError(
                "the KL to a mixture-of-Gaussians prior has no closed form; "
                "use kl='monte_carlo' (or 'auto')"
            )
        if self.free_bits > 0 and self.prior == "mixture":
            raise ValueError(
                "free bits need a KL that splits over latent dimensions, which the mixture "
                "prior's does not; use prior='standard' or free_bits=0"
            )

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def _resolve_networks(self):
        """Fill in the architecture's size defaults; refuse sizes of the other one."""
        mlp = self.architecture == "mlp"
        hidden = DEFAULT_HIDDEN_DIMS if (mlp and self.hidden_dims is None) else self.hidden_dims
        self._set("hidden_dims", _int_tuple("hidden_dims", hidden or (), "(400,) or (512, 256)"))
        if mlp:
            for name in ("image_shape", "channels"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} belongs to architecture='conv'; the mlp "
                                     f"architecture takes hidden_dims")
            return
        if self.hidden_dims:
            raise ValueError("hidden_dims belongs to architecture='mlp'; the conv "
                             "architecture's sizes are image_shape and channels")
        channels = DEFAULT_CHANNELS if self.channels is None else self.channels
        self._set("channels", _int_tuple("channels", channels, "(32, 64)", allow_empty=False))
        shape = self.image_shape
        if shape is None:
            side = math.isqrt(self.input_dim)
            if side * side != self.input_dim:
                raise ValueError(f"input_dim {self.input_dim} is not a square image: give "
                                 "image_shape=(channels, height, width)")
            shape = (1, side, side)
        shape = _int_tuple("image_shape", shape, "(1, 28, 28)", allow_empty=False)
        if len(shape) != 3 or math.prod(shape) != self.input_dim:
            raise ValueError(
                f"image_shape must be (channels, height, width) with channels * height * "
                f"width = input_dim = {self.input_dim}; got {shape}"
            )
        self._set("image_shape", shape)
        conv_sizes(shape, len(self.channels))  # raises when the image gets too small

    def _resolve_obs_var(self):
        if self.likelihood != "gaussian":
            # 1.0 was the stored default of every likelihood before obs_var became optional
            if self.obs_var not in (None, 1.0):
                raise ValueError(
                    f"obs_var applies to likelihood='gaussian' only; got obs_var="
                    f"{self.obs_var!r} with likelihood={self.likelihood!r}"
                )
            self._set("obs_var", None)
        elif self.obs_var is None:
            self._set("obs_var", 1.0)
        elif self.obs_var != "learned" and not (
            _is_number(self.obs_var) and self.obs_var > 0 and math.isfinite(self.obs_var)
        ):
            raise ValueError(
                f"obs_var must be a positive number or 'learned', got {self.obs_var!r}"
            )

    @property
    def kl_mode(self):
        """The KL estimator actually used: 'analytic' or 'monte_carlo'."""
        if self.kl == "auto":
            return "analytic" if self.prior == "standard" else "monte_carlo"
        return self.kl

    def to_dict(self):
        d = asdict(self)
        for name in ("hidden_dims", "image_shape", "channels"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        for name in ("hidden_dims", "image_shape", "channels"):
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        return cls(**d)


@dataclass(frozen=True)
class LossTerms:
    """Batch means, in nats per example: ``loss = recon + beta * kl`` (with free bits, the
    KL part of ``loss`` is the clamped one, while ``kl`` is the true KL)."""

    loss: float
    recon: float
    kl: float


def _heads(config, h_dim):
    """The encoder's two heads, Linear maps of h to mu and to log_var."""
    shape = (h_dim, config.latent_dim)
    return [Layer("linear", f"enc.{name}", shape) for name in ("mu", "log_var")]


def _extra_shapes(config):
    """Parameters that are not network weights: name -> (shape, how to initialise)."""
    extras = {}
    if config.likelihood == "gaussian" and config.obs_var == "learned":
        extras["dec.log_var"] = ((config.input_dim,), "zeros")
    if config.prior == "mixture":
        k, l = config.n_components, config.latent_dim
        extras["prior.means"] = ((k, l), "normal")
        extras["prior.log_vars"] = ((k, l), "zeros")
        extras["prior.logits"] = ((k,), "zeros")
    return extras


def init_params(config, rng):
    """Fresh parameters for ``config``: dict name -> array in the model's dtype.

    Layers use PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b
    (``networks.Layer.init_params``), so the NumPy and PyTorch models start from the same
    distribution. The mixture prior's means are drawn from N(0, 1), its log-variances and
    logits start at 0, a learned ``dec.log_var`` at 0. Numbers are drawn in float64 and then
    cast, so float32 and float64 models with the same seed hold the same values up to rounding.
    """
    encoder, decoder = build_networks(config)
    params = {}
    encoder.init_params(rng, params)
    for head in _heads(config, encoder.out_dim):
        head.init_params(rng, params)
    decoder.init_params(rng, params)
    for name, (shape, how) in _extra_shapes(config).items():
        params[name] = rng.normal(0.0, 1.0, size=shape) if how == "normal" else np.zeros(shape)
    dtype = DTYPES[config.dtype]
    return {name: value.astype(dtype) for name, value in params.items()}


def param_shapes(config):
    """dict name -> shape for ``config``, in initialisation order; allocates no arrays, so
    it is safe for a configuration read from an untrusted file."""
    encoder, decoder = build_networks(config)
    shapes = encoder.param_shapes()
    for head in _heads(config, encoder.out_dim):
        shapes.update(head.param_shapes())
    shapes.update(decoder.param_shapes())
    shapes.update({name: shape for name, (shape, _) in _extra_shapes(config).items()})
    return shapes


def one_hot(y, n_classes, dtype):
    """Integer labels y (N,) -> (N, n_classes) rows of 0s with a 1 at each label."""
    out = np.zeros((len(y), n_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


class VAE:
    """A variational autoencoder with gradients by hand; its networks are configuration.

    Example::

        vae = VAE(input_dim=784, hidden_dims=(400,), latent_dim=20, seed=0)
        eps = np.random.default_rng(1).standard_normal((len(x), 20)).astype(np.float32)
        loss, grads = vae.loss_and_grads(x, eps)   # grads: same keys/shapes as vae.params

        conv = VAE(784, latent_dim=20, architecture="conv", channels=(32, 64))
        cvae = VAE(784, (400,), 20, n_classes=10)  # y: integer labels, last argument
        loss, grads = cvae.loss_and_grads(x, eps, y)
    """

    def __init__(
        self,
        input_dim=784,
        hidden_dims=None,
        latent_dim=20,
        *,
        activation="relu",
        likelihood="bernoulli",
        obs_var=None,
        beta=1.0,
        kl="auto",
        prior="standard",
        n_components=10,
        architecture="mlp",
        image_shape=None,
        channels=None,
        n_classes=None,
        free_bits=0.0,
        seed=0,
        dtype=np.float32,
        config=None,
        params=None,
    ):
        if config is None:
            config = VAEConfig(
                input_dim=input_dim,
                hidden_dims=hidden_dims,
                latent_dim=latent_dim,
                activation=activation,
                likelihood=likelihood,
                obs_var=obs_var,
                beta=beta,
                kl=kl,
                prior=prior,
                n_components=n_components,
                dtype=_dtype_name(dtype),
                architecture=architecture,
                image_shape=image_shape,
                channels=channels,
                n_classes=n_classes,
                free_bits=free_bits,
            )
        self.config = config
        self.dtype = DTYPES[config.dtype]
        self.encoder, self.decoder = build_networks(config)
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
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got an array of dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"{name} must have shape (N, {self.config.input_dim}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty: expected at least one row")
        x = x.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.config.likelihood != "gaussian" and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"a {self.config.likelihood.replace('_', ' ')} decoder needs pixel values in "
                f"[0, 1]; {name} ranges over [{x.min():.4g}, {x.max():.4g}] (scale images by "
                "1/255, or use likelihood='gaussian')"
            )
        return x

    def _check_latent(self, a, n, name):
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got an array of dtype {a.dtype}")
        if n is None:
            n = a.shape[0] if a.ndim == 2 else "N"
        expected = (n, self.latent_dim)
        if a.ndim != 2 or a.shape != expected:
            raise ValueError(
                f"{name} must have shape ({n}, {self.latent_dim}), got {a.shape}"
            )
        a = a.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return a

    def _check_y(self, y, n, name="y"):
        """Labels y (n,) -> their one-hot (n, K) for a conditional model; None otherwise.
        Messages call the labels ``name``."""
        k = self.config.n_classes
        if k is None:
            if y is not None:
                raise ValueError("this VAE is not conditional (n_classes=None): call it "
                                 f"without labels {name}")
            return None
        if y is None:
            raise ValueError(f"this VAE is conditional (n_classes={k}): pass the labels "
                             f"{name}, integers in 0..{k - 1} of shape ({n},)")
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise ValueError(f"labels {name} must be integers in 0..{k - 1}, got an array of "
                             f"dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"labels {name} must have shape ({n},), one per row, got "
                             f"{y.shape}")
        if y.min() < 0 or y.max() >= k:
            raise ValueError(f"labels {name} must be in 0..{k - 1}, got values from "
                             f"{y.min()} to {y.max()}")
        return one_hot(y, k, self.dtype)

    # --- the forward pass ------------------------------------------------------------------

    def encode(self, x, y=None):
        """x (N, D) [, labels y (N,)] -> mu (N, L), log_var (N, L): the parameters of q(z|x)."""
        x = self._check_x(x)
        mu, log_var, _ = self._encode(x, self._check_y(y, len(x)))
        return mu, log_var

    def _encode(self, x, c):
        p = self.params
        h, net_caches = self.encoder.forward(p, x, c)
        mu, mu_cache = Linear.forward(h, p["enc.mu.W"], p["enc.mu.b"])
        log_var, lv_cache = Linear.forward(h, p["enc.log_var.W"], p["enc.log_var.b"])
        return mu, log_var, (net_caches, mu_cache, lv_cache)

    def decode(self, z, y=None):
        """z (N, L) [, labels y (N,)] -> the likelihood's parameters (N, D): logits for
        the Bernoulli and continuous Bernoulli, the mean for the Gaussian."""
        z = self._check_latent(z, None, "z")
        return self._decode(z, self._check_y(y, len(z)))[0]

    def _decode(self, z, c):
        return self.decoder.forward(self.params, z, c)

    def _obs_log_var(self):
        if self.config.obs_var == "learned":
            return self.params["dec.log_var"]
        return self.dtype(math.log(self.config.obs_var))

    def _log_likelihood(self, x, out):
        """log p(x|z) per example (N,) from the decoder's output."""
        if self.config.likelihood == "bernoulli":
            return dist.bernoulli_log_likelihood(x, out)
        if self.config.likelihood == "continuous_bernoulli":
            return dist.continuous_bernoulli_log_likelihood(x, out)
        return dist.gaussian_log_density(x, out, self._obs_log_var())

    def _log_likelihood_backward(self, dout, x, out, grads):
        """dout (N,) -> d out (N, D); a learned variance's gradient goes into ``grads``."""
        if self.config.likelihood == "bernoulli":
            return dist.bernoulli_log_likelihood_backward(dout, x, out)
        if self.config.likelihood == "continuous_bernoulli":
            return dist.continuous_bernoulli_log_likelihood_backward(dout, x, out)
        _, d_out, d_obs = dist.gaussian_log_density_backward(dout, x, out, self._obs_log_var())
        if self.config.obs_var == "learned":
            grads["dec.log_var"] = d_obs.sum(axis=0)
        return d_out

    def _log_prior(self, z):
        if self.config.prior == "mixture":
            p = self.params
            return dist.mixture_log_density(
                z, p["prior.means"], p["prior.log_vars"], p["prior.logits"]
            )
        return dist.gaussian_log_density(z, 0.0, 0.0)

    def _forward(self, x, eps, kl_mode, c):
        """Per-example terms and the caches backward needs. x (N, D), eps (N, L)."""
        mu, log_var, enc_cache = self._encode(x, c)
        z, rep_cache = dist.reparameterize(mu, log_var, eps)
        out, dec_cache = self._decode(z, c)
        recon = -self._log_likelihood(x, out)
        if kl_mode == "analytic":
            kl = dist.kl_standard_normal(mu, log_var)
        else:  # one-sample estimate log q(z|x) - log p(z) at the reparameterized z
            kl = dist.gaussian_log_density(z, mu, log_var) - self._log_prior(z)
        caches = (x, mu, log_var, z, out, enc_cache, rep_cache, dec_cache)
        return recon, kl, caches

    def elbo_terms(self, x, eps, y=None, *, kl=None):
        """Per-example ``recon`` (N,) = -log p(x|z) and ``kl`` (N,); kl=None uses the
        model's estimator, 'monte_carlo' gives log q(z|x) - log p(z) at the sampled z."""
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        c = self._check_y(y, x.shape[0])
        kl_mode = self.config.kl_mode if kl is None else _choose("kl", kl, KL_MODES[1:])
        if kl_mode == "analytic" and self.config.prior == "mixture":
            raise ValueError("the mixture prior has no analytic KL; use kl='monte_carlo'")
        recon, kl_values, _ = self._forward(x, eps, kl_mode, c)
        return recon, kl_values

    def loss(self, x, eps, y=None):
        """Loss terms for a batch: means over examples of recon, KL and recon + beta * KL.

        x (N, D) data, eps (N, L) reparameterization noise (drawn from N(0, I) by the
        caller), y (N,) labels for a conditional model.
        """
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        recon, kl, caches = self._forward(x, eps, self.config.kl_mode, self._check_y(y, len(x)))
        return self._terms(recon, kl, self.config.beta, self._kl_per_dim_mean(caches))

    def _kl_per_dim_mean(self, caches):
        """The batch mean of each latent dimension's KL (L,), for free bits; None when
        the model has none (free_bits=0)."""
        if self.config.free_bits <= 0:
            return None
        _, mu, log_var, z, *_ = caches
        if self.config.kl_mode == "analytic":
            per_dim = dist.kl_standard_normal_per_dim(mu, log_var)
        else:
            per_dim = (dist.gaussian_log_density_per_dim(z, mu, log_var)
                       - dist.gaussian_log_density_per_dim(z, 0.0, 0.0))
        return per_dim.mean(axis=0)

    def _terms(self, recon, kl, beta, kl_per_dim):
        """LossTerms from per-example recon and kl; ``kl_per_dim``: the
        :meth:`_kl_per_dim_mean` of free bits, or None."""
        recon_mean, kl_mean = float(np.mean(recon)), float(np.mean(kl))
        charged = kl_mean
        if kl_per_dim is not None:  # free bits: each dimension pays at least free_bits nats
            charged = float(np.sum(np.maximum(kl_per_dim, self.config.free_bits)))
        return LossTerms(recon_mean + beta * charged, recon_mean, kl_mean)

    # --- the backward pass -------------------------------------------------------------------

    def loss_and_grads(self, x, eps, y=None, *, beta=None):
        """(LossTerms, grads) with grads[name] = dLoss/dparams[name], same shapes.

        The loss is the batch mean of recon_n + beta * kl_n, so each example's terms get
        upstream gradient 1/N (recon) and beta/N (kl). ``beta`` overrides the configured
        weight for this call (KL warm-up). y (N,): labels of a conditional model.
        """
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        c = self._check_y(y, x.shape[0])
        cfg, p = self.config, self.params
        beta = cfg.beta if beta is None else check_beta(beta)
        recon, kl, caches = self._forward(x, eps, cfg.kl_mode, c)
        x, mu, log_var, z, out, enc_cache, rep_cache, dec_cache = caches
        n = x.shape[0]
        d_recon = np.full(n, 1.0 / n, dtype=self.dtype)
        d_kl = np.full(n, beta / n, dtype=self.dtype)
        grads = {}

        # reconstruction and decoder: recon = -log p(x|z), so its gradient flips the sign
        d_out = self._log_likelihood_backward(-d_recon, x, out, grads)
        dz = self.decoder.backward(d_out, dec_cache, grads)

        # KL
        if cfg.kl_mode == "analytic":
            dmu, dlog_var = dist.kl_standard_normal_backward(d_kl, mu, log_var)
            dz_kl = ()
        else:  # kl = log q(z|x) - log p(z): z depends on (mu, log_var) through eps too
            dz_q, dmu, dlog_var = dist.gaussian_log_density_backward(d_kl, z, mu, log_var)
            if cfg.prior == "mixture":
                dz_p, grads["prior.means"], grads["prior.log_vars"], grads["prior.logits"] = (
                    dist.mixture_log_density_backward(
                        -d_kl, z, p["prior.means"], p["prior.log_vars"], p["prior.logits"]
                    )
                )
            else:  # log N(z; 0, I) has d/dz = -z
                dz_p = d_kl[:, None] * z
            dz_kl = (dz_q, dz_p)
        kl_per_dim = self._kl_per_dim_mean(caches)
        if kl_per_dim is not None:
            # sum_j max(free_bits, KL_j): no gradient reaches a dimension below the floor;
            # the KL splits over dimensions, so masking each column's gradient is exact
            keep = (kl_per_dim >= cfg.free_bits).astype(self.dtype)
            dmu, dlog_var = dmu * keep, dlog_var * keep
            dz_kl = tuple(d * keep for d in dz_kl)
        for d in dz_kl:
            dz = dz + d

        # reparameterization and encoder
        dmu_z, dlog_var_z = dist.reparameterize_backward(dz, rep_cache)
        dmu, dlog_var = dmu + dmu_z, dlog_var + dlog_var_z
        net_caches, mu_cache, lv_cache = enc_cache
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(dmu, mu_cache)
        dh_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(dlog_var, lv_cache)
        self.encoder.backward(dh_mu + dh_lv, net_caches, grads, need_dx=False)

        grads = {name: grads[name].astype(self.dtype, copy=False) for name in p}
        return self._terms(recon, kl, beta, kl_per_dim), grads

    # --- using a trained model ----------------------------------------------------------------

    def _mean_from_out(self, out):
        """The mean of p(x|z) from the decoder's output: sigmoid(logits) for the Bernoulli;
        for the continuous Bernoulli its mean, which is not sigmoid(logits) (lesson 09)."""
        if self.config.likelihood == "bernoulli":
            return sigmoid(out)
        if self.config.likelihood == "continuous_bernoulli":
            return dist.continuous_bernoulli_mean(out)
        return out

    def decode_mean(self, z, y=None):
        """z (N, L) [, labels y (N,)] -> the decoder's pixel means (N, D): sigmoid(logits)
        for the Bernoulli, the mean of the density otherwise."""
        return self._mean_from_out(self.decode(z, y))

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

    def sample(self, n, y=None, seed=0):
        """Decode n draws from the prior; returns pixel means (n, D) (probabilities for
        a Bernoulli decoder). A conditional model needs labels y: (n,) integers, or one
        integer for all n."""
        n, c = self._check_sample_args(n, y)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self._mean_from_out(self._decode(self.sample_prior(n, rng), c)[0])

    def _check_sample_args(self, n, y):
        """``sample``'s n and labels, checked: (n as an int, one-hot (n, K) or None). One
        integer label stands for all n."""
        if not _is_int(n) or n < 1:
            raise ValueError(f"n must be a positive integer (how many samples), got {n!r}")
        n = int(n)
        if y is not None and np.ndim(y) == 0 and _is_int(np.asarray(y).item()):
            y = np.full(n, int(y))
        return n, self._check_y(y, n)

    def reconstruct(self, x, y=None):
        """Decode the posterior mean: x (N, D) [, labels y (N,)] -> pixel means (N, D)."""
        x = self._check_x(x)
        c = self._check_y(y, len(x))
        mu, _, _ = self._encode(x, c)
        return self._mean_from_out(self._decode(mu, c)[0])

    def __repr__(self):
        c = self.config
        if c.architecture == "mlp":
            dims = " -> ".join(str(d) for d in (c.input_dim, *c.hidden_dims, c.latent_dim))
        else:
            dims = f"conv {c.image_shape} channels {c.channels} -> {c.latent_dim}"
        extra = f", n_classes={c.n_classes}" if c.n_classes else ""
        extra += f", free_bits={c.free_bits}" if c.free_bits else ""
        return (
            f"VAE({dims}, {c.activation}, {c.likelihood}, kl={c.kl_mode}, "
            f"prior={c.prior}, beta={c.beta}{extra}, {c.dtype})"
        )


def _dtype_name(dtype):
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return name


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
