"""Likelihoods p(x | z): how the decoder's output scores the data, each with its backward.

The decoder's last layer gives ``out`` (N, D), one number per pixel, and a likelihood turns
it into a density for the data x (N, D): logits for the Bernoulli and the continuous
Bernoulli, the mean for the Gaussian. The VAE looks its likelihood up by name in
:data:`LIKELIHOODS` (the configuration's ``likelihood``); the formulas and their derivations
are in :mod:`vae_from_scratch.distributions` (lessons 04, 05 and 09).

A likelihood is a class (registered with :func:`register_likelihood`) with::

    name                      its key in LIKELIHOODS
    input_range               (low, high): the pixel values it is a density for; None: any
    configure(config)         classmethod: {field: value} of the configuration it resolves;
                              ValueError for a setting it cannot take
    param_shapes()            the parameters it adds: name -> (shape, init), init "zeros"
                              or "normal" (N(0, 1) draws)
    log_prob(params, x, out)  log p(x | z) per example, summed over pixels: (N,)
    log_prob_backward(dlogp, params, x, out, grads)
                              dlogp (N,) = dL/dlog p -> dL/dout (N, D); the gradients of
                              its own parameters go into ``grads``
    mean(params, out)         E[x | z], the pixel means (N, D)
    sample(params, out, rng)  a draw x ~ p(x | z), (N, D) in float64

``params`` is the model's whole parameter dict. The PyTorch mirror has one class per
likelihood too, under the same name (:mod:`vae_from_scratch.torch_vae.likelihoods`), so a
new likelihood is one class here, one there, and a test.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.layers import sigmoid
from vae_from_scratch.registry import Registry


class Likelihood:
    """p(x | z) for the decoder's output ``out``; see the module docstring for the interface.

    An instance holds the model's configuration (``self.config``) and its float dtype
    (``self.dtype``, np.float32 or np.float64).
    """

    name: ClassVar[str] = ""
    input_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def __init__(self, config: Any) -> None:
        self.config = config
        self.dtype = np.dtype(config.dtype).type

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        """The configuration fields this likelihood resolves, {field: value}. The default:
        no observation variance (``obs_var`` is the Gaussian's)."""
        # 1.0 was the stored default of every likelihood before obs_var became optional
        if config.obs_var not in (None, 1.0):
            raise ValueError(
                f"obs_var applies to likelihood='gaussian' only; got obs_var="
                f"{config.obs_var!r} with likelihood={config.likelihood!r}"
            )
        return {"obs_var": None}

    def check_range(self, low: float, high: float, name: str = "x") -> None:
        """ValueError unless data ranging over [low, high] lie in :attr:`input_range`."""
        if self.input_range is None:
            return
        lo, hi = self.input_range
        if low < lo or high > hi:
            raise ValueError(
                f"a {self.name.replace('_', ' ')} decoder needs pixel values in [{lo:g}, "
                f"{hi:g}]; {name} ranges over [{low:.4g}, {high:.4g}] (scale images by 1/255, "
                "or use likelihood='gaussian')"
            )

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {}

    def log_prob(self, params: dict, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.log_prob")

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, x: np.ndarray,
                          out: np.ndarray, grads: dict) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.log_prob_backward")

    def mean(self, params: dict, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.mean")

    def sample(self, params: dict, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.sample")


#: The likelihoods the configuration may name: name -> class.
LIKELIHOODS: Registry = Registry(Likelihood, "likelihood")
#: Add a Likelihood subclass to LIKELIHOODS under its name (a class decorator).
register_likelihood = LIKELIHOODS.register


@register_likelihood
class Bernoulli(Likelihood):
    """Each pixel 1 with probability sigmoid(out): ``out`` are logits (lessons 04-05).

    For grey pixels x in (0, 1) this is the binary cross-entropy, not a normalized density
    (see :class:`ContinuousBernoulli`)."""

    name = "bernoulli"

    def log_prob(self, params: dict, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return dist.bernoulli_log_likelihood(x, out)

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, x: np.ndarray,
                          out: np.ndarray, grads: dict) -> np.ndarray:
        return dist.bernoulli_log_likelihood_backward(dlogp, x, out)

    def mean(self, params: dict, out: np.ndarray) -> np.ndarray:
        return sigmoid(out)

    def sample(self, params: dict, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = self.mean(params, out).astype(np.float64)
        return (rng.random(mean.shape) < mean).astype(np.float64)


@register_likelihood
class Gaussian(Likelihood):
    """N(x; out, obs_var) per pixel: ``out`` is the mean; the variance is fixed
    (``obs_var`` a number, default 1) or learned per pixel (``obs_var="learned"``, the
    parameter ``dec.log_var`` (D,), starting at 0). Any real pixel values."""

    name = "gaussian"
    input_range = None

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        obs_var = config.obs_var
        if obs_var is None:
            return {"obs_var": 1.0}
        if obs_var != "learned" and not (
            isinstance(obs_var, (int, float, np.integer, np.floating))
            and not isinstance(obs_var, (bool, np.bool_))
            and obs_var > 0 and math.isfinite(obs_var)
        ):
            raise ValueError(f"obs_var must be a positive number or 'learned', got {obs_var!r}")
        return {}

    @property
    def learned(self) -> bool:
        return self.config.obs_var == "learned"

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"dec.log_var": ((self.config.input_dim,), "zeros")} if self.learned else {}

    def log_var(self, params: dict) -> np.ndarray | np.floating:
        """The log-variance: (D,) when learned, else a scalar in the model's dtype."""
        if self.learned:
            return params["dec.log_var"]
        return self.dtype(math.log(self.config.obs_var))

    def log_prob(self, params: dict, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return dist.gaussian_log_density(x, out, self.log_var(params))

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, x: np.ndarray,
                          out: np.ndarray, grads: dict) -> np.ndarray:
        _, d_out, d_log_var = dist.gaussian_log_density_backward(dlogp, x, out,
                                                                 self.log_var(params))
        if self.learned:  # one log-variance per pixel, shared by the rows
            grads["dec.log_var"] = d_log_var.sum(axis=0)
        return d_out

    def mean(self, params: dict, out: np.ndarray) -> np.ndarray:
        return out

    def sample(self, params: dict, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.learned:
            std = np.exp(0.5 * params["dec.log_var"].astype(np.float64))
        else:
            std = math.sqrt(self.config.obs_var)
        mean = self.mean(params, out).astype(np.float64)
        return mean + std * rng.standard_normal(mean.shape)


@register_likelihood
class ContinuousBernoulli(Likelihood):
    """CB(x; sigmoid(out)) per pixel, a normalized density on [0, 1] for grey pixels
    (lesson 10): the Bernoulli term plus log C(out). Its mean is not sigmoid(out)."""

    name = "continuous_bernoulli"

    def log_prob(self, params: dict, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return dist.continuous_bernoulli_log_likelihood(x, out)

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, x: np.ndarray,
                          out: np.ndarray, grads: dict) -> np.ndarray:
        return dist.continuous_bernoulli_log_likelihood_backward(dlogp, x, out)

    def mean(self, params: dict, out: np.ndarray) -> np.ndarray:
        return dist.continuous_bernoulli_mean(out)

    def sample(self, params: dict, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x = F^-1(u) for u ~ U(0, 1), the inverse of the CDF
        (:func:`~vae_from_scratch.distributions.continuous_bernoulli_quantile`)."""
        return dist.continuous_bernoulli_quantile(rng.random(np.shape(out)), out)
