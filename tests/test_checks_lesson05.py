"""Lesson 05's checkers catch the mistakes learners make, accept right answers written
differently, and their lesson-only references are right."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import distributions as dist
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson05 as check
from vae_from_scratch.checks.core import PASSED, WRONG
from vae_from_scratch.evaluate import active_units as package_active_units
from vae_from_scratch.optim import Adam
from vae_from_scratch.train import TRAIN_STREAM, NumpyBackend

pytestmark = pytest.mark.lesson05


def test_the_lesson_registers_exercises_5_1_to_5_4():
    found = [(c.exercise, c.name) for c in core.checkers(5)]
    assert found == [
        ("5.1", "adam_update"),
        ("5.2", "train_step"),
        ("5.3", "kl_monte_carlo"),
        ("5.4", "active_units"),
    ]


# -- the lesson-only references -----------------------------------------------------------------


def test_adam_reference_follows_the_formulas_and_leaves_its_inputs_alone():
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=4), rng.normal(size=4)
    m, v = rng.normal(0, 0.1, 4), rng.uniform(0, 0.1, 4)
    before = [a.copy() for a in (p, g, m, v)]
    new_p, new_m, new_v = check._adam_update(p, g, m, v, 3, lr=0.01)
    m_expected = 0.9 * m + 0.1 * g
    v_expected = 0.999 * v + 0.001 * g * g
    step = 0.01 * (m_expected / (1 - 0.9**3)) / (np.sqrt(v_expected / (1 - 0.999**3)) + 1e-8)
    np.testing.assert_allclose(new_m, m_expected)
    np.testing.assert_allclose(new_v, v_expected)
    np.testing.assert_allclose(new_p, p - step)
    for a, b in zip(before, (p, g, m, v), strict=True):
        np.testing.assert_array_equal(a, b)


def test_adam_reference_repeated_equals_the_optimizer_over_many_steps():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(2, 3))
    opt = Adam({"w": p.copy()}, lr=0.05)
    m = v = np.zeros_like(p)
    for t in range(1, 6):
        g = rng.normal(size=p.shape)
        opt.step({"w": g})
        p, m, v = check._adam_update(p, g, m, v, t, lr=0.05)
    np.testing.assert_allclose(p, opt.params["w"], rtol=1e-12)


def test_train_step_reference_is_the_backends_step():
    # NumpyBackend draws eps with dtype=vae.dtype; for a float64 model that is the same
    # stream as the reference's standard_normal(...).astype(float64).
    x = np.random.default_rng(2).uniform(0, 1, (8, 6))
    a = VAE(6, (5,), 2, seed=0, dtype=np.float64)
    b = VAE(6, (5,), 2, seed=0, dtype=np.float64)
    backend = NumpyBackend(a, x, batch_size=8, seed=3, lr=0.01)
    backend.order = np.arange(8)  # no start_epoch, so no shuffle draws from its rng
    opt = Adam(b.params, lr=0.01)
    rng = np.random.default_rng([3, TRAIN_STREAM])  # the backend's own stream for seed 3
    for _ in range(3):
        got = backend.step(0)
        terms = check._train_step(b, opt, x, rng)
        assert got == pytest.approx((terms.loss, terms.recon, terms.kl), rel=1e-12)
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-12)


def test_kl_monte_carlo_reference_averages_to_the_analytic_kl():
    mu, log_var = np.array([[0.5, -1.0, 0.0]]), np.array([[0.3, -0.8, 0.0]])
    eps = np.random.default_rng(4).standard_normal((200_000, 3))
    draws = check._kl_monte_carlo(np.repeat(mu, len(eps), 0), np.repeat(log_var, len(eps), 0), eps)
    assert draws.mean() == pytest.approx(dist.kl_standard_normal(mu, log_var)[0], abs=0.01)


def test_kl_monte_carlo_reference_matches_the_model_estimator():
    vae = VAE(6, (5,), 3, seed=0, dtype=np.float64, kl="monte_carlo")
    x = np.random.default_rng(5).uniform(0, 1, (4, 6))
    eps = np.random.default_rng(6).standard_normal((4, 3))
    _, kl = vae.elbo_terms(x, eps)
    mu, log_var = vae.encode(x)
    np.testing.assert_allclose(check._kl_monte_carlo(mu, log_var, eps), kl, rtol=1e-12)


def test_active_units_reference_agrees_with_the_package():
    vae = VAE(6, (5,), 4, seed=0, dtype=np.float64)
    x = np.random.default_rng(7).uniform(0, 1, (50, 6))
    mu, _ = vae.encode(x)
    for threshold in (1e-4, 1e-3, 1e-2):
        assert check._active_units(mu, threshold) == package_active_units(vae, x, threshold)


# -- right answers, written another way --------------------------------------------------------


def adam_in_place_on_copies(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    p, m, v = p.copy(), m.copy(), v.copy()
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    alpha = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)  # the paper's folded form
    p -= alpha * m / (np.sqrt(v) + eps * np.sqrt(1 - beta2**t))
    return p, m, v


def train_step_with_dtype_argument(vae, optimizer, x, rng):
    eps = rng.standard_normal((x.shape[0], vae.latent_dim), dtype=vae.dtype)
    loss_terms, grads = vae.loss_and_grads(x, eps)
    optimizer.step(grads)
    return loss_terms


def kl_mc_from_package(mu, log_var, eps):
    z, _ = dist.reparameterize(mu, log_var, eps)
    return dist.gaussian_log_density(z, mu, log_var) - dist.gaussian_log_density(z, 0.0, 0.0)


def active_units_by_std(mu, threshold=0.01):
    return int((mu.std(axis=0) ** 2 > threshold).sum())


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.adam_update, adam_in_place_on_copies),
        (check.train_step, train_step_with_dtype_argument),
        (check.kl_monte_carlo, kl_mc_from_package),
        (check.active_units, active_units_by_std),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- the classic mistakes ------------------------------------------------------------------------


def adam_without_bias_correction(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr * m / (np.sqrt(v) + eps), m, v


def adam_with_t_off_by_one(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    return check._adam_update(p, g, m, v, t + 1, lr, beta1, beta2, eps)


def adam_with_eps_inside_the_root(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr * (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t) + eps), m, v


def train_step_without_the_update(vae, optimizer, x, rng):
    eps = rng.standard_normal((len(x), vae.latent_dim))
    return vae.loss_and_grads(x, eps)[0]


def train_step_with_fixed_noise(vae, optimizer, x, rng):
    eps = np.random.default_rng(0).standard_normal((len(x), vae.latent_dim))
    terms, grads = vae.loss_and_grads(x, eps)
    optimizer.step(grads)
    return terms


def train_step_with_zero_noise(vae, optimizer, x, rng):
    terms, grads = vae.loss_and_grads(x, np.zeros((len(x), vae.latent_dim)))
    optimizer.step(grads)
    return terms


def train_step_returning_loss_and_grads(vae, optimizer, x, rng):
    eps = rng.standard_normal((len(x), vae.latent_dim))
    terms, grads = vae.loss_and_grads(x, eps)
    optimizer.step(grads)
    return terms, grads


def kl_mc_with_the_analytic_formula(mu, log_var, eps):
    return dist.kl_standard_normal(mu, log_var)


def kl_mc_with_std_for_log_var(mu, log_var, eps):
    z = mu + np.exp(log_var) * eps
    return dist.gaussian_log_density(z, mu, log_var) - dist.gaussian_log_density(z, 0.0, 0.0)


def kl_mc_with_the_sign_flipped(mu, log_var, eps):
    return -check._kl_monte_carlo(mu, log_var, eps)


def active_units_over_rows(mu, threshold=0.01):
    return int(np.sum(np.var(mu, axis=1) > threshold))


def active_units_with_the_mean(mu, threshold=0.01):
    return int(np.sum(np.abs(np.mean(mu, axis=0)) > threshold))


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.adam_update, adam_without_bias_correction),
        (check.adam_update, adam_with_t_off_by_one),
        (check.adam_update, adam_with_eps_inside_the_root),
        (check.train_step, train_step_without_the_update),
        (check.train_step, train_step_with_fixed_noise),
        (check.train_step, train_step_with_zero_noise),
        (check.train_step, train_step_returning_loss_and_grads),
        (check.kl_monte_carlo, kl_mc_with_the_analytic_formula),
        (check.kl_monte_carlo, kl_mc_with_std_for_log_var),
        (check.kl_monte_carlo, kl_mc_with_the_sign_flipped),
        (check.active_units, active_units_over_rows),
        (check.active_units, active_units_with_the_mean),
    ],
)
def test_classic_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message


def test_a_wrong_train_step_shows_which_figure_differs():
    result = check.train_step.run(train_step_without_the_update)
    assert "for train_step(seed) with" in result.message
    assert "\n    loss is wrong:\n" in result.message
    assert "also wrong: recon, kl, parameters after the steps" in result.message
    assert result.detail.startswith("loss: ")
