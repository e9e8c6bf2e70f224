"""The PyTorch mirror of the NumPy VAE (lesson 06), and a fast training backend for it.

:class:`TorchVAE` is the model of ``vae.py`` written with torch tensors, so that autograd
computes the gradients that ``VAE.loss_and_grads`` derives by hand. The two share
everything that is not arithmetic:

* the configuration is the same :class:`~vae_from_scratch.vae.VAEConfig`;
* the parameters have the same names, shapes and layout (``W`` is (D_in, D_out) and a
  layer computes ``x @ W + b``), so ``TorchVAE.from_numpy(vae)`` and ``.to_numpy()`` copy
  them bit for bit;
* fresh models are initialised by the NumPy code, so ``TorchVAE(seed=s)`` and
  ``VAE(seed=s)`` start from the same numbers;
* checkpoints are the same safetensors files (:func:`save`, :func:`load`).

With the same parameters and the same noise ``eps``, loss and gradients agree with the
NumPy model to round-off (``tests/test_torch_parity.py``; ``vae-course compare``).

:class:`TorchBackend` plugs the model into the training loop of ``train.py``. It is built
for speed on a GPU: the training set is moved to the device once, batches are gathered
there by a permutation drawn on the device, the noise comes from a seeded generator on
the device, and each step hands back a device tensor, so the loop waits for the device
only when it checks for NaN (every ``guard_every`` steps; :data:`RECOMMENDED_GUARD_EVERY`).

This is the only module of the package that imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae_from_scratch.checkpoint import read_checkpoint, save_checkpoint
from vae_from_scratch.distributions import _CB_LOG_NORM_SERIES, _CB_MEAN_SERIES, CB_TAYLOR_BELOW
from vae_from_scratch.evaluate import _batches
from vae_from_scratch.train import (
    EVAL_SEED,
    check_batch_size,
    check_binarize,
    check_kl_warmup,
    check_labels,
    check_order,
    check_steps_done,
    warmup_beta,
)
from vae_from_scratch.vae import KL_MODES, VAE, LossTerms, VAEConfig, check_beta, param_shapes

__all__ = [
    "RECOMMENDED_GUARD_EVERY",
    "TorchBackend",
    "TorchLossTerms",
    "TorchVAE",
    "available_devices",
    "default_device",
    "load",
    "negative_elbo",
    "resolve_device",
    "save",
]

LOG_2PI = math.log(2.0 * math.pi)
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Steps between NaN checks that suits :class:`TorchBackend` (``fit(..., guard_every=...)``).
#: Each check copies the pending loss values to the host, which makes the host wait for the
#: GPU; checking every 50 steps keeps the GPU's queue full, and a divergence is still
#: reported with the exact step at which it happened. On the CPU the value hardly matters.
RECOMMENDED_GUARD_EVERY = 50


# --- devices and dtypes -------------------------------------------------------------------


def default_device():
    """The fastest device present: CUDA, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available():
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices():
    """The devices torch can use here, as names: ['cpu'], then 'cuda:0'..., 'mps'."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(device=None):
    """``device`` (a name such as 'cpu', 'cuda', 'cuda:1', 'mps', or a torch.device) as a
    torch.device this machine has; None means :func:`default_device`.

    Raises ValueError with one line that says why and names the devices this machine
    has, for a typo ('foo'), a GPU that is not there, or a device type the course does
    not run on.
    """
    if device is None:
        return default_device()
    have = f"this machine has: {', '.join(available_devices())}"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}; {have}") from None
    else:
        raise ValueError(f"device must be a name such as 'cpu' or 'cuda', got {device!r}")
    name = str(device)
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this PyTorch build has no CUDA support"
                if torch.version.cuda is None
                else "PyTorch finds no CUDA GPU"
            )
            raise ValueError(f"device {name!r} is not available: {why}; {have}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} is not available; {have}")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {name!r} is not available: Apple's MPS needs Apple silicon and a "
                f"macOS build of PyTorch; {have}"
            )
        return dev
    raise ValueError(f"device {name!r} is not one the course runs on; {have}")


def _dtype_name(dtype):
    """'float32' or 'float64' from a torch dtype, NumPy dtype or name."""
    if isinstance(dtype, torch.dtype):
        for name, value in TORCH_DTYPES.items():
            if value == dtype:
                return name
        raise ValueError(f"unsupported dtype {dtype}; expected float32 or float64")
    name = np.dtype(dtype).name
    if name not in TORCH_DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; expected float32 or float64")
    return name


def _check_device_dtype(device, dtype):
    if device.type == "mps" and dtype == torch.float64:
        raise ValueError("Apple's MPS device has no float64; use dtype=torch.float32 or the CPU")


# --- loss terms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchLossTerms:
    """Batch means as torch scalars, in nats per example: ``loss = recon + beta * kl``.

    ``loss`` carries the autograd graph; call ``.loss.backward()`` for the gradients.
    """

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor

    def to_floats(self):
        """The same terms as a NumPy-side :class:`~vae_from_scratch.vae.LossTerms` of floats."""
        return LossTerms(*(float(t.detach()) for t in (self.loss, self.recon, self.kl)))


# --- densities (the formulas of distributions.py, written with torch) ---------------------


def _gaussian_log_density(x, mu, log_var):
    """log N(x; mu, diag(exp(log_var))) summed over the last axis; log_var may be a float."""
    inv_var = math.exp(-log_var) if isinstance(log_var, float) else torch.exp(-log_var)
    diff = x - mu
    return -0.5 * torch.sum(LOG_2PI + log_var + diff * diff * inv_var, dim=-1)


def _standard_normal_log_density(z):
    return -0.5 * torch.sum(LOG_2PI + z * z, dim=-1)


def _mixture_log_density(z, means, log_vars, logits):
    """log sum_k softmax(logits)_k N(z; means_k, diag(exp(log_vars_k))): z (N, L) -> (N,)."""
    diff = z[:, None, :] - means[None, :, :]  # (N, K, L)
    log_comp = -0.5 * torch.sum(LOG_2PI + log_vars + diff * diff * torch.exp(-log_vars), dim=2)
    return torch.logsumexp(torch.log_softmax(logits, dim=0) + log_comp, dim=1)


def _kl_standard_normal(mu, log_var):
    """KL(N(mu, diag(exp(log_var))) || N(0, I)) summed over the last axis: (N, L) -> (N,)."""
    return torch.sum(_kl_standard_normal_per_dim(mu, log_var), dim=-1)


def _kl_standard_normal_per_dim(mu, log_var):
    """The KL of each latent dimension, elementwise (free bits use them)."""
    return 0.5 * (mu * mu + torch.exp(log_var) - 1.0 - log_var)


def _cb_series_in_u(u, coefs):
    """sum_k coefs[k] u^k by Horner."""
    p = torch.zeros_like(u)
    for c in reversed(coefs):
        p = p * u + c
    return p


def _cb_split(logits):
    """(small, l_small, a_large): the Taylor-branch mask |l| < CB_TAYLOR_BELOW, the logits
    with the other entries set to 0, and |l| with the small entries set to the threshold.
    Each branch of a torch.where sees only inputs it handles, so neither branch sends NaN or
    inf back through autograd from the entries it does not own."""
    small = logits.abs() < CB_TAYLOR_BELOW
    l_small = torch.where(small, logits, 0.0)
    a_large = torch.where(small, CB_TAYLOR_BELOW, logits.abs())
    return small, l_small, a_large


def _cb_log_norm(logits):
    """log C(l) of the continuous Bernoulli, elementwise: log(|l| / tanh(|l|/2)), from its
    Taylor series below CB_TAYLOR_BELOW (distributions.cb_log_norm)."""
    small, l, a = _cb_split(logits)
    u = l * l
    taylor = math.log(2.0) + u * _cb_series_in_u(u, _CB_LOG_NORM_SERIES)
    return torch.where(small, taylor, torch.log(a / torch.tanh(0.5 * a)))


def _continuous_bernoulli_log_prob(x, logits):
    """log CB(x; l) = x l - softplus(l) + log C(l), summed over the last dim: (N, D) -> (N,)."""
    bernoulli = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return torch.sum(bernoulli + _cb_log_norm(logits), dim=-1)


def _continuous_bernoulli_mean(logits):
    """E[x] = 1/(1 - exp(-l)) - 1/l, elementwise; 1/2 + l/12 - ... below CB_TAYLOR_BELOW
    (distributions.continuous_bernoulli_mean)."""
    small, l, a = _cb_split(logits)
    taylor = 0.5 + l * _cb_series_in_u(l * l, _CB_MEAN_SERIES)
    e = torch.exp(-a)
    m = 1.0 / a - e / (1.0 - e)  # the mean at -|l|
    return torch.where(small, taylor, torch.where(logits < 0, m, 1.0 - m))


# --- the model ----------------------------------------------------------------------------


def _key(name):
    """Parameter name -> ParameterDict key ('enc.0.W' -> 'enc__0__W'): keys may not hold dots."""
    return name.replace(".", "__")


def _layer_forward(layer, p, h, c):
    """One :class:`~vae_from_scratch.networks.Layer` with torch ops (networks.py's forward)."""
    kind = layer.kind
    if kind == "linear":
        return torch.addmm(p[f"{layer.name}.b"], h, p[f"{layer.name}.W"])
    if kind == "conv":
        return F.conv2d(h, p[f"{layer.name}.W"], p[f"{layer.name}.b"],
                        stride=layer.stride, padding=layer.padding)
    if kind == "conv_transpose":
        return F.conv_transpose2d(h, p[f"{layer.name}.W"], p[f"{layer.name}.b"],
                                  stride=layer.stride, padding=layer.padding,
                                  output_padding=layer.output_padding)
    if kind == "relu":
        return torch.relu(h)
    if kind == "tanh":
        return torch.tanh(h)
    if kind == "sigmoid":
        return torch.sigmoid(h)
    if kind == "reshape":
        return h.reshape(h.shape[0], *layer.shape)
    if kind == "condition":
        if layer.planes:
            c = c[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return torch.cat([h, c], dim=1)
    raise ValueError(f"unknown layer kind {kind!r}")


def _network_forward(network, p, x, c):
    for layer in network.layers:
        x = _layer_forward(layer, p, x, c)
    return x


class TorchVAE(nn.Module):
    """The VAE of ``vae.py`` in PyTorch, with the same configuration and parameters.

    Example::

        vae = VAE(input_dim=784, hidden_dims=(400,), latent_dim=20, seed=0)
        tvae = TorchVAE.from_numpy(vae)           # exact copy; tvae.to_numpy() goes back
        terms = tvae.loss(x, eps)                 # .loss, .recon, .kl: torch scalars
        terms.loss.backward()                     # tvae.params[name].grad: dLoss/dparam

    The constructor takes the arguments of :class:`~vae_from_scratch.vae.VAE` (or a
    ``config``) plus ``device`` (default: :func:`default_device`) and ``dtype`` (torch or
    NumPy float32/float64; default: the configuration's, else float32). ``params``, if
    given, is a dict name -> array or tensor; otherwise the NumPy initialisation with
    ``seed`` is used, so ``TorchVAE(seed=s)`` equals ``TorchVAE.from_numpy(VAE(seed=s))``.
    The networks are the NumPy model's (``networks.build_networks``), run with torch ops:
    ``addmm`` for Linear, ``F.conv2d`` and ``F.conv_transpose2d`` for the convolutions.

    Parameters live in ``self.weights``, an ``nn.ParameterDict`` whose keys are the NumPy
    names with '.' replaced by '__'; ``self.params`` maps the NumPy names to them.
    Public methods accept tensors or NumPy arrays and check them (shape, NaN, pixel range,
    labels) like the NumPy model does; a conditional model takes labels ``y`` last.
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
        dtype=None,
        device=None,
        config=None,
        params=None,
    ):
        super().__init__()
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
                dtype=_dtype_name(torch.float32 if dtype is None else dtype),
                architecture=architecture,
                image_shape=image_shape,
                channels=channels,
                n_classes=n_classes,
                free_bits=free_bits,
            )
        elif dtype is not None:
            config = replace(config, dtype=_dtype_name(dtype))
        device = resolve_device(device)
        torch_dtype = TORCH_DTYPES[config.dtype]
        _check_device_dtype(device, torch_dtype)
        if params is not None:
            params = {
                name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
                for name, value in params.items()
            }
        # the NumPy model validates the configuration and the params, or draws fresh ones;
        # its networks are the ones this model runs
        reference = VAE(config=config, params=params, seed=seed)
        self.config = config
        self.encoder, self.decoder = reference.encoder, reference.decoder
        self._reference = reference  # input checks shared with the NumPy model
        self.weights = nn.ParameterDict(
            {
                _key(name): nn.Parameter(torch.tensor(value, dtype=torch_dtype, device=device))
                for name, value in reference.params.items()
            }
        )

    # --- conversion -----------------------------------------------------------------------

    @classmethod
    def from_numpy(cls, vae, device=None, dtype=None):
        """An exact copy of the NumPy model ``vae`` (same dtype unless ``dtype`` is given)."""
        return cls(config=vae.config, params=vae.params, device=device, dtype=dtype)

    def to_numpy(self, check=True):
        """A NumPy :class:`~vae_from_scratch.vae.VAE` holding an exact copy of the parameters.

        Raises ValueError if a parameter is NaN or infinite, as the NumPy constructor does;
        ``check=False`` copies such values too (to inspect a model that diverged).
        """
        params = {name: p.detach().cpu().numpy() for name, p in self.params.items()}
        if check:
            return VAE(config=self.config, params=params)
        vae = VAE(config=self.config, params={k: np.zeros(v.shape) for k, v in params.items()})
        vae.params = {k: v.copy() for k, v in params.items()}
        return vae

    @property
    def params(self):
        """dict NumPy name -> parameter tensor (the live parameters, not copies)."""
        return {key.replace("__", "."): p for key, p in self.weights.items()}

    @property
    def device(self):
        return next(iter(self.weights.values())).device

    @property
    def dtype(self):
        return next(iter(self.weights.values())).dtype

    @property
    def latent_dim(self):
        return self.config.latent_dim

    def param_shapes(self):
        """dict name -> shape that this configuration requires."""
        return param_shapes(self.config)

    # --- input checks ---------------------------------------------------------------------

    def _as_tensor(self, a):
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def _check_x(self, x, name="x"):
        if not isinstance(x, torch.Tensor):
            self._reference._check_x(x, name)  # the NumPy model's checks and messages
            return self._as_tensor(x)
        if x.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {x.dtype}")
        x = self._as_tensor(x)
        d = self.config.input_dim
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"{name} must have shape (N, {d}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty: expected at least one row")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.config.likelihood != "gaussian":
            lo, hi = float(x.min()), float(x.max())
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"a {self.config.likelihood.replace('_', ' ')} decoder needs pixel values "
                    f"in [0, 1]; {name} ranges over [{lo:.4g}, {hi:.4g}] (scale images by "
                    "1/255, or use likelihood='gaussian')"
                )
        return x

    def _check_latent(self, a, n, name):
        if isinstance(a, torch.Tensor) and a.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {a.dtype}")
        a = self._as_tensor(a)
        if n is None:
            n = a.shape[0] if a.ndim == 2 else "N"
        if a.ndim != 2 or tuple(a.shape) != (n, self.latent_dim):
            raise ValueError(
                f"{name} must have shape ({n}, {self.latent_dim}), got {tuple(a.shape)}"
            )
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return a

    def _check_y(self, y, n, name="y"):
        """Labels (n,) -> one-hot tensor (n, K) on the device for a conditional model."""
        c = self._reference._check_y(_host(y), n, name)  # the NumPy model's checks, messages
        return None if c is None else self._as_tensor(c)

    # --- the forward pass (unchecked internals, used by the training step) ----------------

    def _encode(self, p, x, c):
        h = _network_forward(self.encoder, p, x, c)
        mu = torch.addmm(p["enc.mu.b"], h, p["enc.mu.W"])
        log_var = torch.addmm(p["enc.log_var.b"], h, p["enc.log_var.W"])
        return mu, log_var

    def _decode(self, p, z, c):
        return _network_forward(self.decoder, p, z, c)

    def _obs_log_var(self, p):
        if self.config.obs_var == "learned":
            return p["dec.log_var"]
        return math.log(self.config.obs_var)

    def _log_likelihood(self, p, x, out):
        if self.config.likelihood == "bernoulli":
            # x * l - softplus(l) summed over pixels, computed without overflow
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dim=-1)
        if self.config.likelihood == "continuous_bernoulli":
            return _continuous_bernoulli_log_prob(x, out)
        return _gaussian_log_density(x, out, self._obs_log_var(p))

    def _log_prior(self, p, z):
        if self.config.prior == "mixture":
            return _mixture_log_density(z, p["prior.means"], p["prior.log_vars"], p["prior.logits"])
        return _standard_normal_log_density(z)

    def _forward(self, x, eps, kl_mode, c):
        """recon (N,) = -log p(x|z), kl (N,) and (mu, log_var, z); no input checks."""
        p = self.params
        mu, log_var = self._encode(p, x, c)
        z = mu + torch.exp(0.5 * log_var) * eps  # the reparameterization
        recon = -self._log_likelihood(p, x, self._decode(p, z, c))
        if kl_mode == "analytic":
            kl = _kl_standard_normal(mu, log_var)
        else:  # one-sample estimate log q(z|x) - log p(z) at the reparameterized z
            kl = _gaussian_log_density(z, mu, log_var) - self._log_prior(p, z)
        return recon, kl, (mu, log_var, z)

    def _per_example(self, x, eps, kl_mode, c=None):
        """recon (N,) = -log p(x|z) and kl (N,) for x (N, D), eps (N, L); no input checks."""
        return self._forward(x, eps, kl_mode, c)[:2]

    def _charged_kl(self, kl, latent):
        """The KL the loss charges, a scalar: the batch mean, or with free bits
        sum_j max(free_bits, mean over the batch of KL_j)."""
        if self.config.free_bits <= 0:
            return kl.mean()
        mu, log_var, z = latent
        if self.config.kl_mode == "analytic":
            per_dim = _kl_standard_normal_per_dim(mu, log_var)
        else:  # log q - log p per dimension; the log 2 pi terms cancel
            per_dim = 0.5 * (z * z - log_var - (z - mu) ** 2 * torch.exp(-log_var))
        return torch.clamp(per_dim.mean(dim=0), min=self.config.free_bits).sum()

    def _batch_loss(self, x, eps, beta, c=None):
        """(loss, recon, kl) batch means for the training step; ``beta`` a float or tensor."""
        recon, kl, latent = self._forward(x, eps, self.config.kl_mode, c)
        recon_mean = recon.mean()
        return recon_mean + beta * self._charged_kl(kl, latent), recon_mean, kl.mean()

    # --- the public forward pass ----------------------------------------------------------

    def encode(self, x, y=None):
        """x (N, D) [, labels y (N,)] -> mu (N, L), log_var (N, L): the parameters of q(z|x)."""
        x = self._check_x(x)
        return self._encode(self.params, x, self._check_y(y, x.shape[0]))

    def decode(self, z, y=None):
        """z (N, L) [, labels y (N,)] -> the likelihood's parameters (N, D): logits, or the
        Gaussian mean."""
        z = self._check_latent(z, None, "z")
        return self._decode(self.params, z, self._check_y(y, z.shape[0]))

    def decode_mean(self, z, y=None):
        """z (N, L) [, labels y (N,)] -> the decoder's pixel means (N, D)."""
        return self._mean_from_out(self.decode(z, y))

    def elbo_terms(self, x, eps, y=None, *, kl=None):
        """Per-example ``recon`` (N,) = -log p(x|z) and ``kl`` (N,); kl=None uses the
        model's estimator, 'monte_carlo' gives log q(z|x) - log p(z) at the sampled z."""
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        c = self._check_y(y, x.shape[0])
        if kl is None:
            kl_mode = self.config.kl_mode
        elif kl in KL_MODES[1:]:
            kl_mode = kl
        else:
            raise ValueError(f"unknown kl {kl!r}; expected one of {', '.join(KL_MODES[1:])}")
        if kl_mode == "analytic" and self.config.prior == "mixture":
            raise ValueError("the mixture prior has no analytic KL; use kl='monte_carlo'")
        return self._per_example(x, eps, kl_mode, c)

    def loss(self, x, eps, y=None, *, beta=None):
        """:class:`TorchLossTerms` of a batch: means over examples of recon, KL and
        recon + beta * KL. x (N, D) data, eps (N, L) noise, y (N,) labels of a conditional
        model; ``beta`` overrides the configured KL weight for this call (KL warm-up)."""
        x = self._check_x(x)
        eps = self._check_latent(eps, x.shape[0], "eps")
        c = self._check_y(y, x.shape[0])
        beta = self.config.beta if beta is None else check_beta(beta)
        return TorchLossTerms(*self._batch_loss(x, eps, beta, c))

    def forward(self, x, eps, y=None, *, beta=None):
        """Same as :meth:`loss`."""
        return self.loss(x, eps, y, beta=beta)

    # --- using a trained model ------------------------------------------------------------

    def _mean_from_out(self, out):
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(out)
        if self.config.likelihood == "continuous_bernoulli":
            return _continuous_bernoulli_mean(out)
        return out

    def _generator(self, seed):
        if isinstance(seed, torch.Generator):
            return seed
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @torch.no_grad()
    def sample_prior(self, n, seed=0):
        """n latent vectors drawn from p(z): (n, L). ``seed``: an int or a torch.Generator
        on the model's device. (Not the same draws as the NumPy model's.)"""
        g, n = self._generator(seed), int(n)
        kw = dict(generator=g, device=self.device, dtype=self.dtype)
        if self.config.prior == "mixture":
            p = self.params
            pi = torch.softmax(p["prior.logits"], dim=0)
            k = torch.multinomial(pi, n, replacement=True, generator=g)
            std = torch.exp(0.5 * p["prior.log_vars"][k])
            return p["prior.means"][k] + std * torch.randn((n, self.latent_dim), **kw)
        return torch.randn((n, self.latent_dim), **kw)

    @torch.no_grad()
    def sample(self, n, y=None, seed=0):
        """Decode n draws from the prior; returns pixel means (n, D). A conditional model
        needs labels y: (n,) integers, or one integer for all n."""
        n, c = self._reference._check_sample_args(n, _host(y))  # the NumPy model's checks
        c = None if c is None else self._as_tensor(c)
        return self._mean_from_out(self._decode(self.params, self.sample_prior(n, seed), c))

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """Decode the posterior mean: x (N, D) [, labels y (N,)] -> pixel means (N, D)."""
        x = self._check_x(x)
        c = self._check_y(y, x.shape[0])
        mu, _ = self._encode(self.params, x, c)
        return self._mean_from_out(self._decode(self.params, mu, c))

    def extra_repr(self):
        return f"{self._reference!r}, device={self.device}"


# --- checkpoints and evaluation -----------------------------------------------------------


def save(path, model, metadata=None):
    """Write ``model`` (a TorchVAE or a NumPy VAE) as a checkpoint that either backend reads.

    The same safetensors format as :func:`vae_from_scratch.checkpoint.save_checkpoint`;
    ``metadata`` gets ``backend: "torch"`` unless it says otherwise.
    """
    vae = model.to_numpy() if isinstance(model, TorchVAE) else model
    return save_checkpoint(path, vae, {"backend": "torch", **(metadata or {})})


def load(path, device=None, dtype=None):
    """Rebuild a :class:`TorchVAE` from a checkpoint written by either backend.

    The device is checked (:func:`resolve_device`) before the file is read."""
    device = resolve_device(device)
    params, config, _ = read_checkpoint(path)
    return TorchVAE(config=config, params=params, device=device, dtype=dtype)


@torch.no_grad()
def negative_elbo(model, x, seed=0, batch_size=1000, y=None):
    """Mean over examples of recon + KL (beta = 1), as
    :func:`vae_from_scratch.evaluate.negative_elbo`, with the very same noise (drawn by
    NumPy from ``seed``), so both backends report the same figure for the same parameters.
    ``y``: labels of a conditional model. Returns (nelbo, recon, kl) as floats; the host
    waits for the device once."""
    x = model._check_x(x)
    c = model._check_y(y, x.shape[0])
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(model.config.dtype)
    recon_sum = torch.zeros((), dtype=torch.float64, device=model.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=model.device)
    for xb, cb in _batches(x, c, batch_size):
        eps = rng.standard_normal((xb.shape[0], model.latent_dim)).astype(np_dtype)
        recon, kl = model._per_example(xb, model._as_tensor(eps), model.config.kl_mode, cb)
        recon_sum += recon.sum(dtype=torch.float64)
        kl_sum += kl.sum(dtype=torch.float64)
    n = x.shape[0]
    recon_total, kl_total = torch.stack([recon_sum, kl_sum]).cpu().tolist()
    return (recon_total + kl_total) / n, recon_total / n, kl_total / n


# --- the training backend -----------------------------------------------------------------


def _adam(params, lr):
    """torch.optim.Adam, fused into one kernel where this torch build can (CUDA; the CPU
    since torch 2.4): the same update as the hand-written Adam, in fewer passes."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def _nan_if_nonfinite(grads):
    """A device scalar: 0 when every gradient is finite, NaN otherwise (0 * inf = NaN).

    Found without a host sync from the gradients' norms (one fused kernel on a GPU). A
    norm also overflows for entries above ~1e19 in float32: training that far gone is
    reported as diverged too.
    """
    foreach_norm = getattr(torch, "_foreach_norm", None)
    norms = foreach_norm(grads) if foreach_norm is not None else [g.norm() for g in grads]
    return torch.stack(norms).sum() * 0


class TorchBackend:
    """The training backend of ``train.fit`` for :class:`TorchVAE`, on any device.

    vae: a NumPy :class:`~vae_from_scratch.vae.VAE` (copied to the device; it is not
    updated, use :meth:`to_vae`) or a :class:`TorchVAE` (trained in place, moved to
    ``device`` if one is given). x_train (N, D) array or tensor: moved to the device once,
    with y_train (N,), the labels of a conditional model (kept there as one-hot rows).

    ``lr``, ``batch_size``, ``seed``, ``optimizer``, ``binarize`` and ``kl_warmup`` mean
    what they mean for :class:`~vae_from_scratch.train.NumpyBackend` ('adam' is
    torch.optim.Adam, fused into one kernel where the build supports it; 'sgd' has
    momentum 0.9). The seed drives a torch.Generator on the device that draws the
    shuffling, the binarization and the noise, so a run repeats exactly on the same
    device (CPU and CUDA draw different numbers). ``compile=True`` runs the loss through
    ``torch.compile``: off by default, as it did not pay on the CPU (benchmarks/README.md).

    ``step`` returns a device tensor (loss, recon, kl); the loss is NaN when a gradient
    was NaN or infinite. Unlike the NumPy backend the update of that step is still
    applied (skipping it would make the host wait for the device every step), so after
    a divergence restart from a checkpoint rather than from the backend's parameters.
    """

    name = "torch"
    guard_every = RECOMMENDED_GUARD_EVERY  # fit's default for this backend

    def __init__(
        self,
        vae,
        x_train,
        y_train=None,
        *,
        lr=1e-3,
        batch_size=128,
        seed=0,
        optimizer="adam",
        binarize=False,
        kl_warmup=0,
        device=None,
        dtype=None,
        compile=False,
    ):
        batch_size = check_batch_size(batch_size)
        # checked before the data move
        binarize, kl_warmup = check_binarize(binarize), check_kl_warmup(kl_warmup)
        if isinstance(vae, TorchVAE):
            if dtype is not None and _dtype_name(dtype) != vae.config.dtype:
                raise ValueError(
                    f"the model is {vae.config.dtype}; convert it with "
                    "TorchVAE.from_numpy(model.to_numpy(), dtype=...) first"
                )
            model = vae if device is None else vae.to(resolve_device(device))
        else:
            model = TorchVAE.from_numpy(vae, device=resolve_device(device), dtype=dtype)
        self.model = model
        self.config = model.config
        self.device = model.device
        self.x_train = model._check_x(x_train, "x_train")  # on the device, checked once
        n = self.x_train.shape[0]
        self.c_train = model._check_y(y_train, n, "y_train")  # one-hot, or None
        self.batch_size = batch_size
        self.binarize = binarize
        self.kl_warmup = kl_warmup
        self.steps_done = 0
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        params = list(model.parameters())
        if optimizer == "adam":
            self.opt = _adam(params, lr)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected adam or sgd")
        self._params = params
        self._beta = torch.zeros((), dtype=model.dtype, device=self.device)
        self._loss_fn = torch.compile(model._batch_loss) if compile else model._batch_loss
        self.order = None

    def start_epoch(self):
        n = self.x_train.shape[0]
        self.order = torch.randperm(n, generator=self.generator, device=self.device)
        return self.steps_per_epoch()

    def steps_per_epoch(self):
        return -(-self.x_train.shape[0] // self.batch_size)

    def step(self, i):
        model, g = self.model, self.generator
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.x_train.index_select(0, idx)
        c = None if self.c_train is None else self.c_train.index_select(0, idx)
        kw = dict(generator=g, device=self.device, dtype=model.dtype)
        if self.binarize:
            x = (torch.rand(x.shape, **kw) < x).to(model.dtype)
        eps = torch.randn((x.shape[0], model.latent_dim), **kw)
        # fill_ sets the KL weight without a host-to-device copy or a recompilation
        self._beta.fill_(warmup_beta(model.config.beta, self.steps_done, self.kl_warmup))
        self.opt.zero_grad(set_to_none=True)
        loss, recon, kl = self._loss_fn(x, eps, self._beta, c)
        loss.backward()
        bad = _nan_if_nonfinite([p.grad for p in self._params if p.grad is not None])
        self.opt.step()
        self.steps_done += 1
        return torch.stack([loss.detach() + bad, recon.detach(), kl.detach()])

    def to_floats(self, pending):
        if not len(pending):
            return np.zeros((0, 3))
        return torch.stack(pending).to("cpu", torch.float64).numpy().reshape(-1, 3)

    def check_x(self, x, name="x"):
        return self.model._check_x(x, name)

    def check_y(self, y, n, name="y"):
        return check_labels(self.model._reference, _host(y), n, name)

    def evaluate(self, x, y=None):
        return negative_elbo(self.model, x, seed=EVAL_SEED, y=y)

    def to_vae(self):
        """The current parameters as a NumPy VAE (a copy; NaN is copied, not refused)."""
        return self.model.to_numpy(check=False)

    # --- saving and restoring (NumPy arrays and JSON values only: no pickle) --------------

    def state_dict(self):
        """torch's optimizer state keyed by parameter name, the generator's state (uint8),
        steps taken and the current epoch's order, all as NumPy arrays and JSON values."""
        names = list(self.model.params)
        saved = self.opt.state_dict()
        return {
            "optimizer": {
                "state": {
                    names[i]: {key: _to_numpy(value) for key, value in entry.items()}
                    for i, entry in saved["state"].items()
                },
                "param_groups": [
                    {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
                    for group in saved["param_groups"]
                ],
            },
            "generator": self.generator.get_state().numpy().copy(),
            "steps_done": self.steps_done,
            "order": None if self.order is None else self.order.cpu().numpy().copy(),
        }

    def load_state_dict(self, state):
        """Restore a :meth:`state_dict`; everything is checked before anything changes."""
        keys = {"optimizer", "generator", "steps_done", "order"}
        if not isinstance(state, dict) or set(state) != keys:
            raise ValueError(f"not a TorchBackend state: expected {sorted(keys)}")
        params = self.model.params
        names = list(params)
        opt_state = state["optimizer"]
        try:
            entries, groups = opt_state["state"], opt_state["param_groups"]
            unknown = sorted(set(entries) - set(names))
            if unknown:
                raise ValueError(f"state for unknown parameters {unknown}")
            restored = {}
            for name, entry in entries.items():
                restored[names.index(name)] = {}
                for key, value in entry.items():
                    value = torch.from_numpy(np.array(value))
                    if key != "step" and tuple(value.shape) != tuple(params[name].shape):
                        raise ValueError(
                            f"{key} of {name} has shape {tuple(value.shape)}, expected "
                            f"{tuple(params[name].shape)}"
                        )
                    restored[names.index(name)][key] = value
            groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in groups]
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"the saved optimizer state is unusable: {err}") from None
        generator = np.asarray(state["generator"])
        if generator.dtype != np.uint8 or generator.ndim != 1:
            raise ValueError("the saved generator state is not a 1-D uint8 array")
        probe = torch.Generator(device=self.device)
        try:
            probe.set_state(torch.from_numpy(generator.copy()))
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"the saved generator state does not fit a generator on {self.device} "
                f"(was the run started on another device?): {err}"
            ) from None
        order = check_order(state["order"], self.x_train.shape[0])
        steps_done = check_steps_done(state["steps_done"])
        snapshot = self.opt.state_dict()
        try:
            self.opt.load_state_dict({"state": restored, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as err:
            self.opt.load_state_dict(snapshot)
            raise ValueError(f"the saved optimizer state is unusable: {err}") from None
        self.generator.set_state(probe.get_state())
        self.order = None if order is None else torch.from_numpy(
            order.astype(np.int64)).to(self.device)
        self.steps_done = steps_done


def _host(y):
    """Labels as a NumPy array on the host (they are checked there), or None."""
    return y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y


def _to_numpy(value):
    """A tensor of optimizer state as a NumPy array on the host (0-d stays 0-d)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return value
