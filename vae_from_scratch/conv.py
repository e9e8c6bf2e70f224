"""Convolution and transposed convolution, each a forward and a hand-derived backward
(lesson 08).

Same pattern as :mod:`vae_from_scratch.layers`::

    out, cache = Conv2d.forward(x, W, b, stride, padding)
    dx, dW, db = Conv2d.backward(dout, cache)      # dout = dL/dout, the shape of out

Layout NCHW, as in PyTorch: ``x`` (N, C, H, W). Weights as PyTorch stores them:
``Conv2d`` W (C_out, C_in, kH, kW), ``ConvTranspose2d`` W (C_in, C_out, kH, kW). ``stride``,
``padding`` and ``output_padding`` are an int or an (h, w) pair; kernels may be non-square.

**The convolution as a matrix product.** With x_pad the input zero-padded by p on each side,

    out[n, o, ho, wo] = b[o] + sum_{c, i, j} W[o, c, i, j] x_pad[n, c, s*ho + i, s*wo + j].

Gather every input patch into one column (:func:`im2col`)::

    cols[(c, i, j), (ho, wo, n)] = x_pad[n, c, s*ho + i, s*wo + j]    (K, M)

with K = C_in*kH*kW rows in the order of ``W.reshape(C_out, K)``'s columns and
M = H_out*W_out*N columns, the batch index running fastest. Then the layer is one matrix
product, ``out = W2 @ cols + b`` with W2 = W.reshape(C_out, K), and its backward is that of
:class:`layers.Linear`.

im2col is linear in x: cols = A x for a 0/1 matrix A that copies (and duplicates, where
patches overlap) input pixels. Its adjoint A^T, :func:`col2im`, sends each column entry back
to the pixel it came from and *adds* the copies. The convolution is the linear map
T = W2 A (plus b), so dL/dx = T^T dout = A^T W2^T dout: a matrix product followed by
col2im. That map T^T is, by definition, the transposed convolution with the same W;
:class:`ConvTranspose2d` is written as exactly that, and its own backward is a convolution.

**Memory layout.** Internally the layers work in (C, H, W, N) memory order, the batch
innermost: im2col and col2im then move runs of N contiguous numbers per kernel offset
instead of runs of W_out (7 at 4x4/stride 2 on 14x14), which makes them several times
faster, and the matrix product ``W2 @ cols`` lands directly in that order. The outputs and
input gradients are therefore NCHW *views* of (C, H, W, N)-ordered memory: NumPy treats
them like any array, and the next layer reads them without a copy. An input in plain NCHW
order costs one transposing copy; ``np.ascontiguousarray`` gives a C-ordered copy of an
output where one is wanted (``reshape(N, -1)`` to flatten makes it anyway).

**Speed.** The arrays a layer makes (outputs, caches, gradients, temporaries) come from a
pool and return to it once nothing refers to them any more (:class:`_Buffers`), so a training
step allocates no fresh memory after the first. With more than one BLAS thread the copies
around the matrix products are split between as many threads (:func:`_over_batch`). Neither
changes a bit of any result: the same operations run in the same order.
"""

from __future__ import annotations

import operator
import os
import sys
import threading

import numpy as np

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "col2im",
    "conv2d_output_size",
    "conv_transpose2d_output_size",
    "im2col",
]


# -- sizes and argument checks ----------------------------------------------------------------


def _as_int(value, name):
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None


def _pair(value, name):
    """An int or an (h, w) pair of ints -> (h, w)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {value!r}")
        return _as_int(value[0], name), _as_int(value[1], name)
    v = _as_int(value, name)
    return v, v


def _check_stride_padding(stride, padding):
    """Validated (sh, sw), (ph, pw)."""
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    return stride, padding


def _check_axis(size, kernel, stride, padding):
    """One axis's sizes as ints: size, kernel and stride positive, padding non-negative."""
    size, kernel = _as_int(size, "size"), _as_int(kernel, "kernel")
    stride, padding = _as_int(stride, "stride"), _as_int(padding, "padding")
    if size < 1:
        raise ValueError(f"input size must be positive, got {size}")
    if kernel < 1:
        raise ValueError(f"kernel size must be positive, got {kernel}")
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    return size, kernel, stride, padding


def conv2d_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis: floor((size + 2p - k) / s) + 1.

    Raises ValueError when the kernel is larger than the padded input (no output at all),
    for a non-positive size, kernel or stride, or a negative padding.
    """
    size, kernel, stride, padding = _check_axis(size, kernel, stride, padding)
    if kernel > size + 2 * padding:
        raise ValueError(
            f"kernel size {kernel} is larger than the padded input "
            f"(size {size} + 2*padding {padding} = {size + 2 * padding}); "
            f"expected kernel <= {size + 2 * padding}"
        )
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose2d_output_size(size, kernel, stride, padding, output_padding=0):
    """Output length of a transposed convolution along one axis:
    (size - 1)*s - 2p + k + output_padding.

    A convolution maps every length in [L, L + s - 1] to the same output length; its
    transpose picks L, and ``output_padding`` (0 <= output_padding < s) picks one of the
    others. Raises ValueError for output_padding outside that range, an output length
    below 1, a non-positive size, kernel or stride, or a negative padding.
    """
    size, kernel, stride, padding = _check_axis(size, kernel, stride, padding)
    output_padding = _as_int(output_padding, "output_padding")
    if not 0 <= output_padding < stride:
        raise ValueError(
            f"output_padding must satisfy 0 <= output_padding < stride ({stride}), "
            f"got {output_padding}"
        )
    out = (size - 1) * stride - 2 * padding + kernel + output_padding
    if out < 1:
        raise ValueError(
            f"transposed convolution output size would be {out} "
            f"((size {size} - 1)*stride {stride} - 2*padding {padding} + kernel {kernel} "
            f"+ output_padding {output_padding}); expected at least 1: reduce the padding"
        )
    return out


def _check_arrays(x, W, b, in_axis, out_axis, weight_layout):
    """Validate x (N, C, H, W), W (4-D), b and their dtypes; return them in one float dtype.

    ``in_axis`` is the axis of W that must equal x's channels, ``out_axis`` the one b follows.
    """
    x, W, b = np.asarray(x), np.asarray(W), np.asarray(b)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C_in, H, W), got shape {x.shape}")
    if W.ndim != 4:
        raise ValueError(f"W must be 4-D {weight_layout}, got shape {W.shape}")
    if min(x.shape[1:]) < 1 or min(W.shape) < 1:
        raise ValueError(f"x {x.shape} and W {W.shape} must have no empty channel/pixel axes")
    if x.shape[1] != W.shape[in_axis]:
        raise ValueError(
            f"channel mismatch: x has C_in={x.shape[1]} channels (shape {x.shape}) but "
            f"W {weight_layout} has shape {W.shape}, expecting C_in={W.shape[in_axis]}"
        )
    if b.shape != (W.shape[out_axis],):
        raise ValueError(
            f"b must have shape (C_out,) = ({W.shape[out_axis]},) for W of shape {W.shape}, "
            f"got {b.shape}"
        )
    dtype = np.result_type(x.dtype, W.dtype, b.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"x, W, b must be floating point, got {x.dtype}, {W.dtype}, {b.dtype}")
    return x.astype(dtype, copy=False), W.astype(dtype, copy=False), b.astype(dtype, copy=False)


def _check_dout(dout, shape, dtype):
    dout = np.asarray(dout)
    if dout.shape != shape:
        raise ValueError(f"dout must have the forward output's shape {shape}, got {dout.shape}")
    return dout.astype(dtype, copy=False)


# -- reusable arrays ------------------------------------------------------------------------


def _refcount(arrays, i):
    return sys.getrefcount(arrays[i])


# Reuse needs exact reference counts: CPython with its GIL (not PyPy, not a free-threaded
# build). Elsewhere every array is fresh. _ONLY_LISTED: the count of an array that only a list
# refers to, measured (2 on CPython: the list and the call's argument).
_REUSE = hasattr(sys, "getrefcount") and getattr(sys, "_is_gil_enabled", lambda: True)()
_ONLY_LISTED = _refcount([np.empty(0)], 0) if _REUSE else None


class _Buffers(threading.local):
    """The arrays this module allocates (outputs, caches, gradients, scratch), kept and
    handed out again. Fresh arrays of these sizes are slow: the allocator gives large blocks
    back to the operating system, which maps and zeroes new pages for the next step.

    An array is handed out again only when nothing but this pool refers to it: no output a
    caller holds, no cache, no view of either (a view refers to the array that owns its
    memory). So a cache stays valid until its backward however many forwards run in between,
    and nothing a caller holds is ever overwritten. Keyed by role, shape and dtype; beyond
    ``MAX_BYTES`` in all the least recently used are forgotten (one in use lives on with its
    user). One pool per thread.
    """

    # A conv VAE training step at batch 128 keeps 45 MiB here (56 with the smaller last
    # batch's); an IWAE batch of 1,000 rows would keep 350 MiB, and gets part of that.
    MAX_BYTES = 256 * 2**20

    def __init__(self):
        self.arrays = {}  # key -> list of arrays; the least recently used key first

    def get(self, role, shape, dtype, zeros=False):
        """An array of ``shape`` and ``dtype`` that nothing else refers to; all zeros when
        made if ``zeros`` (a role that relies on them must never write them). The caller
        must write every other entry before reading it."""
        key = (role, tuple(shape), np.dtype(dtype))
        arrays = self.arrays.pop(key, [])
        free = [i for i in range(len(arrays)) if _REUSE and _refcount(arrays, i) == _ONLY_LISTED]
        array = arrays[free[0]] if free else (np.zeros if zeros else np.empty)(shape, dtype)
        if array.nbytes > self.MAX_BYTES:
            return array  # used once, never kept
        if not free:
            arrays.append(array)
        self.arrays[key] = arrays
        total = sum(a.nbytes for kept in self.arrays.values() for a in kept)
        while total > self.MAX_BYTES:  # forget the least recently used
            oldest = next(iter(self.arrays))
            total -= self.arrays[oldest].pop(0).nbytes
            if not self.arrays[oldest]:
                del self.arrays[oldest]
        return array


_BUFFERS = _Buffers()


# -- sharing the copies between threads -------------------------------------------------------
#
# The matrix products use as many threads as NumPy's BLAS is set to (one by default:
# vae_from_scratch.threads). The copies and sums around them (im2col, col2im, transposes, the
# bias) are split over the batch axis between as many threads, never while a matrix product
# runs, so no more than that many threads work at once. Each thread writes its own examples;
# every number comes from the same operations in the same order as on one thread.

_MIN_SPLIT_BYTES = 2**20  # less work than this per thread is not worth handing out
_blas = None  # threadpoolctl's controllers of NumPy's BLAS, found on first use
_pool = None  # the worker threads, started on first use


def _threads():
    """The number of threads NumPy's BLAS is set to use (at least 1)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return max([lib.num_threads for lib in _blas] + [1])


def _over_batch(fn, n, nbytes):
    """Call ``fn(examples)`` on consecutive slices that cover range(n), one per thread, or on
    all of them here when BLAS has one thread or the work (``nbytes``) is small."""
    global _pool
    threads = min(n, nbytes // _MIN_SPLIT_BYTES)
    if threads > 1:
        threads = min(threads, _threads())
    if threads <= 1:
        fn(slice(0, n))
        return
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(os.cpu_count(), thread_name_prefix="conv")
    bounds = [n * k // threads for k in range(threads + 1)]
    others = [_pool.submit(fn, slice(bounds[k], bounds[k + 1])) for k in range(1, threads)]
    try:
        fn(slice(0, bounds[1]))
    finally:
        for other in others:
            other.result()


def _forget_pool():  # a child made by fork has none of its parent's threads
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _contiguous(a, role):
    """``a`` (C, H, W, N) itself if C-contiguous, else a C-contiguous copy (reusable)."""
    if a.flags.c_contiguous:
        return a
    out = _BUFFERS.get(role, a.shape, a.dtype)

    def copy(n):
        np.copyto(out[..., n], a[..., n])

    _over_batch(copy, a.shape[-1], a.nbytes)
    return out


# -- im2col and its adjoint -------------------------------------------------------------------


def _window(start, stride, count):
    """The slice start, start + stride, ..., count entries: kernel offset ``start``'s view."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def im2col(x, kH, kW, stride, padding, out=None):
    """Every (kH, kW) patch of x as a column (into ``out``, a (K, M) array, if given).

    x (N, C, H, W) -> cols (C*kH*kW, H_out*W_out*N) with

        cols[(c, i, j), (ho, wo, n)] = x_pad[n, c, s_h*ho + i, s_w*wo + j]

    (row c*kH*kW + i*kW + j, column (ho*W_out + wo)*N + n), x_pad being x with ``padding``
    zeros on each side. Rows follow ``W.reshape(C_out, C*kH*kW)``'s columns, so a
    convolution is ``W2 @ cols``; columns put the batch index last, so that each kernel
    offset (i, j) is one strided copy of runs of N contiguous numbers.
    """
    if np.ndim(x) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {np.shape(x)}")
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = _check_stride_padding(stride, padding)
    Ho = conv2d_output_size(H, kH, sh, ph)
    Wo = conv2d_output_size(W, kW, sw, pw)
    xt = x.transpose(1, 2, 3, 0)  # (C, H, W, N); free when x came from this module
    shape = (C * kH * kW, Ho * Wo * N)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    elif out.shape != shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {x.dtype} array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    cols = out.reshape(C, kH, kW, Ho, Wo, N)  # a view: writing it fills out
    xp = xt
    if ph or pw:
        # Only the interior is ever written, so the border stays zero from creation on.
        xp = _BUFFERS.get(("pad", ph, pw), (C, H + 2 * ph, W + 2 * pw, N), x.dtype,
                          zeros=True)

    def copy(n):  # the examples n
        if ph or pw:
            xp[:, ph : ph + H, pw : pw + W, n] = xt[..., n]
        for i in range(kH):
            for j in range(kW):
                cols[:, i, j, ..., n] = xp[:, _window(i, sh, Ho), _window(j, sw, Wo), n]

    _over_batch(copy, N, out.nbytes)
    return out


def col2im(cols, x_shape, kH, kW, stride, padding):
    """The adjoint of :func:`im2col`: scatter each column entry back to its pixel and add.

    cols (C*kH*kW, H_out*W_out*N), x_shape (N, C, H, W) -> x (N, C, H, W) with

        x[n, c, h, w] = sum of cols[(c, i, j), (ho, wo, n)] over s*ho + i = h + p,
                                                                 s*wo + j = w + p

    so that <im2col(x), cols> = <x, col2im(cols)> for every x and cols. Entries that fall in
    the padding are dropped. The result is an NCHW view of (C, H, W, N)-ordered memory.
    """
    N, C, H, W = x_shape
    (sh, sw), (ph, pw) = _check_stride_padding(stride, padding)
    Ho = conv2d_output_size(H, kH, sh, ph)
    Wo = conv2d_output_size(W, kW, sw, pw)
    want = (C * kH * kW, Ho * Wo * N)
    if np.shape(cols) != want:
        raise ValueError(
            f"cols must have shape (C*kH*kW, H_out*W_out*N) = {want} for x_shape "
            f"{tuple(x_shape)}, got {np.shape(cols)}"
        )
    xp = np.empty((C, H + 2 * ph, W + 2 * pw, N), dtype=cols.dtype)
    return _col2im(cols, xp, kH, kW, (sh, sw), (ph, pw))


def _col2im(cols, xp, kH, kW, stride, padding):
    """:func:`col2im` of checked arguments, summed in ``xp`` (C, H + 2p, W + 2p, N)."""
    (sh, sw), (ph, pw) = stride, padding
    C, Hp, Wp, N = xp.shape
    Ho, Wo = (Hp - kH) // sh + 1, (Wp - kW) // sw + 1
    cols6 = cols.reshape(C, kH, kW, Ho, Wo, N)

    def add(n):  # the examples n
        xp[..., n] = 0
        for i in range(kH):
            for j in range(kW):
                xp[:, _window(i, sh, Ho), _window(j, sw, Wo), n] += cols6[:, i, j, ..., n]

    _over_batch(add, N, cols.nbytes)
    return xp[:, ph : Hp - ph, pw : Wp - pw].transpose(3, 0, 1, 2)


def _sum_buffer(x_shape, padding, dtype):
    """A reusable (C, H + 2p, W + 2p, N) array for :func:`_col2im` to sum in."""
    N, C, H, W = x_shape
    return _BUFFERS.get("sum", (C, H + 2 * padding[0], W + 2 * padding[1], N), dtype)


def _add_bias(out, b):
    """out (N, C, H, W) += b (C,), in place."""

    def add(n):
        out[n] += b[:, None, None]

    _over_batch(add, out.shape[0], out.nbytes)


# -- the layers -------------------------------------------------------------------------------


class Conv2d:
    """2-D convolution (cross-correlation, as in PyTorch), computed as ``W2 @ im2col(x) + b``.

    x (N, C_in, H, W), W (C_out, C_in, kH, kW), b (C_out,) -> out (N, C_out, H_out, W_out),
    H_out = floor((H + 2p - kH) / s) + 1 (:func:`conv2d_output_size`), likewise W_out.
    """

    @staticmethod
    def forward(x, W, b, stride=1, padding=0):
        """x (N, C_in, H, W), W (C_out, C_in, kH, kW), b (C_out,) -> out, cache.

        out (N, C_out, H_out, W_out) = (W2 @ cols + b) with W2 = W.reshape(C_out, K)
        (C_out, K), cols = im2col(x) (K, M), K = C_in*kH*kW, M = H_out*W_out*N.
        """
        x, W, b = _check_arrays(x, W, b, 1, 0, "(C_out, C_in, kH, kW)")
        stride, padding = _check_stride_padding(stride, padding)
        N, _, H, Wd = x.shape
        C_out, C_in, kH, kW = W.shape
        Ho = conv2d_output_size(H, kH, stride[0], padding[0])  # checks that the kernel fits
        Wo = conv2d_output_size(Wd, kW, stride[1], padding[1])
        K, M = C_in * kH * kW, Ho * Wo * N
        cols = im2col(x, kH, kW, stride, padding, out=_BUFFERS.get("cols", (K, M), x.dtype))
        W2 = W.reshape(C_out, K)  # cols is kept for dW
        # (C_out, M), memory in (C_out, H_out, W_out, N) order
        out = np.matmul(W2, cols, out=_BUFFERS.get("out", (C_out, M), x.dtype))
        out = out.reshape(C_out, Ho, Wo, N).transpose(3, 0, 1, 2)
        _add_bias(out, b)
        return out, (x.shape, W2, W.shape, cols, stride, padding, out.shape)

    @staticmethod
    def backward(dout, cache, need_dx=True):
        """dout (N, C_out, H_out, W_out) -> (dx (N, C_in, H, W) or None, dW, db).

        With dOut = dout as a (C_out, M) matrix (columns (ho, wo, n), as cols):
            out = W2 cols + b 1^T      =>  dW2 = dOut cols^T          (C_out, K)
                                           db  = dOut 1 (sum over M)  (C_out,)
                                           dcols = W2^T dOut          (K, M)
            cols = A x (im2col)        =>  dx = A^T dcols = col2im(dcols)  (N, C_in, H, W)
        dx is thus a transposed convolution of dout with the same W (see the module's
        docstring). With ``need_dx=False`` (the first layer: the data's gradient is never
        used) dcols and col2im are skipped and dx is None. Gradients have the forward's dtype.
        """
        x_shape, W2, W_shape, cols, stride, padding, out_shape = cache
        dout = _check_dout(dout, out_shape, cols.dtype)
        C_out = W_shape[0]
        # (C_out, H_out, W_out, N) as a matrix; free when dout has this module's memory order.
        dout2 = _contiguous(dout.transpose(1, 2, 3, 0), "dout").reshape(C_out, cols.shape[1])
        db = dout2.sum(axis=1)
        dW = np.matmul(dout2, cols.T, out=_BUFFERS.get("dW", W2.shape, W2.dtype))
        dW = dW.reshape(W_shape)
        dx = None
        if need_dx:
            _, _, kH, kW = W_shape
            dcols = _BUFFERS.get("cols", cols.shape, cols.dtype)
            np.matmul(W2.T, dout2, out=dcols)  # (K, M)
            dx = _col2im(dcols, _sum_buffer(x_shape, padding, dcols.dtype), kH, kW, stride,
                         padding)
        return dx, dW, db


class ConvTranspose2d:
    """2-D transposed convolution: the adjoint (transpose) of :class:`Conv2d`'s linear map.

    x (N, C_in, H, W), W (C_in, C_out, kH, kW) as ``torch.nn.ConvTranspose2d`` stores it,
    b (C_out,) -> out (N, C_out, H_out, W_out), H_out = (H - 1)*s - 2p + kH + output_padding
    (:func:`conv_transpose2d_output_size`).

    Read W as the weight of a Conv2d from C_out to C_in channels (its layout
    (C_out', C_in', kH, kW) = (C_in, C_out, kH, kW)), mapping an (H_out, W_out) image to
    (H, W). That convolution is x' -> W2 A x' with W2 = W.reshape(C_in, K) (C_in, K),
    K = C_out*kH*kW, and A = im2col. This layer is its transpose, plus a bias:

        out = A^T (W2^T x) + b = col2im(W2^T @ x) + b,

    i.e. each input pixel scatters a copy of its (C_out, kH, kW) kernel, scaled, into the
    output at stride s, and overlapping copies add. Upsampling, hence its use in decoders.
    ``output_padding`` adds rows/columns at the bottom/right that no kernel copy reaches
    (they hold b), to pick among the output sizes that the convolution maps to H.
    """

    @staticmethod
    def forward(x, W, b, stride=1, padding=0, output_padding=0):
        """x (N, C_in, H, W), W (C_in, C_out, kH, kW), b (C_out,) -> out, cache.

        x2 = x as (C_in, M) with M = H*W*N, cols = W2^T @ x2 (K, M), K = C_out*kH*kW,
        out = col2im(cols) + b (N, C_out, H_out, W_out).
        """
        x, W, b = _check_arrays(x, W, b, 0, 1, "(C_in, C_out, kH, kW)")
        stride, padding = _check_stride_padding(stride, padding)
        output_padding = _pair(output_padding, "output_padding")
        N, C_in, H, Wd = x.shape
        _, C_out, kH, kW = W.shape
        Ho = conv_transpose2d_output_size(H, kH, stride[0], padding[0], output_padding[0])
        Wo = conv_transpose2d_output_size(Wd, kW, stride[1], padding[1], output_padding[1])
        x2 = _contiguous(x.transpose(1, 2, 3, 0), "x").reshape(C_in, H * Wd * N)  # (C_in, M)
        W2 = W.reshape(C_in, C_out * kH * kW)  # (C_in, K)
        cols = _BUFFERS.get("cols", (W2.shape[1], x2.shape[1]), x2.dtype)
        np.matmul(W2.T, x2, out=cols)  # (K, M)
        out = _col2im(cols, _sum_buffer((N, C_out, Ho, Wo), padding, cols.dtype), kH, kW,
                      stride, padding)
        _add_bias(out, b)
        return out, (x.shape, x2, W2, W.shape, stride, padding, out.shape)

    @staticmethod
    def backward(dout, cache, need_dx=True):
        """dout (N, C_out, H_out, W_out) -> (dx (N, C_in, H, W) or None, dW, db).

        out = A^T cols + b, cols = W2^T x2, so with dcols = A dout = im2col(dout) (K, M):
            dW2 = x2 dcols^T   (C_in, K)     db = sum of dout over n, h, w   (C_out,)
            dx2 = W2 dcols     (C_in, M)  -> dx (N, C_in, H, W)
        dx is a plain convolution of dout with W (the adjoint of the adjoint). With
        ``need_dx=False`` dx is None and its matrix product is skipped.
        """
        x_shape, x2, W2, W_shape, stride, padding, out_shape = cache
        dout = _check_dout(dout, out_shape, x2.dtype)
        _, _, kH, kW = W_shape
        dcols = _BUFFERS.get("cols", (W2.shape[1], x2.shape[1]), x2.dtype)
        im2col(dout, kH, kW, stride, padding, out=dcols)  # (K, M)
        # Sum over (n, h, w) as contiguous rows, so the bits do not depend on dout's strides.
        db = _contiguous(dout.transpose(1, 2, 3, 0), "dout").reshape(dout.shape[1], -1)
        db = db.sum(axis=1)
        dW = np.matmul(x2, dcols.T, out=_BUFFERS.get("dW", W2.shape, W2.dtype))
        dW = dW.reshape(W_shape)
        dx = None
        if need_dx:
            N, C_in, H, Wd = x_shape
            dx = np.matmul(W2, dcols, out=_BUFFERS.get("out", x2.shape, x2.dtype))
            dx = dx.reshape(C_in, H, Wd, N).transpose(3, 0, 1, 2)
        return dx, dW, db
