"""Priors p(z), each with the backward of its log-density (lessons 02, 04 and 07).

The VAE looks its prior up by name in :data:`PRIORS` (the configuration's ``prior``); the
formulas and their derivations are in :mod:`vae_from_scratch.distributions`.

A prior is a class (registered with :func:`register_prior`) with::

    name, description         its key in PRIORS; "a standard normal prior", for messages
    analytic_kl               True if KL(q || p) has a closed form for a diagonal Gaussian q
    per_dimension             True if log p(z) = sum_j log p_j(z_j): then the KL splits over
                              the latent dimensions, which free bits need
    configure(config)         classmethod: {field: value} it resolves; ValueError else
    param_shapes()            the parameters it adds: name -> (shape, init), init "zeros",
                              "normal" (N(0, 1) draws) or "identity" (in the last two axes)
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

  priors set in closed form rather than by gradient:
    fitted                    the names of the parameters that ``refit`` sets; the training
                              backends leave them out of the optimizer (their gradients are
                              still computed and checked, like every other)
    refit(params, mu, log_var, c)
                              set them, in place, from the posteriors q(z|x) = N(mu, diag
                              exp(log_var)) of the whole training set; the training loop
                              calls it at the end of every epoch (``train.fit``)

``c`` is the one-hot label (N, K) of a conditional model, or None. The standard and mixture
priors ignore it; :class:`ClassGaussian`, the prior p(z | y) of the conditional VAE, reads it
in each of these methods and needs nothing else: the model hands every prior the label. The
PyTorch mirror has one class per prior too, under the same name
(:mod:`vae_from_scratch.torch_vae.priors`).
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
    fitted: ClassVar[tuple[str, ...]] = ()

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

    def refit(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
              c: np.ndarray | None) -> None:
        """Set the :attr:`fitted` parameters from the training set's posteriors (none here)."""


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


@register_prior
class ClassGaussian(Prior):
    """p(z | y) = N(m_y, C_y), one full-covariance Gaussian per class y, set in closed form:
    the conditional VAE's prior (lesson 09).

    Parameters: ``prior.class_means`` (K, L), the m_y, and ``prior.class_chol`` (K, L, L),
    lower-triangular A_y with C_y = A_y A_y^T (only the lower triangle is read); they start
    at m_y = 0, A_y = I, the standard normal for every class.

    **Fitted, not trained.** For a fixed encoder, the ELBO depends on the prior only through
    -sum_n KL(q(z|x_n) || p(z|y_n)), and the Gaussian that minimises that sum over the
    examples of class y is the moment match of the class's aggregate posterior:

        m_y = mean of mu_n,    C_y = covariance of mu_n + mean of diag(sigma_n^2)

    over the n with y_n = y (the mean and covariance of the mixture (1/N_y) sum_n q(z|x_n)).
    :meth:`refit` sets them so at the end of every epoch: an exact M-step, with no learning
    rate and no optimizer state. A class absent from the data keeps its values.

    Why full covariance: the class lives in the correlations between code dimensions; a
    diagonal Gaussian per class puts mass where no code of that class lies, and its samples
    are read as the digit asked for less often (``benchmarks/conditional_agreement.py``).

    Its KL to q = N(mu, diag sigma^2), with delta = mu - m_y and C = C_y::

        KL = 1/2 [tr(C^-1 diag sigma^2) + delta^T C^-1 delta - L + log det C - sum_j log sigma_j^2]

    does not split over dimensions, so free bits are refused.
    """

    name = "class_gaussian"
    description = "a full-covariance Gaussian prior per class"
    analytic_kl = True
    fitted = ("prior.class_means", "prior.class_chol")

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        if config.n_classes is None:
            raise ValueError("the class_gaussian prior is a prior p(z | y) per label: it needs "
                             "a conditional model (n_classes, --conditional)")
        return {}

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        k, l = self.config.n_classes, self.config.latent_dim
        return {"prior.class_means": ((k, l), "zeros"), "prior.class_chol": ((k, l, l), "identity")}

    # --- the pieces every formula uses ----------------------------------------------------

    @staticmethod
    def _factors(params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A (K, L, L) lower-triangular, A^-1 (K, L, L), log det C (K,))."""
        a = np.tril(params["prior.class_chol"])
        eye = np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape)
        a_inv = np.linalg.solve(a, eye)
        log_det = 2.0 * np.sum(np.log(np.abs(np.diagonal(a, axis1=1, axis2=2))), axis=1)
        return a, a_inv, log_det

    @staticmethod
    def _labels(c: np.ndarray | None) -> np.ndarray:
        if c is None:
            raise ValueError("the class_gaussian prior needs the labels: p(z | y) is one "
                             "Gaussian per class")
        return np.argmax(c, axis=1)

    def _whiten(self, params: dict, v: np.ndarray, c: np.ndarray | None) -> tuple:
        """delta = v - m_y (N, L) and u = A_y^-1 delta (N, L), with the labels y and the
        factors; u.u = delta^T C_y^-1 delta."""
        y = self._labels(c)
        a, a_inv, log_det = self._factors(params)
        delta = v - params["prior.class_means"][y]
        u = np.einsum("nij,nj->ni", a_inv[y], delta)
        return y, a, a_inv, log_det, delta, u

    @staticmethod
    def _class_sums(c: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """sum over the n of each class of rows_n, (K, *rows.shape[1:]): c^T rows."""
        flat = c.T.astype(rows.dtype) @ rows.reshape(len(rows), -1)
        return flat.reshape(c.shape[1], *rows.shape[1:])

    def _parameter_grads(self, c: np.ndarray, w: np.ndarray, a_inv: np.ndarray,
                         dmean: np.ndarray, outer: np.ndarray, grads: dict) -> None:
        """The prior's gradients of sum_n w_n F_n, for F_n = 1/2 (tr(C^-1 M_n) + log det C)
        + (terms in m_y) with C = C_{y_n}: ``dmean`` (N, L) holds the rows of dF/dm_y,
        ``outer`` (N, L, L) the w_n M_n. From d/dC = 1/2 (w C^-1 - C^-1 (w M) C^-1) and
        C = A A^T, d/dA = 2 (d/dC) A = w A^-T - C^-1 (w M) A^-T, lower triangle."""
        grads["prior.class_means"] = self._class_sums(c, dmean)
        a_inv_t = np.swapaxes(a_inv, 1, 2)
        weight = self._class_sums(c, w[:, None])[:, 0]  # (K,)
        m_sum = self._class_sums(c, outer)  # (K, L, L)
        grads["prior.class_chol"] = np.tril(weight[:, None, None] * a_inv_t
                                            - a_inv_t @ a_inv @ m_sum @ a_inv_t)

    # --- the interface --------------------------------------------------------------------

    def log_prob(self, params: dict, z: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        y, _, _, log_det, _, u = self._whiten(params, z, c)
        return -0.5 * (z.shape[1] * dist.LOG_2PI + log_det[y] + np.sum(u * u, axis=1))

    def log_prob_backward(self, dlogp: np.ndarray, params: dict, z: np.ndarray,
                          c: np.ndarray | None, grads: dict) -> np.ndarray:
        """d log p / dz = -C^-1 (z - m); d/dm = C^-1 (z - m); d/dC = 1/2 (C^-1 delta delta^T
        C^-1 - C^-1)."""
        y, _, a_inv, _, delta, u = self._whiten(params, z, c)
        c_inv_delta = np.einsum("nji,nj->ni", a_inv[y], u)  # A^-T u = C^-1 delta
        # log p = -F with F_n = 1/2 (delta^T C^-1 delta + log det C): the sign of dlogp flips
        w = -dlogp
        self._parameter_grads(c, w, a_inv, dlogp[:, None] * c_inv_delta,
                              w[:, None, None] * delta[:, :, None] * delta[:, None, :], grads)
        return -dlogp[:, None] * c_inv_delta

    def sample(self, params: dict, n: int, rng: np.random.Generator,
               c: np.ndarray | None = None) -> np.ndarray:
        """z = m_y + A_y eps, eps ~ N(0, I): one draw of p(z | y) per row of c."""
        y = self._labels(c)
        a = np.tril(params["prior.class_chol"])
        eps = rng.standard_normal((n, self.config.latent_dim))
        return params["prior.class_means"][y] + np.einsum("nij,nj->ni", a[y], eps)

    def kl(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
           c: np.ndarray | None = None) -> np.ndarray:
        y, _, a_inv, log_det, _, u = self._whiten(params, mu, c)
        c_inv_diag = np.sum(a_inv * a_inv, axis=1)  # (K, L): column sums of (A^-1)^2
        trace = np.sum(c_inv_diag[y] * np.exp(log_var), axis=1)
        return 0.5 * (trace + np.sum(u * u, axis=1) - mu.shape[1] + log_det[y]
                      - np.sum(log_var, axis=1))

    def kl_backward(self, dkl: np.ndarray, params: dict, mu: np.ndarray, log_var: np.ndarray,
                    c: np.ndarray | None, grads: dict) -> tuple[np.ndarray, np.ndarray]:
        """dKL/dmu = C^-1 delta, dKL/dlog_var = 1/2 (diag(C^-1) sigma^2 - 1), dKL/dm =
        -C^-1 delta, dKL/dC = 1/2 (C^-1 - C^-1 (diag sigma^2 + delta delta^T) C^-1)."""
        y, _, a_inv, _, delta, u = self._whiten(params, mu, c)
        var = np.exp(log_var)
        c_inv_delta = np.einsum("nji,nj->ni", a_inv[y], u)
        c_inv_diag = np.sum(a_inv * a_inv, axis=1)
        dmu = dkl[:, None] * c_inv_delta
        dlog_var = 0.5 * dkl[:, None] * (c_inv_diag[y] * var - 1.0)
        outer = delta[:, :, None] * delta[:, None, :]
        idx = np.arange(mu.shape[1])
        outer[:, idx, idx] += var
        self._parameter_grads(c, dkl, a_inv, -dmu, dkl[:, None, None] * outer, grads)
        return dmu, dlog_var

    def refit(self, params: dict, mu: np.ndarray, log_var: np.ndarray,
              c: np.ndarray | None) -> None:
        """m_y = mean of mu, C_y = cov of mu + mean of sigma^2 (on the diagonal), over each
        class's rows, in float64; A_y = cholesky(C_y), written into ``params`` in place."""
        y = self._labels(c)
        mu = np.asarray(mu, dtype=np.float64)
        var = np.exp(np.asarray(log_var, dtype=np.float64))
        for k in np.unique(y):
            rows = y == k
            m = mu[rows].mean(axis=0)
            centred = mu[rows] - m
            cov = centred.T @ centred / rows.sum() + np.diag(var[rows].mean(axis=0))
            params["prior.class_means"][k] = m
            params["prior.class_chol"][k] = np.linalg.cholesky(cov)
