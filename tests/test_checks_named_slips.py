"""Wrong answers that the checks of lessons 08 and 09 once let through or misnamed: each is
pushed through its checker here, and the message must name the slip."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch import distributions as dist
from vae_from_scratch.checks import core
from vae_from_scratch.checks import lesson08 as check08
from vae_from_scratch.checks import lesson09 as check09
from vae_from_scratch.checks import lesson10 as check10
from vae_from_scratch.checks.core import PASSED, WRONG, Case, Checker
from vae_from_scratch.conv import conv2d_output_size

pytestmark = [pytest.mark.lesson08, pytest.mark.lesson09, pytest.mark.lesson10]


def _wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message
    return result.message


# -- 9.1: the one-hot's dtype --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool])
def test_an_integer_or_boolean_one_hot_is_wrong_and_named(dtype):
    def one_hot(y, n_classes):
        return np.eye(n_classes, dtype=dtype)[y]

    message = _wrong(check09.one_hot, one_hot)
    assert f"It has dtype {np.dtype(dtype)}: the exercise asks for floats" in message
    assert "np.hstack" in message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_float_one_hot_of_either_precision_passes(dtype):
    def one_hot(y, n_classes):
        return np.eye(n_classes, dtype=dtype)[y]

    assert check09.one_hot.run(one_hot).status == PASSED


def test_a_one_hot_with_wrong_values_still_says_where():
    def one_hot(y, n_classes):
        return np.eye(n_classes)[np.asarray(y)[::-1]]

    assert "entries differ" in _wrong(check09.one_hot, one_hot)


# -- 9.3: the global maximum in place of each row's ----------------------------------------------


def test_subtracting_the_global_maximum_fails_with_log_0():
    def softmax_cross_entropy(logits, y):
        n = len(logits)
        shifted = logits - logits.max()  # the whole batch's maximum, not each row's
        lse = logits.max() + np.log(np.exp(shifted).sum(axis=1))
        loss = float(np.mean(lse - logits[np.arange(n), y]))
        return loss, (np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
                      - np.eye(logits.shape[1])[y]) / n

    message = _wrong(check09.softmax_cross_entropy, softmax_cross_entropy)
    assert "log of 0" in message
    assert "Subtract each row's own largest logit" in message


def test_the_rows_of_the_new_case_are_a_thousand_apart():
    strict = [c for c in check09.softmax_cross_entropy.cases if c.numerics]
    gaps = [np.ptp(c.args[0].max(axis=1)) for c in strict]
    assert max(gaps) >= 999


# -- 8.4: a mean where a sum belongs, by the case's sizes -----------------------------------------


def _backward(slip):
    def conv2d_backward(dout, x, W, stride, padding):
        dx, dW, db = check08._conv2d_backward(dout, x, W, stride, padding)
        n, m = dout.shape[0], dout.shape[2] * dout.shape[3]
        if slip == "dW mean over the batch":
            dW = dW / n
        if slip == "db mean over positions":
            db = db / m
        return dx, dW, db

    return conv2d_backward


def test_the_first_backward_case_has_a_batch_other_than_two():
    dout = check08.conv2d_backward.cases[0].args[0]
    assert dout.shape[0] not in (1, 2)


def test_dW_averaged_over_the_batch_is_named_a_mean_where_a_sum_belongs():
    message = _wrong(check08.conv2d_backward, _backward("dW mean over the batch"))
    assert "dW is wrong" in message
    assert "divided by N = 3 (N = dout.shape[0]): a mean where a sum belongs?" in message
    assert "half" not in message


def test_db_averaged_over_positions_is_named_by_the_number_of_positions():
    message = _wrong(check08.conv2d_backward, _backward("db mean over positions"))
    assert "db is wrong" in message
    assert ("divided by H_out*W_out = 25 (H_out*W_out = dout.shape[2] * dout.shape[3]): a "
            "mean where a sum belongs?") in message
    assert "0.04 times" not in message


def test_a_size_may_be_a_product_of_axes_and_a_bad_spec_is_refused():
    checker = Checker("8.90", reference=lambda a: a.sum(axis=(1, 2)), name="spec_probe",
                      cases=[Case(np.ones((2, 3, 4)))], sizes={"M": "a.shape[1] * a.shape[2]"})
    try:
        assert checker._sizes(checker.cases[0]) == {"M": (12, "a.shape[1] * a.shape[2]")}
        with pytest.raises(ValueError, match="x.shape\\[2\\] \\* x.shape\\[3\\]"):
            Checker("8.91", reference=abs, cases=[Case(1.0)], sizes={"M": "a.shape[1] + 1"})
    finally:
        core._REGISTRY.pop(("8.90", "spec_probe"), None)


# -- 8.1: stride ignored, the patch axes in another order -----------------------------------------


def _patches(x, kH, kW, stride, padding, positions_stride, order):
    """im2col written with loops, with the slips as switches."""
    N, C, H, W = x.shape
    Ho, Wo = conv2d_output_size(H, kH, stride, padding), conv2d_output_size(W, kW, stride,
                                                                            padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.zeros((N, C * kH * kW, Ho * Wo))
    for c in range(C):
        for i in range(kH):
            for j in range(kW):
                row = (c * kH + i) * kW + j if order == "cij" else (i * kW + j) * C + c
                for ho in range(Ho):
                    for wo in range(Wo):
                        s = positions_stride
                        cols[:, row, ho * Wo + wo] = xp[:, c, s * ho + i, s * wo + j]
    return cols


def test_ignoring_the_stride_is_named():
    def im2col(x, kH, kW, stride, padding):
        return _patches(x, kH, kW, stride, padding, positions_stride=1, order="cij")

    message = _wrong(check08.im2col, im2col)
    assert "when the stride is ignored" in message
    assert "entries differ" in message  # the mismatch is still shown


def test_patch_rows_in_kh_kw_c_order_are_named():
    def im2col(x, kH, kW, stride, padding):
        return _patches(x, kH, kW, stride, padding, positions_stride=stride, order="ijc")

    assert "rows are in (kH, kW, C) order" in _wrong(check08.im2col, im2col)


def test_the_loop_im2col_without_slips_passes():
    def im2col(x, kH, kW, stride, padding):
        return _patches(x, kH, kW, stride, padding, positions_stride=stride, order="cij")

    assert check08.im2col.run(im2col).status == PASSED


# -- 8.2 / 8.4: the flipped kernel ----------------------------------------------------------------


def test_a_flipped_kernel_in_the_forward_pass_is_named_and_not_blamed_on_the_bias():
    def conv2d_forward(x, W, b, stride, padding):
        return check08._conv2d_forward(x, np.ascontiguousarray(W[:, :, ::-1, ::-1]), b,
                                       stride, padding)

    message = _wrong(check08.conv2d_forward, conv2d_forward)
    assert "kernel rotated by 180 degrees" in message
    assert "constant term" not in message


def test_the_first_forward_image_is_not_linear_so_a_flip_changes_more_than_a_constant():
    x, W, b, s, p = check08.conv2d_forward.cases[0].fresh()[0]
    flipped = check08._conv2d_forward(x, W[:, :, ::-1, ::-1].copy(), b, s, p)
    diff = flipped - check08._conv2d_forward(x, W, b, s, p)
    assert np.ptp(diff) > 0.5


def test_a_flipped_kernel_in_dx_is_named():
    def conv2d_backward(dout, x, W, stride, padding):
        dx = check08._conv2d_backward(dout, x, W[:, :, ::-1, ::-1].copy(), stride, padding)[0]
        return (dx, *check08._conv2d_backward(dout, x, W, stride, padding)[1:])

    message = _wrong(check08.conv2d_backward, conv2d_backward)
    assert "dx is wrong" in message and "kernel rotated by 180 degrees" in message


# -- 10.1 (9.5 before lesson 10 was split off): numbers that print alike ------------------


def test_close_numbers_are_printed_with_the_digits_that_tell_them_apart():
    def cb_log_norm(logits):
        out = dist.cb_log_norm(logits)
        return out + (np.abs(logits) < 1e-6) * 1e-9  # wrong in the 9th digit near 0

    message = _wrong(check10.cb_log_norm, cb_log_norm)
    first = message.split("first at index")[1].splitlines()[0]
    expected, got = first.split("expected ")[1].split(", got ")
    got = got.split(" (")[0]
    assert expected != got, first
    assert "relative difference 1.4e-09" in first


def test_a_case_with_tiny_inputs_prints_them_instead_of_zeros():
    def cb_log_norm(logits):
        return dist.cb_log_norm(logits) + (np.abs(logits) < 1e-6) * 1e-9

    message = _wrong(check10.cb_log_norm, cb_log_norm)
    case_line = next(line for line in message.splitlines() if "logits =" in line)
    assert "1.e-08" in case_line and "-1.e-12" in case_line, case_line
