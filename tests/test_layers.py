"""Tests for vae_from_scratch.layers: every backward against central differences."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.layers import (
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
    sigmoid,
)

pytestmark = [pytest.mark.lesson01, pytest.mark.lesson04]

TOL = 1e-8
SHAPES = [(1, 1, 1), (3, 4, 2), (5, 2, 7)]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _away_from_zero(rng, shape, margin=0.1):
    """Random values with |v| >= margin, so that h = 1e-5 never crosses ReLU's kink."""
    v = rng.standard_normal(shape)
    return np.where(v >= 0, v + margin, v - margin)


@pytest.mark.parametrize("n, d_in, d_out", SHAPES)
def test_linear_forward_is_affine(n, d_in, d_out):
    rng = _rng(1)
    x, W, b = rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)), rng.random(d_out)
    out, _ = Linear.forward(x, W, b)
    expected = np.array(
        [[sum(x[i, k] * W[k, j] for k in range(d_in)) + b[j] for j in range(d_out)]
         for i in range(n)]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, d_in, d_out", SHAPES)
def test_linear_backward_matches_numerical(n, d_in, d_out):
    rng = _rng(2)
    x = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out)
    dout = rng.standard_normal((n, d_out))

    def f():
        return np.sum(Linear.forward(x, W, b)[0] * dout)

    _, cache = Linear.forward(x, W, b)
    dx, dW, db = Linear.backward(dout, cache)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    assert rel_error(dW, numerical_gradient(f, W)) < TOL
    assert rel_error(db, numerical_gradient(f, b)) < TOL


@pytest.mark.parametrize("layer", [ReLU, Tanh, Sigmoid], ids=["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (6, 2)])
def test_activation_backward_matches_numerical(layer, shape):
    rng = _rng(3)
    x = _away_from_zero(rng, shape) * 2.0
    dout = rng.standard_normal(shape)

    def f():
        return np.sum(layer.forward(x)[0] * dout)

    _, cache = layer.forward(x)
    dx = layer.backward(dout, cache)
    assert dx.shape == x.shape
    assert rel_error(dx, numerical_gradient(f, x)) < TOL


def test_activation_forwards_match_their_definitions():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(ReLU.forward(x)[0], [[0.0, 0.0, 0.0, 0.5, 3.0]])
    np.testing.assert_allclose(Tanh.forward(x)[0], np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(Sigmoid.forward(x)[0], 1.0 / (1.0 + np.exp(-x)), rtol=1e-15)


def test_relu_backward_blocks_negative_inputs():
    x = np.array([[-1.0, 2.0, -3.0, 4.0]])
    _, cache = ReLU.forward(x)
    np.testing.assert_array_equal(ReLU.backward(np.full((1, 4), 5.0), cache), [[0, 5, 0, 5]])


def test_relu_gradient_at_exactly_zero_is_zero():
    # The kink's subgradient is 0: the gradient passes only where the input was positive
    # (the docstring), as in PyTorch; the tiniest positive input passes it.
    x = np.array([[0.0, -0.0, 1e-300, -1e-300]])
    out, cache = ReLU.forward(x)
    np.testing.assert_array_equal(out, [[0.0, 0.0, 1e-300, 0.0]])
    np.testing.assert_array_equal(ReLU.backward(np.full((1, 4), 3.0), cache), [[0, 0, 3, 0]])


@pytest.mark.torch
def test_relu_gradient_at_zero_is_pytorchs():
    torch = pytest.importorskip("torch")
    x = torch.tensor([[0.0, -0.0, 2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    torch.relu(x).backward(torch.full((1, 4), 3.0, dtype=torch.float64))
    _, cache = ReLU.forward(x.detach().numpy())
    np.testing.assert_array_equal(ReLU.backward(np.full((1, 4), 3.0), cache), x.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_finite_and_exact_at_extremes(dtype):
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow either
        s = sigmoid(x)
    assert s.dtype == dtype
    assert np.all(np.isfinite(s))
    assert s[0] == 0.0  # e^-1000 is below the smallest subnormal in both precisions
    assert s[2] == dtype(0.5)
    assert s[-1] == dtype(1.0)
    assert s[-2] == dtype(1.0)  # 1 - e^-50 rounds to 1 in both precisions
    # The small tail keeps its relative accuracy: sigmoid(-50) = e^-50 / (1 + e^-50).
    expected = np.exp(-50.0) / (1.0 + np.exp(-50.0))
    assert abs(float(s[1]) - expected) / expected < 10 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_backward_is_finite_at_extremes(dtype):
    x = np.array([[-1000.0, 1000.0]], dtype=dtype)
    out, cache = Sigmoid.forward(x)
    dx = Sigmoid.backward(np.ones_like(x), cache)
    assert np.all(np.isfinite(dx))
    np.testing.assert_array_equal(dx, [[0.0, 0.0]])


def test_sigmoid_symmetry():
    x = np.linspace(-30, 30, 121)
    np.testing.assert_allclose(sigmoid(x) + sigmoid(-x), 1.0, rtol=0, atol=1e-15)
