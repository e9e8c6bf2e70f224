"""The VAE in NumPy: forward, loss and every gradient, written out by hand.

    x --encoder--> h --bottleneck--> z --decoder--> out      (networks.py, bottleneck.py)
    h -> mu, log_var;  z = mu + exp(log_var / 2) * eps       (reparameterization, lesson 04)
    recon = -log p(x|z) from out                             (likelihoods.py)
    kl    = KL(q(z|x) || p(z)), analytic or one sample       (priors.py)

Loss, per example: sum over pixels of -log p(x|z) plus beta * KL(q(z|x) || p(z)) summed
over latent dimensions; the figure reported is the mean over the batch, in nats per
example (lesson 03 derives it, lesson 05 trains it).

The model is five parts that the configuration (:class:`~vae_from_scratch.config.VAEConfig`)
chooses, each with its forward and its hand-derived backward: the encoder and decoder
networks (an MLP for lessons 04-07 or a convolutional pair for lesson 08, with the label's
one-hot input for the conditional VAE of lesson 09), the bottleneck between them, the
likelihood and the prior (looked up by name in their registries). This module only wires
them together, once, whatever the parts.

Parameters, all in ``vae.params`` (the model's only state): the networks' layers
``enc.{i}.W/b`` and ``dec.{i}.W/b`` (Linear W is (D_in, D_out); convolution weights are
4-D, as in PyTorch), the bottleneck's heads ``enc.mu.W/b`` and ``enc.log_var.W/b``, the
decoder's output layer ``dec.out.W/b``, and whatever the likelihood and the prior add:
``dec.log_var`` (D,) for a Gaussian decoder with learned per-pixel variance,
``prior.means`` (K, L), ``prior.log_vars`` (K, L), ``prior.logits`` (K,) for the mixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from vae_from_scratch.bottleneck import BOTTLENECKS, Bottleneck
from vae_from_scratch.config import DTYPES, KL_MODES, VAEConfig, check_beta, choose, is_int
from vae_from_scratch.likelihoods import LIKELIHOODS, Likelihood
from vae_from_scratch.networks import Network, build_networks
from vae_from_scratch.priors import PRIORS, Prior


@dataclass(frozen=True)
class LossTerms:
    """Batch means, in nats per example: ``loss = recon + beta * kl`` (with free bits, the
    KL part of ``loss`` is the clamped one, while ``kl`` is the true KL)."""

    loss: float
    recon: float
    kl: float


class Parts(NamedTuple):
    """The five parts of a model, made from its configuration by :func:`build_parts`."""

    encoder: Network
    bottleneck: Bottleneck
    decoder: Network
    likelihood: Likelihood
    prior: Prior


def build_parts(config: VAEConfig) -> Parts:
    """The networks, bottleneck, likelihood and prior that ``config`` names."""
    bottleneck_class = BOTTLENECKS[config.bottleneck]
    encoder, decoder = build_networks(config, bottleneck_class.code_shape(config))
    prior = PRIORS[config.prior](config)
    likelihood = LIKELIHOODS[config.likelihood](config)
    return Parts(encoder, bottleneck_class(config, prior), decoder, likelihood, prior)


def _extra_shapes(parts: Parts) -> dict[str, tuple[tuple[int, ...], str]]:
    """The likelihood's and the prior's parameters: name -> (shape, how to initialise)."""
    return {**parts.likelihood.param_shapes(), **parts.prior.param_shapes()}


def init_params(config: VAEConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh parameters for ``config``: dict name -> array in the model's dtype.

    Layers use PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b
    (``networks.Layer.init_params``), so the NumPy and PyTorch models start from the same
    distribution. The likelihood's and the prior's parameters are drawn from N(0, 1) or set
    to 0, as they say (the mixture's means are drawn, its log-variances and logits and a
    learned ``dec.log_var`` start at 0). Numbers are drawn in float64, in the order of
    :func:`param_shapes`, and then cast, so float32 and float64 models with the same seed
    hold the same values up to rounding.
    """
    parts = build_parts(config)
    params = {}
    parts.encoder.init_params(rng, params)
    parts.bottleneck.init_params(rng, params, parts.encoder.out_dim)
    parts.decoder.init_params(rng, params)
    for name, (shape, how) in _extra_shapes(parts).items():
        params[name] = _initial(rng, shape, how)
    dtype = DTYPES[config.dtype]
    return {name: value.astype(dtype) for name, value in params.items()}


def _initial(rng: np.random.Generator, shape: tuple[int, ...], how: str) -> np.ndarray:
    """A likelihood's or prior's parameter at the start: N(0, 1) draws ("normal"), zeros
    ("zeros") or identity matrices in the last two axes ("identity")."""
    if how == "normal":
        return rng.normal(0.0, 1.0, size=shape)
    if how == "identity":
        return np.broadcast_to(np.eye(shape[-1]), shape).copy()
    return np.zeros(shape)


def param_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """dict name -> shape for ``config``, in initialisation order; allocates no arrays, so
    it is safe for a configuration read from an untrusted file."""
    parts = build_parts(config)
    shapes = parts.encoder.param_shapes()
    shapes.update(parts.bottleneck.param_shapes(parts.encoder.out_dim))
    shapes.update(parts.decoder.param_shapes())
    shapes.update({name: shape for name, (shape, _) in _extra_shapes(parts).items()})
    return shapes


def check_params(params: dict, config: VAEConfig) -> dict[str, np.ndarray]:
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


def one_hot(y: np.ndarray, n_classes: int, dtype: Any) -> np.ndarray:
    """Integer labels y (N,) -> (N, n_classes) rows of 0s with a 1 at each label."""
    out = np.zeros((len(y), n_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


class VAE:
    """A variational autoencoder with gradients by hand; its parts are configuration.

    Example::

        vae = VAE(input_dim=784, hidden_dims=(400,), latent_dim=20, seed=0)
        eps = np.random.default_rng(1).standard_normal((len(x), 20)).astype(np.float32)
        loss, grads = vae.loss_and_grads(x, eps)   # grads: same keys/shapes as vae.params

        conv = VAE(784, latent_dim=20, architecture="conv", channels=(32, 64))
        cvae = VAE(784, (400,), 20, n_classes=10)  # y: integer labels, last argument
        loss, grads = cvae.loss_and_grads(x, eps, y)

    The keyword arguments besides ``seed``, ``dtype``, ``config`` and ``params`` are the
    fields of :class:`~vae_from_scratch.config.VAEConfig` (``likelihood``, ``prior``,
    ``beta``, ...); or pass a ``config``. ``params``: use these (checked) instead of fresh
    ones drawn with ``seed``.
    """

    def __init__(self, input_dim: int = 784, hidden_dims: Any = None, latent_dim: int = 20, *,
                 seed: int = 0, dtype: Any = np.float32, config: VAEConfig | None = None,
                 params: dict | None = None, **options: Any) -> None:
        if config is None:
            config = VAEConfig.from_arguments(input_dim, hidden_dims, latent_dim, dtype, options)
        elif options:
            raise TypeError(f"give a config or the options {', '.join(options)}, not both")
        self.config = config
        self.dtype = DTYPES[config.dtype]
        self.encoder, self.bottleneck, self.decoder, self.likelihood, self.prior = (
            build_parts(config))
        if params is None:
            params = init_params(config, np.random.default_rng(seed))
        else:
            params = check_params(params, config)
        self.params = params

    # --- shapes and validation -------------------------------------------------------------

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """dict name -> shape that this configuration requires."""
        return param_shapes(self.config)

    def check_x(self, x: Any, name: str = "x") -> np.ndarray:
        """Data x (N, D) as an array in the model's dtype, checked: real, finite, non-empty,
        in the likelihood's range. ValueError naming ``name`` otherwise."""
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
        if self.likelihood.input_range is not None:
            self.likelihood.check_range(x.min(), x.max(), name)
        return x

    def check_latent(self, a: Any, n: int | None, name: str) -> np.ndarray:
        """A latent array (noise eps or codes z) of shape (n, L) (n=None: any number of
        rows) in the model's dtype, checked; ValueError naming ``name`` otherwise."""
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

    def check_noise(self, eps: Any, n: int) -> np.ndarray:
        """The noise eps for n examples, of the bottleneck's ``noise_shape(n)`` ((n, L) for
        the Gaussian), in the model's dtype, checked; ValueError otherwise."""
        eps = np.asarray(eps)
        shape = tuple(self.bottleneck.noise_shape(n))
        if eps.dtype.kind not in "biuf":
            raise ValueError(f"eps must hold real numbers, got an array of dtype {eps.dtype}")
        if eps.shape != shape:
            raise ValueError(f"eps must have shape {shape}, got {eps.shape}")
        eps = eps.astype(self.dtype, copy=False)
        if not np.all(np.isfinite(eps)):
            raise ValueError("eps contains NaN or infinite values")
        return eps

    def check_y(self, y: Any, n: int, name: str = "y") -> np.ndarray | None:
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

    def check_sample_args(self, n: Any, y: Any) -> tuple[int, np.ndarray | None]:
        """``sample``'s n and labels, checked: (n as an int, one-hot (n, K) or None). One
        integer label stands for all n."""
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be a positive integer (how many samples), got {n!r}")
        n = int(n)
        if y is not None and np.ndim(y) == 0 and is_int(np.asarray(y).item()):
            y = np.full(n, int(y))
        return n, self.check_y(y, n)

    def kl_mode_for(self, kl: str | None) -> str:
        """The estimator ``elbo_terms(kl=...)`` uses: the model's for None, else 'analytic'
        (where the prior has a closed form) or 'monte_carlo'."""
        kl_mode = self.config.kl_mode if kl is None else choose("kl", kl, KL_MODES[1:])
        if kl_mode == "analytic" and not self.prior.analytic_kl:
            raise ValueError(f"the {self.config.prior} prior has no analytic KL; use "
                             "kl='monte_carlo'")
        if kl_mode == "analytic" and not self.bottleneck.analytic_kl:
            raise ValueError(f"the {self.config.bottleneck} bottleneck has no analytic KL; "
                             "use kl='monte_carlo'")
        return kl_mode

    # --- the forward pass ------------------------------------------------------------------

    def encode(self, x: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """x (N, D) [, labels y (N,)] -> mu (N, L), log_var (N, L): the parameters of q(z|x)."""
        x = self.check_x(x)
        h, _ = self.encoder.forward(self.params, x, self.check_y(y, len(x)))
        return self.bottleneck.encode(self.params, h)

    def decode(self, z: Any, y: Any = None) -> np.ndarray:
        """z (N, L) [, labels y (N,)] -> the likelihood's parameters (N, D): logits for
        the Bernoulli and continuous Bernoulli, the mean for the Gaussian."""
        z = self.check_latent(z, None, "z")
        return self.decoder.forward(self.params, z, self.check_y(y, len(z)))[0]

    def _forward(self, x: np.ndarray, eps: np.ndarray, kl_mode: str,
                 c: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Per-example recon (N,) = -log p(x|z) and kl (N,), and the caches backward needs."""
        p = self.params
        h, enc_cache = self.encoder.forward(p, x, c)
        z, bottleneck_cache = self.bottleneck.forward(p, h, eps, c, kl_mode)
        out, dec_cache = self.decoder.forward(p, z, c)
        recon = -self.likelihood.log_prob(p, x, out)
        kl = self.bottleneck.rate(bottleneck_cache)
        return recon, kl, (x, out, enc_cache, bottleneck_cache, dec_cache)

    def _checked(self, x: Any, eps: Any, y: Any) -> tuple:
        x = self.check_x(x)
        return x, self.check_noise(eps, x.shape[0]), self.check_y(y, x.shape[0])

    def elbo_terms(self, x: Any, eps: Any, y: Any = None, *,
                   kl: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-example ``recon`` (N,) = -log p(x|z) and ``kl`` (N,); kl=None uses the
        model's estimator, 'monte_carlo' gives log q(z|x) - log p(z) at the sampled z."""
        x, eps, c = self._checked(x, eps, y)
        recon, kl_values, _ = self._forward(x, eps, self.kl_mode_for(kl), c)
        return recon, kl_values

    def loss(self, x: Any, eps: Any, y: Any = None) -> LossTerms:
        """Loss terms for a batch: means over examples of recon, KL and recon + beta * KL.

        x (N, D) data, eps (N, L) reparameterization noise (drawn from N(0, I) by the
        caller), y (N,) labels for a conditional model.
        """
        x, eps, c = self._checked(x, eps, y)
        recon, kl, caches = self._forward(x, eps, self.config.kl_mode, c)
        charged, _ = self.bottleneck.charged_kl(kl, caches[3])
        return _terms(recon, kl, self.config.beta, charged)

    # --- the backward pass -------------------------------------------------------------------

    def loss_and_grads(self, x: Any, eps: Any, y: Any = None, *,
                       beta: float | None = None) -> tuple[LossTerms, dict[str, np.ndarray]]:
        """(LossTerms, grads) with grads[name] = dLoss/dparams[name], same shapes.

        The loss is the batch mean of recon_n + beta * kl_n, so each example's terms get
        upstream gradient 1/N (recon) and beta/N (kl). ``beta`` overrides the configured
        weight for this call (KL warm-up). y (N,): labels of a conditional model.
        """
        x, eps, c = self._checked(x, eps, y)
        p = self.params
        beta = self.config.beta if beta is None else check_beta(beta)
        recon, kl, (x, out, enc_cache, bottleneck_cache, dec_cache) = self._forward(
            x, eps, self.config.kl_mode, c)
        charged, floors = self.bottleneck.charged_kl(kl, bottleneck_cache)
        n = x.shape[0]
        d_recon = np.full(n, 1.0 / n, dtype=self.dtype)
        d_kl = np.full(n, beta / n, dtype=self.dtype)
        grads = {}
        # recon = -log p(x|z), so its gradient flips the sign
        d_out = self.likelihood.log_prob_backward(-d_recon, p, x, out, grads)
        dz = self.decoder.backward(d_out, dec_cache, grads)
        dh = self.bottleneck.backward(dz, d_kl, bottleneck_cache, grads, floors)
        self.encoder.backward(dh, enc_cache, grads, need_dx=False)
        grads = {name: grads[name].astype(self.dtype, copy=False) for name in p}
        return _terms(recon, kl, beta, charged), grads

    # --- using a trained model ----------------------------------------------------------------

    def decode_mean(self, z: Any, y: Any = None) -> np.ndarray:
        """z (N, L) [, labels y (N,)] -> the decoder's pixel means (N, D): sigmoid(logits)
        for the Bernoulli, the mean of the density otherwise."""
        return self.likelihood.mean(self.params, self.decode(z, y))

    def sample_prior(self, n: int, rng: np.random.Generator, y: Any = None) -> np.ndarray:
        """n latent vectors drawn from p(z) [given labels y (n,)]: (n, L)."""
        c = self.check_y(y, n) if y is not None else None
        return self.bottleneck.sample_prior(self.params, n, rng, c).astype(self.dtype)

    def sample(self, n: int, y: Any = None, seed: Any = 0) -> np.ndarray:
        """Decode n draws from the prior; returns pixel means (n, D) (probabilities for
        a Bernoulli decoder). A conditional model needs labels y: (n,) integers, or one
        integer for all n."""
        n, c = self.check_sample_args(n, y)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        z = self.bottleneck.sample_prior(self.params, n, rng, c).astype(self.dtype)
        return self.likelihood.mean(self.params, self.decoder.forward(self.params, z, c)[0])

    def refit_prior(self, x: Any, y: Any = None, batch_size: int = 1000) -> None:
        """Set the prior's fitted parameters (``prior.fitted``) in closed form from the
        posteriors of x (N, D) [, labels y (N,)]: the class_gaussian prior's moment match
        (priors.py). A prior without fitted parameters is left as it is. The training loop
        calls this at the end of every epoch with the training set."""
        if not self.prior.fitted:
            return
        x = self.check_x(x)
        c = self.check_y(y, len(x))
        mu, log_var = [], []
        for start in range(0, len(x), batch_size):
            cb = None if c is None else c[start : start + batch_size]
            h, _ = self.encoder.forward(self.params, x[start : start + batch_size], cb)
            for out, part in zip((mu, log_var), self.bottleneck.encode(self.params, h),
                                 strict=True):
                out.append(part)
        self.prior.refit(self.params, np.concatenate(mu), np.concatenate(log_var), c)

    def reconstruct(self, x: Any, y: Any = None) -> np.ndarray:
        """Decode the posterior mean: x (N, D) [, labels y (N,)] -> pixel means (N, D)."""
        x = self.check_x(x)
        c = self.check_y(y, len(x))
        h, _ = self.encoder.forward(self.params, x, c)
        z = self.bottleneck.code(self.params, h)
        return self.likelihood.mean(self.params, self.decoder.forward(self.params, z, c)[0])

    def code_report(self, x: Any, y: Any = None) -> dict[str, Any]:
        """Figures of the code of x (N, D) for a run's report: {} for the Gaussian code; the
        rate in bits and the codes' usage perplexity for a quantized one (lesson 11)."""
        x = self.check_x(x)
        h, _ = self.encoder.forward(self.params, x, self.check_y(y, len(x)))
        return self.bottleneck.report(self.params, h)

    def __repr__(self) -> str:
        c = self.config
        if c.architecture == "mlp":
            dims = " -> ".join(str(d) for d in (c.input_dim, *c.hidden_dims, c.latent_dim))
        else:
            dims = f"conv {c.image_shape} channels {c.channels} -> {c.latent_dim}"
        extra = f", n_classes={c.n_classes}" if c.n_classes else ""
        extra += f", free_bits={c.free_bits}" if c.free_bits else ""
        if c.bottleneck in ("vq", "fsq"):  # a grid of discrete codes (lesson 11)
            code = (f"vq K={c.codebook_size} D={c.code_dim}, codebook by {c.codebook_update}, "
                    f"restarts every {c.restart_every} steps below {c.restart_below:g}"
                    if c.bottleneck == "vq"
                    else f"fsq levels {c.levels}")
            return (f"VAE(conv {c.image_shape} channels {c.channels} -> {code}, "
                    f"{c.activation}, {c.likelihood}, beta={c.beta}, {c.dtype})")
        if c.bottleneck != "gaussian":
            extra += f", bottleneck={c.bottleneck}"
            extra += f", flow_steps={c.flow_steps}" if c.flow_steps else ""
            extra += f", top_latent_dim={c.top_latent_dim}" if c.top_latent_dim else ""
        return (
            f"VAE({dims}, {c.activation}, {c.likelihood}, kl={c.kl_mode}, "
            f"prior={c.prior}, beta={c.beta}{extra}, {c.dtype})"
        )


def _terms(recon: np.ndarray, kl: np.ndarray, beta: float, charged: float) -> LossTerms:
    """LossTerms from per-example recon and kl, and the KL the loss charges (free bits)."""
    recon_mean = float(np.mean(recon))
    return LossTerms(recon_mean + beta * charged, recon_mean, float(np.mean(kl)))
