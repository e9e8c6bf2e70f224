"""Priors p(z), each with the backward of its log-density (lessons 02, 04 and 07).

The VAE looks its prior up by name in :data:`PRIORS` (the configuration's ``prior``); the
formulas and their derivations are in :mod:`vae_from_scratch.distributions`.

A prior is a class (registered with :func:`register_prior`) with::

    name, description         its key in PRIORS; "a standard normal prior", for messages
    analytic_kl               True if KL(q || p) has a closed form for a diagonal Gaussian q
    per_dimension             True if log p(z) = sum_j log p_j(z_j): then the KL splits over
                              the latent dimensions, which free bits need
    configure(config)         classmethod: {field: value} it resolves; ValueError else
    param_shapes()            the parameters it adds: name -> (shape, init), init "zeros"
                              or "normal" (N(0, 1) draws)
    log_prob(params, z, c)    log p(z) per example: z (N, L) -> (N,)
    log_prob_backward(dlogp, params, z, c, grads)
                              dlogp (N,) -> dL/dz (N, L); its parameters' gradients go
                              into ``grads``
    sample(params, n, rng, c) n draws z ~ p(z): (n, L)
  per_dimension priors:
    log_prob_per_dim(params, z, c)      (N, L), summing to log_prob
    sample_kl_per_dim(params, z, mu, log_var, c)
                              the one-sample KL estimate of each dimension,
                              log q(z_j | x) - log p(z_j), for q = N(mu, diag exp(log_var))
  analytic_kl priors, for q = N(mu, diag exp(log_var)):
    kl(params, mu, log_var, c)          KL(q || p) per example (N,)
    kl_per_dim(params, mu, log_var, c)  each dimension's, (N, L)
    kl_backward(dkl, params, mu, log_var, c, grads) -> (dmu, dlog_var), each (N, L)

``c`` is the one-hot label (N, K) of a conditional model, or None. The priors here ignore it;
a prior that depends on the label (a learned p(z | y): a mean and a log-variance per class,
for the conditional VAE) reads it in each of these methods and needs nothing else: the
model hands every prior the label. The PyTorch mirror has one class per prior too, under
the same name (:mod:`vae_from_scratch.torch_vae.priors`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch.registry import Registry


class Prior:
    """p(z) over the latent codes; see the module docstring for the interface.

    An instance holds the model's configuration (``self.config``)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    analytic_kl: ClassVar[bool] = False
    per_dimension: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        return {}

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {}

    def log_prob(self, params: dict, z: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.log_prob")

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, z: np.ndarray,
                          c: np.ndarray | None, grads: dict) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.log_prob_backward")

    def sample(self, params: dict, n: int, rng: np.random.Generator,
               c: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.sample")

    def log_prob_per_dim(self, params: dict, z: np.ndarray,
                         c: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"the {self.name} prior does not split over dimensions")

    def sample_kl_per_dim(self, params: dict, z: np.ndarray, mu: np.ndarray,
                          log_var: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        return (dist.gaussian_log_density_per_dim(z, mu, log_var)
                - self.log_prob_per_dim(params, z, c))

    def kl(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
           c: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"the {self.name} prior has no analytic KL")

    def kl_per_dim(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
                   c: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"the {self.name} prior has no analytic KL")

    def kl_backward(self, dkl: np.ndarray, params: dict, mu: np.ndarray, log_var: np.ndarray,
                    c: np.ndarray | None, grads: dict) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"the {self.name} prior has no analytic KL")


#: The priors the configuration may name: name -> class.
PRIORS: Registry = Registry(Prior, "prior")
#: Add a Prior subclass to PRIORS under its name (a class decorator).
register_prior = PRIORS.register


@register_prior
class StandardNormal(Prior):
    """p(z) = N(0, I): no parameters, a KL in closed form (lesson 02)."""

    name = "standard"
    description = "a standard normal prior"
    analytic_kl = True
    per_dimension = True

    def log_prob(self, params: dict, z: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        return dist.gaussian_log_density(z, 0.0, 0.0)

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, z: np.ndarray,
                          c: np.ndarray | None, grads: dict) -> np.ndarray:
        return -dlogp[:, None] * z  # d/dz log N(z; 0, I) = -z

    def sample(self, params: dict, n: int, rng: np.random.Generator,
               c: np.ndarray | None = None) -> np.ndarray:
        return rng.standard_normal((n, self.config.latent_dim))

    def log_prob_per_dim(self, params: dict, z: np.ndarray,
                         c: np.ndarray | None = None) -> np.ndarray:
        return dist.gaussian_log_density_per_dim(z, 0.0, 0.0)

    def kl(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
           c: np.ndarray | None = None) -> np.ndarray:
        return dist.kl_standard_normal(mu, log_var)

    def kl_per_dim(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
                   c: np.ndarray | None = None) -> np.ndarray:
        return dist.kl_standard_normal_per_dim(mu, log_var)

    def kl_backward(self, dkl: np.ndarray, params: dict, mu: np.ndarray, log_var: np.ndarray,
                    c: np.ndarray | None, grads: dict) -> tuple[np.ndarray, np.ndarray]:
        return dist.kl_standard_normal_backward(dkl, mu, log_var)


@register_prior
class MixtureOfGaussians(Prior):
    """p(z) = sum_k softmax(logits)_k N(z; means_k, diag exp(log_vars_k)), learned with the
    model (lesson 07): ``prior.means`` (K, L) drawn from N(0, 1), ``prior.log_vars`` (K, L)
    and ``prior.logits`` (K,) starting at 0; K = ``n_components``. Its KL has no closed
    form and does not split over dimensions: the VAE estimates it by Monte Carlo."""

    name = "mixture"
    description = "a mixture-of-Gaussians prior"

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        k, l = self.config.n_components, self.config.latent_dim
        return {"prior.means": ((k, l), "normal"), "prior.log_vars": ((k, l), "zeros"),
                "prior.logits": ((k,), "zeros")}

    @staticmethod
    def _parts(params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return params["prior.means"], params["prior.log_vars"], params["prior.logits"]

    def log_prob(self, params: dict, z: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        return dist.mixture_log_density(z, *self._parts(params))

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, z: np.ndarray,
                          c: np.ndarray | None, grads: dict) -> np.ndarray:
        dz, grads["prior.means"], grads["prior.log_vars"], grads["prior.logits"] = (
            dist.mixture_log_density_backward(dlogp, z, *self._parts(params)))
        return dz

    def sample(self, params: dict, n: int, rng: np.random.Generator,
               c: np.ndarray | None = None) -> np.ndarray:
        """Pick a component k with probability pi_k, then z ~ N(means_k, var_k)."""
        means, log_vars, logits = self._parts(params)
        pi = np.exp(logits - dist.logsumexp(logits, axis=0))
        k = rng.choice(len(pi), size=n, p=pi / pi.sum())
        std = np.exp(0.5 * log_vars[k])
        return means[k] + std * rng.standard_normal((n, self.config.latent_dim))
