"""Tests for vae_from_scratch.conv: Conv2d and ConvTranspose2d against central differences,
their own adjointness, and torch.nn.functional (forward and autograd) in float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

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


def test_scratch_stays_within_its_budget(monkeypatch):
    from vae_from_scratch import conv

    scratch = conv._Scratch()
    monkeypatch.setattr(conv._Scratch, "MAX_BYTES", 20_000)
    for n in range(1, 30):
        a = scratch.get("cols", (n, 50), np.float32)
        assert a.shape == (n, 50) and a.dtype == np.float32
        assert sum(v.nbytes for v in scratch.arrays.values()) <= 20_000
    assert len(scratch.arrays) < 29  # the oldest were dropped
    assert scratch.get("cols", (29, 50), np.float32) is a  # the most recent is kept
    assert scratch.get("cols", (29, 50), np.float64) is not a
    big = scratch.get("cols", (100, 100), np.float64)  # 80 kB: handed out, not kept
    assert big.shape == (100, 100) and all(v is not big for v in scratch.arrays.values())


def test_scratch_holds_at_most_256_mib_per_thread():
    """The memory the scratch arrays may keep: 256 MiB in all, an array of exactly that size
    included (it is reused), never more. (np.empty: no page of these arrays is touched.)"""
    from vae_from_scratch import conv

    cap = 256 * 2**20
    scratch = conv._Scratch()
    a = scratch.get("cols", (cap,), np.uint8)
    assert scratch.get("cols", (cap,), np.uint8) is a  # kept and handed out again
    b = scratch.get("pad", (1,), np.uint8)  # one byte over the cap: the older one goes
    assert sum(v.nbytes for v in scratch.arrays.values()) <= cap
    assert len(scratch.arrays) == 1 and next(iter(scratch.arrays.values())) is b
    assert scratch.get("cols", (cap + 1,), np.uint8) is not scratch.get("cols", (cap + 1,),
                                                                          np.uint8)
