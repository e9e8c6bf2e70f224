"""Tests for vae_from_scratch.linear_gaussian: the exact model of lesson 03."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import linear_gaussian as lg
from vae_from_scratch.distributions import gaussian_log_density, kl_diag_gaussians

pytestmark = pytest.mark.lesson03

SIGMA2 = 0.5


@pytest.fixture(scope="module")
def model():
    W, b = lg.random_model(5, 3, seed=1)
    _, x = lg.sample(4, W, b, SIGMA2, np.random.default_rng(0))
    return W, b, x


def test_random_model_and_sample_shapes():
    W, b = lg.random_model(6, 2, seed=3, scale=0.5)
    assert W.shape == (6, 2) and b.shape == (6,)
    z, x = lg.sample(7, W, b, 0.1, np.random.default_rng(0))
    assert z.shape == (7, 2) and x.shape == (7, 6)


def test_sample_moments_match_the_marginal():
    W, b = lg.random_model(3, 2, seed=2)
    _, x = lg.sample(200_000, W, b, SIGMA2, np.random.default_rng(1))
    np.testing.assert_allclose(x.mean(axis=0), b, atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), W @ W.T + SIGMA2 * np.eye(3), atol=0.05)


def test_log_marginal_matches_scipy(model):
    stats = pytest.importorskip("scipy.stats")
    W, b, x = model
    expected = stats.multivariate_normal(b, W @ W.T + SIGMA2 * np.eye(5)).logpdf(x)
    np.testing.assert_allclose(lg.log_marginal(x, W, b, SIGMA2), expected, rtol=1e-12)


def test_bayes_rule_holds_at_any_z(model):
    # log p(x) = log p(x, z) - log p(z | x) for every z: checks marginal and posterior together
    W, b, x = model
    m, S = lg.posterior(x, W, b, SIGMA2)
    log_px = lg.log_marginal(x, W, b, SIGMA2)
    for z in np.random.default_rng(5).standard_normal((3, 4, 3)) * 2:
        rhs = lg.log_joint(x, z, W, b, SIGMA2) - lg.gaussian_log_density_full(z, m, S)
        np.testing.assert_allclose(rhs, log_px, rtol=0, atol=1e-12)


def test_posterior_matches_a_grid_in_one_dimension():
    W, b = np.array([[1.5], [-0.5]]), np.array([0.2, 0.1])
    x = np.array([[1.0, -0.4]])
    m, S = lg.posterior(x, W, b, SIGMA2)
    z = np.linspace(-8, 8, 200_001)[:, None]
    log_post = lg.log_joint(x, z, W, b, SIGMA2)
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    mean = np.sum(w * z[:, 0])
    var = np.sum(w * (z[:, 0] - mean) ** 2)
    assert S.shape == (1, 1) and m.shape == (1, 1)
    assert mean == pytest.approx(m[0, 0], abs=1e-8)
    assert var == pytest.approx(S[0, 0], rel=1e-6)


def test_full_density_and_kl_reduce_to_the_diagonal_ones():
    rng = np.random.default_rng(0)
    z, mu = rng.standard_normal((2, 4, 3))
    log_var, log_var_p = rng.standard_normal((2, 4, 3))
    mu_p = rng.standard_normal((4, 3))
    np.testing.assert_allclose(
        lg.gaussian_log_density_full(z, mu, lg.diag_cov(log_var)),
        gaussian_log_density(z, mu, log_var),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        lg.kl_gaussians_full(mu, lg.diag_cov(log_var), mu_p, lg.diag_cov(log_var_p)),
        kl_diag_gaussians(mu, log_var, mu_p, log_var_p),
        rtol=1e-12,
    )


def test_kl_is_zero_for_equal_gaussians_and_positive_otherwise(model):
    W, b, x = model
    m, S = lg.posterior(x, W, b, SIGMA2)
    np.testing.assert_allclose(lg.kl_gaussians_full(m, S, m, S), 0.0, atol=1e-12)
    assert np.all(lg.kl_gaussians_full(m + 0.1, S, m, S) > 0)


def test_elbo_is_tight_at_the_posterior(model):
    W, b, x = model
    m, S = lg.posterior(x, W, b, SIGMA2)
    np.testing.assert_allclose(
        lg.elbo_gaussian(x, W, b, SIGMA2, m, S), lg.log_marginal(x, W, b, SIGMA2), atol=1e-12
    )


def test_gap_equals_kl_for_random_q(model):
    W, b, x = model
    m, S = lg.posterior(x, W, b, SIGMA2)
    log_px = lg.log_marginal(x, W, b, SIGMA2)
    rng = np.random.default_rng(2)
    for _ in range(5):
        mu = rng.standard_normal((4, 3))
        A = rng.standard_normal((4, 3, 3))
        cov = A @ np.swapaxes(A, -1, -2) + 0.1 * np.eye(3)  # full, one per example
        gap = log_px - lg.elbo_gaussian(x, W, b, SIGMA2, mu, cov)
        np.testing.assert_allclose(gap, lg.kl_gaussians_full(mu, cov, m, S), atol=1e-10)
        assert np.all(gap > 0)


def test_best_diagonal_q_is_a_stationary_point(model):
    W, b, x = model
    mu, log_var = lg.best_diagonal_q(x, W, b, SIGMA2)
    assert mu.shape == log_var.shape == (4, 3)

    def elbo(mu_, log_var_):
        return lg.elbo_gaussian(x, W, b, SIGMA2, mu_, lg.diag_cov(log_var_))

    best = elbo(mu, log_var)
    rng = np.random.default_rng(3)
    for _ in range(10):
        d_mu, d_lv = 1e-2 * rng.standard_normal((2, 4, 3))
        assert np.all(elbo(mu + d_mu, log_var + d_lv) < best)


def test_monte_carlo_elbo_converges_to_the_analytic_one(model):
    W, b, x = model
    rng = np.random.default_rng(4)
    mu, log_var = rng.standard_normal((4, 3)), 0.3 * rng.standard_normal((4, 3))
    log_w = lg.log_importance_weights(
        x, W, b, SIGMA2, mu, log_var, rng.standard_normal((4, 50_000, 3))
    )
    assert log_w.shape == (4, 50_000)
    analytic = lg.elbo_gaussian(x, W, b, SIGMA2, mu, lg.diag_cov(log_var))
    stderr = log_w.std(axis=1) / np.sqrt(log_w.shape[1])
    assert np.all(np.abs(log_w.mean(axis=1) - analytic) < 5 * stderr)


def test_importance_weights_are_constant_at_the_posterior():
    # with a diagonal posterior (orthogonal columns of W), q = p(z|x) makes every weight p(x)
    W = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    b = np.zeros(3)
    x = np.array([[0.5, -1.0, 0.3]])
    m, S = lg.posterior(x, W, b, SIGMA2)
    assert abs(S[0, 1]) < 1e-15
    eps = np.random.default_rng(0).standard_normal((1, 7, 2))
    log_w = lg.log_importance_weights(x, W, b, SIGMA2, m, np.log(np.diag(S))[None], eps)
    np.testing.assert_allclose(log_w, np.tile(lg.log_marginal(x, W, b, SIGMA2), (1, 7)), atol=1e-12)


def test_iwae_bound_values_and_stability():
    assert lg.iwae_bound(np.log([[1.0, 3.0]]))[0] == pytest.approx(np.log(2.0))
    assert lg.iwae_bound(np.array([-1000.0])) == pytest.approx(-1000.0)
    out = lg.iwae_bound(np.array([[-1000.0, -1000.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [-1000.0, 0.0])


def test_iwae_bound_increases_with_k_towards_log_px(model):
    W, b, x = model
    x = x[:1]
    log_px = lg.log_marginal(x, W, b, SIGMA2)[0]
    mu, log_var = lg.best_diagonal_q(x, W, b, SIGMA2)
    mu, log_var = mu + 0.5, log_var + 0.7  # a poor q, so the gaps are large
    rng = np.random.default_rng(6)
    means = []
    for k in (1, 4, 16, 64):
        log_w = lg.log_importance_weights(
            np.repeat(x, 4000, 0),
            W,
            b,
            SIGMA2,
            np.repeat(mu, 4000, 0),
            np.repeat(log_var, 4000, 0),
            rng.standard_normal((4000, k, 3)),
        )
        means.append(lg.iwae_bound(log_w).mean())
    assert np.all(np.diff(means) > 0)
    assert means[-1] < log_px
    assert log_px - means[-1] < 0.25 * (log_px - means[0])
