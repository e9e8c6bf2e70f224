r"""Normalizing flows for the posterior, forward and backward by hand (lesson 12).

**Change of variables.** Push a sample z of a density q through an invertible, smooth map
f: z' = f(z). Its density is

$$\log q'(z') = \log q(z) - \log\left|\det \frac{\partial f}{\partial z}\right| ,$$

so after K steps z_K = f_K(...f_1(z_0)) from z_0 ~ N(mu, diag sigma^2),
log q_K(z_K) = log q_0(z_0) - sum_k log|det J_k|. Each step here returns its z' and its
log|det J| per example; the posterior subtracts their sum (the sign that lesson 12's check
guards). Two families, each cheap to invert-or-not and with a determinant in O(L):

**Planar** (Rezende and Mohamed, 2015): z' = z + u_hat tanh(w^T z + b). By the matrix
determinant lemma det(I + u_hat psi^T) = 1 + u_hat^T psi with psi = (1 - tanh^2(w^T z + b)) w.
The map is invertible when w^T u_hat >= -1; any u becomes such a u_hat by

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,   m(a) = -1 + softplus(a),

which sets w^T u_hat = m(w^T u) > -1 and leaves the part of u orthogonal to w alone.

**Inverse autoregressive flow** (Kingma et al., 2016): a MADE (``made.py``) reads z (and a
context from the encoder) and outputs, for each dimension i, m_i and s_i that depend on
z_1..z_{i-1} only. The step is the gated update z'_i = sigma_i z_i + (1 - sigma_i) m_i with
sigma_i = sigmoid(s_i). dz'_i/dz_j = 0 for j > i (m_i, sigma_i do not see z_j, j >= i), so
the Jacobian is triangular with diagonal sigma_i, and its log-determinant is the sum
sum_i log sigma_i: no determinant is ever computed. Successive steps reverse the order, so
that every dimension gets to depend on every other one.

Conventions: a batch of N rows, L latent dimensions. Every ``forward`` returns
``(z_new (N, L), log_det (N,), cache)``; every ``backward(dz_new, dlog_det, cache, ...)``
takes the upstream gradients of both outputs and returns the gradients of the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vae_from_scratch.distributions import softplus
from vae_from_scratch.layers import sigmoid
from vae_from_scratch.made import MADE, hidden_degrees, position_degrees

#: The gate's initial bias in an IAF step: sigma = sigmoid(s) starts near sigmoid(5) = 0.99,
#: so a fresh step is close to the identity (Kingma et al. start the gate near 1 for the same
#: reason). Measured (``benchmarks/lesson12_gaps.py``): from sigmoid(1) = 0.73, eight steps
#: shrink z at the start and the model trains to a worse bound than the Gaussian VAE.
IAF_GATE_BIAS = 5.0


# --- planar flow ----------------------------------------------------------------------------


def planar_u_hat(u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, tuple]:
    """The invertibility constraint: u, w (N, L) -> u_hat (N, L), cache.

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a), so that
    w^T u_hat = m(w^T u) > -1. w must not be 0.
    """
    alpha = np.sum(w * u, axis=-1)  # w^T u, (N,)
    sp = softplus(alpha)
    sq = np.sum(w * w, axis=-1)  # ||w||^2
    c = (sp - 1.0 - alpha) / sq  # (m(alpha) - alpha) / ||w||^2
    return u + c[:, None] * w, (u, w, alpha, sq, c)


def planar_u_hat_backward(du_hat: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """du_hat (N, L) -> (du, dw), each (N, L).

    u_hat = u + c w with c = (softplus(alpha) - 1 - alpha) / s, alpha = w^T u, s = ||w||^2:
    dc = du_hat . w; dalpha = dc (sigmoid(alpha) - 1) / s; ds = -dc c / s;
    du = du_hat + dalpha w; dw = c du_hat + dalpha u + 2 ds w.
    """
    u, w, alpha, sq, c = cache
    dc = np.sum(du_hat * w, axis=-1)
    dalpha = dc * (sigmoid(alpha) - 1.0) / sq
    ds = -dc * c / sq
    du = du_hat + dalpha[:, None] * w
    dw = c[:, None] * du_hat + dalpha[:, None] * u + (2.0 * ds)[:, None] * w
    return du, dw


class Planar:
    """One planar step with per-example parameters (amortized: the encoder outputs them)."""

    @staticmethod
    def forward(z: np.ndarray, u: np.ndarray, w: np.ndarray,
                b: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """z, u, w (N, L), b (N,) -> z_new (N, L), log_det (N,), cache.

        z_new = z + u_hat t with t = tanh(w^T z + b). log|det J| = log(1 + h' w^T u_hat)
        with h' = 1 - t^2; since w^T u_hat = -1 + softplus(w^T u) it is computed as
        log(t^2 + h' softplus(w^T u)), which is the same number, positive inside the log
        whatever the parameters, and free of the cancellation of 1 + (something near -1).
        """
        u_hat, uh_cache = planar_u_hat(u, w)
        t = np.tanh(np.sum(w * z, axis=-1) + b)
        dtanh = 1.0 - t * t
        sp = softplus(uh_cache[2])
        g = t * t + dtanh * sp  # = 1 + u_hat^T psi(z), > 0
        z_new = z + u_hat * t[:, None]
        return z_new, np.log(g), (z, w, u_hat, t, dtanh, sp, g, uh_cache)

    @staticmethod
    def backward(dz_new: np.ndarray, dlog_det: np.ndarray, cache: tuple) -> tuple[np.ndarray, ...]:
        """dz_new (N, L), dlog_det (N,) -> (dz, du, dw) each (N, L), db (N,).

        g = t^2 + (1 - t^2) sp: dg/dt = 2 t (1 - sp), dg/dsp = 1 - t^2; sp = softplus(w^T u)
        feeds both u_hat and g, so its gradient from g joins u_hat's through alpha = w^T u.
        """
        z, w, u_hat, t, dtanh, sp, g, uh_cache = cache
        du_hat = dz_new * t[:, None]
        dt = np.sum(dz_new * u_hat, axis=-1)
        dg = dlog_det / g
        dt = dt + dg * 2.0 * t * (1.0 - sp)
        dsp = dg * dtanh
        da = dt * dtanh  # a = w^T z + b
        dz = dz_new + da[:, None] * w
        du, dw = planar_u_hat_backward(du_hat, uh_cache)
        u, _, alpha, _, _ = uh_cache
        dalpha = dsp * sigmoid(alpha)  # sp = softplus(alpha), alpha = w^T u
        du = du + dalpha[:, None] * w
        dw = dw + da[:, None] * z + dalpha[:, None] * u
        return dz, du, dw, da


# --- inverse autoregressive flow ------------------------------------------------------------


class IAFStep:
    """One IAF step: [m, s] = MADE(z, context); z' = sigma z + (1 - sigma) m, sigma = sigmoid(s).

    latent_dim: L; hidden_sizes: the MADE's hidden layers; context_dim: C (0: no context,
    the step is the same map for every example); reverse: use the order L..1 instead of 1..L;
    name: the prefix of its parameters (``{name}.{i}.W/b``, ``{name}.context.W``).
    The MADE's output is position-major, [m_1, s_1, m_2, s_2, ...] (``made.position_degrees``).
    """

    def __init__(self, latent_dim: int, hidden_sizes: Sequence[int] = (40, 40),
                 context_dim: int = 0, *, reverse: bool = False,
                 name: str = "flow.0", activation: str = "relu",
                 gate_bias: float = IAF_GATE_BIAS) -> None:
        order = np.arange(1, latent_dim + 1)
        self.order = order[::-1].copy() if reverse else order
        self.latent_dim = latent_dim
        self.gate_bias = float(gate_bias)
        self.made = MADE(position_degrees(self.order),
                         hidden_degrees(hidden_sizes, latent_dim, context=context_dim > 0),
                         position_degrees(self.order, 2), context_dim=context_dim,
                         activation=activation, name=name)

    @property
    def context_dim(self) -> int:
        return self.made.context_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.made.param_shapes()

    def init_params(self, rng: np.random.Generator, params: dict) -> None:
        """The MADE's initialisation, then ``gate_bias`` added to the s outputs' bias."""
        self.made.init_params(rng, params)
        b = params[f"{self.made.name}.{len(self.made.masks) - 1}.b"]
        b[1::2] += self.gate_bias

    def forward(self, params: dict, z: np.ndarray,
                context: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple]:
        """z (N, L) [, context (N, C)] -> z_new (N, L), log_det (N,), cache.

        log_det = sum_i log sigmoid(s_i) = -sum_i softplus(-s_i) (no log of a rounded 0).
        """
        out, made_cache = self.made.forward(params, z, context)
        pairs = out.reshape(len(z), self.latent_dim, 2)
        m, s = pairs[:, :, 0], pairs[:, :, 1]
        gate = sigmoid(s)
        z_new = gate * z + (1.0 - gate) * m
        log_det = -np.sum(softplus(-s), axis=-1)
        return z_new, log_det, (z, m, gate, made_cache)

    def backward(self, dz_new: np.ndarray, dlog_det: np.ndarray, cache: tuple,
                 grads: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """dz_new (N, L), dlog_det (N,) -> (dz (N, L), dcontext (N, C) or None); the MADE's
        parameter gradients go into ``grads``.

        dz' / dz (direct) = sigma, dz'/dm = 1 - sigma, dz'/dsigma = z - m,
        dsigma/ds = sigma (1 - sigma), d log sigma / ds = 1 - sigma; then through the MADE.
        """
        z, m, gate, made_cache = cache
        dm = dz_new * (1.0 - gate)
        ds = (dz_new * (z - m) * gate + dlog_det[:, None]) * (1.0 - gate)
        dout = np.stack([dm, ds], axis=-1).reshape(len(z), 2 * self.latent_dim)
        dz_made, dcontext = self.made.backward(dout, made_cache, grads)
        return dz_new * gate + dz_made, dcontext

    def inverse(self, params: dict, z_new: np.ndarray,
                context: np.ndarray | None = None) -> np.ndarray:
        """z_new (N, L) [, context] -> z (N, L) with forward(z) = z_new.

        z_i = (z'_i - (1 - sigma_i) m_i) / sigma_i, where m_i and sigma_i need z_1..z_{i-1}:
        one MADE pass per dimension, in order. Sampling (forward) takes one pass; evaluating
        the density of a given point takes L: IAF is built for sampling, which is what a
        posterior does.
        """
        z = np.zeros_like(z_new)
        for d in range(1, self.latent_dim + 1):
            out, _ = self.made.forward(params, z, context)
            pairs = out.reshape(len(z), self.latent_dim, 2)
            cols = self.order == d
            gate = sigmoid(pairs[:, cols, 1])
            z[:, cols] = (z_new[:, cols] - (1.0 - gate) * pairs[:, cols, 0]) / gate
        return z


def iaf_steps(latent_dim: int, n_steps: int, hidden_sizes: Sequence[int] = (40, 40),
              context_dim: int = 0, *, prefix: str = "flow",
              activation: str = "relu", gate_bias: float = IAF_GATE_BIAS) -> list[IAFStep]:
    """``n_steps`` IAF steps named ``{prefix}.{k}``, the order reversed at every other one."""
    return [IAFStep(latent_dim, hidden_sizes, context_dim, reverse=k % 2 == 1,
                    name=f"{prefix}.{k}", activation=activation, gate_bias=gate_bias)
            for k in range(n_steps)]
