"""Tests for vae_from_scratch.networks: forward against plain code, every backward against
central differences, the label conditioning, and the architectures' shapes."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.layers import ACTIVATIONS
from vae_from_scratch.networks import Layer, Network, build_networks, conv_sizes, dense_layers
from vae_from_scratch.vae import VAEConfig

pytestmark = [pytest.mark.lesson04, pytest.mark.lesson08, pytest.mark.lesson09]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _params(net, seed=0):
    params = {}
    net.init_params(_rng(seed), params)
    return params


def _check_backward(net, params, x, c=None, need_dx=True, tol=1e-7):
    """Every gradient of sum(out * dh) against central differences."""
    out, caches = net.forward(params, x, c)
    dh = _rng(99).standard_normal(out.shape)

    def f():
        return np.sum(net.forward(params, x, c)[0] * dh)

    grads = {}
    dx = net.backward(dh, caches, grads, need_dx=need_dx)
    assert set(grads) == set(params)
    for name, value in params.items():
        assert grads[name].shape == value.shape, name
        assert rel_error(grads[name], numerical_gradient(f, value)) < tol, name
    if need_dx:
        assert dx.shape == x.shape
        assert rel_error(dx, numerical_gradient(f, x)) < tol
    else:
        assert dx is None
    return grads


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dims", [(3, 4), (6, 5, 3), (2, 7, 5, 4)])
def test_dense_network_matches_a_plain_loop(activation, dims):
    net = Network(dense_layers("enc", dims, activation), dims[0], dims[-1])
    params = _params(net, 4)
    x = _rng(4).standard_normal((5, dims[0]))
    fn = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh,
          "sigmoid": lambda a: 1 / (1 + np.exp(-a))}[activation]
    h = x
    for i in range(len(dims) - 1):
        h = fn(h @ params[f"enc.{i}.W"] + params[f"enc.{i}.b"])
    out, caches = net.forward(params, x)
    assert len(caches) == len(net.layers)
    np.testing.assert_allclose(out, h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dims", [(3, 4), (6, 5, 3), (2, 7, 5, 4)])
def test_dense_network_backward_matches_numerical(activation, dims):
    net = Network(dense_layers("dec", dims, activation), dims[0], dims[-1])
    x = _rng(5).standard_normal((4, dims[0]))
    _check_backward(net, _params(net, 5), x)


def test_need_dx_false_gives_the_same_parameter_gradients():
    net = Network(dense_layers("enc", (6, 5, 3), "tanh"), 6, 3)
    params, x = _params(net, 1), _rng(1).standard_normal((4, 6))
    with_dx = _check_backward(net, params, x)
    without = _check_backward(net, params, x, need_dx=False)
    for name in params:
        np.testing.assert_array_equal(with_dx[name], without[name])


def test_a_network_without_layers_is_the_identity():
    net = Network([], 4, 4)
    x = _rng(6).standard_normal((3, 4))
    out, caches = net.forward({}, x)
    assert out is x and caches == []
    grads = {}
    dh = np.ones_like(x)
    assert net.backward(dh, caches, grads) is dh
    assert net.backward(dh, caches, grads, need_dx=False) is None
    assert grads == {}


def test_init_follows_pytorchs_default_bounds():
    net = Network(dense_layers("enc", (50, 40), "relu"), 50, 40)
    params = _params(net, 2)
    bound = 1 / np.sqrt(50)
    for name in ("enc.0.W", "enc.0.b"):
        assert np.abs(params[name]).max() <= bound
        assert np.abs(params[name]).max() > 0.9 * bound  # drawn over the whole range


# --- conditioning ---------------------------------------------------------------------------


def test_condition_layer_appends_the_one_hot_as_columns():
    net = Network([Layer("condition"), *dense_layers("dec", (3 + 4, 5), "relu")], 3, 5)
    params = _params(net, 3)
    z = _rng(3).standard_normal((6, 3))
    c = np.eye(4)[[0, 1, 2, 3, 1, 0]]
    out, _ = net.forward(params, z, c)
    W, b = params["dec.0.W"], params["dec.0.b"]
    expected = np.maximum(z @ W[:3] + c @ W[3:] + b, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    grads = _check_backward(net, params, z, c)
    # the label's rows of W get the sum of each class's upstream gradients, nothing else
    assert grads["dec.0.W"].shape == (7, 5)


def test_condition_planes_append_constant_images():
    from vae_from_scratch.networks import _concat_label

    h = _rng(4).standard_normal((2, 1, 3, 3))
    c = np.eye(3)[[2, 0]]
    out = _concat_label(h, c, planes=True)
    assert out.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(out[:, :1], h)
    np.testing.assert_array_equal(out[0, 1:].reshape(3, -1), np.repeat(c[0][:, None], 9, 1))


# --- the architectures -----------------------------------------------------------------------


def test_mlp_networks_of_a_config():
    cfg = VAEConfig(input_dim=12, hidden_dims=(7, 5), latent_dim=3)
    enc, dec = build_networks(cfg)
    assert (enc.in_dim, enc.out_dim, dec.in_dim, dec.out_dim) == (12, 5, 3, 12)
    assert enc.param_shapes() == {"enc.0.W": (12, 7), "enc.0.b": (7,),
                                  "enc.1.W": (7, 5), "enc.1.b": (5,)}
    assert list(dec.param_shapes()) == ["dec.0.W", "dec.0.b", "dec.1.W", "dec.1.b",
                                        "dec.out.W", "dec.out.b"]
    assert dec.param_shapes()["dec.out.W"] == (7, 12)


def test_conditional_mlp_grows_only_the_first_layers():
    plain = build_networks(VAEConfig(input_dim=12, hidden_dims=(7,), latent_dim=3))
    cond = build_networks(VAEConfig(input_dim=12, hidden_dims=(7,), latent_dim=3, n_classes=4))
    for p, c in zip(plain, cond, strict=True):
        ps, cs = p.param_shapes(), c.param_shapes()
        assert set(ps) == set(cs)
        grown = {k for k in ps if ps[k] != cs[k]}
        first = next(k for k in ps if k.endswith(".W"))
        assert grown == {first}
        assert cs[first][0] == ps[first][0] + 4


def test_conv_sizes_halve_and_refuse_too_small_images():
    assert conv_sizes((1, 28, 28), 2) == [(28, 28), (14, 14), (7, 7)]
    assert conv_sizes((1, 7, 9), 1) == [(7, 9), (3, 4)]
    with pytest.raises(ValueError, match="too small"):
        conv_sizes((1, 4, 4), 3)


def test_conv_networks_of_the_course_config():
    cfg = VAEConfig(input_dim=784, latent_dim=20, architecture="conv", channels=(32, 64))
    enc, dec = build_networks(cfg)
    assert enc.out_dim == 64 * 7 * 7
    assert enc.param_shapes() == {"enc.0.W": (32, 1, 4, 4), "enc.0.b": (32,),
                                  "enc.1.W": (64, 32, 4, 4), "enc.1.b": (64,)}
    assert dec.param_shapes() == {"dec.0.W": (20, 3136), "dec.0.b": (3136,),
                                  "dec.1.W": (64, 32, 4, 4), "dec.1.b": (32,),
                                  "dec.out.W": (32, 1, 4, 4), "dec.out.b": (1,)}
    cond = build_networks(VAEConfig(input_dim=784, architecture="conv", n_classes=10))
    assert cond[0].param_shapes()["enc.0.W"] == (32, 11, 4, 4)
    assert cond[1].param_shapes()["dec.0.W"] == (30, 3136)


def test_conv_init_uses_pytorchs_fan_in():
    conv = Layer("conv", "enc.0", (32, 3, 4, 4))
    convt = Layer("conv_transpose", "dec.1", (64, 32, 4, 4))
    assert conv.fan_in == 3 * 16 and convt.fan_in == 32 * 16
    assert conv.param_shapes()["enc.0.b"] == (32,)
    assert convt.param_shapes()["dec.1.b"] == (32,)
