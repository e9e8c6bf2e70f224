"""The encoder and decoder networks: each a sequence of layers (lessons 04 and 08).

A network is a list of :class:`Layer` descriptions. Running one calls each layer's
``forward -> (out, cache)`` in turn (``layers.py``, ``conv.py``); backpropagation calls
each ``backward(dout, cache)`` in reverse. Layers with parameters keep them in the model's
``params`` dict under a name prefix (``enc.0.W``, ``enc.0.b``); the network itself holds
no numbers, so the NumPy VAE and its PyTorch mirror walk the very same description.

``build_networks(config)`` picks the layers from the configuration::

    mlp   encoder  x -> Linear -> act -> ... -> h
          decoder  z -> Linear -> act -> ... -> Linear (dec.out) -> out
    conv  encoder  x -> image -> Conv 4x4/2 -> ReLU -> ... -> flatten -> h
          decoder  z -> Linear -> ReLU -> feature map -> ConvT 4x4/2 -> ReLU -> ...
                     -> ConvT (dec.out) -> flatten -> out

The VAE adds the encoder's two heads (``enc.mu``, ``enc.log_var``, Linear maps of ``h``)
and everything that is not a network. Conditioning on a label (``n_classes``) concatenates
its one-hot vector to each network's input -- as extra columns of a flat input, as constant
image planes for the convolutional encoder -- so only the first layer's weight grows.

Every input and output of a network is flat, (N, features): images are reshaped inside.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vae_from_scratch.conv import Conv2d, ConvTranspose2d, conv2d_output_size
from vae_from_scratch.layers import ACTIVATIONS, Linear

#: The convolutional architecture's kernel, stride and padding: each layer halves the
#: image (28 -> 14 -> 7), and each transposed convolution doubles it back.
CONV_KERNEL, CONV_STRIDE, CONV_PADDING = 4, 2, 1

_WITH_PARAMS = ("linear", "conv", "conv_transpose")


@dataclass(frozen=True)
class Layer:
    """One step of a network.

    kind: "linear", "conv", "conv_transpose" (with parameters ``{name}.W``, ``{name}.b``),
    "relu", "tanh", "sigmoid", "reshape" (to ``shape`` per example), "condition" (concatenate the
    one-hot label: ``planes`` says whether as image planes).
    shape: for a layer with parameters, the shape of W -- Linear (D_in, D_out), Conv2d
    (C_out, C_in, k, k), ConvTranspose2d (C_in, C_out, k, k) as in PyTorch.
    """

    kind: str
    name: str | None = None
    shape: tuple = ()
    stride: int = 1
    padding: int = 0
    output_padding: int | tuple = 0
    planes: bool = False

    @property
    def bias_size(self) -> int:
        return self.shape[1] if self.kind in ("linear", "conv_transpose") else self.shape[0]

    @property
    def fan_in(self) -> int:
        """PyTorch's fan-in for its default initialisation: D_in for Linear, C_in k k for
        Conv2d, and (as torch computes it from the weight's second axis) C_out k k for
        ConvTranspose2d."""
        if self.kind == "linear":
            return self.shape[0]
        return math.prod(self.shape[1:])

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """{name.W: shape, name.b: shape}, or {} for a layer without parameters."""
        if self.kind not in _WITH_PARAMS:
            return {}
        return {f"{self.name}.W": self.shape, f"{self.name}.b": (self.bias_size,)}

    def init_params(self, rng: np.random.Generator, params: dict) -> None:
        """Draw W, then b, into ``params`` with PyTorch's default initialisation,
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)), in float64 (the model casts them)."""
        if self.kind in _WITH_PARAMS:
            bound = 1.0 / math.sqrt(self.fan_in)
            for name, shape in self.param_shapes().items():
                params[name] = rng.uniform(-bound, bound, size=shape)


class Network:
    """A sequence of :class:`Layer` from a flat input (N, in_dim) to a flat output.

    forward(params, x, c=None) -> (out, caches); backward(dout, caches, grads) -> dx.
    ``c`` is the one-hot label (N, n_classes) of a conditional network.
    """

    def __init__(self, layers: Iterable[Layer], in_dim: int, out_dim: int) -> None:
        self.layers = tuple(layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        # the first layer with parameters: backward's last step when dx is not needed
        self._first_with_params = next(
            (i for i, layer in enumerate(self.layers) if layer.kind in _WITH_PARAMS), None
        )

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """dict name -> shape of this network's parameters, in initialisation order."""
        shapes = {}
        for layer in self.layers:
            shapes.update(layer.param_shapes())
        return shapes

    def init_params(self, rng: np.random.Generator, params: dict) -> None:
        """Draw fresh parameters into ``params``, layer by layer (:meth:`Layer.init_params`)."""
        for layer in self.layers:
            layer.init_params(rng, params)

    def forward(self, params: dict, x: np.ndarray,
                c: np.ndarray | None = None) -> tuple[np.ndarray, list]:
        """x (N, in_dim), c (N, n_classes) or None -> out (N, out_dim), caches."""
        caches = []
        h = x
        for layer in self.layers:
            h, cache = _forward(layer, params, h, c)
            caches.append(cache)
        return h, caches

    def backward(self, dout: np.ndarray, caches: list, grads: dict,
                 need_dx: bool = True) -> np.ndarray | None:
        """dout (N, out_dim) -> dx (N, in_dim); writes dW, db of every layer into ``grads``.

        With ``need_dx=False`` (the input is the data, whose gradient is never used) the
        first layer with parameters computes only its own gradients, and None is returned.
        """
        d = dout
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            skip_dx = not need_dx and i == self._first_with_params
            d = _backward(layer, d, caches[i], grads, need_dx=not skip_dx)
            if skip_dx:
                return None
        return d if need_dx else None

    def __repr__(self):
        parts = []
        for layer in self.layers:
            if layer.kind in _WITH_PARAMS:
                parts.append(f"{layer.kind}{layer.shape}")
            elif layer.kind == "reshape":
                parts.append(f"reshape{layer.shape}")
            else:
                parts.append(layer.kind)
        return f"Network({self.in_dim} -> {self.out_dim}: {', '.join(parts)})"


# --- running one layer ------------------------------------------------------------------


def _forward(layer, params, h, c):
    kind = layer.kind
    if kind == "linear":
        return Linear.forward(h, params[f"{layer.name}.W"], params[f"{layer.name}.b"])
    if kind in ACTIVATIONS:
        return ACTIVATIONS[kind].forward(h)
    if kind == "reshape":
        return h.reshape(h.shape[0], *layer.shape), h.shape
    if kind == "condition":
        return _concat_label(h, c, layer.planes), h.shape[1]
    W, b = params[f"{layer.name}.W"], params[f"{layer.name}.b"]
    if kind == "conv":
        return Conv2d.forward(h, W, b, stride=layer.stride, padding=layer.padding)
    return ConvTranspose2d.forward(
        h, W, b, stride=layer.stride, padding=layer.padding, output_padding=layer.output_padding
    )


def _backward(layer, d, cache, grads, need_dx):
    kind = layer.kind
    if kind in ACTIVATIONS:
        return ACTIVATIONS[kind].backward(d, cache)
    if kind == "reshape":
        return d.reshape(cache)
    if kind == "condition":  # the label is an input, not a parameter: pass on the rest
        return d[:, :cache]
    if kind == "linear":
        dx, dW, db = Linear.backward(d, cache, need_dx=need_dx)
    else:
        op = Conv2d if kind == "conv" else ConvTranspose2d
        dx, dW, db = op.backward(d, cache, need_dx=need_dx)
    grads[f"{layer.name}.W"], grads[f"{layer.name}.b"] = dW, db
    return dx


def _concat_label(h, c, planes):
    """Append the one-hot label c (N, K): as K columns of a flat h (N, D), or as K constant
    planes of an image h (N, C, H, W) -> (N, C + K, H, W)."""
    c = c.astype(h.dtype, copy=False)
    if planes:
        n, _, height, width = h.shape
        c = np.broadcast_to(c[:, :, None, None], (n, c.shape[1], height, width))
    return np.concatenate([h, c], axis=1)


# --- the architectures -------------------------------------------------------------------


def dense_layers(prefix: str, dims: Sequence[int], activation: str) -> list[Layer]:
    """Linear + activation for each consecutive pair of ``dims``, named prefix.0, prefix.1..."""
    layers = []
    for i in range(len(dims) - 1):
        layers += [Layer("linear", f"{prefix}.{i}", (dims[i], dims[i + 1])), Layer(activation)]
    return layers


def conv_sizes(image_shape: Sequence[int], n_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes (H, W) after each of the encoder's convolutions, the image's first:
    (28, 28) -> (14, 14) -> (7, 7). Raises ValueError when an image gets too small."""
    sizes = [tuple(image_shape[1:])]
    for _ in range(n_layers):
        try:
            sizes.append(tuple(conv2d_output_size(s, CONV_KERNEL, CONV_STRIDE, CONV_PADDING)
                               for s in sizes[-1]))
        except ValueError:  # the kernel is larger than the padded map
            raise ValueError(
                f"image_shape {tuple(image_shape)} is too small for {n_layers} convolutions "
                f"({CONV_KERNEL}x{CONV_KERNEL}, stride {CONV_STRIDE}, padding {CONV_PADDING}): "
                f"after {len(sizes) - 1} the map is {sizes[-1][0]}x{sizes[-1][1]}; use fewer "
                "channels entries or a larger image"
            ) from None
    return sizes


def build_networks(config: Any) -> tuple[Network, Network]:

    """(encoder, decoder) :class:`Network` for a :class:`~vae_from_scratch.vae.VAEConfig`.

    The encoder maps x (N, D) [with the label] to h (N, H); the decoder maps z (N, L)
    [with the label] to the likelihood's parameters (N, D).
    """
    k = config.n_classes or 0
    cond = [Layer("condition")] if k else []
    if config.architecture == "mlp":
        dims = config.hidden_dims
        enc = cond + dense_layers("enc", (config.input_dim + k, *dims), config.activation)
        dec_dims = (config.latent_dim + k, *reversed(dims))
        dec = cond + dense_layers("dec", dec_dims, config.activation)
        dec.append(Layer("linear", "dec.out", (dec_dims[-1], config.input_dim)))
        h_dim = dims[-1] if dims else config.input_dim + k
        return Network(enc, config.input_dim, h_dim), Network(dec, config.latent_dim,
                                                               config.input_dim)
    return _conv_networks(config, k)


def _conv_networks(config, k):
    c_img = config.image_shape[0]
    channels = config.channels
    sizes = conv_sizes(config.image_shape, len(channels))
    conv = dict(stride=CONV_STRIDE, padding=CONV_PADDING)

    enc = [Layer("reshape", shape=tuple(config.image_shape))]
    if k:
        enc.append(Layer("condition", planes=True))
    c_in = c_img + k
    for i, c_out in enumerate(channels):
        enc += [Layer("conv", f"enc.{i}", (c_out, c_in, CONV_KERNEL, CONV_KERNEL), **conv),
                Layer("relu")]
        c_in = c_out
    h_last, w_last = sizes[-1]
    h_dim = channels[-1] * h_last * w_last
    enc.append(Layer("reshape", shape=(h_dim,)))

    dec = [Layer("condition")] if k else []
    dec += [Layer("linear", "dec.0", (config.latent_dim + k, h_dim)), Layer("relu"),
            Layer("reshape", shape=(channels[-1], h_last, w_last))]
    outs = [*reversed(channels[:-1]), c_img]  # channel counts after each transposed conv
    for i, c_out in enumerate(outs):
        (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
        # a transposed conv gives 2 s; output padding adds back a pixel an odd size lost
        pad = (h_out - CONV_STRIDE * h_in, w_out - CONV_STRIDE * w_in)
        last = i == len(outs) - 1
        name = "dec.out" if last else f"dec.{i + 1}"
        c_in = channels[-1 - i]
        dec.append(Layer("conv_transpose", name, (c_in, c_out, CONV_KERNEL, CONV_KERNEL),
                         output_padding=pad, **conv))
        if not last:
            dec.append(Layer("relu"))
    dec.append(Layer("reshape", shape=(config.input_dim,)))
    return Network(enc, config.input_dim, h_dim), Network(dec, config.latent_dim,
                                                          config.input_dim)
