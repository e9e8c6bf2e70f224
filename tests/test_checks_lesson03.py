"""Lesson 03's checkers catch the mistakes learners make, and accept right answers written
differently from the reference."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson03 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG
from vae_from_scratch.distributions import gaussian_log_density

pytestmark = pytest.mark.lesson03


def test_the_lesson_registers_exercises_3_1_to_3_4():
    found = [(c.exercise, c.name) for c in core.checkers(3)]
    assert found == [
        ("3.1", "posterior"),
        ("3.2", "log_marginal"),
        ("3.3", "log_importance_weights"),
        ("3.4", "iwae_bound"),
    ]


# -- right answers, written another way --------------------------------------------------------


def posterior_by_solve(x, W, b, sigma2):
    precision = np.eye(W.shape[1]) + W.T @ W / sigma2
    m = np.linalg.solve(precision, W.T @ (x - b).T / sigma2).T
    return m, np.linalg.inv(precision)


def log_marginal_by_loop(x, W, b, sigma2):
    C = W @ W.T + sigma2 * np.eye(W.shape[0])
    log_det = 2.0 * np.sum(np.log(np.diag(np.linalg.cholesky(C))))  # cannot overflow
    out = []
    for row in x:
        d = row - b
        out.append(-0.5 * (len(b) * np.log(2 * np.pi) + log_det + d @ np.linalg.inv(C) @ d))
    return np.array(out)


def log_importance_weights_by_hand(x, W, b, sigma2, mu, log_var, eps):
    std = np.exp(0.5 * log_var)[:, None, :]
    z = mu[:, None, :] + std * eps
    mean = np.einsum("nkl,dl->nkd", z, W) + b
    D, L = W.shape
    log_lik = -0.5 * (D * np.log(2 * np.pi * sigma2)
                      + np.sum((x[:, None, :] - mean) ** 2, axis=-1) / sigma2)
    log_prior = -0.5 * (L * np.log(2 * np.pi) + np.sum(z * z, axis=-1))
    log_q = -0.5 * (L * np.log(2 * np.pi) + np.sum(log_var, axis=-1)[:, None]
                    + np.sum(eps * eps, axis=-1))
    return log_lik + log_prior - log_q


def iwae_bound_by_hand(log_weights):
    m = np.max(log_weights, axis=-1, keepdims=True)
    return np.squeeze(m, -1) + np.log(np.mean(np.exp(log_weights - m), axis=-1))


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.posterior, posterior_by_solve),
        (check.log_marginal, log_marginal_by_loop),
        (check.log_importance_weights, log_importance_weights_by_hand),
        (check.iwae_bound, iwae_bound_by_hand),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- typical mistakes -----------------------------------------------------------------------------


def posterior_without_the_prior(x, W, b, sigma2):
    S = np.linalg.inv(W.T @ W / sigma2 + 1e-9 * np.eye(W.shape[1]))  # forgot the I
    return (x - b) @ W @ S / sigma2, S


def posterior_forgetting_b(x, W, b, sigma2):
    S = np.linalg.inv(np.eye(W.shape[1]) + W.T @ W / sigma2)
    return x @ W @ S / sigma2, S


def posterior_with_one_covariance_per_row(x, W, b, sigma2):
    m, S = check.posterior.reference(x, W, b, sigma2)
    return m, np.broadcast_to(S, (len(x), *S.shape))


def log_marginal_without_2pi(x, W, b, sigma2):
    C = W @ W.T + sigma2 * np.eye(W.shape[0])
    d = x - b
    return -0.5 * (np.linalg.slogdet(C)[1] + np.sum(d * np.linalg.solve(C, d.T).T, axis=1))


def log_marginal_with_prior_covariance_only(x, W, b, sigma2):
    C = W @ W.T + np.eye(W.shape[0])  # sigma2 ignored
    d = x - b
    return -0.5 * (len(b) * np.log(2 * np.pi) + np.linalg.slogdet(C)[1]
                   + np.sum(d * np.linalg.solve(C, d.T).T, axis=1))


def log_weights_without_q(x, W, b, sigma2, mu, log_var, eps):
    z = mu[:, None, :] + np.exp(0.5 * log_var)[:, None, :] * eps
    return (gaussian_log_density(x[:, None, :], z @ W.T + b, np.log(sigma2))
            + gaussian_log_density(z, 0.0, 0.0))


def log_weights_with_variance_as_std(x, W, b, sigma2, mu, log_var, eps):
    z = mu[:, None, :] + np.exp(log_var)[:, None, :] * eps  # exp(log_var) is the variance
    return (gaussian_log_density(x[:, None, :], z @ W.T + b, np.log(sigma2))
            + gaussian_log_density(z, 0.0, 0.0)
            - gaussian_log_density(z, mu[:, None, :], log_var[:, None, :]))


def iwae_naive(log_weights):
    with np.errstate(divide="ignore"):
        return np.log(np.mean(np.exp(log_weights), axis=-1))


def iwae_is_the_elbo(log_weights):
    return np.mean(log_weights, axis=-1)


def iwae_without_minus_log_k(log_weights):
    m = np.max(log_weights, axis=-1, keepdims=True)
    return np.squeeze(m, -1) + np.log(np.sum(np.exp(log_weights - m), axis=-1))


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.posterior, posterior_without_the_prior),
        (check.posterior, posterior_forgetting_b),
        (check.posterior, posterior_with_one_covariance_per_row),
        (check.log_marginal, log_marginal_without_2pi),
        (check.log_marginal, log_marginal_with_prior_covariance_only),
        (check.log_importance_weights, log_weights_without_q),
        (check.log_importance_weights, log_weights_with_variance_as_std),
        (check.iwae_bound, iwae_naive),
        (check.iwae_bound, iwae_is_the_elbo),
        (check.iwae_bound, iwae_without_minus_log_k),
    ],
)
def test_typical_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message
    assert "expected" in result.message and "got" in result.message


def test_the_naive_iwae_bound_fails_on_the_underflow_case_only():
    # it is right for moderate weights: the stability case is what catches it
    result = check.iwae_bound.run(iwae_naive)
    assert "-1000" in result.message


def test_a_lesson_stub_is_not_done():
    def posterior(x, W, b, sigma2):
        raise NotImplementedError("Exercise 3.1: implement posterior")

    result = check.posterior.run(posterior)
    assert result.status == NOT_DONE
    assert result.detail == "Exercise 3.1: implement posterior"


def test_cases_print_without_negative_zeros():
    for checker in core.checkers(3):
        for case in checker.cases:
            assert "-0. " not in repr(case) and "-0.," not in repr(case)
