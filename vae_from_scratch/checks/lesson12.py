"""Checks for lesson 12, where the ELBO loses nats (``solutions/12_elbo_gaps.ipynb``).

* Exercise 12.1: ``planar_u_hat(u, w)`` - the constraint that keeps a planar step
  invertible, as ``flows.planar_u_hat``.
* Exercise 12.2: ``planar_step(z, u, w, b)`` - one planar step and its log-determinant, as
  ``flows.Planar.forward``.
* Exercise 12.3: ``flow_log_q(z0, log_q0, u, w, b)`` - K planar steps and the density of
  their output by the change of variables.
* Exercise 12.4: ``made_masks(degrees, hidden)`` - the masks of a MADE, as ``made.layer_mask``.
* Exercise 12.5: ``iaf_step(z, m, s)`` - the gated IAF update and its log-determinant.
* Exercise 12.6: ``bottom_kl(z1, mu1, log_var1, mu_p, log_var_p)`` - the two-level model's
  bottom KL term at the samples, as ``hierarchical.TwoLevelBottleneck``.
* Exercise 12.7 is a written answer.

Besides the usual comparison, each check knows the slips the lesson warns of (the
log-determinant's sign, the constraint's û, a MADE mask off by one so that a unit sees
itself, the bottom KL with the wrong conditioning) and names them when a wrong answer is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vae_from_scratch import distributions as dist
from vae_from_scratch import flows
from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.made import layer_mask


def _r(a: Any, decimals: int = 2) -> np.ndarray:
    return np.round(a, decimals) + 0.0


_rng = np.random.default_rng(120)


# --- 12.1 the planar constraint ------------------------------------------------------------


def _planar_u_hat(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """u, w (N, L) -> u_hat (N, L) = u + (m(w.u) - w.u) w / |w|^2, m(a) = -1 + softplus(a)."""
    return flows.planar_u_hat(u, w)[0]


def _u_hat_without_minus_one(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = np.sum(w * u, axis=-1, keepdims=True)
    return u + (dist.softplus(a) - a) * w / np.sum(w * w, axis=-1, keepdims=True)


def _u_hat_over_norm(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = np.sum(w * u, axis=-1, keepdims=True)
    return u + (dist.softplus(a) - 1 - a) * w / np.linalg.norm(w, axis=-1, keepdims=True)


_U = _r(_rng.normal(0, 1, (3, 2)))
_W = _r(_rng.normal(0, 1, (3, 2)))
_U_HAT_CASES = [
    # w^T u = -3, far below -1: the constraint moves u along w
    Case(np.array([[-3.0, 0.0]]), np.array([[1.0, 0.0]])),
    Case(_U, _W),
    Case(np.array([[0.5, -2.0], [4.0, 1.0]]), np.array([[2.0, 1.0], [-0.5, 0.5]])),
]

planar_u_hat = Checker(
    "12.1",
    reference=_planar_u_hat,
    cases=_U_HAT_CASES,
    slips=[
        ("It is what m(a) = softplus(a) gives: m(a) = -1 + softplus(a), the -1 is missing "
         "(without it w^T u_hat > 0, not > -1).", _u_hat_without_minus_one),
        ("It divides by |w| where |w|^2 belongs: w^T u_hat must come out as m(w^T u).",
         _u_hat_over_norm),
        ("It is u itself: the constraint is missing.", lambda u, w: u),
    ],
)


# --- 12.2 one planar step ------------------------------------------------------------------


def _planar_step(z: np.ndarray, u: np.ndarray, w: np.ndarray,
                 b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z, u, w (N, L), b (N,) -> z_new (N, L), log_det (N,)."""
    z_new, log_det, _ = flows.Planar.forward(z, u, w, b)
    return z_new, log_det


def _planar_step_with_u(z: np.ndarray, u: np.ndarray, w: np.ndarray,
                        b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.tanh(np.sum(w * z, axis=-1) + b)
    u_hat = _planar_u_hat(u, w)
    psi = (1 - t * t)[:, None] * w
    return z + u_hat * t[:, None], np.log(np.abs(1 + np.sum(u * psi, axis=-1)))


def _planar_step_without_dtanh(z: np.ndarray, u: np.ndarray, w: np.ndarray,
                               b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.tanh(np.sum(w * z, axis=-1) + b)
    u_hat = _planar_u_hat(u, w)
    return z + u_hat * t[:, None], np.log(np.abs(1 + np.sum(u_hat * w, axis=-1)))


_Z = _r(_rng.normal(0, 1, (3, 2)))
_B = _r(_rng.normal(0, 1, 3))
_STEP_CASES = [
    Case(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]),
         np.array([0.0])),
    Case(_Z, _U, _W, _B),
    Case(np.array([[1.0, -1.0], [0.2, 0.3]]), np.array([[-3.0, 0.0], [0.5, 2.0]]),
         np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([0.5, -0.2])),
]

planar_step = Checker(
    "12.2",
    reference=_planar_step,
    cases=_STEP_CASES,
    outputs=("z_new", "log_det"),
    slips=[
        ("Its log_det uses u where u_hat belongs: the step that moves z is the one with "
         "u_hat, and so is its Jacobian, det = 1 + u_hat^T psi.", _planar_step_with_u),
        ("Its log_det leaves out tanh's derivative: psi = (1 - tanh^2(w^T z + b)) w.",
         _planar_step_without_dtanh),
    ],
)


# --- 12.3 K steps and the change of variables --------------------------------------------------


def _flow_log_q(z0: np.ndarray, log_q0: np.ndarray, u: np.ndarray, w: np.ndarray,
                b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z0 (N, L), log_q0 (N,), u, w (N, K, L), b (N, K) -> z_K (N, L), log q_K(z_K) (N,)."""
    z, log_q = z0, log_q0
    for k in range(u.shape[1]):
        z, log_det = _planar_step(z, u[:, k], w[:, k], b[:, k])
        log_q = log_q - log_det
    return z, log_q


def _flow_log_q_plus(z0: np.ndarray, log_q0: np.ndarray, u: np.ndarray, w: np.ndarray,
                     b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z, log_q = _flow_log_q(z0, log_q0, u, w, b)
    return z, 2 * log_q0 - log_q  # log_q0 + sum of the log-dets


def _flow_log_q_last(z0: np.ndarray, log_q0: np.ndarray, u: np.ndarray, w: np.ndarray,
                     b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = z0
    for k in range(u.shape[1]):
        z, log_det = _planar_step(z, u[:, k], w[:, k], b[:, k])
    return z, log_q0 - log_det


_K_U = _r(_rng.normal(0, 1, (2, 3, 2)))
_K_W = _r(_rng.normal(0, 1, (2, 3, 2)))
_K_B = _r(_rng.normal(0, 1, (2, 3)))
_FLOW_CASES = [
    Case(np.array([[0.5, -0.5]]), np.array([-2.0]), np.array([[[1.0, 0.0]]]),
         np.array([[[1.0, 0.0]]]), np.array([[0.0]])),
    Case(_r(_rng.normal(0, 1, (2, 2))), np.array([-1.5, -2.5]), _K_U, _K_W, _K_B),
]

flow_log_q = Checker(
    "12.3",
    reference=_flow_log_q,
    cases=_FLOW_CASES,
    outputs=("z_K", "log_q"),
    slips=[
        ("Its log_q adds the log-determinants: the sign is flipped. A step that stretches "
         "space (|det J| > 1) spreads the same mass thinner, so log q_k = log q_{k-1} - "
         "log|det J_k|.", _flow_log_q_plus),
        ("Its log_q subtracts only the last step's log-determinant: every step changes the "
         "density, so subtract the sum.", _flow_log_q_last),
    ],
)


# --- 12.4 MADE's masks -----------------------------------------------------------------------


def _made_masks(degrees: np.ndarray, hidden: Sequence[np.ndarray]) -> list[np.ndarray]:
    """degrees (P,): each input's (and output's) position 1..P; hidden: each hidden layer's
    degrees. -> the masks, (P, H1), (H1, H2), ..., (H_last, P): hidden units see inputs of
    degree <= theirs, outputs see hidden units of degree < theirs (strict)."""
    sizes = [np.asarray(degrees), *map(np.asarray, hidden)]
    masks = [layer_mask(a, b, strict=False) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return [*masks, layer_mask(sizes[-1], degrees, strict=True)]


def _made_masks_output_sees_itself(degrees: np.ndarray,
                                   hidden: Sequence[np.ndarray]) -> list[np.ndarray]:
    masks = _made_masks(degrees, hidden)
    return [*masks[:-1], layer_mask(np.asarray(hidden[-1]), degrees, strict=False)]


def _made_masks_strict_hidden(degrees: np.ndarray,
                              hidden: Sequence[np.ndarray]) -> list[np.ndarray]:
    sizes = [np.asarray(degrees), *map(np.asarray, hidden)]
    masks = [layer_mask(a, b, strict=True) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return [*masks, layer_mask(sizes[-1], degrees, strict=True)]


_MADE_CASES = [
    Case(np.array([1, 2, 3]), [np.array([1, 2, 1, 2])]),
    Case(np.array([2, 1, 3]), [np.array([1, 2, 2, 1, 1]), np.array([2, 1, 1, 2])]),
    Case(np.array([1, 2, 3, 4]), [np.array([1, 2, 3, 1, 2, 3])]),
]

made_masks = Checker(
    "12.4",
    reference=_made_masks,
    cases=_MADE_CASES,
    slips=[
        ("Its output mask lets output i see hidden units of degree i, so output i depends on "
         "input i itself (off by one): the output layer's test is strict, degree(out) > "
         "degree(hidden), and the Jacobian is then triangular with nothing of z_i in m_i, "
         "s_i.", _made_masks_output_sees_itself),
        ("Its hidden masks are strict: a hidden unit of degree d may see inputs of degree <= "
         "d (>=, not >); only the output layer is strict.", _made_masks_strict_hidden),
    ],
)


# --- 12.5 the IAF step -----------------------------------------------------------------------


def _iaf_step(z: np.ndarray, m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z, m, s (N, L) -> z_new = sigma z + (1 - sigma) m with sigma = sigmoid(s) (N, L), and
    log_det = sum_i log sigma_i (N,), computed as -sum softplus(-s) (no log of a rounded 0)."""
    gate = 1.0 / (1.0 + np.exp(-np.clip(s, -500, 500)))
    return gate * z + (1.0 - gate) * m, -np.sum(dist.softplus(-s), axis=-1)


def _iaf_step_log_one_minus(z: np.ndarray, m: np.ndarray,
                            s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z_new, _ = _iaf_step(z, m, s)
    return z_new, -np.sum(dist.softplus(s), axis=-1)


def _iaf_step_s(z: np.ndarray, m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z_new, _ = _iaf_step(z, m, s)
    return z_new, np.sum(s, axis=-1)


_IAF_CASES = [
    Case(np.array([[1.0, -1.0]]), np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]])),
    Case(_r(_rng.normal(0, 1, (3, 2))), _r(_rng.normal(0, 1, (3, 2))),
         _r(_rng.normal(1, 2, (3, 2)))),
    Case(np.array([[0.5, 2.0]]), np.array([[1.0, -1.0]]), np.array([[-800.0, 3.0]])).strict(
        "a gate so closed that sigmoid(s) rounds to 0 and log sigmoid(s) to log 0"),
]

iaf_step = Checker(
    "12.5",
    reference=_iaf_step,
    cases=_IAF_CASES,
    outputs=("z_new", "log_det"),
    slips=[
        ("Its log_det is sum log(1 - sigma): dz'_i/dz_i is sigma_i, the weight of z_i, not "
         "that of m_i.", _iaf_step_log_one_minus),
        ("Its log_det is sum s: the diagonal of the Jacobian is sigma_i = sigmoid(s_i), "
         "so the log-determinant is sum log sigmoid(s_i).", _iaf_step_s),
    ],
)


# --- 12.6 the two-level model's bottom KL ----------------------------------------------------


def _bottom_kl(z1: np.ndarray, mu1: np.ndarray, log_var1: np.ndarray, mu_p: np.ndarray,
               log_var_p: np.ndarray) -> np.ndarray:
    """log q(z1|x) - log p(z1|z2) at the sample z1 (N, L1): q(z1|x) = N(mu1, exp(log_var1)),
    p(z1|z2) = N(mu_p, exp(log_var_p)) at the z2 drawn from q(z2|z1). -> (N,)."""
    return (dist.gaussian_log_density(z1, mu1, log_var1)
            - dist.gaussian_log_density(z1, mu_p, log_var_p))


def _bottom_kl_closed_form(z1: np.ndarray, mu1: np.ndarray, log_var1: np.ndarray,
                           mu_p: np.ndarray, log_var_p: np.ndarray) -> np.ndarray:
    return dist.kl_diag_gaussians(mu1, log_var1, mu_p, log_var_p)


_L1 = 2
_BOTTOM_CASES = [
    Case(np.array([[0.5, -0.5]]), np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]),
         np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]])),
    Case(*(_r(_rng.normal(0, 1, (3, _L1))) for _ in range(3)),
         _r(_rng.normal(0, 1, (3, _L1))), _r(_rng.normal(0, 0.5, (3, _L1)))),
]

bottom_kl = Checker(
    "12.6",
    reference=_bottom_kl,
    cases=_BOTTOM_CASES,
    slips=[
        ("It is KL(q(z1|x) || p(z1|z2)) in closed form, the wrong conditioning: that formula "
         "averages over z1 with z2 held fixed, but here z2 was drawn from q(z2|z1), after "
         "z1 and from it. Under q the two are dependent, so the term has no closed form: "
         "take log q(z1|x) - log p(z1|z2) at the samples.", _bottom_kl_closed_form),
        ("It has the opposite sign: log q(z1|x) - log p(z1|z2), the posterior's density "
         "first.", lambda *a: -_bottom_kl(*a)),
    ],
)
