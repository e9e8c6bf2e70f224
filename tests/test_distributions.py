"""Tests for vae_from_scratch.distributions: forward values and every hand-derived backward."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = [
    pytest.mark.lesson02,
    pytest.mark.lesson03,
    pytest.mark.lesson04,
    pytest.mark.lesson05,
    pytest.mark.lesson07,
]

TOL = 1e-8
LOG_SQRT_2PI = 0.9189385332046727  # log(2 pi) / 2


def _rng(seed=0):
    return np.random.default_rng(seed)


def _naive_log_normal(x, mu, var):
    """log N(x; mu, var) per entry, written from the density itself."""
    return np.log(np.exp(-((x - mu) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var))


# --- helpers --------------------------------------------------------------------------------


def test_logsumexp_matches_the_definition_at_moderate_values():
    a = _rng(1).standard_normal((4, 5)) * 3
    for axis in (0, 1, -1):
        expected = np.log(np.sum(np.exp(a), axis=axis))
        np.testing.assert_allclose(dist.logsumexp(a, axis=axis), expected, rtol=1e-13)


def test_logsumexp_defaults_to_the_last_axis():
    a = _rng(2).standard_normal((3, 4, 5))
    out = dist.logsumexp(a)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, np.log(np.sum(np.exp(a), axis=-1)), rtol=1e-13)
    v = a[0, 0]
    assert dist.logsumexp(v) == pytest.approx(math.log(np.sum(np.exp(v))), rel=1e-13)


def test_logsumexp_is_stable_at_large_values():
    a = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [1e300, 0.0], [-np.inf, 3.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = dist.logsumexp(a, axis=1)
    np.testing.assert_allclose(out, [1000 + math.log(2), -1000 + math.log(2), 1e300, 3.0],
                               rtol=1e-15)


def test_logsumexp_of_all_minus_infinity_is_minus_infinity():
    with np.errstate(divide="ignore"):
        out = dist.logsumexp(np.full((2, 3), -np.inf), axis=1)
    np.testing.assert_array_equal(out, [-np.inf, -np.inf])


def test_softplus_is_stable_and_correct():
    a = np.array([-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0])
    with np.errstate(over="raise", invalid="raise"):
        out = dist.softplus(a)
    assert np.all(np.isfinite(out))
    mid = slice(1, 6)
    np.testing.assert_allclose(out[mid], np.log1p(np.exp(a[mid])), rtol=1e-14)
    assert out[0] == 0.0 and out[-1] == 1000.0


# --- reparameterization ----------------------------------------------------------------------


def test_reparameterize_forward():
    rng = _rng(2)
    mu, log_var, eps = (rng.standard_normal((3, 4)) for _ in range(3))
    z, _ = dist.reparameterize(mu, log_var, eps)
    np.testing.assert_allclose(z, mu + np.sqrt(np.exp(log_var)) * eps, rtol=1e-14)


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (2, 7)])
def test_reparameterize_backward(shape):
    rng = _rng(3)
    mu, log_var, eps = (rng.standard_normal(shape) for _ in range(3))
    dz = rng.standard_normal(shape)

    def f():
        return np.sum(dist.reparameterize(mu, log_var, eps)[0] * dz)

    _, cache = dist.reparameterize(mu, log_var, eps)
    dmu, dlog_var = dist.reparameterize_backward(dz, cache)
    assert rel_error(dmu, numerical_gradient(f, mu)) < TOL
    assert rel_error(dlog_var, numerical_gradient(f, log_var)) < TOL


# --- KL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (2, 20)])
def test_kl_standard_normal_backward(shape):
    rng = _rng(4)
    mu, log_var = rng.standard_normal(shape), rng.standard_normal(shape)
    dkl = rng.standard_normal(shape[0])

    def f():
        return np.sum(dist.kl_standard_normal(mu, log_var) * dkl)

    dmu, dlog_var = dist.kl_standard_normal_backward(dkl, mu, log_var)
    assert dmu.shape == shape and dlog_var.shape == shape
    assert rel_error(dmu, numerical_gradient(f, mu)) < TOL
    assert rel_error(dlog_var, numerical_gradient(f, log_var)) < TOL


def test_kl_standard_normal_is_zero_at_the_prior_and_positive_elsewhere():
    assert dist.kl_standard_normal(np.zeros((1, 5)), np.zeros((1, 5)))[0] == 0.0
    rng = _rng(5)
    kl = dist.kl_standard_normal(rng.standard_normal((50, 3)), rng.standard_normal((50, 3)))
    assert kl.shape == (50,) and np.all(kl > 0)


def test_kl_standard_normal_agrees_with_monte_carlo():
    mu = np.array([[0.7, -1.2, 0.1]])
    log_var = np.array([[-0.5, 0.4, -1.5]])
    n = 200_000
    eps = _rng(6).standard_normal((n, 3))
    var = np.exp(log_var)
    z = mu + np.sqrt(var) * eps
    log_q = np.sum(_naive_log_normal(z, mu, var), axis=1)
    log_p = np.sum(_naive_log_normal(z, 0.0, 1.0), axis=1)
    samples = log_q - log_p
    estimate, se = samples.mean(), samples.std() / math.sqrt(n)
    kl = dist.kl_standard_normal(mu, log_var)[0]
    assert abs(kl - estimate) < 4 * se, (kl, estimate, se)
    assert se < 0.01  # the check is sharp enough to catch a wrong term


def test_kl_diag_gaussians_to_standard_normal_equals_kl_standard_normal():
    rng = _rng(7)
    mu, log_var = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    np.testing.assert_allclose(
        dist.kl_diag_gaussians(mu, log_var, np.zeros(4), np.zeros(4)),
        dist.kl_standard_normal(mu, log_var),
        rtol=1e-13,
    )


def test_kl_diag_gaussians_of_a_distribution_with_itself_is_zero():
    rng = _rng(8)
    mu, log_var = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    np.testing.assert_allclose(dist.kl_diag_gaussians(mu, log_var, mu, log_var), 0.0, atol=1e-14)


def test_kl_diag_gaussians_agrees_with_monte_carlo_for_a_general_p():
    mu_q, log_var_q = np.array([0.3, -0.8]), np.array([-0.2, 0.5])
    mu_p, log_var_p = np.array([-0.5, 0.4]), np.array([0.3, -0.1])
    n = 200_000
    z = mu_q + np.exp(0.5 * log_var_q) * _rng(9).standard_normal((n, 2))
    log_q = _naive_log_normal(z, mu_q, np.exp(log_var_q))
    log_p = _naive_log_normal(z, mu_p, np.exp(log_var_p))
    samples = np.sum(log_q - log_p, axis=1)
    kl = dist.kl_diag_gaussians(mu_q, log_var_q, mu_p, log_var_p)
    assert np.ndim(kl) == 0
    assert abs(kl - samples.mean()) < 4 * samples.std() / math.sqrt(n)


# --- Gaussian log-density -----------------------------------------------------------------------


def test_gaussian_log_density_matches_the_density():
    rng = _rng(10)
    x, mu, log_var = (rng.standard_normal((3, 4)) for _ in range(3))
    expected = np.sum(_naive_log_normal(x, mu, np.exp(log_var)), axis=1)
    np.testing.assert_allclose(dist.gaussian_log_density(x, mu, log_var), expected, rtol=1e-13)
    # the standard normal at its mode, one dimension: -log(2 pi) / 2
    assert dist.gaussian_log_density(np.zeros((1, 1)), 0.0, 0.0)[0] == pytest.approx(
        -LOG_SQRT_2PI, rel=1e-15
    )


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (2, 6)])
def test_gaussian_log_density_backward(shape):
    rng = _rng(11)
    x, mu, log_var = (rng.standard_normal(shape) for _ in range(3))
    dout = rng.standard_normal(shape[0])

    def f():
        return np.sum(dist.gaussian_log_density(x, mu, log_var) * dout)

    dx, dmu, dlog_var = dist.gaussian_log_density_backward(dout, x, mu, log_var)
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    assert rel_error(dmu, numerical_gradient(f, mu)) < TOL
    assert rel_error(dlog_var, numerical_gradient(f, log_var)) < TOL


def test_gaussian_log_density_backward_with_a_shared_log_var():
    """A (D,) log_var broadcast over the rows: the caller sums dlog_var over the rows."""
    rng = _rng(12)
    x, mu = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    log_var = rng.standard_normal(3)
    dout = rng.standard_normal(5)

    def f():
        return np.sum(dist.gaussian_log_density(x, mu, log_var) * dout)

    dx, dmu, dlog_var = dist.gaussian_log_density_backward(dout, x, mu, log_var)
    assert dlog_var.shape == (5, 3)
    assert rel_error(dlog_var.sum(axis=0), numerical_gradient(f, log_var)) < TOL
    assert rel_error(dmu, numerical_gradient(f, mu)) < TOL
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    # and the forward broadcasts as the (N, D) log_var it stands for
    np.testing.assert_allclose(
        dist.gaussian_log_density(x, mu, log_var),
        dist.gaussian_log_density(x, mu, np.tile(log_var, (5, 1))),
        rtol=1e-15,
    )


# --- Bernoulli ------------------------------------------------------------------------------------


def test_bernoulli_log_likelihood_matches_the_definition():
    rng = _rng(13)
    x = rng.random((4, 6))  # values strictly inside (0, 1) are allowed (cross-entropy)
    logits = rng.standard_normal((4, 6)) * 3
    s = 1.0 / (1.0 + np.exp(-logits))
    expected = np.sum(x * np.log(s) + (1 - x) * np.log(1 - s), axis=1)
    np.testing.assert_allclose(dist.bernoulli_log_likelihood(x, logits), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_log_likelihood_is_exact_at_extreme_logits(dtype):
    # x = 1: log sigmoid(l) = -log(1 + e^-l);  x = 0: log(1 - sigmoid(l)) = -log(1 + e^l)
    x = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=dtype)
    logits = np.array([[1000.0], [1000.0], [-1000.0], [-1000.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = dist.bernoulli_log_likelihood(x, logits)
        grad = dist.bernoulli_log_likelihood_backward(np.ones(4, dtype=dtype), x, logits)
    np.testing.assert_array_equal(out, [0.0, -1000.0, -1000.0, 0.0])
    np.testing.assert_array_equal(grad, [[0.0], [-1.0], [1.0], [0.0]])


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 2)])
def test_bernoulli_log_likelihood_backward(shape):
    rng = _rng(14)
    x = (rng.random(shape) < 0.5).astype(np.float64)
    logits = rng.standard_normal(shape) * 2
    dout = rng.standard_normal(shape[0])

    def f():
        return np.sum(dist.bernoulli_log_likelihood(x, logits) * dout)

    dlogits = dist.bernoulli_log_likelihood_backward(dout, x, logits)
    assert rel_error(dlogits, numerical_gradient(f, logits)) < TOL


# --- mixture prior ------------------------------------------------------------------------------


def _mixture(rng, k, l):
    return rng.standard_normal((k, l)), 0.5 * rng.standard_normal((k, l)), rng.standard_normal(k)


def test_mixture_with_one_component_equals_the_gaussian():
    rng = _rng(15)
    z = rng.standard_normal((5, 3))
    means, log_vars, logits = _mixture(rng, 1, 3)
    np.testing.assert_allclose(
        dist.mixture_log_density(z, means, log_vars, logits),
        dist.gaussian_log_density(z, means[0], log_vars[0]),
        rtol=1e-13,
    )


def test_mixture_log_density_matches_the_weighted_sum_of_densities():
    rng = _rng(16)
    z = rng.standard_normal((6, 2))
    means, log_vars, logits = _mixture(rng, 3, 2)
    pi = np.exp(logits) / np.exp(logits).sum()
    dens = np.zeros(6)
    for k in range(3):
        dens += pi[k] * np.exp(np.sum(_naive_log_normal(z, means[k], np.exp(log_vars[k])), axis=1))
    np.testing.assert_allclose(dist.mixture_log_density(z, means, log_vars, logits),
                               np.log(dens), rtol=1e-12)
    # the weights are softmax(logits): adding a constant to the logits changes nothing
    np.testing.assert_allclose(dist.mixture_log_density(z, means, log_vars, logits + 50.0),
                               np.log(dens), rtol=1e-12)


def test_mixture_log_density_is_finite_far_from_every_component():
    means = np.array([[0.0, 0.0], [1.0, 1.0]])
    z = np.array([[200.0, -300.0]])
    out = dist.mixture_log_density(z, means, np.zeros((2, 2)), np.zeros(2))
    assert np.isfinite(out[0])
    # the nearer component dominates completely this far out
    np.testing.assert_allclose(out, dist.gaussian_log_density(z, means[0], 0.0) + math.log(0.5),
                               rtol=1e-12)


@pytest.mark.parametrize("n, k, l", [(1, 1, 1), (4, 3, 2), (3, 5, 4)])
def test_mixture_log_density_backward(n, k, l):
    rng = _rng(17)
    z = rng.standard_normal((n, l))
    means, log_vars, logits = _mixture(rng, k, l)
    dout = rng.standard_normal(n)

    def f():
        return np.sum(dist.mixture_log_density(z, means, log_vars, logits) * dout)

    dz, dmeans, dlog_vars, dlogits = dist.mixture_log_density_backward(
        dout, z, means, log_vars, logits
    )
    assert dz.shape == z.shape and dmeans.shape == means.shape
    assert dlog_vars.shape == log_vars.shape and dlogits.shape == logits.shape
    assert rel_error(dz, numerical_gradient(f, z)) < TOL
    assert rel_error(dmeans, numerical_gradient(f, means)) < TOL
    assert rel_error(dlog_vars, numerical_gradient(f, log_vars)) < TOL
    if k > 1:  # with one component the logits have no effect: both sides are 0
        assert rel_error(dlogits, numerical_gradient(f, logits)) < TOL
    else:
        np.testing.assert_allclose(dlogits, 0.0, atol=1e-14)
