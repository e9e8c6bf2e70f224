"""Lesson 12's checkers: they pass right answers written another way, name the slips the
lesson warns of (the log-determinant's sign, the planar constraint's u_hat, a MADE mask off
by one so that a unit sees itself, the bottom KL with the wrong conditioning), and their
references agree with independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson12 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG
from vae_from_scratch.made import connectivity

pytestmark = pytest.mark.lesson12


def test_the_lesson_registers_exercises_12_1_to_12_6():
    found = [(c.exercise, c.name) for c in core.checkers(12)]
    assert found == [
        ("12.1", "planar_u_hat"), ("12.2", "planar_step"), ("12.3", "flow_log_q"),
        ("12.4", "made_masks"), ("12.5", "iaf_step"), ("12.6", "bottom_kl"),
    ]


# -- right answers, written another way ----------------------------------------------------------


def _u_hat(u, w):
    out = np.empty_like(u)
    for n in range(len(u)):  # one example at a time, softplus as log(1 + exp)
        a = w[n] @ u[n]
        out[n] = u[n] + (np.log1p(np.exp(a)) - 1 - a) * w[n] / (w[n] @ w[n])
    return out


def _step(z, u, w, b):
    uh = _u_hat(u, w)
    t = np.tanh(np.einsum("nl,nl->n", w, z) + b)
    return z + uh * t[:, None], np.log(1 + (1 - t**2) * np.einsum("nl,nl->n", uh, w))


def _flow(z0, log_q0, u, w, b):
    log_dets = []
    for k in range(u.shape[1]):
        z0, ld = _step(z0, u[:, k], w[:, k], b[:, k])
        log_dets.append(ld)
    return z0, log_q0 - np.sum(log_dets, axis=0)


def _masks(degrees, hidden):
    layers = [degrees, *hidden]
    masks = [(b[None, :] >= a[:, None]).astype(float)
             for a, b in zip(layers, layers[1:], strict=False)]
    return masks + [(degrees[None, :] > layers[-1][:, None]).astype(float)]


def _iaf(z, m, s):
    gate = np.where(s >= 0, 1 / (1 + np.exp(-np.abs(s))), np.exp(-np.abs(s)) /
                    (1 + np.exp(-np.abs(s))))
    log_gate = -np.logaddexp(0, -s)
    return gate * z + (1 - gate) * m, log_gate.sum(-1)


def _bottom(z1, mu1, log_var1, mu_p, log_var_p):
    def log_n(x, mu, lv):
        return -0.5 * (np.log(2 * np.pi) + lv + (x - mu) ** 2 / np.exp(lv))
    return (log_n(z1, mu1, log_var1) - log_n(z1, mu_p, log_var_p)).sum(-1)


RIGHT = {"planar_u_hat": _u_hat, "planar_step": _step, "flow_log_q": _flow,
         "made_masks": _masks, "iaf_step": _iaf, "bottom_kl": _bottom}


@pytest.mark.parametrize("name", list(RIGHT))
def test_right_answers_written_another_way_pass(name):
    assert getattr(check, name).run(RIGHT[name]).status == PASSED


@pytest.mark.parametrize("name", list(RIGHT))
def test_a_stub_is_not_done(name):
    def stub(*args):
        raise NotImplementedError(name)

    assert getattr(check, name).run(stub).status == NOT_DONE


# -- the slips, named --------------------------------------------------------------------------


SLIPS = [
    ("planar_u_hat", check._u_hat_without_minus_one, "the -1 is missing"),
    ("planar_u_hat", check._u_hat_over_norm, "divides by |w| where |w|^2 belongs"),
    ("planar_u_hat", lambda u, w: u, "the constraint is missing"),
    ("planar_step", check._planar_step_with_u, "uses u where u_hat belongs"),
    ("planar_step", check._planar_step_without_dtanh, "leaves out tanh's derivative"),
    ("flow_log_q", check._flow_log_q_plus, "adds the log-determinants: the sign is flipped"),
    ("flow_log_q", check._flow_log_q_last, "only the last step's log-determinant"),
    ("made_masks", check._made_masks_output_sees_itself,
     "output i depends on input i itself (off by one)"),
    ("made_masks", check._made_masks_strict_hidden, "Its hidden masks are strict"),
    ("iaf_step", check._iaf_step_log_one_minus, "sum log(1 - sigma)"),
    ("iaf_step", check._iaf_step_s, "Its log_det is sum s"),
    ("bottom_kl", check._bottom_kl_closed_form, "in closed form, the wrong conditioning"),
    ("bottom_kl", lambda *a: -check._bottom_kl(*a), "opposite sign"),
]


@pytest.mark.parametrize("name, slip, words", SLIPS, ids=[w for _, _, w in SLIPS])
def test_each_slip_is_named(name, slip, words):
    result = getattr(check, name).run(slip)
    assert result.status == WRONG
    assert words in result.message


def test_an_unrecognised_wrong_answer_is_still_wrong_without_a_slip_named():
    result = check.planar_u_hat.run(lambda u, w: u + 0.1)
    assert result.status == WRONG
    assert "the -1 is missing" not in result.message


def test_a_log_sigmoid_that_underflows_is_caught():
    def naive(z, m, s):
        gate = 1 / (1 + np.exp(-s))
        return gate * z + (1 - gate) * m, np.log(gate).sum(-1)

    result = check.iaf_step.run(naive)
    assert result.status == WRONG and "overflow" in result.message


# -- the references against independent computations --------------------------------------------


def test_the_planar_log_det_is_the_log_det_of_the_jacobian():
    z, u, w, b = check._STEP_CASES[1].fresh()[0]
    _, log_det = check._planar_step(z, u, w, b)
    h = 1e-6
    for n in range(len(z)):
        jac = np.empty((2, 2))
        for j in range(2):
            e = np.zeros((1, 2))
            e[0, j] = h
            plus = check._planar_step(z[n:n + 1] + e, u[n:n + 1], w[n:n + 1], b[n:n + 1])[0]
            minus = check._planar_step(z[n:n + 1] - e, u[n:n + 1], w[n:n + 1], b[n:n + 1])[0]
            jac[:, j] = (plus - minus)[0] / (2 * h)
        assert np.linalg.slogdet(jac)[1] == pytest.approx(log_det[n], abs=1e-8)
    # and the constraint holds: w^T u_hat > -1
    assert np.all(np.sum(w * check._planar_u_hat(u, w), axis=-1) > -1)


@pytest.mark.parametrize("case", check._MADE_CASES, ids=range(len(check._MADE_CASES)))
def test_made_masks_make_each_output_blind_to_its_own_and_later_inputs(case):
    (degrees, hidden), _ = case.fresh()
    paths = connectivity(check._made_masks(degrees, hidden))
    sees = paths > 0
    allowed = degrees[:, None] < degrees[None, :]
    assert not np.any(sees & ~allowed)  # nothing but earlier positions
    wrong = connectivity(check._made_masks_output_sees_itself(degrees, hidden)) > 0
    assert np.any(np.diag(wrong))  # the slip's outputs see their own input


def test_the_bottom_kl_reference_is_an_unbiased_estimate_of_its_closed_form_given_z2():
    # with p(z1|z2) fixed (z2 drawn independently of z1), the mean over z1 ~ q of the
    # one-sample term is the closed-form KL: the slip is a slip only because z2 depends on z1
    rng = np.random.default_rng(0)
    mu1, lv1 = np.array([[0.3, -0.2]]), np.array([[-0.5, 0.2]])
    mu_p, lv_p = np.array([[0.1, 0.4]]), np.array([[0.3, -0.1]])
    z1 = mu1 + np.exp(0.5 * lv1) * rng.standard_normal((200_000, 2))
    sample = check._bottom_kl(z1, mu1, lv1, mu_p, lv_p)
    closed = check._bottom_kl_closed_form(z1[:1], mu1, lv1, mu_p, lv_p)[0]
    assert abs(sample.mean() - closed) < 4 * sample.std() / np.sqrt(len(sample))
