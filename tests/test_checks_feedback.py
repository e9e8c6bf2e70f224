"""The checkers' messages name the mistake: the wrong output, the slip behind it, the line
that raised, the unsafe formula, the argument changed in place.

Each class of mistake is pushed through a real exercise's checker (and, where the result
would depend on the machine's round-off, through a small checker of its own).
"""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks import core, lesson01, lesson02, lesson03, lesson04, lesson05, lesson07
from vae_from_scratch.checks.core import PASSED, WRONG, Case, Checker

L01, L02, L03 = pytest.mark.lesson01, pytest.mark.lesson02, pytest.mark.lesson03
L04, L05, L07 = pytest.mark.lesson04, pytest.mark.lesson05, pytest.mark.lesson07
pytestmark = [
    pytest.mark.lesson01,
    pytest.mark.lesson02,
    pytest.mark.lesson03,
    pytest.mark.lesson04,
    pytest.mark.lesson05,
    pytest.mark.lesson07,
]


def _wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message
    assert checker.run(fn).message == result.message  # deterministic
    return result


# -- a function that modifies its inputs -------------------------------------------------------


def adam_in_place(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m *= beta1  # changes the caller's m
    m += (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps), m, v


def linear_backward_scaling_the_cache(dout, cache):
    x, W = cache
    W *= 1.0 + 1e-3  # a slip that changes the cached weights in place
    return dout @ (W / (1.0 + 1e-3)).T, x.T @ dout, dout.sum(axis=0)


def test_an_answer_that_changes_its_input_is_wrong_and_names_the_argument():
    result = _wrong(lesson05.adam_update, adam_in_place)
    assert "changed its argument m in place" in result.message
    assert "expected" not in result.message  # the values themselves were right
    assert result.detail.startswith("Your function changed its argument m")


def test_a_change_deep_inside_an_argument_is_named_by_its_place():
    result = _wrong(lesson04.linear_backward, linear_backward_scaling_the_cache)
    assert "changed its argument cache[1] in place" in result.message


def test_consuming_a_random_generator_is_not_a_change():
    result = lesson05.train_step.run(lesson05._train_step)
    assert result.status == PASSED, result.message


# -- the wrong output, by name -------------------------------------------------------------------


def kl_backward_sign_in_dlog_var(dkl, mu, log_var):
    return dkl[:, None] * mu, -dkl[:, None] * 0.5 * np.expm1(log_var)


def posterior_with_covariance_transposed_scale(x, W, b, sigma2):
    m, S = lesson03.posterior.reference(x, W, b, sigma2)
    return m, 2 * S


def adam_with_v_from_g(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    new_p, new_m, _ = lesson05._adam_update(p, g, m, v, t, lr, beta1, beta2, eps)
    return new_p, new_m, (1 - beta2) * g * g


def mixture_backward_without_the_prior_term(dout, z, means, log_vars, logits):
    dz, dmeans, dlog_vars, dlogits = dist.mixture_log_density_backward(
        dout, z, means, log_vars, logits)
    pi = np.exp(logits - logits.max())
    return dz, dmeans, dlog_vars, dlogits + dout.sum() * pi / pi.sum()


def score_function_without_the_half(f, mu, log_var, eps):
    dmu, dlog_var = lesson04._score_function_gradient(f, mu, log_var, eps)
    return dmu, 2 * dlog_var


@pytest.mark.parametrize(
    "checker, fn, name",
    [
        pytest.param(lesson04.kl_standard_normal_backward, kl_backward_sign_in_dlog_var,
                     "dlog_var", marks=L04),
        pytest.param(lesson04.score_function_gradient, score_function_without_the_half,
                     "dlog_var", marks=L04),
        pytest.param(lesson03.posterior, posterior_with_covariance_transposed_scale, "S",
                     marks=L03),
        pytest.param(lesson05.adam_update, adam_with_v_from_g, "v", marks=L05),
        pytest.param(lesson07.mixture_log_density_backward,
                     mixture_backward_without_the_prior_term, "dlogits", marks=L07),
    ],
)
def test_a_wrong_item_of_a_tuple_is_named(checker, fn, name):
    result = _wrong(checker, fn)
    assert f"\n    {name} is wrong:\n" in result.message
    assert result.detail.startswith(f"{name}: ")
    assert "at [" not in result.message


def _vae_grads_with(**changes):
    """A whole-VAE backward whose gradients are the reference's, some of them scaled."""

    def vae_loss_and_grads(params, x, eps):
        loss, grads = lesson04._vae_loss_and_grads(params, x, eps)
        return loss, {k: g * changes.get(k, 1.0) for k, g in grads.items()}

    return vae_loss_and_grads


@pytest.mark.parametrize(
    "wrong, first",
    [
        # alphabetical order would report dec.0.b; the forward (parameter) order enc.mu.W
        (dict(zip(["dec.0.b", "dec.out.b"], [2.0, 2.0], strict=True)), "dec.out.b"),
        (dict(zip(["enc.mu.W", "dec.0.W"], [0.5, 0.5], strict=True)), "dec.0.W"),
        (dict(zip(["enc.0.W", "enc.log_var.b"], [-1.0, -1.0], strict=True)), "enc.log_var.b"),
    ],
)
@L04
def test_the_whole_backward_reports_the_first_wrong_gradient_in_backprop_order(wrong, first):
    result = _wrong(lesson04.vae_loss_and_grads, _vae_grads_with(**wrong))
    lines = result.message.splitlines()
    assert f"    grads['{first}'] is wrong (the first in backpropagation order" in lines[3]
    (other,) = set(wrong) - {first}
    assert lines[4] == f"    also wrong (perhaps because of it): grads['{other}']"
    assert result.detail.startswith(f"grads['{first}']: ")


@L04
def test_the_whole_backward_message_is_short():
    from tests.test_checks_lesson04 import vae_loss_and_grads_solution

    def no_relu_mask(params, x, eps):
        return vae_loss_and_grads_solution(params, x, eps, no_relu_mask=True)

    result = _wrong(lesson04.vae_loss_and_grads, no_relu_mask)
    lines = result.message.splitlines()
    assert len(lines) <= 14, result.message
    assert lines[2] == "      params: a dict of 10 arrays, x: shape (3, 5), eps: shape (3, 2)"
    assert "grads['dec.0.W'] is wrong" in lines[3]  # the ReLU mask the decoder's layer needs


@L04
def test_a_missing_gradient_is_named():
    def vae_loss_and_grads(params, x, eps):
        loss, grads = lesson04._vae_loss_and_grads(params, x, eps)
        del grads["enc.0.b"]
        return loss, grads

    result = _wrong(lesson04.vae_loss_and_grads, vae_loss_and_grads)
    assert result.detail == "grads: missing key 'enc.0.b'"
    assert len(result.message.splitlines()) <= 12, result.message


# -- common slips, recognised by their signature ---------------------------------------------


def kl_univariate_without_the_half(mu_q, log_var_q, mu_p, log_var_p):
    return 2 * lesson02._kl_univariate(mu_q, log_var_q, mu_p, log_var_p)


def reparam_backward_quarter(dz, cache):
    std, eps = cache
    return dz, 0.25 * dz * std * eps


def linear_ae_summed_over_the_batch(params, x):
    loss, grads = lesson01._linear_ae_loss_and_grads(params, x)
    return loss * len(x), grads


def linear_backward_db_mean(dout, cache):
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.mean(axis=0)


def linear_backward_dw_transposed(dout, cache):
    x, W = cache
    return dout @ W.T, dout.T @ x, dout.sum(axis=0)


def iwae_without_minus_log_k(log_weights):
    return dist.logsumexp(log_weights, axis=-1)


def kl_diag_mean_over_latents(mu, log_var):
    return 0.5 * np.mean(mu * mu + np.exp(log_var) - 1.0 - log_var, axis=-1)


def kl_diag_without_the_sum(mu, log_var):
    return 0.5 * (mu * mu + np.exp(log_var) - 1.0 - log_var)


def score_function_summed_over_samples(f, mu, log_var, eps):
    dmu, dlog_var = lesson04._score_function_gradient(f, mu, log_var, eps)
    return dmu * len(eps), dlog_var * len(eps)


def posterior_covariance_transposed(x, W, b, sigma2):
    m, S = lesson03.posterior.reference(x, W, b, sigma2)
    return m.T, S


@pytest.mark.parametrize(
    "checker, fn, words",
    [
        pytest.param(lesson04.kl_standard_normal_backward, kl_backward_sign_in_dlog_var,
                     "It has the opposite sign of the expected value: a sign error?", marks=L04),
        pytest.param(lesson02.kl_univariate, kl_univariate_without_the_half,
                     "It is exactly 2 times the expected value", marks=L02),
        pytest.param(lesson04.reparameterize_backward, reparam_backward_quarter,
                     "It is exactly half the expected value", marks=L04),
        pytest.param(lesson01.linear_ae_loss_and_grads, linear_ae_summed_over_the_batch,
                     "It is N = 3 times the expected value (N = x.shape[0]): a sum where a "
                     "mean belongs?", marks=L01),
        pytest.param(lesson04.score_function_gradient, score_function_summed_over_samples,
                     "It is S = 4 times the expected value (S = eps.shape[0])", marks=L04),
        pytest.param(lesson04.linear_backward, linear_backward_db_mean,
                     "It is the expected value divided by N = 3 (N = dout.shape[0]): a mean "
                     "where a sum belongs?", marks=L04),
        pytest.param(lesson02.kl_diag_standard_normal, kl_diag_mean_over_latents,
                     "divided by L = 3 (L = mu.shape[-1])", marks=L02),
        pytest.param(lesson03.iwae_bound, iwae_without_minus_log_k,
                     "It is larger than the expected value by exactly log K = log 2", marks=L03),
        pytest.param(lesson04.linear_backward, linear_backward_dw_transposed,
                     "It is the transpose of the expected matrix", marks=L04),
        pytest.param(lesson03.posterior, posterior_covariance_transposed,
                     "It is the transpose of the expected matrix", marks=L03),
        pytest.param(lesson02.kl_diag_standard_normal, kl_diag_without_the_sum,
                     "Its sum over axis 1 is the expected value: a sum over axis 1 is missing.",
                     marks=L02),
    ],
)
def test_a_common_slip_is_recognised_and_said(checker, fn, words):
    result = _wrong(checker, fn)
    assert words in result.message


def test_a_constant_factor_or_offset_of_no_known_kind_is_still_said():
    checker = Checker("9.20", reference=lambda x: np.sin(x), name="sine",
                      cases=[Case(np.array([0.3, 1.2, -0.7]))])
    try:
        result = checker.run(lambda x: 3 * np.sin(x))
        assert "It is 3 times the expected value, every entry" in result.message
        result = checker.run(lambda x: np.sin(x) + 0.5)
        assert "by the same +0.5 in every entry: a constant term" in result.message
        assert "It " not in checker.run(lambda x: np.cos(x)).message  # no slip to name
    finally:
        core._REGISTRY.pop(("9.20", "sine"))


@L05
def test_a_count_gets_no_factor_hint():
    def active_units_by_std(mu, threshold=0.01):
        return int(np.sum(np.std(mu, axis=0) > threshold))

    result = _wrong(lesson05.active_units, active_units_by_std)
    assert "times the expected" not in result.message


# -- an exception in the learner's code, with its line ---------------------------------------


def kl_backward_forgetting_the_new_axis(dkl, mu, log_var):
    d = dkl
    return d * mu, d * 0.5 * np.expm1(log_var)


@L04
def test_an_exception_is_reported_with_the_line_that_raised_it():
    result = _wrong(lesson04.kl_standard_normal_backward, kl_backward_forgetting_the_new_axis)
    lines = result.message.splitlines()
    assert any(line.startswith("    raised ValueError: operands could not be broadcast")
               for line in lines)
    line = kl_backward_forgetting_the_new_axis.__code__.co_firstlineno + 2
    assert f"    in kl_backward_forgetting_the_new_axis, line {line}:" in lines
    assert "        return d * mu, d * 0.5 * np.expm1(log_var)" in lines


@L04
def test_an_exception_inside_numpy_points_at_the_learners_call():
    def linear_backward(dout, cache):
        x, W = cache
        return np.matmul(dout, W), x.T @ dout, dout.sum(axis=0)  # W, not W.T

    result = _wrong(lesson04.linear_backward, linear_backward)
    assert "raised ValueError: matmul" in result.message
    assert "        return np.matmul(dout, W), x.T @ dout, dout.sum(axis=0)  # W, not W.T" \
        in result.message


# -- numerical safeguards the lessons ask for -------------------------------------------------


def nearest_without_the_clip(a, b):
    sq = np.sum(a * a, axis=1)[:, None] - 2.0 * a @ b.T + np.sum(b * b, axis=1)[None, :]
    return np.sqrt(sq.min(axis=1))


def bernoulli_backward_naive_sigmoid(dout, x, logits):
    return dout[:, None] * (x - 1.0 / (1.0 + np.exp(-logits)))


def iwae_naive(log_weights):
    return np.log(np.mean(np.exp(log_weights), axis=-1))


def log_marginal_with_det(x, W, b, sigma2):
    C = W @ W.T + sigma2 * np.eye(W.shape[0])
    d = x - b
    maha = np.sum(d * np.linalg.solve(C, d.T).T, axis=1)
    return -0.5 * (W.shape[0] * np.log(2 * np.pi) + np.log(np.linalg.det(C)) + maha)


def kl_quadrature_with_q(log_q, log_p, x):
    q, p = np.exp(log_q), np.exp(log_p)
    f = q * np.log(q / p)
    return np.sum(0.5 * (f[..., 1:] + f[..., :-1]) * np.diff(x), axis=-1)


def aggregate_naive(z, mu, log_var):
    diff = z[:, None, :] - mu[None, :, :]
    log_comp = -0.5 * np.sum(np.log(2 * np.pi) + log_var + diff**2 * np.exp(-log_var), axis=2)
    return np.log(np.mean(np.exp(log_comp), axis=1))


def mixture_naive(z, means, log_vars, logits):
    pi = np.exp(logits) / np.sum(np.exp(logits))
    diff = z[:, None, :] - means[None, :, :]
    log_comp = -0.5 * np.sum(np.log(2 * np.pi) + log_vars + diff**2 * np.exp(-log_vars), axis=2)
    return np.log(np.sum(pi * np.exp(log_comp), axis=1))


def mixture_backward_naive(dout, z, means, log_vars, logits):
    pi = np.exp(logits) / np.sum(np.exp(logits))
    diff = z[:, None, :] - means[None, :, :]
    inv_var = np.exp(-log_vars)[None]
    dens = pi * np.exp(-0.5 * np.sum(np.log(2 * np.pi) + log_vars + diff**2 * inv_var, axis=2))
    r = dens / dens.sum(axis=1, keepdims=True)  # 0/0 far in the tail
    w = dout[:, None] * r
    return (-np.sum(w[:, :, None] * diff * inv_var, axis=1),
            np.sum(w[:, :, None] * diff * inv_var, axis=0),
            0.5 * np.sum(w[:, :, None] * (diff**2 * inv_var - 1.0), axis=0),
            w.sum(axis=0) - dout.sum() * pi)


@pytest.mark.parametrize(
    "checker, fn, words, case",
    [
        pytest.param(lesson01.nearest_distances, nearest_without_the_clip,
                     "Your code took the square root of a negative number: where round-off "
                     "can push a value below 0, clip it at 0 first.",
                     "points 1e-9 from points of b", marks=L01),
        pytest.param(lesson04.bernoulli_log_likelihood_backward,
                     bernoulli_backward_naive_sigmoid,
                     "Your code overflowed in exp: use a form that cannot overflow.",
                     "logits of +-800", marks=L04),
        pytest.param(lesson03.iwae_bound, iwae_naive,
                     "Your code took the log of 0 (in log): a value that underflowed to 0? "
                     "Stay in log space (the log-sum-exp).", "about -1000", marks=L03),
        pytest.param(lesson03.log_marginal, log_marginal_with_det,
                     "Your code overflowed in det", "use slogdet", marks=L03),
        pytest.param(lesson02.kl_by_quadrature, kl_quadrature_with_q,
                     "Your code took the log of 0", "40 standard deviations", marks=L02),
        pytest.param(lesson07.aggregate_posterior_log_density, aggregate_naive,
                     "Your code took the log of 0", "underflows to 0", marks=L07),
        pytest.param(lesson07.mixture_log_density, mixture_naive,
                     "Your code took the log of 0", "underflows to 0", marks=L07),
        pytest.param(lesson07.mixture_log_density_backward, mixture_backward_naive,
                     "Your code produced an undefined value (NaN) in divide", "underflows to 0",
                     marks=L07),
    ],
)
def test_a_missing_safeguard_fails_its_strict_case_and_is_named(checker, fn, words, case):
    result = _wrong(checker, fn)
    assert words in result.message
    assert "(This case: " in result.message and case in result.message
    assert result.detail.startswith("Your code ")
    # the line of the learner's code is shown
    assert any(line.startswith(f"    in {fn.__name__}, line ") for line in
               result.message.splitlines())


@L04
def test_the_naive_sigmoid_gives_the_right_value_so_only_the_strict_case_catches_it():
    ordinary = Checker("9.21", reference=dist.bernoulli_log_likelihood_backward,
                       name="bernoulli_demo",
                       cases=[Case(*lesson04.bernoulli_log_likelihood_backward.cases[-1].args)])
    try:
        with np.errstate(over="ignore"):
            assert ordinary.run(bernoulli_backward_naive_sigmoid).status == PASSED
    finally:
        core._REGISTRY.pop(("9.21", "bernoulli_demo"))


def test_an_arccos_past_one_is_named():
    def angle(c):
        return np.arccos(np.clip(c, -1.0, 1.0))

    checker = Checker("9.22", reference=angle, cases=[
        Case(np.array([0.5, 1.0 + 2e-16 * 2])).strict("a cosine a hair above 1")])
    try:
        result = checker.run(lambda c: np.arccos(c))
        assert result.status == WRONG
        assert "Your code took the arccos of a number outside [-1, 1]" in result.message
        assert "(This case: a cosine a hair above 1.)" in result.message
        assert checker.run(angle).status == PASSED
    finally:
        core._REGISTRY.pop(("9.22", "angle"))


@L01
def test_an_unclipped_arccos_fails_principal_angles_on_this_machine():
    # Round-off pushes a cosine of the same-subspace cases past 1 on x86-64 with OpenBLAS;
    # elsewhere it may not, and the unclipped answer then passes, which is right too.
    def principal_angles(a, b):
        qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
        return np.arccos(np.linalg.svd(qa.T @ qb, compute_uv=False))

    result = lesson01.principal_angles.run(principal_angles)
    if result.status == PASSED:
        pytest.skip("round-off kept every cosine at or below 1 here")
    assert "arccos of a number outside [-1, 1]" in result.message


# -- active units: variance, not standard deviation --------------------------------------------


@L05
def test_active_units_by_the_standard_deviation_is_wrong():
    def active_units(mu, threshold=0.01):
        return int(np.sum(np.std(mu, axis=0) > threshold))

    result = _wrong(lesson05.active_units, active_units)
    assert "expected 1\n    got      2" in result.message
