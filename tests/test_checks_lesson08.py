"""Lesson 08's checkers: their references agree with the definitions (written here as plain
loops, sharing nothing with the package), right answers written differently pass, each
common slip is caught, and a lesson stub is "not done"."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.checks import core, values
from vae_from_scratch.checks import lesson08 as check
from vae_from_scratch.checks.core import PASSED, WRONG
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson08


def test_the_lesson_registers_exercises_8_1_to_8_4():
    found = [(c.exercise, c.name) for c in core.checkers(8)]
    assert found == [
        ("8.1", "im2col"),
        ("8.2", "conv2d_forward"),
        ("8.3", "col2im"),
        ("8.4", "conv2d_backward"),
    ]


# -- the definitions, as loops over every index -----------------------------------------------


def _size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def loop_im2col(x, kH, kW, stride, padding):
    N, C, H, W = x.shape
    Ho, Wo = _size(H, kH, stride, padding), _size(W, kW, stride, padding)
    cols = np.zeros((N, C * kH * kW, Ho * Wo))
    for n in range(N):
        for c in range(C):
            for i in range(kH):
                for j in range(kW):
                    for ho in range(Ho):
                        for wo in range(Wo):
                            h, w = stride * ho + i - padding, stride * wo + j - padding
                            if 0 <= h < H and 0 <= w < W:
                                cols[n, (c * kH + i) * kW + j, ho * Wo + wo] = x[n, c, h, w]
    return cols


def loop_conv2d(x, W, b, stride, padding):
    N, C, H, Wd = x.shape
    C_out, _, kH, kW = W.shape
    Ho, Wo = _size(H, kH, stride, padding), _size(Wd, kW, stride, padding)
    out = np.zeros((N, C_out, Ho, Wo))
    for n in range(N):
        for o in range(C_out):
            for ho in range(Ho):
                for wo in range(Wo):
                    total = b[o]
                    for c in range(C):
                        for i in range(kH):
                            for j in range(kW):
                                h, w = stride * ho + i - padding, stride * wo + j - padding
                                if 0 <= h < H and 0 <= w < Wd:
                                    total += W[o, c, i, j] * x[n, c, h, w]
                    out[n, o, ho, wo] = total
    return out


def _all_cases(checker):
    return [case.fresh()[0] for case in checker.cases]


def test_im2col_reference_is_the_definition():
    for args in _all_cases(check.im2col):
        np.testing.assert_array_equal(check._im2col(*args), loop_im2col(*args))


def test_conv2d_forward_reference_is_the_definition():
    for args in _all_cases(check.conv2d_forward):
        np.testing.assert_allclose(check._conv2d_forward(*args), loop_conv2d(*args),
                                   rtol=1e-12, atol=1e-12)


def test_col2im_reference_is_the_adjoint_of_im2col():
    rng = np.random.default_rng(0)
    for cols, x_shape, kH, kW, stride, padding in _all_cases(check.col2im):
        x = rng.standard_normal(x_shape)
        lhs = np.sum(loop_im2col(x, kH, kW, stride, padding) * cols)
        rhs = np.sum(x * check._col2im(cols, x_shape, kH, kW, stride, padding))
        assert abs(lhs - rhs) < 1e-10 * (1 + abs(lhs))


@pytest.mark.parametrize("case", range(len(check.conv2d_backward.cases)))
def test_conv2d_backward_reference_matches_central_differences(case):
    dout, x, W, stride, padding = check.conv2d_backward.cases[case].fresh()[0]
    b = np.zeros(W.shape[0])
    dx, dW, db = check._conv2d_backward(dout, x, W, stride, padding)

    def loss():
        return np.sum(dout * loop_conv2d(x, W, b, stride, padding))

    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-8
    assert rel_error(dW, numerical_gradient(loss, W)) < 1e-8
    assert rel_error(db, numerical_gradient(loss, b)) < 1e-8


def test_the_cases_cover_what_the_docstring_promises():
    conv_cases = _all_cases(check.conv2d_forward)
    assert {s for *_, s, p in conv_cases} == {1, 2}
    assert {p for *_, p in conv_cases} == {0, 1}
    assert any(W.shape[0] == W.shape[1] > 1 for _, W, *_ in conv_cases)  # C_in == C_out
    assert any(W.shape[0] != W.shape[1] and W.shape[1] > 1 for _, W, *_ in conv_cases)
    assert any(x.shape[2] % 2 and x.shape[2] > 3 for x, *_ in conv_cases)  # odd size
    assert any(x.shape[2] % 2 == 0 for x, *_ in conv_cases)  # even size
    assert any(x.shape[2] != x.shape[3] for x, *_ in conv_cases)  # non-square
    for checker in (check.im2col, check.col2im, check.conv2d_backward):
        cases = _all_cases(checker)
        assert {c[-2] for c in cases} == {1, 2} and {c[-1] for c in cases} == {0, 1}


# -- right answers, written differently --------------------------------------------------------


def im2col_sliding_windows(x, kH, kW, stride, padding):
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kH, kW), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, kH, kW)
    N, C, Ho, Wo = win.shape[:4]
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(N, C * kH * kW, Ho * Wo)


def conv2d_forward_einsum(x, W, b, stride, padding):
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, W.shape[2:], axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, W) + b[None, :, None, None]


def col2im_add_at(cols, x_shape, kH, kW, stride, padding):
    N, C, H, W = x_shape
    p = padding
    Ho, Wo = _size(H, kH, stride, padding), _size(W, kW, stride, padding)
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
    c6 = cols.reshape(N, C, kH, kW, Ho, Wo)
    ho, wo = np.meshgrid(np.arange(Ho), np.arange(Wo), indexing="ij")
    for i in range(kH):
        for j in range(kW):
            np.add.at(xp, (slice(None), slice(None), stride * ho + i, stride * wo + j),
                      c6[:, :, i, j])
    return xp[:, :, p : p + H, p : p + W]


def conv2d_backward_with_cols(dout, x, W, stride, padding, *, slip=None):
    """The lesson's solution, with switches that make the classic mistakes."""
    N, C_in = x.shape[:2]
    C_out, _, kH, kW = W.shape
    cols = check._im2col(x, kH, kW, stride, 0 if slip == "no-padding" else padding)
    dout2 = dout.reshape(N, C_out, -1)  # (N, C_out, M)
    W2 = W.reshape(C_out, -1)
    db = dout2.sum(axis=2)[0] if slip == "db-first-example" else dout2.sum(axis=(0, 2))
    if slip == "db-over-positions-only":
        db = dout2.sum(axis=2)  # (N, C_out): not summed over the batch
    dW2 = np.einsum("nom,nkm->ok", dout2, cols)
    if slip == "dW-first-example":
        dW2 = dout2[0] @ cols[0].T
    dW = dW2.reshape(W.shape)
    if slip == "dW-wrong-order":
        dW = dW2.reshape(C_out, kH, kW, C_in).transpose(0, 3, 1, 2)
    dcols = np.einsum("ok,nom->nkm", W2, dout2)
    if slip == "dx-flipped-kernel":
        dcols = np.einsum("ok,nom->nkm", W[:, :, ::-1, ::-1].reshape(C_out, -1), dout2)
    if slip == "dx-overwrite":
        dx = col2im_overwrite(dcols, x.shape, kH, kW, stride, padding)
    elif slip == "dx-keeps-padding":
        dx = col2im_keeps_the_padding(dcols, x.shape, kH, kW, stride, padding)
    else:
        dx = col2im_add_at(dcols, x.shape, kH, kW, stride, padding)
    return dx, dW, db


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.im2col, im2col_sliding_windows),
        (check.im2col, loop_im2col),
        (check.conv2d_forward, conv2d_forward_einsum),
        (check.conv2d_forward, loop_conv2d),
        (check.col2im, col2im_add_at),
        (check.conv2d_backward, conv2d_backward_with_cols),
    ],
)
def test_right_answers_written_differently_pass(checker, fn):
    result = checker.run(fn)
    assert result.status == PASSED, result.message


# -- typical mistakes ---------------------------------------------------------------------------


def im2col_without_padding(x, kH, kW, stride, padding):
    return im2col_sliding_windows(x, kH, kW, stride, 0)


def im2col_rows_channel_last(x, kH, kW, stride, padding):
    cols = im2col_sliding_windows(x, kH, kW, stride, padding)
    N, C = x.shape[:2]
    M = cols.shape[2]
    # rows in (i, j, c) order instead of W.reshape's (c, i, j)
    return cols.reshape(N, C, kH, kW, M).transpose(0, 2, 3, 1, 4).reshape(N, -1, M)


def im2col_columns_transposed(x, kH, kW, stride, padding):
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kH, kW), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    N, C, Ho, Wo = win.shape[:4]
    return win.transpose(0, 1, 4, 5, 3, 2).reshape(N, C * kH * kW, Ho * Wo)  # (wo, ho)


def im2col_ignoring_stride(x, kH, kW, stride, padding):
    return im2col_sliding_windows(x, kH, kW, 1, padding)


def im2col_batch_last(x, kH, kW, stride, padding):
    cols = im2col_sliding_windows(x, kH, kW, stride, padding)
    return cols.transpose(1, 2, 0).reshape(cols.shape[1], -1)[None]  # the package's layout


def _forward_via(im2col_fn, x, W, b, stride, padding, *, flip=False, order="cij",
                 bias=True, out_order="ohw"):
    N, C_in, H, Wd = x.shape
    C_out, _, kH, kW = W.shape
    Ho, Wo = _size(H, kH, stride, padding), _size(Wd, kW, stride, padding)
    cols = im2col_fn(x, kH, kW, stride, padding)
    Wk = W[:, :, ::-1, ::-1] if flip else W
    W2 = Wk.reshape(C_out, -1) if order == "cij" else Wk.transpose(0, 2, 3, 1).reshape(C_out, -1)
    out = W2 @ cols  # (N, C_out, M)
    if bias:
        out = out + b[:, None]
    if out_order == "hwo":
        return out.reshape(N, Ho, Wo, C_out)
    return out.reshape(N, C_out, Ho, Wo)


def conv_forward_without_padding(x, W, b, stride, padding):
    return _forward_via(im2col_sliding_windows, x, W, b, stride, 0)


def conv_forward_transposed_W(x, W, b, stride, padding):
    return _forward_via(im2col_sliding_windows, x, W.transpose(1, 0, 2, 3), b, stride, padding)


def conv_forward_flattens_W_channel_last(x, W, b, stride, padding):
    return _forward_via(im2col_sliding_windows, x, W, b, stride, padding, order="ijc")


def conv_forward_flipped_kernel(x, W, b, stride, padding):
    return _forward_via(im2col_sliding_windows, x, W, b, stride, padding, flip=True)


def conv_forward_without_bias(x, W, b, stride, padding):
    return _forward_via(im2col_sliding_windows, x, W, b, stride, padding, bias=False)


def conv_forward_output_reshaped_channel_last(x, W, b, stride, padding):
    N, C_out = x.shape[0], W.shape[0]
    Ho = _size(x.shape[2], W.shape[2], stride, padding)
    Wo = _size(x.shape[3], W.shape[3], stride, padding)
    out = _forward_via(im2col_sliding_windows, x, W, b, stride, padding)
    return out.reshape(N, C_out, Ho * Wo).reshape(N, Ho, Wo, C_out).transpose(0, 3, 1, 2)


def col2im_overwrite(cols, x_shape, kH, kW, stride, padding):
    N, C, H, W = x_shape
    p = padding
    Ho, Wo = _size(H, kH, stride, padding), _size(W, kW, stride, padding)
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
    c6 = cols.reshape(N, C, kH, kW, Ho, Wo)
    for i in range(kH):
        for j in range(kW):
            xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] = c6[:, :, i, j]
    return xp[:, :, p : p + H, p : p + W]


def col2im_keeps_the_padding(cols, x_shape, kH, kW, stride, padding):
    N, C, H, W = x_shape
    p = padding
    Ho, Wo = _size(H, kH, stride, padding), _size(W, kW, stride, padding)
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
    c6 = cols.reshape(N, C, kH, kW, Ho, Wo)
    for i in range(kH):
        for j in range(kW):
            xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += c6[:, :, i, j]
    return xp  # (N, C, H + 2p, W + 2p): the padding's rows and columns are still there


def col2im_strips_from_the_wrong_side(cols, x_shape, kH, kW, stride, padding):
    N, C, H, W = x_shape
    p = padding
    Ho, Wo = _size(H, kH, stride, padding), _size(W, kW, stride, padding)
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
    c6 = cols.reshape(N, C, kH, kW, Ho, Wo)
    for i in range(kH):
        for j in range(kW):
            xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += c6[:, :, i, j]
    return xp[:, :, :H, :W]  # drops 2p rows at the bottom instead of p at each side


def conv_backward_slip(slip):
    def conv2d_backward(dout, x, W, stride, padding):
        return conv2d_backward_with_cols(dout, x, W, stride, padding, slip=slip)

    return conv2d_backward


@pytest.mark.parametrize(
    "checker, fn",
    [
        (check.im2col, im2col_without_padding),
        (check.im2col, im2col_rows_channel_last),
        (check.im2col, im2col_columns_transposed),
        (check.im2col, im2col_ignoring_stride),
        (check.im2col, im2col_batch_last),
        (check.conv2d_forward, conv_forward_without_padding),
        (check.conv2d_forward, conv_forward_transposed_W),
        (check.conv2d_forward, conv_forward_flattens_W_channel_last),
        (check.conv2d_forward, conv_forward_flipped_kernel),
        (check.conv2d_forward, conv_forward_without_bias),
        (check.conv2d_forward, conv_forward_output_reshaped_channel_last),
        (check.col2im, col2im_overwrite),
        (check.col2im, col2im_keeps_the_padding),
        (check.col2im, col2im_strips_from_the_wrong_side),
    ],
    ids=lambda v: getattr(v, "__name__", None) or getattr(v, "name", None),
)
def test_typical_mistakes_are_wrong(checker, fn):
    result = checker.run(fn)
    assert result.status == WRONG, result.message


@pytest.mark.parametrize(
    "slip",
    ["no-padding", "dx-keeps-padding", "db-first-example", "db-over-positions-only",
     "dW-first-example", "dW-wrong-order", "dx-flipped-kernel", "dx-overwrite"],
)
def test_typical_mistakes_in_the_backward_pass_are_wrong(slip):
    result = check.conv2d_backward.run(conv_backward_slip(slip))
    assert result.status == WRONG, result.message


def test_a_wrong_flatten_order_would_pass_with_one_channel_only():
    # Why the cases need several channels: with C_in = 1 the (c, i, j) and (i, j, c) orders
    # coincide, so only the multi-channel cases catch this slip.
    x, W, b, s, p = check.conv2d_forward.cases[0].fresh()[0]
    assert W.shape[1] == 1
    np.testing.assert_allclose(conv_forward_flattens_W_channel_last(x, W, b, s, p),
                               check._conv2d_forward(x, W, b, s, p))


def test_a_wrong_answer_prints_the_small_case_in_full():
    result = check.im2col.run(im2col_without_padding)
    assert result.status == WRONG
    # the first case (no padding) passes; the second, with padding, fails on its shape
    assert "expected shape (2, 18, 9), got shape (2, 18, 4)" in result.message


def test_a_transposed_W_gives_wrong_values_where_it_cannot_fail_on_its_shape():
    # With C_in == C_out the transposed weight has the right shape; the values must differ.
    args = next(a for a in _all_cases(check.conv2d_forward) if a[1].shape[0] == a[1].shape[1] > 1)
    got, expected = conv_forward_transposed_W(*args), check._conv2d_forward(*args)
    assert got.shape == expected.shape
    assert values.compare_values(expected, got) is not None
