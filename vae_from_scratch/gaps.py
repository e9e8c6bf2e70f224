r"""Where the ELBO loses nats: the approximation and amortization gaps (Cremer et al., 2018).

For one example x and a posterior family Q,

$$\log p(x) - \mathrm{ELBO}(q_\phi(\cdot|x))
  = \underbrace{\log p(x) - \max_{q\in Q}\mathrm{ELBO}(q)}_{\text{approximation gap}}
  + \underbrace{\max_{q\in Q}\mathrm{ELBO}(q) - \mathrm{ELBO}(q_\phi(\cdot|x))}_
    {\text{amortization gap}} .$$

The amortized q is the encoder's. The best q of the family is approached by optimizing that
example's local variational parameters (mu, log_var and, for an amortized flow, its
per-example parameters: ``posteriors.py``) with the decoder and every global parameter
frozen: Adam on the one-sample ELBO's reparameterized gradient, all examples at once (Adam is
elementwise, so the examples' optimisations are independent: the objective is the sum of
their ELBOs, not the mean, and no example's step depends on another's). It starts from the
encoder's output, so it can only improve on it (up to the noise of the estimates). log p(x)
is estimated by the importance-weighted bound with K samples (a lower bound whose slack falls
as K grows), drawn from the optimized q, the better proposal (the bound with the encoder's q
is kept too, to show the difference).

Each figure is a per-example array; :meth:`GapEstimate.summary` gives means over examples
with their standard errors. The model is a ``vae.VAE`` whose bottleneck has local
parameters: gaussian, planar or iaf (``flow_bottleneck.local_bottleneck``); unconditional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vae_from_scratch.distributions import logsumexp
from vae_from_scratch.evaluate import IWAE_ROWS
from vae_from_scratch.flow_bottleneck import local_bottleneck
from vae_from_scratch.optim import Adam
from vae_from_scratch.vae import VAE


def _checked(vae: VAE, x: Any) -> np.ndarray:
    if vae.config.n_classes is not None:
        raise ValueError("the gap estimate takes an unconditional model (n_classes=None)")
    local_bottleneck(vae)  # refuses a bottleneck without local parameters
    return vae.check_x(x)


def encode_local(vae: VAE, x: Any) -> dict:
    """x (N, D) -> the encoder's local parameters (dict of (N, ...) arrays)."""
    x = _checked(vae, x)
    h, _ = vae.encoder.forward(vae.params, x)
    return local_bottleneck(vae).local(vae.params, h)[0]


def _from_local(vae: VAE, x: np.ndarray, local: dict, eps: np.ndarray, kl_mode: str) -> tuple:
    bottleneck, p = local_bottleneck(vae), vae.params
    z, cache = bottleneck.sample(p, local, eps, None, kl_mode, h_dim=vae.encoder.out_dim)
    out, dec_cache = vae.decoder.forward(p, z)
    recon = -vae.likelihood.log_prob(p, x, out)
    return recon, bottleneck.rate(cache), (out, cache, dec_cache)


def local_elbo(vae: VAE, x: np.ndarray, local: dict, eps: np.ndarray,
               kl: str | None = None) -> np.ndarray:
    """The one-sample ELBO of each example, -(recon + kl), (N,), for given local parameters
    (any, not only the encoder's) and noise eps (N, L). ``kl``: the model's estimator by
    default."""
    recon, kl_values, _ = _from_local(vae, x, local, eps, vae.kl_mode_for(kl))
    return -(recon + kl_values)


def local_elbo_and_grads(vae: VAE, x: np.ndarray, local: dict, eps: np.ndarray,
                         kl: str | None = None) -> tuple[np.ndarray, dict]:
    """(elbo (N,), dlocal): dlocal[k] = d elbo_n / d local[k][n] for every example n, the
    gradient that the per-example optimisation climbs, by hand: the likelihood's, the
    decoder's and the bottleneck's backward with upstream -1 per example. The decoder's and
    the flow's parameters are held fixed (their gradients are computed and dropped)."""
    recon, kl_values, (out, cache, dec_cache) = _from_local(vae, x, local, eps,
                                                            vae.kl_mode_for(kl))
    minus = -np.ones_like(recon)
    grads = {}
    d_out = vae.likelihood.log_prob_backward(-minus, vae.params, x, out, grads)
    dz = vae.decoder.backward(d_out, dec_cache, grads)
    return -(recon + kl_values), local_bottleneck(vae).sample_backward(dz, minus, cache, grads)


def _rows(local, index):
    """The local parameters of the examples ``index`` (a slice or an index array)."""
    return {k: v[index] for k, v in local.items()}


def _repeat(local, k):
    """Each example's local parameters repeated k times (row i*k + j: example i)."""
    return {name: np.repeat(v, k, axis=0) for name, v in local.items()}


def _noise(rng, vae, n):
    return rng.standard_normal(vae.bottleneck.noise_shape(n)).astype(vae.dtype)


def optimize_local(model: VAE, x: np.ndarray, local: dict = None, *, steps: int = 500,
                   lr: float = 3e-2, samples: int = 1, seed: int = 0, kl: str | None = None,
                   decay: bool = True, trace_every: int = 0) -> tuple[dict, list]:
    """Maximize each example's ELBO over its own local parameters, decoder frozen.

    x (N, D); local: the starting point (default: the encoder's, :func:`encode_local`);
    steps of Adam with learning rate ``lr``, each on the mean of ``samples`` one-sample ELBO
    gradients (fresh noise from ``seed``); ``kl``: the model's estimator by default (analytic
    for a Gaussian posterior). ``decay``: the learning rate falls linearly to 0 over the
    steps, so that the last iterate settles instead of jittering with the gradient's noise.
    Returns (local, trace): the optimized local parameters (new arrays) and, every
    ``trace_every`` steps (0: never), the mean one-sample ELBO of the step, a list of
    (step, value). No loop over examples: every step is one batched pass.
    """
    x = _checked(model, x)
    local = encode_local(model, x) if local is None else local
    local = {k: np.array(v, dtype=model.dtype) for k, v in local.items()}
    opt = Adam(local, lr=lr)
    rng = np.random.default_rng(seed)
    n = len(x)
    x_rep = np.repeat(x, samples, axis=0) if samples > 1 else x
    trace = []
    for step in range(1, steps + 1):
        if decay:
            opt.lr = lr * (steps + 1 - step) / steps
        rep = _repeat(local, samples) if samples > 1 else local
        elbo, dlocal = local_elbo_and_grads(model, x_rep, rep,
                                            _noise(rng, model, n * samples), kl=kl)
        grads = {}
        for k, g in dlocal.items():  # ascent: minimize -sum_n ELBO_n
            g = g.reshape(n, samples, *g.shape[1:]).mean(axis=1) if samples > 1 else g
            grads[k] = (-g).astype(model.dtype, copy=False)
        opt.step(grads)
        if trace_every and (step % trace_every == 0 or step == 1):
            trace.append((step, float(np.mean(elbo))))
    return local, trace


def elbo_estimate(model: VAE, x: np.ndarray, local: dict, samples: int = 100, seed: int = 0,
                  kl: str | None = None, rows: int | None = None) -> np.ndarray:
    """Each example's ELBO for its local parameters, the mean of ``samples`` one-sample
    estimates: (N,) float64. ``rows`` bounds the rows (examples x samples) per pass."""
    rng = np.random.default_rng(seed)
    return _per_example(model, x, local, samples, rng, rows,
                        lambda lw: lw.mean(axis=1), kl)


def iwae_log_px(model: VAE, x: np.ndarray, local: dict, k: int = 1000, seed: int = 0,
                rows: int | None = None) -> np.ndarray:
    """The importance-weighted lower bound on log p(x) with K = ``k`` samples of the q given
    by ``local`` as the proposal: log (1/K) sum_k p(x, z_k) / q(z_k|x), (N,) float64."""
    rng = np.random.default_rng(seed)
    return _per_example(model, x, local, k, rng, rows,
                        lambda lw: logsumexp(lw, axis=1) - np.log(lw.shape[1]), "monte_carlo")


def _per_example(model, x, local, k, rng, rows, reduce, kl):
    """reduce(log weights (n, k)) for consecutive blocks of examples, k rows each."""
    x = _checked(model, x)
    rows = rows or IWAE_ROWS[model.config.architecture]
    block = max(1, rows // k)
    out = []
    for start in range(0, len(x), block):
        index = slice(start, start + block)
        xb = x[index]
        n = len(xb)
        log_w = local_elbo(model, np.repeat(xb, k, axis=0), _repeat(_rows(local, index), k),
                           _noise(rng, model, n * k), kl=kl)
        out.append(reduce(np.asarray(log_w, dtype=np.float64).reshape(n, k)))
    return np.concatenate(out)


@dataclass
class GapEstimate:
    """Per-example figures (N,) in nats, float64.

    log_px: the IWAE estimate of log p(x), K samples of the optimized q; elbo_amortized: the
    ELBO of the encoder's q; elbo_optimized: the ELBO of the per-example optimized q;
    iwae_amortized: the IWAE bound with K samples of the encoder's q instead.
    """

    log_px: np.ndarray
    elbo_amortized: np.ndarray
    elbo_optimized: np.ndarray
    iwae_amortized: np.ndarray

    @property
    def approximation_gap(self) -> np.ndarray:
        """log p(x) - ELBO(best q of the family), per example."""
        return self.log_px - self.elbo_optimized

    @property
    def amortization_gap(self) -> np.ndarray:
        """ELBO(best q) - ELBO(encoder's q), per example."""
        return self.elbo_optimized - self.elbo_amortized

    @property
    def inference_gap(self) -> np.ndarray:
        """log p(x) - ELBO(encoder's q) = the sum of the two."""
        return self.log_px - self.elbo_amortized

    def summary(self) -> dict[str, tuple[float, float]]:
        """dict name -> (mean over examples, standard error of that mean)."""
        n = len(self.log_px)
        figures = {
            "log_px": self.log_px,
            "elbo_amortized": self.elbo_amortized,
            "elbo_optimized": self.elbo_optimized,
            "approximation_gap": self.approximation_gap,
            "amortization_gap": self.amortization_gap,
            "inference_gap": self.inference_gap,
            "iwae_amortized": self.iwae_amortized,
        }
        return {k: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else
                    float("nan")) for k, v in figures.items()}


def estimate_gaps(model: VAE, x: np.ndarray, *, steps: int = 500, lr: float = 3e-2,
                  samples: int = 1, elbo_samples: int = 100, k: int = 1000,
                  seed: int = 0) -> GapEstimate:
    """The two gaps of ``model`` on the examples x (N, D): a :class:`GapEstimate`.

    The encoder's local parameters are optimized per example (:func:`optimize_local`:
    ``steps``, ``lr``, ``samples``); both ELBOs are then estimated with the same
    ``elbo_samples`` noise draws per example (:func:`elbo_estimate`), and log p(x) by IWAE
    with ``k`` samples from the optimized q (and, for comparison, from the encoder's).
    """
    x = _checked(model, x)
    amortized = encode_local(model, x)
    optimized, _ = optimize_local(model, x, amortized, steps=steps, lr=lr, samples=samples,
                                  seed=seed)
    elbo_a = elbo_estimate(model, x, amortized, elbo_samples, seed=seed + 1)
    elbo_o = elbo_estimate(model, x, optimized, elbo_samples, seed=seed + 1)
    log_px = iwae_log_px(model, x, optimized, k, seed=seed + 2)
    iwae_a = iwae_log_px(model, x, amortized, k, seed=seed + 2)
    return GapEstimate(log_px, elbo_a, elbo_o, iwae_a)
