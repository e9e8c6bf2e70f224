"""Lesson 07's checkers catch the mistakes learners make, accept right answers written
differently, and the references they compare with agree with finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson07 as check
from vae_from_scratch.checks.core import PASSED, WRONG
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson07


def test_the_lesson_registers_exercises_7_1_to_7_3():
    found = [(c.exercise, c.name) for c in core.checkers(7)]
    assert found == [
        ("7.1", "aggregate_posterior_log_density"),
        ("7.2", "mixture_log_density"),
        ("7.3", "mixture_log_density_backward"),
    ]


# -- the references -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", check.mixture_log_density_backward.cases,
                         ids=range(len(check.mixture_log_density_backward.cases)))
def test_mixture_backward_reference_matches_finite_differences(case):
    (dout, z, means, log_vars, logits), _ = case.fresh()
    analytic = check._mixture_log_density_backward(dout, z, means, log_vars, logits)

    def objective():
        return np.sum(dout * check._mixture_log_density(z, means, log_vars, logits))

    for array, grad in zip((z, means, log_vars, logits), analytic, strict=True):
        assert grad.shape == array.shape
        assert rel_error(grad, numerical_gradient(objective, array)) < 1e-7


def test_mixture_reference_is_a_normalised_density_in_1d():
    means, log_vars, logits = np.array([[-2.0], [1.0]]), np.array([[-1.0], [0.5]]), np.array(
        [0.3, -0.2])
    z = np.linspace(-12, 12, 200_001)[:, None]
    density = np.exp(check._mixture_log_density(z, means, log_vars, logits))
    assert np.trapezoid(density, z[:, 0]) == pytest.approx(1.0, abs=1e-6)


def test_aggregate_posterior_reference_is_the_mean_of_the_gaussians():
    rng = np.random.default_rng(0)
    z, mu, log_var = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), rng.normal(0, 0.3, (4, 2))
    dens = np.exp([[dist.gaussian_log_density(zm[None], mu[n], log_var[n])[0] for n in range(4)]
                   for zm in z])
    np.testing.assert_allclose(check._aggregate_posterior_log_density(z, mu, log_var),
                               np.log(dens.mean(axis=1)), rtol=1e-12)


# -- right answers, written another way --------------------------------------------------------


def aggregate_with_a_loop(z, mu, log_var):
    out = []
    for zm in z:
        logs = [dist.gaussian_log_density(zm[None], mu[n], log_var[n])[0] for n in range(len(mu))]
        out.append(dist.logsumexp(np.array(logs), axis=0) - np.log(len(mu)))
    return np.array(out)


def mixture_as_a_mixture_with_q_weights(z, means, log_vars, logits):
    # the aggregate posterior is a mixture with equal weights: reuse it, then shift by log pi
    log_pi = logits - dist.logsumexp(logits, axis=0)
    comps = np.stack([dist.gaussian_log_density(z, m, lv) for m, lv in zip(means, log_vars,
                                                                           strict=True)], axis=1)
    return dist.logsumexp(comps + log_pi, axis=1)


def backward_with_loops(dout, z, means, log_vars, logits):
    n, k = len(z), len(means)
    pi = np.exp(logits - dist.logsumexp(logits, axis=0))
    comps = np.stack([dist.gaussian_log_density(z, m, lv) for m, lv in zip(means, log_vars,
                                                                           strict=True)], axis=1)
    a = comps + np.log(pi)
    r = np.exp(a - dist.logsumexp(a, axis=1)[:, None])
    dz, dm, dlv, dl = np.zeros_like(z), np.zeros_like(means), np.zeros_like(log_vars), np.zeros(k)
    for i in range(n):
        for j in range(k):
            var = np.exp(log_vars[j])
            diff = z[i] - means[j]
            dz[i] += dout[i] * r[i, j] * (-diff / var)
            dm[j] += dout[i] * r[i, j] * diff / var
            dlv[j] += dout[i] * r[i, j] * 0.5 * (diff**2 / var - 1)
            dl[j] += dout[i] * (r[i, j] - pi[j])
    return dz, dm, dlv, dl


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.aggregate_posterior_log_density, aggregate_with_a_loop),
        (check.mixture_log_density, mixture_as_a_mixture_with_q_weights),
        (check.mixture_log_density_backward, backward_with_loops),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- the classic mistakes ------------------------------------------------------------------------


def aggregate_without_the_log_n(z, mu, log_var):
    return check._aggregate_posterior_log_density(z, mu, log_var) + np.log(len(mu))


def aggregate_as_the_mean_of_logs(z, mu, log_var):
    diff = z[:, None, :] - mu[None]
    logs = -0.5 * np.sum(np.log(2 * np.pi) + log_var + diff**2 * np.exp(-log_var), axis=2)
    return logs.mean(axis=1)


def aggregate_naive_sum_of_exp(z, mu, log_var):
    diff = z[:, None, :] - mu[None]
    logs = -0.5 * np.sum(np.log(2 * np.pi) + log_var + diff**2 * np.exp(-log_var), axis=2)
    with np.errstate(divide="ignore"):
        return np.log(np.mean(np.exp(logs), axis=1))


def mixture_with_raw_logits_as_weights(z, means, log_vars, logits):
    comps = np.stack([dist.gaussian_log_density(z, m, lv) for m, lv in zip(means, log_vars,
                                                                           strict=True)], axis=1)
    return dist.logsumexp(comps + logits, axis=1)


def mixture_with_std_for_log_var(z, means, log_vars, logits):
    return check._mixture_log_density(z, means, 2 * log_vars, logits)


def mixture_naive(z, means, log_vars, logits):
    pi = np.exp(logits) / np.exp(logits).sum()
    comps = np.stack([np.exp(dist.gaussian_log_density(z, m, lv))
                      for m, lv in zip(means, log_vars, strict=True)], axis=1)
    with np.errstate(divide="ignore"):
        return np.log(comps @ pi)


def backward_without_dout(dout, z, means, log_vars, logits):
    return check._mixture_log_density_backward(np.ones_like(dout), z, means, log_vars, logits)


def backward_logits_without_pi(dout, z, means, log_vars, logits):
    dz, dm, dlv, _ = check._mixture_log_density_backward(dout, z, means, log_vars, logits)
    a = np.stack([dist.gaussian_log_density(z, m, lv) for m, lv in zip(means, log_vars,
                                                                       strict=True)], axis=1)
    a = a + logits - dist.logsumexp(logits, axis=0)
    r = np.exp(a - dist.logsumexp(a, axis=1)[:, None])
    return dz, dm, dlv, (dout[:, None] * r).sum(axis=0)


def backward_dz_sign_flipped(dout, z, means, log_vars, logits):
    dz, dm, dlv, dl = check._mixture_log_density_backward(dout, z, means, log_vars, logits)
    return -dz, dm, dlv, dl


def backward_log_vars_without_half(dout, z, means, log_vars, logits):
    dz, dm, dlv, dl = check._mixture_log_density_backward(dout, z, means, log_vars, logits)
    return dz, dm, 2 * dlv, dl


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.aggregate_posterior_log_density, aggregate_without_the_log_n),
        (check.aggregate_posterior_log_density, aggregate_as_the_mean_of_logs),
        (check.aggregate_posterior_log_density, aggregate_naive_sum_of_exp),
        (check.mixture_log_density, mixture_with_raw_logits_as_weights),
        (check.mixture_log_density, mixture_with_std_for_log_var),
        (check.mixture_log_density, mixture_naive),
        (check.mixture_log_density_backward, backward_without_dout),
        (check.mixture_log_density_backward, backward_logits_without_pi),
        (check.mixture_log_density_backward, backward_dz_sign_flipped),
        (check.mixture_log_density_backward, backward_log_vars_without_half),
    ],
)
def test_classic_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message
