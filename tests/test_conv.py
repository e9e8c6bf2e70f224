"""Tests for vae_from_scratch.conv: Conv2d and ConvTranspose2d against central differences,
their own adjointness, and torch.nn.functional (forward and autograd) in float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vae_from_scratch import conv
from vae_from_scratch.conv import (
    Conv2d,
    ConvTranspose2d,
    col2im,
    conv2d_output_size,
    conv_transpose2d_output_size,
    im2col,
)
from vae_from_scratch.gradcheck import numerical_gradient, rel_error

pytestmark = pytest.mark.lesson08

TOL = 1e-6  # central differences against the hand-derived backward, float64
TORCH_TOL = 1e-10  # against torch.nn.functional and its autograd, float64

# (N, C_in, C_out, H, W, (kH, kW), stride, padding): odd and even sizes, stride 1 and 2,
# padding 0, 1 and 2, 1-4 channels, square and non-square kernels, (h, w) pairs, a stride
# that leaves the last row unused, and the conv VAE's own 4x4/stride 2/padding 1.
CONV_CASES = [
    (2, 1, 2, 5, 5, (3, 3), 1, 0),
    (2, 2, 3, 6, 6, (4, 4), 2, 1),
    (2, 2, 2, 7, 7, (4, 4), 2, 1),
    (1, 3, 2, 7, 6, (3, 2), 2, 1),
    (3, 2, 1, 8, 7, (2, 3), (2, 1), (1, 0)),
    (2, 3, 4, 5, 4, (1, 1), 1, 1),
    (2, 4, 2, 6, 5, (3, 3), 2, 0),
    (2, 2, 3, 5, 6, (3, 3), 1, 2),
]
# (N, C_in, C_out, H, W, (kH, kW), stride, padding, output_padding) for ConvTranspose2d.
CONVT_CASES = [
    (2, 1, 2, 3, 3, (3, 3), 1, 0, 0),
    (2, 2, 3, 3, 4, (4, 4), 2, 1, 0),
    (2, 2, 3, 3, 3, (4, 4), 2, 1, 1),
    (1, 3, 2, 4, 3, (3, 2), 2, 1, 1),
    (2, 2, 1, 3, 3, (2, 3), (2, 1), (1, 0), (1, 0)),
    (2, 2, 2, 5, 4, (3, 3), 1, 1, 0),
    (2, 4, 2, 2, 2, (2, 2), 3, 0, 2),
    (2, 2, 3, 4, 3, (5, 5), 2, 2, 1),
]


def _conv_setup(case, seed=0, dtype=np.float64):
    n, c_in, c_out, h, w, (kh, kw), stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    W = rng.standard_normal((c_out, c_in, kh, kw)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, W, b, stride, padding


def _convt_setup(case, seed=0, dtype=np.float64):
    n, c_in, c_out, h, w, (kh, kw), stride, padding, output_padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    W = rng.standard_normal((c_in, c_out, kh, kw)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, W, b, stride, padding, output_padding


def _numerical_grads(forward, args, g):
    """Central differences of L = sum(forward(*args) * g) w.r.t. x, W, b (args[:3])."""

    def loss():
        return np.sum(forward(*args)[0] * g)

    return [numerical_gradient(loss, a) for a in args[:3]]


# -- sizes ------------------------------------------------------------------------------------


def test_output_sizes_of_the_conv_vae():
    assert conv2d_output_size(28, 4, 2, 1) == 14
    assert conv2d_output_size(14, 4, 2, 1) == 7
    assert conv_transpose2d_output_size(7, 4, 2, 1) == 14
    assert conv_transpose2d_output_size(14, 4, 2, 1) == 28
    assert conv2d_output_size(7, 4, 2, 1) == 3  # floor: the last row is never reached
    assert conv_transpose2d_output_size(3, 4, 2, 1, output_padding=1) == 7


def test_transposed_size_inverts_the_conv_size():
    """A transposed convolution maps back to a length its convolution maps to the input's."""
    for size, k, s, p in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(3)):
        for op in range(s):
            try:
                out = conv_transpose2d_output_size(size, k, s, p, op)
            except ValueError:
                assert (size - 1) * s - 2 * p + k + op < 1
                continue
            assert conv2d_output_size(out, k, s, p) == size


BAD_SIZES = [
    ("size 0", lambda: conv2d_output_size(0, 3, 1, 1), r"input size must be positive, got 0"),
    ("kernel 0", lambda: conv2d_output_size(5, 0, 1, 0), r"kernel size must be positive, got 0"),
    ("stride 0", lambda: conv2d_output_size(5, 3, 0, 0), r"stride must be positive, got 0"),
    ("padding -1", lambda: conv2d_output_size(5, 3, 1, -1),
     r"padding must be non-negative, got -1"),
    ("size float", lambda: conv2d_output_size(5.0, 3, 1, 0), r"size must be an int, got 5.0"),
    ("kernel bool", lambda: conv2d_output_size(5, True, 1, 0), r"kernel must be an int, got True"),
    ("stride float", lambda: conv2d_output_size(5, 3, 2.0, 0), r"stride must be an int, got 2.0"),
    ("T size 0", lambda: conv_transpose2d_output_size(0, 3, 1, 0),
     r"input size must be positive, got 0"),
    ("T stride 0", lambda: conv_transpose2d_output_size(3, 3, 0, 0),
     r"stride must be positive, got 0"),
    ("T output_padding float", lambda: conv_transpose2d_output_size(3, 4, 2, 1, 1.0),
     r"output_padding must be an int, got 1.0"),
    ("T output_padding bool", lambda: conv_transpose2d_output_size(3, 4, 2, 1, True),
     r"output_padding must be an int, got True"),
]


@pytest.mark.parametrize("what, call, message", BAD_SIZES, ids=[b[0] for b in BAD_SIZES])
def test_output_sizes_refuse_what_is_not_a_size(what, call, message):
    """The size functions are public: each checks its own arguments (the documented
    ValueErrors), rather than computing a number from a float, a bool or a zero."""
    with pytest.raises(ValueError, match=message):
        call()


def test_output_sizes_take_numpy_integers():
    assert conv2d_output_size(np.int64(28), np.int32(4), np.int64(2), np.int8(1)) == 14
    assert conv_transpose2d_output_size(np.int64(3), 4, 2, 1, np.int64(1)) == 7


# -- im2col and col2im ------------------------------------------------------------------------


def test_im2col_layout_is_the_documented_one():
    rng = np.random.default_rng(1)
    n, c, h, w, kh, kw, (sh, sw), (ph, pw) = 2, 3, 5, 6, 3, 2, (2, 1), (1, 2)
    x = rng.standard_normal((n, c, h, w))
    cols = im2col(x, kh, kw, (sh, sw), (ph, pw))
    ho, wo = conv2d_output_size(h, kh, sh, ph), conv2d_output_size(w, kw, sw, pw)
    assert cols.shape == (c * kh * kw, ho * wo * n)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for ci, i, j, a, bb, m in itertools.product(
        range(c), range(kh), range(kw), range(ho), range(wo), range(n)
    ):
        row, col = (ci * kh + i) * kw + j, (a * wo + bb) * n + m
        assert cols[row, col] == x_pad[m, ci, sh * a + i, sw * bb + j]


@pytest.mark.parametrize("case", CONV_CASES)
def test_col2im_is_the_adjoint_of_im2col(case):
    x, W, _, stride, padding = _conv_setup(case, seed=2)
    kh, kw = W.shape[2:]
    cols = im2col(x, kh, kw, stride, padding)
    c = np.random.default_rng(3).standard_normal(cols.shape)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, col2im(c, x.shape, kh, kw, stride, padding))
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + np.linalg.norm(cols) * np.linalg.norm(c))


def test_adjointness_catches_a_col2im_that_overwrites():
    """The identity above fails for a scatter that assigns instead of adding (overlaps)."""
    x, W, _, stride, padding = _conv_setup(CONV_CASES[1], seed=2)
    cols = im2col(x, 4, 4, stride, padding)
    c = np.random.default_rng(3).standard_normal(cols.shape)
    n, ch, h, w = x.shape
    ho = conv2d_output_size(h, 4, stride, padding)
    xp = np.zeros((ch, h + 2, w + 2, n))
    c6 = c.reshape(ch, 4, 4, ho, ho, n)
    for i, j in itertools.product(range(4), range(4)):
        xp[:, i : i + 2 * ho - 1 : 2, j : j + 2 * ho - 1 : 2] = c6[:, i, j]  # the bug
    wrong = xp[:, 1:-1, 1:-1].transpose(3, 0, 1, 2)
    assert abs(np.vdot(cols, c) - np.vdot(x, wrong)) > 1e-3 * abs(np.vdot(cols, c))


# -- gradient checks --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_backward_matches_central_differences(case):
    x, W, b, stride, padding = _conv_setup(case)
    out, cache = Conv2d.forward(x, W, b, stride, padding)
    g = np.random.default_rng(4).standard_normal(out.shape)
    dx, dW, db = Conv2d.backward(g, cache)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    num = _numerical_grads(Conv2d.forward, (x, W, b, stride, padding), g)
    for analytic, numeric in zip((dx, dW, db), num, strict=True):
        assert rel_error(analytic, numeric) < TOL


@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose2d_backward_matches_central_differences(case):
    x, W, b, stride, padding, output_padding = _convt_setup(case)
    out, cache = ConvTranspose2d.forward(x, W, b, stride, padding, output_padding)
    g = np.random.default_rng(4).standard_normal(out.shape)
    dx, dW, db = ConvTranspose2d.backward(g, cache)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    num = _numerical_grads(
        ConvTranspose2d.forward, (x, W, b, stride, padding, output_padding), g
    )
    for analytic, numeric in zip((dx, dW, db), num, strict=True):
        assert rel_error(analytic, numeric) < TOL


@pytest.mark.parametrize("layer", ["conv", "convT"])
def test_gradient_check_catches_a_one_percent_error(layer):
    """The checks above can fail: 1% off in the whole gradient or in one entry is caught."""
    if layer == "conv":
        args = _conv_setup(CONV_CASES[1])
        fwd, bwd = Conv2d.forward, Conv2d.backward
    else:
        args = _convt_setup(CONVT_CASES[2])
        fwd, bwd = ConvTranspose2d.forward, ConvTranspose2d.backward
    out, cache = fwd(*args)
    g = np.random.default_rng(4).standard_normal(out.shape)
    grads = bwd(g, cache)
    num = _numerical_grads(fwd, args, g)
    for analytic, numeric in zip(grads, num, strict=True):
        assert rel_error(analytic, numeric) < TOL
        assert rel_error(1.01 * analytic, numeric) > TOL
        one_off = analytic.copy()
        k = np.argmax(np.abs(one_off))
        one_off.flat[k] *= 1.01
        assert rel_error(one_off, numeric) > TOL


# -- the transposed convolution is the transpose ----------------------------------------------


def _dense(f, in_shape):
    """The matrix of a linear map f: (in_shape) -> array, one column per basis vector."""
    size = int(np.prod(in_shape))
    cols = []
    for k in range(size):
        e = np.zeros(size)
        e[k] = 1.0
        cols.append(np.ravel(f(e.reshape(in_shape))))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize(
    "n, c_in, c_out, h, w, kernel, stride, padding",
    [(2, 2, 3, 5, 4, (3, 2), 2, 1), (1, 2, 2, 4, 4, (4, 4), 2, 1), (1, 1, 2, 4, 5, (2, 2), 1, 0)],
)
def test_conv_transpose_is_the_transpose_of_conv(n, c_in, c_out, h, w, kernel, stride, padding):
    rng = np.random.default_rng(5)
    W = rng.standard_normal((c_out, c_in) + kernel)
    ho, wo = (conv2d_output_size(size, k, stride, padding) for size, k in ((h, kernel[0]),
                                                                          (w, kernel[1])))
    op = (h - conv_transpose2d_output_size(ho, kernel[0], stride, padding),
          w - conv_transpose2d_output_size(wo, kernel[1], stride, padding))
    zero_in, zero_out = np.zeros(c_in), np.zeros(c_out)
    T = _dense(lambda x: Conv2d.forward(x, W, zero_out, stride, padding)[0], (n, c_in, h, w))
    # W (C_out, C_in, kH, kW) read as a ConvTranspose2d weight maps C_out -> C_in channels.
    Tt = _dense(
        lambda y: ConvTranspose2d.forward(y, W, zero_in, stride, padding, op)[0],
        (n, c_out, ho, wo),
    )
    assert T.shape == Tt.T.shape
    np.testing.assert_allclose(Tt, T.T, rtol=0, atol=1e-13)
    assert np.count_nonzero(T) > 0


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_dx_is_a_transposed_conv_and_back(case):
    """Conv2d's dx is ConvTranspose2d of dout with the same W; ConvTranspose2d's dx is a
    Conv2d of its dout."""
    x, W, b, stride, padding = _conv_setup(case)
    out, cache = Conv2d.forward(x, W, b, stride, padding)
    g = np.random.default_rng(6).standard_normal(out.shape)
    dx, _, _ = Conv2d.backward(g, cache)
    kh, kw = W.shape[2:]
    st = stride if isinstance(stride, tuple) else (stride, stride)
    pd = padding if isinstance(padding, tuple) else (padding, padding)
    axes = zip(x.shape[2:], out.shape[2:], (kh, kw), st, pd, strict=True)
    op = tuple(size - conv_transpose2d_output_size(o, k, s, p) for size, o, k, s, p in axes)
    dx_t, _ = ConvTranspose2d.forward(g, W, np.zeros(x.shape[1]), stride, padding, op)
    np.testing.assert_allclose(dx, dx_t, rtol=0, atol=1e-12)

    _, cache_t = ConvTranspose2d.forward(g, W, np.zeros(x.shape[1]), stride, padding, op)
    dg, _, _ = ConvTranspose2d.backward(x, cache_t)
    dg_conv, _ = Conv2d.forward(x, W, np.zeros(W.shape[0]), stride, padding)
    np.testing.assert_allclose(dg, dg_conv, rtol=0, atol=1e-12)


# -- dtype, need_dx, memory layout, determinism -----------------------------------------------


def test_default_stride_and_padding_are_pytorchs():
    """stride 1, padding 0 and output_padding 0 when not given, as in torch.nn's layers."""
    x, W, b, _, _ = _conv_setup((2, 2, 3, 6, 5, (3, 2), 1, 0))
    out, _ = Conv2d.forward(x, W, b)
    assert out.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(out, Conv2d.forward(x, W, b, 1, 0)[0])
    x, W, b, *_ = _convt_setup((2, 2, 3, 4, 3, (3, 2), 1, 0, 0))
    out, _ = ConvTranspose2d.forward(x, W, b)
    assert out.shape == (2, 3, 6, 4)
    np.testing.assert_array_equal(out, ConvTranspose2d.forward(x, W, b, 1, 0, 0)[0])


@pytest.mark.parametrize("layer", ["conv", "convT"])
def test_nested_lists_work_like_arrays(layer):
    """x, W, b and dout may be any array-like, as for NumPy's own functions."""
    if layer == "conv":
        args, op = _conv_setup(CONV_CASES[1]), Conv2d
    else:
        args, op = _convt_setup(CONVT_CASES[1]), ConvTranspose2d
    fwd, bwd = op.forward, op.backward
    out, cache = fwd(*args)
    out_l, cache_l = fwd(*(a.tolist() for a in args[:3]), *args[3:])
    np.testing.assert_array_equal(out_l, out)
    g = np.random.default_rng(10).standard_normal(out.shape)
    for got, want in zip(bwd(g.tolist(), cache_l), bwd(g, cache), strict=True):
        np.testing.assert_array_equal(got, want)



@pytest.mark.parametrize("layer", ["conv", "convT"])
def test_float32_in_float32_out_and_need_dx(layer):
    if layer == "conv":
        args = _conv_setup((4, 3, 5, 12, 12, (4, 4), 2, 1), dtype=np.float32)
        fwd, bwd = Conv2d.forward, Conv2d.backward
    else:
        args = _convt_setup((4, 5, 3, 6, 6, (4, 4), 2, 1, 0), dtype=np.float32)
        fwd, bwd = ConvTranspose2d.forward, ConvTranspose2d.backward
    out, cache = fwd(*args)
    assert out.dtype == np.float32
    g = np.random.default_rng(7).standard_normal(out.shape).astype(np.float32)
    dx, dW, db = bwd(g, cache)
    assert dx.dtype == dW.dtype == db.dtype == np.float32
    dx_none, dW2, db2 = bwd(g, cache, need_dx=False)
    assert dx_none is None
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)
    # float32 agrees with the same computation in float64 to float32 round-off
    args64 = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    out64, cache64 = fwd(*args64)
    assert rel_error(out, out64) < 1e-5
    for a, a64 in zip((dx, dW, db), bwd(g.astype(np.float64), cache64), strict=True):
        assert rel_error(a, a64) < 1e-5


def test_results_do_not_depend_on_the_input_memory_layout():
    """Outputs are NCHW views of (C, H, W, N) memory; a C-ordered copy, or an input with
    other strides, gives the very same numbers."""
    x, W, b, stride, padding = _conv_setup((3, 2, 4, 9, 8, (3, 3), 2, 1))
    out, _ = Conv2d.forward(x, W, b, stride, padding)
    assert out.shape == (3, 4, 5, 4)
    flipped = np.ascontiguousarray(x[:, :, ::-1])[:, :, ::-1]  # negative strides
    np.testing.assert_array_equal(Conv2d.forward(flipped, W, b, stride, padding)[0], out)
    W_t = np.random.default_rng(8).standard_normal((4, 3, 3, 3))
    a, cache_a = ConvTranspose2d.forward(out, W_t, np.zeros(3), 2, 1)
    c, cache_c = ConvTranspose2d.forward(np.ascontiguousarray(out), W_t, np.zeros(3), 2, 1)
    np.testing.assert_array_equal(a, c)
    g = np.random.default_rng(9).standard_normal(a.shape)
    for ga, gc in zip(ConvTranspose2d.backward(g, cache_a),
                      ConvTranspose2d.backward(np.asfortranarray(g), cache_c), strict=True):
        np.testing.assert_array_equal(ga, gc)


def test_same_inputs_same_bits():
    x, W, b, stride, padding = _conv_setup((8, 3, 6, 14, 14, (4, 4), 2, 1), dtype=np.float32)
    runs = []
    for _ in range(2):
        out, cache = Conv2d.forward(x, W, b, stride, padding)
        runs.append((out, *Conv2d.backward(out, cache)))
    for first, second in zip(*runs, strict=True):
        assert first.tobytes() == second.tobytes()


# -- PyTorch ----------------------------------------------------------------------------------


def _torch_grads(torch, op, x, W, b, g, **kwargs):
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    out = op(xt, Wt, bt, **kwargs)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), xt.grad.numpy(), Wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, W, b, stride, padding = _conv_setup(case, seed=10)
    out, cache = Conv2d.forward(x, W, b, stride, padding)
    g = np.random.default_rng(11).standard_normal(out.shape)
    expected = _torch_grads(torch, F.conv2d, x, W, b, g, stride=stride, padding=padding)
    for ours, theirs in zip((out, *Conv2d.backward(g, cache)), expected, strict=True):
        assert ours.shape == theirs.shape
        assert rel_error(ours, theirs) < TORCH_TOL


@pytest.mark.torch
@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, W, b, stride, padding, output_padding = _convt_setup(case, seed=10)
    out, cache = ConvTranspose2d.forward(x, W, b, stride, padding, output_padding)
    g = np.random.default_rng(11).standard_normal(out.shape)
    expected = _torch_grads(torch, F.conv_transpose2d, x, W, b, g, stride=stride,
                            padding=padding, output_padding=output_padding)
    for ours, theirs in zip((out, *ConvTranspose2d.backward(g, cache)), expected, strict=True):
        assert ours.shape == theirs.shape
        assert rel_error(ours, theirs) < TORCH_TOL


@pytest.mark.torch
def test_torch_comparison_catches_a_flipped_kernel():
    """A convolution with the kernel flipped (true convolution, not PyTorch's
    cross-correlation) is caught by the comparison above."""
    torch = pytest.importorskip("torch")
    x, W, b, stride, padding = _conv_setup(CONV_CASES[1], seed=10)
    out, _ = Conv2d.forward(x, W[:, :, ::-1, ::-1], b, stride, padding)
    theirs = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(W), torch.tensor(b),
                                        stride=stride, padding=padding).numpy()
    assert rel_error(out, theirs) > 1e-2


@pytest.mark.torch
def test_the_conv_vae_layers_match_torch_in_float32():
    """The four layers of the conv VAE at batch 8, float32, against torch in float32."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(12)
    h = rng.random((8, 1, 28, 28), dtype=np.float32)
    specs = [(Conv2d, F.conv2d, (32, 1)), (Conv2d, F.conv2d, (64, 32)),
             (ConvTranspose2d, F.conv_transpose2d, (64, 32)),
             (ConvTranspose2d, F.conv_transpose2d, (32, 1))]
    for layer, op, (a, c) in specs:
        W = (0.1 * rng.standard_normal((a, c, 4, 4))).astype(np.float32)
        b = (0.1 * rng.standard_normal(W.shape[1] if layer is ConvTranspose2d else a))
        b = b.astype(np.float32)
        out, cache = layer.forward(h, W, b, 2, 1)
        g = rng.standard_normal(out.shape).astype(np.float32)
        expected = _torch_grads(torch, op, np.ascontiguousarray(h), W, b, g, stride=2,
                                padding=1)
        for ours, theirs in zip((out, *layer.backward(g, cache)), expected, strict=True):
            assert ours.dtype == np.float32 and ours.shape == theirs.shape
            assert rel_error(ours, theirs) < 1e-5
        h = out
    assert h.shape == (8, 1, 28, 28)


# -- bad input --------------------------------------------------------------------------------


def _x(*shape):
    return np.zeros(shape)


BAD_INPUTS = [
    ("x 3-D", lambda: Conv2d.forward(_x(1, 5, 5), _x(2, 1, 3, 3), _x(2)), r"x must be 4-D"),
    ("W 3-D", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(2, 3, 3), _x(2)), r"W must be 4-D"),
    ("channels", lambda: Conv2d.forward(_x(1, 3, 5, 5), _x(2, 2, 3, 3), _x(2)),
     r"channel mismatch: x has C_in=3 .*expecting C_in=2"),
    ("channels T", lambda: ConvTranspose2d.forward(_x(1, 3, 5, 5), _x(2, 4, 3, 3), _x(4)),
     r"channel mismatch: x has C_in=3 .*expecting C_in=2"),
    ("kernel", lambda: Conv2d.forward(_x(1, 1, 3, 3), _x(2, 1, 6, 3), _x(2), padding=1),
     r"kernel size 6 is larger than the padded input .* expected kernel <= 5"),
    ("stride 0", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(2, 1, 3, 3), _x(2), stride=0),
     r"stride must be positive, got \(0, 0\)"),
    ("stride -1", lambda: ConvTranspose2d.forward(_x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(2), -1),
     r"stride must be positive"),
    ("padding", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(2, 1, 3, 3), _x(2), padding=-1),
     r"padding must be non-negative, got \(-1, -1\)"),
    ("output_padding", lambda: ConvTranspose2d.forward(
        _x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(2), stride=2, output_padding=2),
     r"output_padding must satisfy 0 <= output_padding < stride \(2\), got 2"),
    ("output size", lambda: ConvTranspose2d.forward(
        _x(1, 1, 1, 1), _x(1, 2, 1, 1), _x(2), stride=1, padding=1),
     r"output size would be -1 .* expected at least 1"),
    ("bias", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(2, 1, 3, 3), _x(3)),
     r"b must have shape \(C_out,\) = \(2,\) .* got \(3,\)"),
    ("bias T", lambda: ConvTranspose2d.forward(_x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(1)),
     r"b must have shape \(C_out,\) = \(2,\)"),
    ("pair", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(2, 1, 3, 3), _x(2), stride=(1, 2, 3)),
     r"stride must be an int or an \(h, w\) pair"),
    ("integers", lambda: Conv2d.forward(np.zeros((1, 1, 5, 5), int), _x(2, 1, 3, 3).astype(int),
                                        np.zeros(2, int)), r"must be floating point"),
    ("dout", lambda: Conv2d.backward(_x(1, 2, 4, 4),
                                     Conv2d.forward(_x(1, 1, 5, 5), _x(2, 1, 3, 3), _x(2))[1]),
     r"dout must have the forward output's shape \(1, 2, 3, 3\), got \(1, 2, 4, 4\)"),
    ("cols", lambda: col2im(_x(9, 10), (1, 1, 5, 5), 3, 3, 1, 0),
     r"cols must have shape .* = \(9, 9\)"),
    ("im2col out", lambda: im2col(_x(1, 1, 5, 5), 3, 3, 1, 0, out=_x(9, 10)),
     r"out must be a C-contiguous float64 array of shape \(9, 9\)"),
    ("output_padding < 0", lambda: conv_transpose2d_output_size(5, 3, 2, 1, -1),
     r"output_padding must satisfy 0 <= output_padding < stride \(2\), got -1"),
    ("output_padding pair", lambda: ConvTranspose2d.forward(
        _x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(2), stride=(2, 1), output_padding=(1, 1)),
     r"output_padding must satisfy 0 <= output_padding < stride \(1\), got 1"),
    ("stride float", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(2, 1, 3, 3), _x(2), stride=1.5),
     r"stride must be an int, got 1.5"),
    ("padding bool", lambda: ConvTranspose2d.forward(_x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(2),
                                                     padding=(0, True)),
     r"padding must be an int, got True"),
    ("no channels", lambda: Conv2d.forward(_x(1, 0, 5, 5), _x(2, 1, 3, 3), _x(2)),
     r"x \(1, 0, 5, 5\) and W \(2, 1, 3, 3\) must have no empty channel/pixel axes"),
    ("no out channels", lambda: Conv2d.forward(_x(1, 1, 5, 5), _x(0, 1, 3, 3), _x(0)),
     r"must have no empty channel/pixel axes"),
    ("im2col 3-D", lambda: im2col(_x(1, 5, 5), 3, 3, 1, 0),
     r"x must be 4-D \(N, C, H, W\), got shape \(1, 5, 5\)"),
    ("dout T", lambda: ConvTranspose2d.backward(
        _x(1, 2, 6, 6), ConvTranspose2d.forward(_x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(2))[1]),
     r"dout must have the forward output's shape \(1, 2, 7, 7\), got \(1, 2, 6, 6\)"),
]


@pytest.mark.parametrize("what, call, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_value_error(what, call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_same_calls_with_good_input_raise_nothing():
    """The bad-input cases above are one change away from calls that work."""
    Conv2d.forward(_x(1, 3, 5, 5), _x(2, 3, 3, 3), _x(2))
    Conv2d.forward(_x(1, 1, 3, 3), _x(2, 1, 5, 3), _x(2), padding=1)
    ConvTranspose2d.forward(_x(1, 1, 5, 5), _x(1, 2, 3, 3), _x(2), stride=2, output_padding=1)
    ConvTranspose2d.forward(_x(1, 1, 1, 1), _x(1, 2, 3, 3), _x(2), stride=1, padding=1)


# -- scratch arrays ---------------------------------------------------------------------------


def test_reused_padding_buffers_leave_nothing_behind():
    """A padded buffer of the same size but a wider interior, filled first, must not leak
    into a later call with more padding (the buffers are keyed by size and padding)."""
    rng = np.random.default_rng(13)
    wide = rng.standard_normal((2, 3, 14, 14))  # padded to 16 with padding 1
    narrow = rng.standard_normal((2, 3, 12, 12))  # padded to 16 with padding 2
    im2col(wide, 3, 3, 1, 1)
    cols = im2col(narrow, 3, 3, 1, 2)
    x_pad = np.pad(narrow, ((0, 0), (0, 0), (2, 2), (2, 2)))
    expected = np.stack([x_pad[:, :, i : i + 14, j : j + 14]
                         for i in range(3) for j in range(3)])  # (9, N, C, 14, 14)
    expected = expected.reshape(3, 3, 2, 3, 14, 14).transpose(3, 0, 1, 4, 5, 2)
    np.testing.assert_array_equal(cols, expected.reshape(27, 14 * 14 * 2))


def test_the_pool_stays_within_its_budget(monkeypatch):
    pool = conv._Buffers()
    monkeypatch.setattr(conv._Buffers, "MAX_BYTES", 20_000)
    for n in range(1, 30):
        a = pool.get("cols", (n, 50), np.float32)
        assert a.shape == (n, 50) and a.dtype == np.float32
        assert sum(v.nbytes for kept in pool.arrays.values() for v in kept) <= 20_000
    assert len(pool.arrays) < 29  # the least recently used were forgotten
    del a
    a = pool.get("cols", (29, 50), np.float32)
    assert pool.get("cols", (29, 50), np.float32) is not a  # a is held here: not handed out
    ident = id(a)
    del a
    assert id(pool.get("cols", (29, 50), np.float32)) == ident  # now free: handed out again
    assert pool.get("cols", (29, 50), np.float64).dtype == np.float64
    big = pool.get("cols", (100, 100), np.float64)  # 80 kB: handed out, not kept
    assert big.shape == (100, 100)
    assert all(v is not big for kept in pool.arrays.values() for v in kept)


def test_the_pool_holds_at_most_256_mib_per_thread():
    """The memory the pool may keep: 256 MiB in all, an array of exactly that size included
    (it is reused), never more. (np.empty: no page of these arrays is touched.)"""
    cap = 256 * 2**20
    pool = conv._Buffers()
    a_id = id(pool.get("cols", (cap,), np.uint8))
    assert id(pool.get("cols", (cap,), np.uint8)) == a_id  # kept and handed out again
    b = pool.get("pad", (1,), np.uint8)  # one byte over the cap: the older one goes
    kept = [v for arrays in pool.arrays.values() for v in arrays]
    assert sum(v.nbytes for v in kept) <= cap and len(kept) == 1 and kept[0] is b
    first = pool.get("cols", (cap + 1,), np.uint8)
    assert pool.get("cols", (cap + 1,), np.uint8) is not first
    assert all(v.nbytes <= cap for arrays in pool.arrays.values() for v in arrays)


# -- bit for bit the same as the layers as first written --------------------------------------
#
# The layers reuse their arrays and may split their copies between threads; neither may change
# a single bit. The reference below is the plain arithmetic they started from: fresh arrays,
# one thread, the same matrix products and the same order of every sum.


def _pairs(stride, padding):
    stride = stride if isinstance(stride, tuple) else (stride, stride)
    return stride, padding if isinstance(padding, tuple) else (padding, padding)


def _ref_im2col(x, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = _pairs(stride, padding)
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), x.dtype)
    xp[:, ph : ph + h, pw : pw + w] = x.transpose(1, 2, 3, 0)
    cols = np.empty((c, kh, kw, ho, wo, n), x.dtype)
    for i, j in itertools.product(range(kh), range(kw)):
        cols[:, i, j] = xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
    return cols.reshape(c * kh * kw, ho * wo * n)


def _ref_col2im(cols, x_shape, kh, kw, stride, padding):
    (sh, sw), (ph, pw) = _pairs(stride, padding)
    n, c, h, w = x_shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols6 = cols.reshape(c, kh, kw, ho, wo, n)
    xp = np.zeros((c, h + 2 * ph, w + 2 * pw, n), cols.dtype)
    for i, j in itertools.product(range(kh), range(kw)):
        xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += cols6[:, i, j]
    return xp[:, ph : ph + h, pw : pw + w].transpose(3, 0, 1, 2)


def _ref_conv(x, W, b, stride, padding, dout):
    """out, dx, dW, db of Conv2d as first written."""
    c_out, _, kh, kw = W.shape
    cols = _ref_im2col(x, kh, kw, stride, padding)
    W2 = W.reshape(c_out, -1)
    out = W2 @ cols
    out += b[:, None]
    n = x.shape[0]
    out = out.reshape(c_out, -1, dout.shape[3], n).transpose(3, 0, 1, 2)
    dout2 = dout.transpose(1, 2, 3, 0).reshape(c_out, -1)
    dx = _ref_col2im(W2.T @ dout2, x.shape, kh, kw, stride, padding)
    return out, dx, (dout2 @ cols.T).reshape(W.shape), dout2.sum(axis=1)


def _ref_conv_transpose(x, W, b, stride, padding, out_shape, dout):
    """out, dx, dW, db of ConvTranspose2d as first written."""
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = W.shape
    x2 = x.transpose(1, 2, 3, 0).reshape(c_in, -1)
    W2 = W.reshape(c_in, -1)
    out = _ref_col2im(W2.T @ x2, out_shape, kh, kw, stride, padding)
    out += b[None, :, None, None]
    dcols = _ref_im2col(dout, kh, kw, stride, padding)
    db = dout.transpose(1, 2, 3, 0).reshape(c_out, -1).sum(axis=1)
    dx = (W2 @ dcols).reshape(c_in, h, w, n).transpose(3, 0, 1, 2)
    return out, dx, (x2 @ dcols.T).reshape(W.shape), db


def _layouts(a):
    """a in plain NCHW order and as this module's outputs are laid out, (C, H, W, N)."""
    return a, np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def _assert_same_bits(ours, reference):
    for got, want in zip(ours, reference, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


# (conv?, N, C_in, C_out, H, W, kernel, stride, padding, output_padding): the conv VAE's four
# layers at batch 16, and other sizes, strides and paddings.
VAE_LAYERS = [
    (True, 16, 1, 32, 28, 28, (4, 4), 2, 1, 0),
    (True, 16, 32, 64, 14, 14, (4, 4), 2, 1, 0),
    (False, 16, 64, 32, 7, 7, (4, 4), 2, 1, 0),
    (False, 16, 32, 1, 14, 14, (4, 4), 2, 1, 0),
]
BIT_CASES = [*VAE_LAYERS, *((True, *c, 0) for c in CONV_CASES[3:5]),
             *((False, *c) for c in CONVT_CASES[3:5])]


def _bit_case(case, dtype, seed):
    is_conv, n, c_in, c_out, h, w, kernel, stride, padding, output_padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    W = (0.2 * rng.standard_normal(((c_out, c_in) if is_conv else (c_in, c_out)) + kernel))
    W, b = W.astype(dtype), rng.standard_normal(c_out).astype(dtype)
    if is_conv:
        out, _ = Conv2d.forward(x, W, b, stride, padding)
    else:
        out, _ = ConvTranspose2d.forward(x, W, b, stride, padding, output_padding)
    return x, W, b, rng.standard_normal(out.shape).astype(dtype)


def _ours_and_reference(case, x, W, b, dout):
    is_conv, *_, stride, padding, output_padding = case
    if is_conv:
        out, cache = Conv2d.forward(x, W, b, stride, padding)
        ours = (out, *Conv2d.backward(dout, cache))
        return ours, _ref_conv(x, W, b, stride, padding, dout)
    out, cache = ConvTranspose2d.forward(x, W, b, stride, padding, output_padding)
    ours = (out, *ConvTranspose2d.backward(dout, cache))
    return ours, _ref_conv_transpose(x, W, b, stride, padding, out.shape, dout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", BIT_CASES)
def test_the_layers_give_the_bits_of_the_plain_arithmetic(case, dtype):
    """Reused arrays (twice over, so that the second call gets the first one's) give the
    very bits of fresh ones, for inputs and upstream gradients in either memory layout."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, W, b, dout = _bit_case(case, dtype, seed=20)
    with threadpoolctl.threadpool_limits(1):
        for _ in range(2):
            for x_in, dout_in in itertools.product(_layouts(x), _layouts(dout)):
                _assert_same_bits(*_ours_and_reference(case, x_in, W, b, dout_in))


@pytest.mark.parametrize("case", BIT_CASES)
def test_copies_split_between_threads_give_the_same_bits(case, monkeypatch):
    """With the copies split between three threads (uneven batch slices, every call split),
    every output and gradient is still bit for bit the plain arithmetic's."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(conv, "_threads", lambda: 3)
    monkeypatch.setattr(conv, "_MIN_SPLIT_BYTES", 1)
    x, W, b, dout = _bit_case(case, np.float32, seed=21)
    with threadpoolctl.threadpool_limits(1):
        for x_in, dout_in in itertools.product(_layouts(x), _layouts(dout)):
            _assert_same_bits(*_ours_and_reference(case, x_in, W, b, dout_in))


def test_the_bit_comparison_sees_a_reordered_sum():
    """A forward that adds the bias inside the matrix product (a row of ones appended to the
    columns) is equal to rounding, but not bit for bit: the comparison above would see it."""
    case = VAE_LAYERS[1]
    x, W, b, dout = _bit_case(case, np.float32, seed=22)
    _, ref = _ours_and_reference(case, x, W, b, dout)
    cols = _ref_im2col(x, 4, 4, 2, 1)
    ones = np.ones((1, cols.shape[1]), np.float32)
    folded = np.hstack([W.reshape(64, -1), b[:, None]]) @ np.vstack([cols, ones])
    folded = folded.reshape(64, 7, 7, -1).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(folded, ref[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(AssertionError):
        _assert_same_bits((folded,), ref[:1])


# -- reused arrays never alias what is still in use -------------------------------------------


def _layer_calls(case, seed):
    """forward() -> (out, cache) and backward(cache) -> grads for one of the BIT_CASES."""
    is_conv, *_, stride, padding, output_padding = case
    x, W, b, dout = _bit_case(case, np.float32, seed)
    if is_conv:
        return (lambda x=x: Conv2d.forward(x, W, b, stride, padding),
                lambda cache: Conv2d.backward(dout, cache), x)
    return (lambda x=x: ConvTranspose2d.forward(x, W, b, stride, padding, output_padding),
            lambda cache: ConvTranspose2d.backward(dout, cache), x)


def _copies(arrays):
    return [np.array(a, copy=True) for a in arrays]


@pytest.mark.parametrize("case", VAE_LAYERS)
def test_a_cache_stays_valid_while_other_forwards_run(case):
    """forward(x); forward of another batch, of a smaller batch (evaluation between training
    steps) and of another model with the same shapes; then backward of the first: the first
    output and gradients are those of the forward and backward run alone."""
    forward, backward, x = _layer_calls(case, seed=30)
    out, cache = forward()
    alone = _copies((out, *backward(cache)))
    out, cache = forward()
    out_copy = out.copy()
    other_forward, other_backward, other_x = _layer_calls(case, seed=31)  # another model
    others = [forward(2 * x), forward(x[:3]), other_forward(), other_forward(other_x[:5])]
    other_grads = other_backward(others[2][1])
    np.testing.assert_array_equal(out, out_copy)  # not overwritten by the other forwards
    grads = backward(cache)
    for got, want in zip((out, *grads), alone, strict=True):
        assert got.tobytes() == want.tobytes()
    # and the other model's results are its own, though computed in between
    again_out, again_cache = other_forward()
    for got, want in zip((others[2][0], *other_grads),
                         (again_out, *other_backward(again_cache)), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", VAE_LAYERS)
def test_outputs_and_gradients_a_caller_keeps_are_never_overwritten(case):
    forward, backward, x = _layer_calls(case, seed=32)
    kept, copies = [], []
    for k in range(4):
        out, cache = forward(x * (k + 1))
        results = (out, *backward(cache))
        kept.append(results)
        copies.append(_copies(results))
    for results, saved in zip(kept, copies, strict=True):
        for got, want in zip(results, saved, strict=True):
            assert got.tobytes() == want.tobytes()
    assert not np.array_equal(kept[0][0], kept[1][0])


@pytest.mark.parametrize("case", VAE_LAYERS[1:3])
def test_arrays_are_reused_once_nothing_refers_to_them(case):
    """The tests above are not vacuous: an output dropped by its caller (with its cache)
    comes back, the very array, as the next call's output; one still held does not."""
    forward, backward, x = _layer_calls(case, seed=33)
    out, cache = forward()
    first = id(out.base)  # the pool keeps that array alive, so its id is its own
    assert first in {id(a) for kept in conv._BUFFERS.arrays.values() for a in kept}
    out2, cache2 = forward()
    assert id(out2.base) != first  # out is held
    del out, cache
    out3, _ = forward()
    assert id(out3.base) == first


def test_conv_layers_allocate_nothing_after_a_warm_up_step():
    """After one forward and backward of the conv VAE's four layers (batch 16), another
    allocates less than 256 KiB at its peak, NumPy's small iterator buffers, where fresh
    arrays would take some 10 MiB (tracemalloc sees NumPy's allocations)."""
    import tracemalloc

    calls = [_layer_calls(case, seed=34) for case in VAE_LAYERS]

    def step():
        caches = [forward()[1] for forward, _, _ in calls]
        for (_, backward, _), cache in zip(calls, caches, strict=True):
            backward(cache)

    step()
    tracemalloc.start()
    try:
        step()
        snapshot = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**10, snapshot.statistics("lineno")[:5]


def test_the_networks_caches_survive_an_evaluation_in_between():
    """The conv VAE's encoder and decoder: forward a training batch, then evaluate two other
    batches (one of another size), then backpropagate the training batch: its gradients are
    those of the training batch alone."""
    from vae_from_scratch.networks import build_networks
    from vae_from_scratch.vae import VAEConfig, init_params

    config = VAEConfig(input_dim=784, latent_dim=4, architecture="conv", channels=(4, 8))
    encoder, decoder = build_networks(config)
    params = {k: v.astype(np.float32) for k, v in
              init_params(config, np.random.default_rng(0)).items()}
    rng = np.random.default_rng(35)
    x = rng.random((6, 784), dtype=np.float32)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    d_out = rng.standard_normal((6, 784)).astype(np.float32)
    d_h = rng.standard_normal((6, encoder.out_dim)).astype(np.float32)

    def backprop(h_cache, out_cache):
        grads = {}
        decoder.backward(d_out, out_cache, grads)
        encoder.backward(d_h, h_cache, grads, need_dx=False)
        return grads

    alone = backprop(encoder.forward(params, x)[1], decoder.forward(params, z)[1])
    h, h_cache = encoder.forward(params, x)
    out, out_cache = decoder.forward(params, z)
    for n in (6, 3):  # evaluation batches
        encoder.forward(params, rng.random((n, 784), dtype=np.float32))
        decoder.forward(params, rng.standard_normal((n, 4)).astype(np.float32))
    grads = backprop(h_cache, out_cache)
    assert grads.keys() == alone.keys()
    for name in grads:
        assert grads[name].tobytes() == alone[name].tobytes(), name


# -- the worker threads -----------------------------------------------------------------------


def test_the_threads_follow_blas_setting():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    def blas_threads():
        return max(i["num_threads"] for i in threadpoolctl.threadpool_info()
                   if i["user_api"] == "blas")

    with threadpoolctl.threadpool_limits(1):
        assert conv._threads() == 1
    with threadpoolctl.threadpool_limits(2):  # 2 where BLAS can have two, else 1
        assert conv._threads() == blas_threads()


def test_one_thread_starts_no_worker(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(conv, "_pool", None)
    monkeypatch.setattr(conv, "_MIN_SPLIT_BYTES", 1)
    with threadpoolctl.threadpool_limits(1):
        forward, backward, _ = _layer_calls(VAE_LAYERS[1], seed=36)
        backward(forward()[1])
    assert conv._pool is None


def test_work_is_split_between_at_most_the_set_number_of_threads(monkeypatch):
    import threading

    monkeypatch.setattr(conv, "_threads", lambda: 2)
    seen, covered = set(), []

    def record(n):
        seen.add(threading.get_ident())
        covered.extend(range(n.start, n.stop))

    conv._over_batch(record, 7, 2 * conv._MIN_SPLIT_BYTES)
    assert len(seen) == 2 and threading.get_ident() in seen
    assert sorted(covered) == list(range(7))
    seen.clear()
    conv._over_batch(record, 7, conv._MIN_SPLIT_BYTES)  # too little work to hand out
    assert seen == {threading.get_ident()}
