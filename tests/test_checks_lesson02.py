"""Lesson 02's checkers catch the mistakes learners make, and accept right answers written
differently from the reference; the references agree with numerical integration."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson02 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG

pytestmark = pytest.mark.lesson02


def test_the_lesson_registers_exercises_2_1_to_2_3():
    found = [(c.exercise, c.name) for c in core.checkers(2)]
    assert found == [
        ("2.1", "kl_univariate"),
        ("2.2", "kl_by_quadrature"),
        ("2.3", "kl_diag_standard_normal"),
    ]


# -- right answers, written another way --------------------------------------------------------


def kl_univariate_with_sigmas(mu_q, log_var_q, mu_p, log_var_p):
    sq, sp = np.exp(0.5 * np.asarray(log_var_q)), np.exp(0.5 * np.asarray(log_var_p))
    return np.log(sp / sq) + (sq**2 + (np.asarray(mu_q) - mu_p) ** 2) / (2 * sp**2) - 0.5


def kl_diag_by_univariate_sum(mu, log_var):
    return check.kl_univariate.reference(mu, log_var, 0.0, 0.0).sum(axis=-1)


def kl_by_numpy_trapezoid(log_q, log_p, x):
    return np.trapezoid(np.exp(log_q) * (log_q - log_p), x, axis=-1)


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.kl_univariate, kl_univariate_with_sigmas),
        (check.kl_diag_standard_normal, kl_diag_by_univariate_sum),
        (check.kl_by_quadrature, kl_by_numpy_trapezoid),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- typical mistakes -----------------------------------------------------------------------------


def kl_univariate_reversed(mu_q, log_var_q, mu_p, log_var_p):
    return check.kl_univariate.reference(mu_p, log_var_p, mu_q, log_var_q)


def kl_univariate_without_half(mu_q, log_var_q, mu_p, log_var_p):
    return 2 * check.kl_univariate.reference(mu_q, log_var_q, mu_p, log_var_p)


def kl_univariate_log_var_as_std(mu_q, log_var_q, mu_p, log_var_p):
    # treats exp(log_var) as a standard deviation, so squares it once too often
    vq, vp = np.exp(log_var_q) ** 2, np.exp(log_var_p) ** 2
    return 0.5 * (np.log(vp / vq) + (vq + (mu_q - mu_p) ** 2) / vp - 1)


def kl_univariate_forgets_the_minus_one(mu_q, log_var_q, mu_p, log_var_p):
    return check.kl_univariate.reference(mu_q, log_var_q, mu_p, log_var_p) + 0.5


def kl_diag_mean_over_dims(mu, log_var):
    return 0.5 * np.mean(mu**2 + np.exp(log_var) - 1 - log_var, axis=-1)


def kl_diag_sum_over_everything(mu, log_var):
    return 0.5 * np.sum(mu**2 + np.exp(log_var) - 1 - log_var)


def kl_diag_std_for_var(mu, log_var):
    return 0.5 * np.sum(mu**2 + np.exp(0.5 * log_var) - 1 - log_var, axis=-1)


def kl_by_left_riemann_sum(log_q, log_p, x):
    f = np.exp(log_q) * (log_q - log_p)
    return np.sum(f[..., :-1] * np.diff(x), axis=-1)


def kl_without_the_density(log_q, log_p, x):
    f = log_q - log_p
    return np.sum(0.5 * (f[..., 1:] + f[..., :-1]) * np.diff(x), axis=-1)


def kl_assuming_unit_spacing(log_q, log_p, x):
    f = np.exp(log_q) * (log_q - log_p)
    return np.sum(0.5 * (f[..., 1:] + f[..., :-1]), axis=-1)


def kl_over_the_first_axis(log_q, log_p, x):
    f = np.exp(log_q) * (log_q - log_p)
    return np.trapezoid(f, x, axis=0) if f.ndim == 1 else np.trapezoid(f.T, x, axis=0).sum()


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.kl_univariate, kl_univariate_reversed),
        (check.kl_univariate, kl_univariate_without_half),
        (check.kl_univariate, kl_univariate_log_var_as_std),
        (check.kl_univariate, kl_univariate_forgets_the_minus_one),
        (check.kl_diag_standard_normal, kl_diag_mean_over_dims),
        (check.kl_diag_standard_normal, kl_diag_sum_over_everything),
        (check.kl_diag_standard_normal, kl_diag_std_for_var),
        (check.kl_by_quadrature, kl_by_left_riemann_sum),
        (check.kl_by_quadrature, kl_without_the_density),
        (check.kl_by_quadrature, kl_assuming_unit_spacing),
        (check.kl_by_quadrature, kl_over_the_first_axis),
    ],
)
def test_typical_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message


def test_a_lesson_stub_is_not_done():
    def kl_univariate(mu_q, log_var_q, mu_p, log_var_p):
        raise NotImplementedError("Exercise 2.1: implement kl_univariate")

    result = check.kl_univariate.run(kl_univariate)
    assert result.status == NOT_DONE
    assert result.detail == "Exercise 2.1: implement kl_univariate"


# -- the references agree with each other and with the definition ------------------------------


def _log_normal(x, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


@pytest.mark.parametrize("mq, vq, mp, vp", [(0.0, 1.0, 0.0, 1.0), (1.0, 0.36, -0.5, 2.25),
                                             (-3.0, 4.0, 1.0, 0.5), (2.0, 0.1, 0.0, 1.0)])
def test_closed_form_matches_quadrature(mq, vq, mp, vp):
    x = np.linspace(-30, 30, 12001)
    numeric = check.kl_by_quadrature.reference(_log_normal(x, mq, vq), _log_normal(x, mp, vp), x)
    closed = check.kl_univariate.reference(mq, np.log(vq), mp, np.log(vp))
    assert closed == pytest.approx(numeric, abs=1e-9)


def test_diagonal_kl_is_the_sum_of_univariate_kls_and_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu, log_var = rng.normal(size=(3, 4)), rng.normal(0, 0.5, size=(3, 4))
    closed = check.kl_diag_standard_normal.reference(mu, log_var)
    np.testing.assert_allclose(closed, check.kl_univariate.reference(mu, log_var, 0, 0).sum(-1))
    z = mu + np.exp(0.5 * log_var) * rng.standard_normal((200000, 3, 4))
    log_q = _log_normal(z, mu, np.exp(log_var)).sum(-1)
    log_p = _log_normal(z, 0.0, 1.0).sum(-1)
    r = log_q - log_p
    se = r.std(axis=0) / np.sqrt(len(r))
    assert np.all(np.abs(r.mean(axis=0) - closed) < 5 * se)


def test_univariate_reference_broadcasts_and_handles_numbers():
    assert np.shape(check.kl_univariate.reference(0.0, 0.0, 0.0, 0.0)) == ()
    out = check.kl_univariate.reference(np.zeros((2, 1)), np.zeros(3), 0.5, 0.0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, 0.125)


def test_cases_print_without_negative_zeros():
    for checker in core.checkers(2):
        for case in checker.cases:
            assert "-0. " not in repr(case) and "-0.," not in repr(case)
