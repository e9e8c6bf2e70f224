"""Checks for lesson 08, the convolutional VAE (``solutions/08_convolutional_vae.ipynb``).

The lesson's layout, simpler than the package's (which puts the batch index last for
speed, :mod:`vae_from_scratch.conv`): x is NCHW, and the patches of each example are the
columns of one matrix,

    cols[n, (c, i, j), (ho, wo)] = x_pad[n, c, s*ho + i, s*wo + j]     (N, C*kH*kW, H_out*W_out)

with rows in the order of ``W.reshape(C_out, C*kH*kW)``'s columns (c slowest, j fastest)
and columns in row-major (ho, wo) order. The references are built from the package's
``conv.im2col``, ``conv.col2im`` and ``conv.Conv2d`` by moving the batch axis.

* Exercise 8.1: ``im2col(x, kH, kW, stride, padding)`` - every patch of x as a column.
* Exercise 8.2: ``conv2d_forward(x, W, b, stride, padding)`` - the convolution's output,
  as ``Conv2d.forward``.
* Exercise 8.3: ``col2im(cols, x_shape, kH, kW, stride, padding)`` - the adjoint of
  im2col: scatter each column entry back to its pixel and add.
* Exercise 8.4: ``conv2d_backward(dout, x, W, stride, padding)`` - (dx, dW, db), as
  ``Conv2d.backward``.
* Exercise 8.5 is a written answer.

Every case has stride and padding as plain ints; between them the cases cover odd and
even sizes, non-square images, stride 1 and 2, padding 0 and 1, one and several channels
(in and out, equal and unequal, so that a transposed W or a wrong flatten order cannot pass
by luck), overlapping and non-overlapping patches, and a stride that leaves the last row of
the image unused.
"""

from __future__ import annotations

import numpy as np

from vae_from_scratch import conv
from vae_from_scratch.checks.core import Case, Checker
from vae_from_scratch.conv import conv2d_output_size


def _im2col(x, kH, kW, stride, padding):
    """x (N, C, H, W) -> cols (N, C*kH*kW, H_out*W_out), the lesson's layout."""
    N, C, H, W = x.shape
    M = conv2d_output_size(H, kH, stride, padding) * conv2d_output_size(W, kW, stride, padding)
    cols = conv.im2col(np.asarray(x), kH, kW, stride, padding)  # (K, M*N), columns (ho, wo, n)
    return np.ascontiguousarray(cols.reshape(C * kH * kW, M, N).transpose(2, 0, 1))


def _col2im(cols, x_shape, kH, kW, stride, padding):
    """cols (N, C*kH*kW, H_out*W_out) -> x (N, C, H, W): the adjoint of the lesson's im2col."""
    N, C, H, W = x_shape
    K, M = cols.shape[1:]
    package_cols = np.ascontiguousarray(np.asarray(cols).transpose(1, 2, 0)).reshape(K, M * N)
    return np.ascontiguousarray(conv.col2im(package_cols, x_shape, kH, kW, stride, padding))


def _conv2d_forward(x, W, b, stride, padding):
    """x (N, C_in, H, W), W (C_out, C_in, kH, kW), b (C_out,) -> out (N, C_out, H_out, W_out)."""
    out, _ = conv.Conv2d.forward(x, W, b, stride=stride, padding=padding)
    return np.ascontiguousarray(out)


def _conv2d_backward(dout, x, W, stride, padding):
    """dout (N, C_out, H_out, W_out) -> (dx (N, C_in, H, W), dW (C_out, C_in, kH, kW),
    db (C_out,))."""
    b = np.zeros(W.shape[0], dtype=W.dtype)  # the gradients do not depend on b
    _, cache = conv.Conv2d.forward(x, W, b, stride=stride, padding=padding)
    dx, dW, db = conv.Conv2d.backward(dout, cache)
    return np.ascontiguousarray(dx), dW, db


def _r(a, decimals=1):
    return np.round(a, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0, so cases print cleanly


_rng = np.random.default_rng(8)


def _x(*shape):
    return _r(_rng.normal(0, 1, shape))


# (x shape, kernel (kH, kW), stride, padding)
_IM2COL_SHAPES = [
    ((1, 1, 4, 4), (2, 2), 1, 0),  # even size, overlapping patches, the printable case
    ((2, 2, 5, 5), (3, 3), 2, 1),  # odd size, stride 2, padding, two channels
    ((1, 3, 4, 5), (2, 3), 1, 1),  # non-square image and kernel, three channels
    ((2, 1, 6, 6), (4, 4), 2, 1),  # the conv VAE's 4x4, stride 2, padding 1
    ((1, 2, 5, 5), (2, 2), 2, 0),  # stride 2 leaves the last row and column unused
]

def _im2col_rows_ijc(x, kH, kW, stride, padding):
    """The slip: rows in (i, j, c) order, channel fastest, instead of W.reshape's (c, i, j)."""
    cols = _im2col(x, kH, kW, stride, padding)
    N, C = x.shape[:2]
    return cols.reshape(N, C, kH, kW, -1).transpose(0, 2, 3, 1, 4).reshape(cols.shape)


def _im2col_columns_wo_ho(x, kH, kW, stride, padding):
    """The slip: columns in (wo, ho) order instead of row-major (ho, wo)."""
    cols = _im2col(x, kH, kW, stride, padding)
    N, K = cols.shape[:2]
    Ho = conv2d_output_size(x.shape[2], kH, stride, padding)
    Wo = conv2d_output_size(x.shape[3], kW, stride, padding)
    return cols.reshape(N, K, Ho, Wo).transpose(0, 1, 3, 2).reshape(cols.shape)


def _im2col_stride_ignored(x, kH, kW, stride, padding):
    """The slip: the right number of patches, but taken at x_pad[ho + i, wo + j] (stride 1)."""
    N, C, H, W = x.shape
    Ho, Wo = (conv2d_output_size(n, k, stride, padding) for n, k in ((H, kH), (W, kW)))
    dense = _im2col(x, kH, kW, 1, padding)
    H1, W1 = (conv2d_output_size(n, k, 1, padding) for n, k in ((H, kH), (W, kW)))
    dense = dense.reshape(N, C * kH * kW, H1, W1)[:, :, :Ho, :Wo]
    return np.ascontiguousarray(dense).reshape(N, C * kH * kW, Ho * Wo)


im2col = Checker(
    "8.1",
    reference=_im2col,
    name="im2col",
    cases=[Case(np.arange(16.0).reshape(1, 1, 4, 4), 2, 2, 1, 0)]
    + [Case(_x(*shape), kh, kw, s, p) for shape, (kh, kw), s, p in _IM2COL_SHAPES[1:]],
    slips=[
        ("It is what the patches give when the stride is ignored: patch (ho, wo) starts at "
         "row stride*ho and column stride*wo of the padded image, not at (ho, wo).",
         _im2col_stride_ignored),
        ("Its rows are in (kH, kW, C) order, the channel changing fastest: they must follow "
         "W.reshape(C_out, C*kH*kW)'s columns, (c, i, j) with the channel slowest, so that "
         "W_flat @ cols pairs each weight with its pixel.", _im2col_rows_ijc),
        ("Its columns are in (wo, ho) order: the output is reshaped to (H_out, W_out) "
         "row-major, so column ho*W_out + wo holds patch (ho, wo).", _im2col_columns_wo_ho),
    ],
)

# (N, C_in, C_out, H, W, (kH, kW), stride, padding); the first N is not 2, so that a mean
# over the batch is told from a factor 1/2
_CONV_SHAPES = [
    (3, 2, 3, 5, 5, (3, 3), 1, 1),  # odd size, stride 1, padding 1, C_in != C_out
    (1, 2, 2, 6, 6, (4, 4), 2, 1),  # even size, the VAE's 4x4/2/1, C_in == C_out
    (2, 3, 2, 4, 5, (2, 3), 1, 0),  # non-square image and kernel, no padding
    (1, 2, 3, 7, 7, (3, 3), 2, 0),  # odd size, stride 2, no padding
]


def _conv_case(n, c_in, c_out, h, w, k, stride, padding, with_dout=False):
    x = _x(n, c_in, h, w)
    W = _x(c_out, c_in, *k)
    if not with_dout:
        return Case(x, W, _x(c_out), stride, padding)
    dout = _x(n, c_out, conv2d_output_size(h, k[0], stride, padding),
              conv2d_output_size(w, k[1], stride, padding))
    return Case(dout, x, W, stride, padding)


def _flipped(W):
    """The kernel rotated by 180 degrees in its two spatial axes."""
    return np.ascontiguousarray(W[:, :, ::-1, ::-1])


_FLIP = ("It is what the kernel rotated by 180 degrees gives: a convolution layer computes a "
         "cross-correlation, out[o, ho, wo] = sum of W[o, c, i, j] x_pad[c, s*ho + i, "
         "s*wo + j], with no flip.")

conv2d_forward = Checker(
    "8.2",
    reference=_conv2d_forward,
    name="conv2d_forward",
    cases=[
        # one channel, a 2x2 kernel that is not symmetric (so flipping it shows), and an
        # image that is not linear in (h, w): on a linear one (an arange) the flipped
        # kernel's output differs by the same number everywhere, which looks like the bias
        Case(np.array([[[[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [0.0, 2.0, 4.0]]]]),
             np.array([[[[1.0, 2.0], [0.0, -1.0]]]]), np.array([0.5]), 1, 0),
    ]
    + [_conv_case(*shape) for shape in _CONV_SHAPES],
    slips=[(_FLIP, lambda x, W, b, s, p: _conv2d_forward(x, _flipped(W), b, s, p))],
)

# (x shape, kernel (kH, kW), stride, padding)
_COL2IM_SHAPES = [
    ((1, 1, 3, 3), (2, 2), 1, 0),  # overlapping patches: copies must add, not overwrite
    ((2, 2, 4, 4), (3, 3), 1, 1),  # padding: entries that land in it are dropped
    ((1, 2, 6, 6), (4, 4), 2, 1),  # the VAE's 4x4/2/1
    ((2, 1, 5, 4), (2, 2), 2, 0),  # no overlap; the last row is in no patch (stays 0)
    ((1, 3, 5, 5), (3, 2), 2, 1),  # non-square kernel, three channels
]


def _col2im_case(x_shape, k, stride, padding):
    n, c, h, w = x_shape
    m = conv2d_output_size(h, k[0], stride, padding) * conv2d_output_size(w, k[1], stride, padding)
    return Case(_x(n, c * k[0] * k[1], m), x_shape, k[0], k[1], stride, padding)


col2im = Checker(
    "8.3",
    reference=_col2im,
    name="col2im",
    cases=[Case(np.arange(1.0, 17.0).reshape(1, 4, 4), (1, 1, 3, 3), 2, 2, 1, 0)]
    + [_col2im_case(*shape) for shape in _COL2IM_SHAPES[1:]],
)

def _dx_with_flipped_kernel(dout, x, W, stride, padding):
    """The slip: dx from the kernel rotated by 180 degrees, dW and db right."""
    dx = _conv2d_backward(dout, x, _flipped(W), stride, padding)[0]
    return (dx, *_conv2d_backward(dout, x, W, stride, padding)[1:])


conv2d_backward = Checker(
    "8.4",
    reference=_conv2d_backward,
    name="conv2d_backward",
    cases=[_conv_case(*shape, with_dout=True) for shape in _CONV_SHAPES],
    outputs=("dx", "dW", "db"),
    # a mean over the batch, or over the output positions, where the forward pass sums
    sizes={"N": "dout.shape[0]", "H_out*W_out": "dout.shape[2] * dout.shape[3]"},
    slips=[("dx is what the kernel rotated by 180 degrees gives: in the im2col form "
            "dcols = W_flat.T @ dout takes W as it is (the rotation appears only when dx is "
            "written as a full convolution of dout).", _dx_with_flipped_kernel)],
)
