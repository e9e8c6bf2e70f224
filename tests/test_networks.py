"""Tests for vae_from_scratch.networks: forward against plain code, every backward against
central differences, the label conditioning, and the architectures' shapes."""

from __future__ import annotations

import numpy as np
import pytest

from vae_from_scratch.config import VAEConfig
from vae_from_scratch.gradcheck import numerical_gradient, rel_error
from vae_from_scratch.layers import ACTIVATIONS
from vae_from_scratch.networks import (
    Layer,
    Network,
    _concat_label,
    build_networks,
    conv_sizes,
    dense_layers,
)

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


def test_conv_sizes_refuse_an_image_too_small_along_one_axis_only():
    assert conv_sizes((1, 28, 5), 2) == [(28, 5), (14, 2), (7, 1)]
    for shape in ((1, 28, 3), (1, 3, 28)):
        with pytest.raises(ValueError, match=r"too small for 2 convolutions .* after 1 the map"):
            conv_sizes(shape, 2)


# Three channel entries (so that the encoder's and the decoder's middle layers differ), odd
# and even sizes, one and two image channels, with and without a label.
CONV_CONFIGS = {
    "9x9-three-layers": dict(image_shape=(1, 9, 9), channels=(2, 3, 4)),
    "2x8x10-conditional": dict(image_shape=(2, 8, 10), channels=(3, 2, 4), n_classes=3),
}


def _conv_config(name):
    kwargs = CONV_CONFIGS[name]
    d = int(np.prod(kwargs["image_shape"]))
    return VAEConfig(input_dim=d, latent_dim=2, architecture="conv", **kwargs)


def _plain_conv_networks(params, cfg, x, z, c):
    """The conv architecture written out with conv.py's layers: x -> (Conv 4x4/2 -> ReLU)
    per channels entry -> flatten; z -> Linear -> ReLU -> (ConvT 4x4/2 -> ReLU) ... ->
    ConvT, each transposed convolution giving back the size its convolution took in."""
    from vae_from_scratch.conv import Conv2d, ConvTranspose2d

    n, k = len(x), len(cfg.channels)
    h = x.reshape(n, *cfg.image_shape)
    if c is not None:
        h = np.concatenate([h, np.broadcast_to(c[:, :, None, None], (n, c.shape[1],
                                                                     *h.shape[2:]))], axis=1)
    sizes = []
    for i in range(k):
        sizes.append(h.shape[2:])
        h = np.maximum(Conv2d.forward(h, params[f"enc.{i}.W"], params[f"enc.{i}.b"], 2, 1)[0], 0)
    enc_out = h.reshape(n, -1)

    zc = z if c is None else np.concatenate([z, c], axis=1)
    h = np.maximum(zc @ params["dec.0.W"] + params["dec.0.b"], 0).reshape(h.shape)
    for i in reversed(range(k)):  # back through the encoder's sizes
        name = "dec.out" if i == 0 else f"dec.{k - i}"
        pad = tuple(want - 2 * got for want, got in zip(sizes[i], h.shape[2:], strict=True))
        h = ConvTranspose2d.forward(h, params[f"{name}.W"], params[f"{name}.b"], 2, 1, pad)[0]
        if i > 0:
            h = np.maximum(h, 0)
    return enc_out, h.reshape(n, -1)


@pytest.mark.parametrize("name", list(CONV_CONFIGS))
def test_conv_networks_are_the_documented_composition(name):
    cfg = _conv_config(name)
    enc, dec = build_networks(cfg)
    params = _params(enc, 7)
    dec.init_params(_rng(8), params)
    rng = _rng(9)
    x = rng.random((3, cfg.input_dim))
    z = rng.standard_normal((3, cfg.latent_dim))
    c = np.eye(3)[[0, 2, 1]] if cfg.n_classes else None
    h_plain, out_plain = _plain_conv_networks(params, cfg, x, z, c)
    h, _ = enc.forward(params, x, c)
    out, _ = dec.forward(params, z, c)
    assert h.shape == (3, enc.out_dim) and out.shape == (3, cfg.input_dim)
    np.testing.assert_allclose(h, h_plain, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out, out_plain, rtol=1e-12, atol=1e-14)
    assert np.any(h == 0) and np.any(h > 0)  # the ReLUs clip some entries, not all


def test_conv_networks_with_three_layers_have_mirrored_shapes():
    enc, dec = build_networks(_conv_config("9x9-three-layers"))
    assert enc.param_shapes() == {"enc.0.W": (2, 1, 4, 4), "enc.0.b": (2,),
                                  "enc.1.W": (3, 2, 4, 4), "enc.1.b": (3,),
                                  "enc.2.W": (4, 3, 4, 4), "enc.2.b": (4,)}
    assert dec.param_shapes() == {"dec.0.W": (2, 4), "dec.0.b": (4,),
                                  "dec.1.W": (4, 3, 4, 4), "dec.1.b": (3,),
                                  "dec.2.W": (3, 2, 4, 4), "dec.2.b": (2,),
                                  "dec.out.W": (2, 1, 4, 4), "dec.out.b": (1,)}
    kinds = [layer.kind for layer in dec.layers]
    assert kinds == ["linear", "relu", "reshape", "conv_transpose", "relu", "conv_transpose",
                     "relu", "conv_transpose", "reshape"]


@pytest.mark.parametrize("name", list(CONV_CONFIGS))
def test_conv_networks_backward_matches_numerical(name):
    cfg = _conv_config(name)
    enc, dec = build_networks(cfg)
    rng = _rng(10)
    c = np.eye(3)[[1, 0]] if cfg.n_classes else None
    _check_backward(enc, _params(enc, 11), rng.random((2, cfg.input_dim)), c, need_dx=False)
    _check_backward(dec, _params(dec, 12), rng.standard_normal((2, cfg.latent_dim)), c)


@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_a_conv_layer_left_at_its_defaults_is_pytorchs_default(kind):
    """stride 1, padding 0, output_padding 0 unless given, as for torch.nn's layers."""
    from vae_from_scratch.conv import Conv2d, ConvTranspose2d

    shape = (3, 2, 3, 2)  # Conv2d (C_out, C_in, kH, kW); ConvTranspose2d (C_in, C_out, ...)
    c_in = shape[1] if kind == "conv" else shape[0]
    net = Network([Layer("reshape", shape=(c_in, 5, 4)), Layer(kind, "c", shape)], 40, None)
    params = _params(net, 13)
    x = _rng(13).standard_normal((2, c_in * 5 * 4))
    out, _ = net.forward(params, x)
    x4, W, b = x.reshape(2, c_in, 5, 4), params["c.W"], params["c.b"]
    if kind == "conv":
        expected = Conv2d.forward(x4, W, b, stride=1, padding=0)[0]
    else:
        expected = ConvTranspose2d.forward(x4, W, b, stride=1, padding=0, output_padding=0)[0]
    np.testing.assert_array_equal(out, expected)


def test_a_label_in_another_dtype_keeps_the_networks_dtype():
    net = Network([Layer("condition"), *dense_layers("dec", (3 + 4, 5), "relu")], 3, 5)
    params = {k: v.astype(np.float32) for k, v in _params(net, 14).items()}
    z = _rng(14).standard_normal((6, 3)).astype(np.float32)
    for c in (np.eye(4)[[0, 1, 2, 3, 1, 0]], np.eye(4, dtype=np.int64)[[3, 2, 1, 0, 0, 1]]):
        out, _ = net.forward(params, z, c)
        assert out.dtype == np.float32
    planes = _concat_label(np.zeros((2, 1, 3, 3), np.float32), np.eye(2, dtype=np.int8), True)
    assert planes.dtype == np.float32


def test_repr_lists_the_layers():
    enc, dec = build_networks(VAEConfig(input_dim=64, latent_dim=2, architecture="conv",
                                        channels=(2, 3)))
    assert repr(enc) == ("Network(64 -> 12: reshape(1, 8, 8), conv(2, 1, 4, 4), relu, "
                         "conv(3, 2, 4, 4), relu, reshape(12,))")
    assert repr(dec) == ("Network(2 -> 64: linear(2, 12), relu, reshape(3, 2, 2), "
                         "conv_transpose(3, 2, 4, 4), relu, conv_transpose(2, 1, 4, 4), "
                         "reshape(64,))")
