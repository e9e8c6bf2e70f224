"""Lesson 04's checkers catch the mistakes learners make, accept right answers written
differently, and their lesson-only references are right."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import distributions as dist
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson04 as check
from vae_from_scratch.checks.core import NOT_DONE, PASSED, WRONG
from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.layers import Linear, ReLU

pytestmark = pytest.mark.lesson04


def test_the_lesson_registers_exercises_4_1_to_4_6():
    found = [(c.exercise, c.name) for c in core.checkers(4)]
    assert found == [
        ("4.1", "score_function_gradient"),
        ("4.2", "reparameterize_backward"),
        ("4.3", "kl_standard_normal_backward"),
        ("4.4", "bernoulli_log_likelihood_backward"),
        ("4.5", "linear_backward"),
        ("4.6", "vae_loss_and_grads"),
    ]


# -- the lesson-only references -----------------------------------------------------------------


def test_score_function_reference_is_unbiased():
    # E[z^2] = mu^2 + var: d/dmu = 2 mu, d/dlog_var = var
    mu, log_var = np.array([1.0, -0.5]), np.log(np.array([0.5, 2.0]))
    eps = np.random.default_rng(0).standard_normal((2_000_000, 2))
    dmu, dlog_var = check._score_function_gradient(check.sum_of_squares, mu, log_var, eps)
    np.testing.assert_allclose(dmu, 2 * mu, atol=0.03)
    np.testing.assert_allclose(dlog_var, np.exp(log_var), atol=0.05)


def test_vae_reference_matches_finite_differences():
    (params, x, eps), _ = check.vae_loss_and_grads.cases[0].fresh()
    loss, grads = check._vae_loss_and_grads(params, x, eps)
    assert isinstance(loss, float)
    assert set(grads) == set(params)
    for name, value in params.items():
        numeric = numerical_gradient(lambda: check._vae_loss_and_grads(params, x, eps)[0], value)
        assert rel_error(grads[name], numeric) < 1e-7, name


# -- right answers, written another way --------------------------------------------------------


def score_by_z(f, mu, log_var, eps):
    var = np.exp(log_var)
    z = mu + np.sqrt(var) * eps
    fz = f(z)
    dmu = np.mean(fz[:, None] * (z - mu) / var, axis=0)
    dlv = np.mean(fz[:, None] * (-0.5 + 0.5 * (z - mu) ** 2 / var), axis=0)
    return dmu, dlv


def reparam_backward_by_z(dz, cache):
    std, eps = cache
    return dz.copy(), 0.5 * dz * std * eps


def kl_backward_with_einsum(dkl, mu, log_var):
    return np.einsum("n,nl->nl", dkl, mu), np.einsum("n,nl->nl", dkl, np.expm1(log_var) / 2)


def bernoulli_backward_with_tanh(dout, x, logits):
    return dout[:, None] * (x - 0.5 * (1.0 + np.tanh(0.5 * logits)))


def linear_backward_with_einsum(dout, cache):
    x, W = cache
    return (np.einsum("nk,ik->ni", dout, W), np.einsum("ni,nk->ik", x, dout),
            np.einsum("nk->k", dout))


def vae_loss_and_grads_solution(params, x, eps, *, skip_kl=False, one_head=False,
                                 no_relu_mask=False, sign=1.0):
    """The lesson's solution, with switches that make the classic mistakes."""
    p = params
    a1, lin1 = Linear.forward(x, p["enc.0.W"], p["enc.0.b"])
    h1, relu1 = ReLU.forward(a1)
    mu, lin_mu = Linear.forward(h1, p["enc.mu.W"], p["enc.mu.b"])
    log_var, lin_lv = Linear.forward(h1, p["enc.log_var.W"], p["enc.log_var.b"])
    z, rep = dist.reparameterize(mu, log_var, eps)
    a2, lin2 = Linear.forward(z, p["dec.0.W"], p["dec.0.b"])
    h2, relu2 = ReLU.forward(a2)
    logits, lin3 = Linear.forward(h2, p["dec.out.W"], p["dec.out.b"])
    loss = float(np.mean(-dist.bernoulli_log_likelihood(x, logits)
                         + dist.kl_standard_normal(mu, log_var)))
    grads = {}
    n = x.shape[0]
    d_row = np.full(n, 1.0 / n)
    d_logits = dist.bernoulli_log_likelihood_backward(-sign * d_row, x, logits)
    d_h2, grads["dec.out.W"], grads["dec.out.b"] = Linear.backward(d_logits, lin3)
    d_a2 = d_h2 if no_relu_mask else ReLU.backward(d_h2, relu2)
    d_z, grads["dec.0.W"], grads["dec.0.b"] = Linear.backward(d_a2, lin2)
    d_mu, d_log_var = dist.reparameterize_backward(d_z, rep)
    if not skip_kl:
        d_mu_kl, d_lv_kl = dist.kl_standard_normal_backward(d_row, mu, log_var)
        d_mu, d_log_var = d_mu + d_mu_kl, d_log_var + d_lv_kl
    d_h1_mu, grads["enc.mu.W"], grads["enc.mu.b"] = Linear.backward(d_mu, lin_mu)
    d_h1_lv, grads["enc.log_var.W"], grads["enc.log_var.b"] = Linear.backward(d_log_var, lin_lv)
    d_h1 = d_h1_mu if one_head else d_h1_mu + d_h1_lv
    d_a1 = ReLU.backward(d_h1, relu1)
    _, grads["enc.0.W"], grads["enc.0.b"] = Linear.backward(d_a1, lin1)
    return loss, grads


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.score_function_gradient, score_by_z),
        (check.reparameterize_backward, reparam_backward_by_z),
        (check.kl_standard_normal_backward, kl_backward_with_einsum),
        (check.bernoulli_log_likelihood_backward, bernoulli_backward_with_tanh),
        (check.linear_backward, linear_backward_with_einsum),
        (check.vae_loss_and_grads, vae_loss_and_grads_solution),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- typical mistakes -----------------------------------------------------------------------------


def score_without_dividing_by_std(f, mu, log_var, eps):
    std = np.exp(0.5 * log_var)
    fz = f(mu + std * eps)[:, None]
    return np.mean(fz * eps, axis=0), np.mean(fz * 0.5 * (eps**2 - 1), axis=0)


def score_using_the_reparameterized_gradient(f, mu, log_var, eps):
    std = np.exp(0.5 * log_var)
    z = mu + std * eps
    return np.mean(2 * z, axis=0), np.mean(2 * z * 0.5 * std * eps, axis=0)


def reparam_backward_without_half(dz, cache):
    std, eps = cache
    return dz, dz * std * eps


def reparam_backward_by_var(dz, cache):
    std, eps = cache
    return dz, dz * 0.5 * std**2 * eps


def kl_backward_without_minus_one(dkl, mu, log_var):
    return dkl[:, None] * mu, dkl[:, None] * 0.5 * np.exp(log_var)


def kl_backward_ignoring_dkl(dkl, mu, log_var):
    return mu, 0.5 * (np.exp(log_var) - 1)


def bernoulli_backward_wrong_sign(dout, x, logits):
    return dout[:, None] * (dist.sigmoid(logits) - x)


def bernoulli_backward_with_probabilities(dout, x, logits):
    s = dist.sigmoid(logits)
    return dout[:, None] * (x / s - (1 - x) / (1 - s))  # the gradient in s, not in the logits


def linear_backward_db_not_summed(dout, cache):
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.mean(axis=0)


def linear_backward_dw_transposed(dout, cache):
    x, W = cache
    return dout @ W.T, dout.T @ x, dout.sum(axis=0)  # (D_out, D_in): the shape of W.T


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.score_function_gradient, score_without_dividing_by_std),
        (check.score_function_gradient, score_using_the_reparameterized_gradient),
        (check.reparameterize_backward, reparam_backward_without_half),
        (check.reparameterize_backward, reparam_backward_by_var),
        (check.kl_standard_normal_backward, kl_backward_without_minus_one),
        (check.kl_standard_normal_backward, kl_backward_ignoring_dkl),
        (check.bernoulli_log_likelihood_backward, bernoulli_backward_wrong_sign),
        (check.bernoulli_log_likelihood_backward, bernoulli_backward_with_probabilities),
        (check.linear_backward, linear_backward_db_not_summed),
        (check.linear_backward, linear_backward_dw_transposed),
    ],
)
def test_typical_mistakes_are_wrong(checker, fn):
    with np.errstate(all="ignore"):
        result = checker.run(fn)
    assert result.status == WRONG, result.message


@pytest.mark.parametrize(
    "mistake",
    [dict(skip_kl=True), dict(one_head=True), dict(no_relu_mask=True), dict(sign=-1.0)],
    ids=["kl-forgotten", "one-head-only", "no-relu-mask", "recon-sign"],
)
def test_typical_mistakes_in_the_whole_backward_pass_are_wrong(mistake):
    def vae_loss_and_grads(params, x, eps):
        return vae_loss_and_grads_solution(params, x, eps, **mistake)

    result = check.vae_loss_and_grads.run(vae_loss_and_grads)
    assert result.status == WRONG, result.message


def test_a_missing_gradient_is_reported_by_name():
    def vae_loss_and_grads(params, x, eps):
        loss, grads = vae_loss_and_grads_solution(params, x, eps)
        del grads["enc.0.b"]
        return loss, grads

    result = check.vae_loss_and_grads.run(vae_loss_and_grads)
    assert result.status == WRONG
    assert "'enc.0.b'" in result.detail


def test_a_lesson_stub_is_not_done():
    def vae_loss_and_grads(params, x, eps):
        grads = {}
        raise NotImplementedError("Exercise 4.6: implement vae_loss_and_grads")
        return 0.0, grads

    result = check.vae_loss_and_grads.run(vae_loss_and_grads)
    assert result.status == NOT_DONE
    assert result.detail == "Exercise 4.6: implement vae_loss_and_grads"


def test_the_vae_cases_use_the_configuration_the_lesson_describes():
    for case in check.vae_loss_and_grads.cases:
        params, x, eps = case.args
        d, h = params["enc.0.W"].shape
        expected = VAE(d, (h,), eps.shape[1], dtype=np.float64).param_shapes()
        assert {k: v.shape for k, v in params.items()} == expected
        assert x.min() >= 0 and x.max() <= 1 and np.any(x == 0)
