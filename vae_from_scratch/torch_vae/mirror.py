"""The PyTorch mirror of the NumPy VAE (lesson 06).

:class:`TorchVAE` is the model of ``vae.py`` written with torch tensors, so that autograd
computes the gradients that ``VAE.loss_and_grads`` derives by hand. The two share
everything that is not arithmetic:

* the configuration is the same :class:`~vae_from_scratch.config.VAEConfig`;
* the parameters have the same names, shapes and layout (``W`` is (D_in, D_out) and a
  layer computes ``x @ W + b``), so ``TorchVAE.from_numpy(vae)`` and ``.to_numpy()`` copy
  them bit for bit;
* fresh models are initialised by the NumPy code, so ``TorchVAE(seed=s)`` and
  ``VAE(seed=s)`` start from the same numbers;
* the networks are the NumPy model's descriptions (``networks.build_networks``), run with
  torch ops; the likelihood, prior and bottleneck are the torch classes registered under the
  configuration's names (``likelihoods.py``, ``priors.py``, ``bottleneck.py`` here);
* the input checks and their messages are the NumPy model's.

With the same parameters and the same noise ``eps``, loss and gradients agree with the
NumPy model to round-off (``tests/test_torch_parity.py``; ``vae-course compare``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae_from_scratch.config import VAEConfig, check_beta
from vae_from_scratch.evaluate import batches
from vae_from_scratch.networks import Layer, Network
from vae_from_scratch.torch_vae.bottleneck import TorchGaussianBottleneck
from vae_from_scratch.torch_vae.devices import (
    TORCH_DTYPES,
    check_device_dtype,
    dtype_name,
    resolve_device,
)
from vae_from_scratch.torch_vae.likelihoods import TORCH_LIKELIHOODS
from vae_from_scratch.torch_vae.priors import TORCH_PRIORS
from vae_from_scratch.vae import VAE, LossTerms, param_shapes


@dataclass(frozen=True)
class TorchLossTerms:
    """Batch means as torch scalars, in nats per example: ``loss = recon + beta * kl``.

    ``loss`` carries the autograd graph; call ``.loss.backward()`` for the gradients.
    """

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor

    def to_floats(self) -> LossTerms:
        """The same terms as a NumPy-side :class:`~vae_from_scratch.vae.LossTerms` of floats."""
        return LossTerms(*(float(t.detach()) for t in (self.loss, self.recon, self.kl)))


# --- the networks, with torch ops -----------------------------------------------------------


def _key(name: str) -> str:
    """Parameter name -> ParameterDict key ('enc.0.W' -> 'enc__0__W'): keys may not hold dots."""
    return name.replace(".", "__")


def layer_forward(layer: Layer, p: dict, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
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


def network_forward(network: Network, p: dict, x: torch.Tensor,
                    c: torch.Tensor | None) -> torch.Tensor:
    """Run a :class:`~vae_from_scratch.networks.Network` with torch ops."""
    for layer in network.layers:
        x = layer_forward(layer, p, x, c)
    return x


def _host(y: Any) -> Any:
    """Labels as a NumPy array on the host (they are checked there), or None."""
    return y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y


def _torch_part(registry: dict, name: str, what: str) -> type:
    if name not in registry:
        raise ValueError(f"the {what} {name!r} has no PyTorch class: register one with "
                         f"vae_from_scratch.torch_vae.{what}s.register_torch_{what}")
    return registry[name]


class TorchVAE(nn.Module):
    """The VAE of ``vae.py`` in PyTorch, with the same configuration and parameters.

    Example::

        vae = VAE(input_dim=784, hidden_dims=(400,), latent_dim=20, seed=0)
        tvae = TorchVAE.from_numpy(vae)           # exact copy; tvae.to_numpy() goes back
        terms = tvae.loss(x, eps)                 # .loss, .recon, .kl: torch scalars
        terms.loss.backward()                     # tvae.params[name].grad: dLoss/dparam

    The constructor takes the arguments of :class:`~vae_from_scratch.vae.VAE` (the fields
    of VAEConfig as keywords, or a ``config``) plus ``device`` (default:
    :func:`~vae_from_scratch.torch_vae.devices.default_device`) and ``dtype`` (torch or NumPy
    float32/float64; default: the configuration's, else float32). ``params``, if given, is a
    dict name -> array or tensor; otherwise the NumPy initialisation with ``seed`` is used,
    so ``TorchVAE(seed=s)`` equals ``TorchVAE.from_numpy(VAE(seed=s))``. The networks run
    with ``addmm`` for Linear, ``F.conv2d`` and ``F.conv_transpose2d`` for the convolutions.

    Parameters live in ``self.weights``, an ``nn.ParameterDict`` whose keys are the NumPy
    names with '.' replaced by '__'; ``self.params`` maps the NumPy names to them.
    Public methods accept tensors or NumPy arrays and check them (shape, NaN, pixel range,
    labels) like the NumPy model does; a conditional model takes labels ``y`` last.
    """

    def __init__(self, input_dim: int = 784, hidden_dims: Any = None, latent_dim: int = 20, *,
                 seed: int = 0, dtype: Any = None, device: Any = None,
                 config: VAEConfig | None = None, params: dict | None = None,
                 **options: Any) -> None:
        super().__init__()
        if config is None:
            config = VAEConfig.from_arguments(input_dim, hidden_dims, latent_dim,
                                              dtype_name(torch.float32 if dtype is None
                                                         else dtype), options)
        elif options:
            raise TypeError(f"give a config or the options {', '.join(options)}, not both")
        elif dtype is not None:
            config = replace(config, dtype=dtype_name(dtype))
        device = resolve_device(device)
        torch_dtype = TORCH_DTYPES[config.dtype]
        check_device_dtype(device, torch_dtype)
        if params is not None:
            params = {
                name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
                for name, value in params.items()
            }
        # the NumPy model validates the configuration and the params, or draws fresh ones;
        # its networks are the ones this model runs, its checks the ones this model makes
        self.reference = VAE(config=config, params=params, seed=seed)
        self.config = config
        self.encoder, self.decoder = self.reference.encoder, self.reference.decoder
        self.likelihood = _torch_part(TORCH_LIKELIHOODS, config.likelihood, "likelihood")(config)
        prior = _torch_part(TORCH_PRIORS, config.prior, "prior")(config)
        self.bottleneck = TorchGaussianBottleneck(config, prior)
        self.weights = nn.ParameterDict(
            {
                _key(name): nn.Parameter(torch.tensor(value, dtype=torch_dtype, device=device))
                for name, value in self.reference.params.items()
            }
        )

    # --- conversion -----------------------------------------------------------------------

    @classmethod
    def from_numpy(cls, vae: VAE, device: Any = None, dtype: Any = None) -> TorchVAE:
        """An exact copy of the NumPy model ``vae`` (same dtype unless ``dtype`` is given)."""
        return cls(config=vae.config, params=vae.params, device=device, dtype=dtype)

    def to_numpy(self, check: bool = True) -> VAE:
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
    def params(self) -> dict[str, torch.Tensor]:
        """dict NumPy name -> parameter tensor (the live parameters, not copies)."""
        return {key.replace("__", "."): p for key, p in self.weights.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.weights.values())).dtype

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """dict name -> shape that this configuration requires."""
        return param_shapes(self.config)

    # --- input checks: the NumPy model's, on tensors too ----------------------------------

    def as_tensor(self, a: Any) -> torch.Tensor:
        """``a`` (array or tensor) as a tensor in this model's dtype, on its device."""
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def check_x(self, x: Any, name: str = "x") -> torch.Tensor:
        """Data x (N, D) as a tensor on the device, checked as ``VAE.check_x`` does."""
        if not isinstance(x, torch.Tensor):
            self.reference.check_x(x, name)  # the NumPy model's checks and messages
            return self.as_tensor(x)
        if x.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {x.dtype}")
        x = self.as_tensor(x)
        d = self.config.input_dim
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"{name} must have shape (N, {d}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty: expected at least one row")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.reference.likelihood.input_range is not None:
            self.reference.likelihood.check_range(float(x.min()), float(x.max()), name)
        return x

    def check_latent(self, a: Any, n: int | None, name: str) -> torch.Tensor:
        """A latent tensor of shape (n, L) on the device, checked; ValueError otherwise."""
        if isinstance(a, torch.Tensor) and a.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {a.dtype}")
        a = self.as_tensor(a)
        if n is None:
            n = a.shape[0] if a.ndim == 2 else "N"
        if a.ndim != 2 or tuple(a.shape) != (n, self.latent_dim):
            raise ValueError(
                f"{name} must have shape ({n}, {self.latent_dim}), got {tuple(a.shape)}"
            )
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return a

    def check_y(self, y: Any, n: int, name: str = "y") -> torch.Tensor | None:
        """Labels (n,) -> one-hot tensor (n, K) on the device for a conditional model."""
        c = self.reference.check_y(_host(y), n, name)  # the NumPy model's checks, messages
        return None if c is None else self.as_tensor(c)

    # --- the forward pass (unchecked: the training step's fast path) ----------------------

    def _forward(self, x: torch.Tensor, eps: torch.Tensor, kl_mode: str,
                 c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """recon (N,) = -log p(x|z), kl (N,) and the bottleneck's cache; no input checks."""
        p = self.params
        h = network_forward(self.encoder, p, x, c)
        z, cache = self.bottleneck.forward(p, h, eps, c, kl_mode)
        recon = -self.likelihood.log_prob(p, x, network_forward(self.decoder, p, z, c))
        return recon, self.bottleneck.rate(cache), cache

    def per_example(self, x: torch.Tensor, eps: torch.Tensor, kl_mode: str,
                    c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """recon (N,) = -log p(x|z) and kl (N,) for x (N, D), eps (N, L); no input checks."""
        return self._forward(x, eps, kl_mode, c)[:2]

    def batch_loss(self, x: torch.Tensor, eps: torch.Tensor, beta: float | torch.Tensor,
                   c: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(loss, recon, kl) batch means for the training step; ``beta`` a float or tensor.
        No input checks: the caller has made them."""
        recon, kl, cache = self._forward(x, eps, self.config.kl_mode, c)
        recon_mean = recon.mean()
        return recon_mean + beta * self.bottleneck.charged_kl(kl, cache), recon_mean, kl.mean()

    # --- the public forward pass ----------------------------------------------------------

    def encode(self, x: Any, y: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, D) [, labels y (N,)] -> mu (N, L), log_var (N, L): the parameters of q(z|x)."""
        x = self.check_x(x)
        p = self.params
        return self.bottleneck.encode(p, network_forward(self.encoder, p, x,
                                                         self.check_y(y, x.shape[0])))

    def decode(self, z: Any, y: Any = None) -> torch.Tensor:
        """z (N, L) [, labels y (N,)] -> the likelihood's parameters (N, D): logits, or the
        Gaussian mean."""
        z = self.check_latent(z, None, "z")
        return network_forward(self.decoder, self.params, z, self.check_y(y, z.shape[0]))

    def decode_mean(self, z: Any, y: Any = None) -> torch.Tensor:
        """z (N, L) [, labels y (N,)] -> the decoder's pixel means (N, D)."""
        return self.likelihood.mean(self.params, self.decode(z, y))

    def elbo_terms(self, x: Any, eps: Any, y: Any = None, *,
                   kl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example ``recon`` (N,) = -log p(x|z) and ``kl`` (N,); kl=None uses the
        model's estimator, 'monte_carlo' gives log q(z|x) - log p(z) at the sampled z."""
        x = self.check_x(x)
        eps = self.check_latent(eps, x.shape[0], "eps")
        c = self.check_y(y, x.shape[0])
        return self.per_example(x, eps, self.reference.kl_mode_for(kl), c)

    def loss(self, x: Any, eps: Any, y: Any = None, *,
             beta: float | None = None) -> TorchLossTerms:
        """:class:`TorchLossTerms` of a batch: means over examples of recon, KL and
        recon + beta * KL. x (N, D) data, eps (N, L) noise, y (N,) labels of a conditional
        model; ``beta`` overrides the configured KL weight for this call (KL warm-up)."""
        x = self.check_x(x)
        eps = self.check_latent(eps, x.shape[0], "eps")
        c = self.check_y(y, x.shape[0])
        beta = self.config.beta if beta is None else check_beta(beta)
        return TorchLossTerms(*self.batch_loss(x, eps, beta, c))

    def forward(self, x: Any, eps: Any, y: Any = None, *,
                beta: float | None = None) -> TorchLossTerms:
        """Same as :meth:`loss`."""
        return self.loss(x, eps, y, beta=beta)

    # --- using a trained model ------------------------------------------------------------

    def _generator(self, seed: int | torch.Generator) -> torch.Generator:
        if isinstance(seed, torch.Generator):
            return seed
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @torch.no_grad()
    def sample_prior(self, n: int, seed: int | torch.Generator = 0, y: Any = None) -> torch.Tensor:
        """n latent vectors drawn from p(z) [given labels y (n,)]: (n, L). ``seed``: an int
        or a torch.Generator on the model's device. (Not the same draws as NumPy's.)"""
        n = int(n)
        c = self.check_y(y, n) if y is not None else None
        return self.bottleneck.prior.sample(self.params, n, self._generator(seed), c,
                                            self.device, self.dtype)

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, seed: int | torch.Generator = 0) -> torch.Tensor:
        """Decode n draws from the prior; returns pixel means (n, D). A conditional model
        needs labels y: (n,) integers, or one integer for all n."""
        n, c = self.reference.check_sample_args(n, _host(y))  # the NumPy model's checks
        c = None if c is None else self.as_tensor(c)
        p = self.params
        z = self.bottleneck.prior.sample(p, n, self._generator(seed), c, self.device, self.dtype)
        return self.likelihood.mean(p, network_forward(self.decoder, p, z, c))

    @torch.no_grad()
    def reconstruct(self, x: Any, y: Any = None) -> torch.Tensor:
        """Decode the posterior mean: x (N, D) [, labels y (N,)] -> pixel means (N, D)."""
        x = self.check_x(x)
        c = self.check_y(y, x.shape[0])
        p = self.params
        z = self.bottleneck.code(p, network_forward(self.encoder, p, x, c))
        return self.likelihood.mean(p, network_forward(self.decoder, p, z, c))

    def extra_repr(self) -> str:
        return f"{self.reference!r}, device={self.device}"


@torch.no_grad()
def negative_elbo(model: TorchVAE, x: Any, seed: int = 0, batch_size: int = 1000,
                  y: Any = None) -> tuple[float, float, float]:
    """Mean over examples of recon + KL (beta = 1), as
    :func:`vae_from_scratch.evaluate.negative_elbo`, with the very same noise (drawn by
    NumPy from ``seed``), so both backends report the same figure for the same parameters.
    ``y``: labels of a conditional model. Returns (nelbo, recon, kl) as floats; the host
    waits for the device once."""
    x = model.check_x(x)
    c = model.check_y(y, x.shape[0])
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(model.config.dtype)
    recon_sum = torch.zeros((), dtype=torch.float64, device=model.device)
    kl_sum = torch.zeros((), dtype=torch.float64, device=model.device)
    for xb, cb in batches(x, c, batch_size):
        eps = rng.standard_normal(model.bottleneck.noise_shape(xb.shape[0])).astype(np_dtype)
        recon, kl = model.per_example(xb, model.as_tensor(eps), model.config.kl_mode, cb)
        recon_sum += recon.sum(dtype=torch.float64)
        kl_sum += kl.sum(dtype=torch.float64)
    n = x.shape[0]
    recon_total, kl_total = torch.stack([recon_sum, kl_sum]).cpu().tolist()
    return (recon_total + kl_total) / n, recon_total / n, kl_total / n
