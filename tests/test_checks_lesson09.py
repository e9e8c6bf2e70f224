"""Lesson 09's checkers: their references agree with the package, right answers written
differently pass, each common slip is caught, and a stub is "not done"."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch import distributions as dist
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson09 as check
from vae_from_scratch.checks.core import PASSED, WRONG
from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.layers import sigmoid
from vae_from_scratch.networks import Layer, Network
from vae_from_scratch.vae import one_hot as package_one_hot

pytestmark = pytest.mark.lesson09

CHECKERS = [check.one_hot, check.label_rows_grad, check.softmax_cross_entropy,
            check.cb_log_norm, check.cb_log_norm_grad]


def test_the_lesson_registers_exercises_9_1_to_9_6_without_the_written_ones():
    found = [(c.exercise, c.name) for c in core.checkers(9)]
    assert found == [
        ("9.1", "one_hot"),
        ("9.2", "label_rows_grad"),
        ("9.3", "softmax_cross_entropy"),
        ("9.5", "cb_log_norm"),
        ("9.6", "cb_log_norm_grad"),
    ]


# -- the references against the package -----------------------------------------------------------


def test_one_hot_reference_is_the_packages():
    y = np.array([3, 0, 9, 3, 1])
    np.testing.assert_array_equal(check._one_hot(y, 10), package_one_hot(y, 10, np.float64))
    np.testing.assert_array_equal(check._one_hot(y, 10), np.eye(10)[y])
    vae = VAE(6, (4,), 2, n_classes=10, dtype=np.float64)
    np.testing.assert_array_equal(vae.check_y(y, len(y)), check._one_hot(y, 10))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_rows_grad_reference_is_what_the_condition_layer_gives(seed):
    """The package's first layer of a conditional network (condition + Linear), backward from
    an arbitrary upstream gradient: its weight gradient's label rows are the reference's."""
    rng = np.random.default_rng(seed)
    n, d, h, k = 9, 3, 4, 5
    net = Network([Layer("condition"), Layer("linear", "l", (d + k, h))], d, h)
    params = {}
    net.init_params(rng, params)
    x, y = rng.standard_normal((n, d)), rng.integers(0, k - 1, n)  # class k-1 never occurs
    out, caches = net.forward(params, x, check._one_hot(y, k))
    delta = rng.standard_normal(out.shape)
    grads = {}
    net.backward(delta, caches, grads)
    expected = check._label_rows_grad(y, delta, k)
    np.testing.assert_allclose(grads["l.W"][d:], expected, rtol=1e-12, atol=1e-14)
    assert np.all(expected[k - 1] == 0)
    np.testing.assert_allclose(expected.sum(axis=0), grads["l.b"], rtol=1e-12)


def test_in_a_conditional_vae_the_label_rows_add_up_to_the_bias_gradient():
    """Each example's one-hot has a single 1, so the label rows' gradients sum to the bias's,
    in both networks' first layers."""
    rng = np.random.default_rng(3)
    vae = VAE(8, (6,), 2, n_classes=4, seed=0, dtype=np.float64)
    x, y = rng.uniform(0, 1, (10, 8)), rng.integers(0, 4, 10)
    _, grads = vae.loss_and_grads(x, rng.standard_normal((10, 2)), y)
    for layer, width in (("enc.0", 8), ("dec.0", 2)):
        np.testing.assert_allclose(grads[f"{layer}.W"][width:].sum(axis=0),
                                   grads[f"{layer}.b"], rtol=1e-10)


def test_softmax_cross_entropy_reference_matches_central_differences():
    rng = np.random.default_rng(4)
    logits, y = rng.normal(0, 2, (5, 4)), np.array([0, 3, 3, 1, 2])
    loss, dlogits = check._softmax_cross_entropy(logits, y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), y])), rel=1e-12)
    numeric = numerical_gradient(lambda: check._softmax_cross_entropy(logits, y)[0], logits)
    assert rel_error(dlogits, numeric) < 1e-8


def test_softmax_cross_entropy_reference_is_exact_for_huge_logits():
    logits = np.array([[800.0, 0.0, -800.0], [0.0, 1000.0, 2.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        loss, dlogits = check._softmax_cross_entropy(logits, np.array([0, 2]))
    assert loss == pytest.approx(998.0 / 2)
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [0, 0.5, -0.5]], atol=1e-300)


@pytest.mark.torch
def test_softmax_cross_entropy_reference_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    logits, y = rng.normal(0, 3, (6, 10)), rng.integers(0, 10, 6)
    t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(t, torch.tensor(y))
    loss_t.backward()
    loss, dlogits = check._softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    np.testing.assert_allclose(dlogits, t.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_the_cb_checkers_use_the_packages_functions():
    assert check.cb_log_norm.reference is dist.cb_log_norm
    assert check.cb_log_norm_grad.reference is dist.cb_log_norm_grad


def test_the_cb_strict_cases_reach_zero_and_the_hundreds():
    for checker, big in ((check.cb_log_norm, 750.0), (check.cb_log_norm_grad, 800.0)):
        strict = [c for c in checker.cases if c.numerics]
        values = np.concatenate([np.ravel(c.args[0]) for c in strict])
        assert 0.0 in values and big in values and -big in values


# -- right answers, written another way --------------------------------------------------------


def one_hot_by_eye(y, n_classes):
    return np.eye(n_classes)[y]


def one_hot_by_comparison(y, n_classes):
    return (y[:, None] == np.arange(n_classes)).astype(np.float32)


def label_rows_by_classes(y, delta, n_classes):
    return np.stack([delta[y == k].sum(axis=0) for k in range(n_classes)])


def label_rows_by_bincount(y, delta, n_classes):
    return np.stack([np.bincount(y, weights=delta[:, j], minlength=n_classes)
                     for j in range(delta.shape[1])], axis=1)


def softmax_ce_with_package_logsumexp(logits, y):
    lse = dist.logsumexp(logits, axis=1)
    n = len(y)
    onehot = np.eye(logits.shape[1])[y]
    return np.mean(lse - logits[np.arange(n), y]), (np.exp(logits - lse[:, None]) - onehot) / n


def cb_log_norm_with_log1p(logits):
    # log(a / tanh(a/2)) = log a + log1p(e^-a) - log1p(-e^-a), series below 1e-4
    a = np.abs(logits)
    small = a < 1e-4
    safe = np.where(small, 1.0, a)
    e = np.exp(-safe)
    closed = np.log(safe) + np.log1p(e) - np.log1p(-e)
    return np.where(small, np.log(2) + a * a / 12, closed)


def cb_log_norm_grad_with_clamped_sinh(logits):
    a = np.abs(logits)
    small = a < 1e-3
    safe = np.where(small, 1.0, a)
    closed = 1 / safe - 1 / np.sinh(np.minimum(safe, 700.0))  # 1/sinh(700) ~ 1e-304
    return np.sign(logits) * np.where(small, a / 6 - 7 * a**3 / 360, closed)


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.one_hot, one_hot_by_eye),
        (check.one_hot, one_hot_by_comparison),
        (check.label_rows_grad, label_rows_by_classes),
        (check.label_rows_grad, label_rows_by_bincount),
        (check.softmax_cross_entropy, softmax_ce_with_package_logsumexp),
        (check.cb_log_norm, cb_log_norm_with_log1p),
        (check.cb_log_norm_grad, cb_log_norm_grad_with_clamped_sinh),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- the common slips ----------------------------------------------------------------------------


def one_hot_transposed(y, n_classes):
    return np.eye(n_classes)[y].T


def one_hot_shifted(y, n_classes):
    return np.eye(n_classes)[y - 1]


def one_hot_sized_by_the_labels(y, n_classes):
    return np.eye(y.max() + 1)[y]


def one_hot_whole_columns(y, n_classes):
    out = np.zeros((len(y), n_classes))
    out[:, y] = 1.0
    return out


def label_rows_with_buffered_add(y, delta, n_classes):
    grad = np.zeros((n_classes, delta.shape[1]))
    grad[y] += delta  # one row per distinct label: repeated labels are lost
    return grad


def label_rows_per_class_mean(y, delta, n_classes):
    return np.stack([delta[y == k].mean(axis=0) if np.any(y == k) else np.zeros(delta.shape[1])
                     for k in range(n_classes)])


def label_rows_sized_by_the_labels(y, delta, n_classes):
    return check._label_rows_grad(y, delta, y.max() + 1)


def label_rows_all_rows_summed(y, delta, n_classes):
    return np.tile(delta.sum(axis=0), (n_classes, 1))


def softmax_ce_without_the_shift(logits, y):
    n = len(y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return -np.mean(np.log(p[np.arange(n), y])), (p - np.eye(logits.shape[1])[y]) / n


def softmax_ce_log_of_probability(logits, y):
    n = len(y)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    return -np.mean(np.log(p[np.arange(n), y])), (p - np.eye(logits.shape[1])[y]) / n


def softmax_ce_gradient_not_averaged(logits, y):
    loss, d = check._softmax_cross_entropy(logits, y)
    return loss, d * len(y)


def softmax_ce_summed_loss(logits, y):
    loss, d = check._softmax_cross_entropy(logits, y)
    return loss * len(y), d


def softmax_ce_gradient_sign(logits, y):
    loss, d = check._softmax_cross_entropy(logits, y)
    return loss, -d


def softmax_ce_without_the_target(logits, y):
    loss, d = check._softmax_cross_entropy(logits, y)
    return loss, d + np.eye(logits.shape[1])[y] / len(y)


def softmax_ce_max_not_added_back(logits, y):
    n = len(y)
    shifted = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))  # forgets + max
    p = np.exp(shifted - lse[:, None])
    return np.mean(lse - logits[np.arange(n), y]), (p - np.eye(logits.shape[1])[y]) / n


def cb_log_norm_where_both_branches(logits):
    return np.where(logits == 0, np.log(2.0), np.log(logits / np.tanh(logits / 2)))


def cb_log_norm_without_the_half(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-3, 1.0, a)
    return np.where(a < 1e-3, 0.0, np.log(safe / np.tanh(safe)))


def cb_log_norm_not_logged(logits):
    return np.exp(dist.cb_log_norm(logits))


def cb_log_norm_series_only(logits):
    return np.log(2) + logits**2 / 12 - 7 * logits**4 / 1440


def cb_log_norm_through_pi(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-3, 1.0, logits)
    pi = sigmoid(safe)
    closed = np.log(np.log(pi / (1 - pi)) / (2 * pi - 1))
    return np.where(a < 1e-3, np.log(2) + a * a / 12, closed)


def cb_log_norm_through_exp(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-3, 1.0, logits)
    closed = dist.softplus(safe) - np.log(np.expm1(safe) / safe)  # softplus - A(l)
    return np.where(a < 1e-3, np.log(2) + a * a / 12, closed)


def cb_log_norm_series_too_far(logits):
    a = np.abs(logits)
    safe = np.where(a < 1.0, 1.0, a)
    return np.where(a < 1.0, np.log(2) + a * a / 12 - 7 * a**4 / 1440,
                    np.log(safe / np.tanh(safe / 2)))


def cb_log_norm_series_sign(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-3, 1.0, a)
    return np.where(a < 1e-3, np.log(2) - a * a / 12, np.log(safe / np.tanh(safe / 2)))


def cb_grad_cancelling(logits):
    safe = np.where(logits == 0, 1.0, logits)
    return np.where(logits == 0, 0.0, 1 / safe - 1 / np.sinh(safe))


def cb_grad_sinh_overflows(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-2, 1.0, logits)
    return np.where(a < 1e-2, logits / 6 - 7 * logits**3 / 360, 1 / safe - 1 / np.sinh(safe))


def cb_grad_sign(logits):
    return -dist.cb_log_norm_grad(logits)


def cb_grad_of_c_not_log_c(logits):
    return np.exp(dist.cb_log_norm(logits)) * dist.cb_log_norm_grad(logits)


def cb_grad_without_the_sign(logits):
    return np.abs(dist.cb_log_norm_grad(logits))


def cb_grad_series_sign(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-2, 1.0, a)
    closed = 1 / safe - 2 * np.exp(-safe) / -np.expm1(-2 * safe)
    return np.sign(logits) * np.where(a < 1e-2, a / 6 + 7 * a**3 / 360, closed)


def cb_grad_with_tanh(logits):
    a = np.abs(logits)
    safe = np.where(a < 1e-2, 1.0, a)
    closed = 1 / safe - 1 / np.tanh(safe)
    return np.sign(logits) * np.where(a < 1e-2, -a / 3, closed)


MISTAKES = [
    (check.one_hot, one_hot_transposed),
    (check.one_hot, one_hot_shifted),
    (check.one_hot, one_hot_sized_by_the_labels),
    (check.one_hot, one_hot_whole_columns),
    (check.label_rows_grad, label_rows_with_buffered_add),
    (check.label_rows_grad, label_rows_per_class_mean),
    (check.label_rows_grad, label_rows_sized_by_the_labels),
    (check.label_rows_grad, label_rows_all_rows_summed),
    (check.softmax_cross_entropy, softmax_ce_without_the_shift),
    (check.softmax_cross_entropy, softmax_ce_log_of_probability),
    (check.softmax_cross_entropy, softmax_ce_gradient_not_averaged),
    (check.softmax_cross_entropy, softmax_ce_summed_loss),
    (check.softmax_cross_entropy, softmax_ce_gradient_sign),
    (check.softmax_cross_entropy, softmax_ce_without_the_target),
    (check.softmax_cross_entropy, softmax_ce_max_not_added_back),
    (check.cb_log_norm, cb_log_norm_where_both_branches),
    (check.cb_log_norm, cb_log_norm_without_the_half),
    (check.cb_log_norm, cb_log_norm_not_logged),
    (check.cb_log_norm, cb_log_norm_series_only),
    (check.cb_log_norm, cb_log_norm_through_pi),
    (check.cb_log_norm, cb_log_norm_through_exp),
    (check.cb_log_norm, cb_log_norm_series_too_far),
    (check.cb_log_norm, cb_log_norm_series_sign),
    (check.cb_log_norm_grad, cb_grad_cancelling),
    (check.cb_log_norm_grad, cb_grad_sinh_overflows),
    (check.cb_log_norm_grad, cb_grad_sign),
    (check.cb_log_norm_grad, cb_grad_of_c_not_log_c),
    (check.cb_log_norm_grad, cb_grad_without_the_sign),
    (check.cb_log_norm_grad, cb_grad_with_tanh),
    (check.cb_log_norm_grad, cb_grad_series_sign),
]


@pytest.mark.parametrize("checker, fn", MISTAKES, ids=[fn.__name__ for _, fn in MISTAKES])
def test_common_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message


def test_the_buffered_add_is_caught_by_its_values_not_its_shape():
    result = check.label_rows_grad.run(label_rows_with_buffered_add)
    assert "entries differ" in result.message


def test_a_missing_safeguard_is_named_with_what_the_case_is_for():
    result = check.cb_log_norm.run(cb_log_norm_where_both_branches)
    assert "np.where computes both" in result.message
    result = check.cb_log_norm_grad.run(cb_grad_sinh_overflows)
    assert "sinh(l) overflows" in result.message
    result = check.softmax_cross_entropy.run(softmax_ce_without_the_shift)
    assert "Subtract each row's largest logit" in result.message


def test_a_gradient_not_averaged_is_named_as_a_sum_where_a_mean_belongs():
    result = check.softmax_cross_entropy.run(softmax_ce_gradient_not_averaged)
    assert "dlogits is wrong" in result.message
    assert "a sum where a mean belongs" in result.message


def test_the_cancelling_gradient_is_wrong_by_value_at_small_logits():
    """Without the series, 1/l - 1/sinh(l) is right to the default tolerance at l = 1e-3 but
    not at 1e-5 and below: the second case catches it without floating-point flags."""
    result = check.cb_log_norm_grad.run(cb_grad_cancelling)
    assert "1e-05" in result.message or "0.00001" in result.message
    assert "FloatingPointError" not in result.message
