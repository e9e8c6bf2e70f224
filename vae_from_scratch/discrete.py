"""Discrete codes as bottlenecks of the VAE: vector quantization and finite scalar
quantization (lesson 11), composed by the same ``VAE`` as the Gaussian code.

With ``architecture="conv"`` the encoder ends in a feature map (C, 7, 7) for 28 x 28 digits.
A quantized bottleneck reads it position by position::

    h (N, C*7*7) -> reshape (N, C, 7, 7) -> 1x1 conv ``enc.code`` -> z_e (N, D, 7, 7)
        -> quantize -> z_q (N, D, 7, 7) -> z = z_q flattened (N, D*49)

and the decoder starts with a 1x1 convolution (``dec.0``, D -> C) in place of the Gaussian
code's dense layer (:meth:`Bottleneck.code_shape`; ``networks.build_networks``), so each
position's code is decoded where it sits. ``latent_dim`` is D*49, set by :meth:`configure`.

**VQ** (:class:`VQBottleneck`, van den Oord et al. 2017; the operations are in
:mod:`vae_from_scratch.quantize`): z_q is the nearest of K codebook vectors
(``vq.codebook`` (K, D)) at each position; backward copies the decoder's gradient to z_e
(straight-through). The rate is the KL of the one-hot posterior to the uniform prior, exactly
log K per position, a constant (its gradient is 0). What the loss charges in place of a KL
(:meth:`charged_kl`) is the batch mean of

    codebook loss ||sg[z_e] - e||^2  +  commitment * ||z_e - sg[e]||^2

(each summed over D and the positions), weighted like a KL by ``beta`` (1 by default), so a
VQ-VAE's loss is recon + codebook + 0.25 commitment. With ``codebook_update="ema"`` the
codebook follows moving averages of the encoder outputs instead (``vq.ema_count`` (K,),
``vq.ema_sum`` (K, D)), and the loss charges the commitment term alone. With
``restart_every`` = s > 0, every s steps the dead codes move onto encoder outputs of the
current batch: those that took fewer than ``restart_below`` (1% by default) of the positions
since the last restart (``vq.usage`` (K,) counts them). Unused codes are not the only
problem: a code that keeps a sliver of the positions is never restarted by an "unused" rule
and never grows either, so the codebook stays half idle (lesson 11 measures both rules). The EMA and
the restarts are not gradient steps: the training backends call :meth:`after_step` after each
optimizer step. Their state lives in ``params`` with the codebook -- the model's only state --
so checkpoints carry it and a resumed run continues exactly; the optimizer sees a zero
gradient for it and leaves it alone.

**FSQ** (:class:`FSQBottleneck`, Mentzer et al. 2023): each of d = len(levels) channels is
bounded and rounded to its levels; no codebook, nothing more to charge, nothing to restart.
Its rate is log prod(levels) per position.

Both refuse what they cannot take: the MLP architecture (no grid of positions), a
conditional model, another prior than the standard one (their prior is uniform over the
codes), free bits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from vae_from_scratch import quantize as vq
from vae_from_scratch.bottleneck import (
    FLOW_FIELDS,
    Bottleneck,
    refuse_fields,
    register_bottleneck,
)
from vae_from_scratch.conv import Conv2d
from vae_from_scratch.networks import Layer, conv_sizes

#: What the quantized bottlenecks resolve an unset field to (config.py's None).
DEFAULTS = {"codebook_size": 16, "code_dim": 16, "levels": (4, 4),
            "commitment": vq.COMMITMENT_BETA, "codebook_update": "grad", "restart_every": 8,
            "restart_below": 0.01}


def grid_shape(config: Any) -> tuple[int, int, int]:
    """The conv encoder's feature map (C, H, W): its last channel count and the image's size
    after its convolutions, (64, 7, 7) for lesson 08's encoder on 28 x 28 digits."""
    return (config.channels[-1], *conv_sizes(config.image_shape, len(config.channels))[-1])


def _latent_dim(config: Any, code_dim: int) -> int:
    """D times the positions: the decoder's input size. A latent_dim set to anything else
    (but the field's default) is refused, for it would be silently replaced."""
    derived = code_dim * math.prod(grid_shape(config)[1:])
    default = next(f.default for f in dataclasses.fields(config) if f.name == "latent_dim")
    if config.latent_dim not in (default, derived):
        raise ValueError(f"latent_dim is code_dim x positions = {derived} for "
                         f"bottleneck={config.bottleneck!r}, got {config.latent_dim}: set "
                         "code_dim (vq) or levels (fsq) instead")
    return derived


def _common_checks(config: Any) -> None:
    name = config.bottleneck
    if config.architecture != "conv":
        raise ValueError(f"bottleneck={name!r} needs architecture='conv': it quantizes each "
                         "position of the conv encoder's feature map (the mlp has none)")
    if config.n_classes is not None:
        raise ValueError(f"bottleneck={name!r} does not take a conditional model "
                         "(n_classes); use the gaussian bottleneck for lesson 09's CVAE")
    if config.prior != "standard":
        raise ValueError(f"bottleneck={name!r} has its own prior, uniform over the codes; "
                         f"leave prior='standard' (got {config.prior!r})")
    if config.free_bits > 0:
        raise ValueError(f"bottleneck={name!r} has a constant rate: free bits do not apply")


class _Quantized(Bottleneck):
    """What VQ and FSQ share: the 1x1 head ``enc.code``, the grid, no noise, a constant
    rate of log(n_codes) per position."""

    stochastic = False

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior)
        self.feature_shape = grid_shape(config)
        self.positions = self.feature_shape[1] * self.feature_shape[2]
        self.head = Layer("conv", "enc.code", (config.code_dim, self.feature_shape[0], 1, 1))
        self.last = None  # (z_e, codes) of the last forward, for after_step

    n_codes: int

    @classmethod
    def code_shape(cls, config: Any) -> tuple[int, int, int]:
        return (config.code_dim, *grid_shape(config)[1:])

    def param_shapes(self, h_dim: int) -> dict[str, tuple[int, ...]]:
        return self.head.param_shapes()

    def init_params(self, rng: np.random.Generator, params: dict, h_dim: int) -> None:
        self.head.init_params(rng, params)

    def noise_shape(self, n: int) -> tuple[int, int]:
        return (n, 0)

    def z_e(self, params: dict, h: np.ndarray) -> tuple[np.ndarray, tuple]:
        """h (N, C*H*W) -> z_e (N, D, H, W) by the 1x1 convolution, and its cache."""
        feature = h.reshape(h.shape[0], *self.feature_shape)
        return Conv2d.forward(feature, params["enc.code.W"], params["enc.code.b"])

    def quantize(self, params: dict, z_e: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """z_e (N, D, H, W) -> z_q (N, D, H, W), codes (N, H, W), the quantizer's cache."""
        raise NotImplementedError

    def encode(self, params: dict, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """h (N, C*H*W) -> z_e (N, D, H, W) and the codes (N, H, W)."""
        z_e, _ = self.z_e(params, h)
        return z_e, self.quantize(params, z_e)[1]

    def code(self, params: dict, h: np.ndarray) -> np.ndarray:
        """The quantized code, flat: z (N, D*H*W)."""
        z_e, _ = self.z_e(params, h)
        z_q = self.quantize(params, z_e)[0]
        return z_q.reshape(len(z_q), -1)

    def forward(self, params: dict, h: np.ndarray, eps: np.ndarray, c: np.ndarray | None,
                kl_mode: str) -> tuple[np.ndarray, tuple]:
        """h (N, C*H*W) -> z = z_q flattened (N, D*H*W), cache; eps (N, 0) and c unused."""
        z_e, head_cache = self.z_e(params, h)
        z_q, codes, q_cache = self.quantize(params, z_e)
        self.last = (z_e, codes)
        return z_q.reshape(len(z_q), -1), (params, z_e, codes, q_cache, head_cache)

    def rate(self, cache: tuple) -> np.ndarray:
        """KL(q || p) per example (N,): log(n_codes) nats at each position, whatever x."""
        n = cache[1].shape[0]
        return np.full(n, self.positions * math.log(self.n_codes), dtype=self.dtype)

    def rate_bits(self) -> float:
        """The code's rate in bits per example: positions * log2(n_codes)."""
        return vq.rate_bits(self.n_codes, self.positions)

    def sample_prior(self, params: dict, n: int, rng: np.random.Generator,
                     c: np.ndarray | None = None) -> np.ndarray:
        """n grids of codes drawn uniformly (the prior of the rate), as z (n, D*H*W)."""
        codes = rng.integers(0, self.n_codes, size=(n, *self.feature_shape[1:]))
        return self.values(params, codes).reshape(n, -1).astype(self.dtype)

    def values(self, params: dict, codes: np.ndarray) -> np.ndarray:
        """Code grids (N, H, W) -> their quantized vectors z_q (N, D, H, W)."""
        raise NotImplementedError

    def report(self, params: dict, h: np.ndarray) -> dict[str, Any]:
        """The rate in bits per example, and the usage of the codes of the features h:
        perplexity (1..n_codes) and how many codes occur."""
        codes = self.encode(params, h)[1]
        return {"rate_bits": self.rate_bits(), "n_codes": self.n_codes,
                "usage_perplexity": vq.perplexity(codes, self.n_codes),
                "codes_used": int(np.count_nonzero(vq.code_counts(codes, self.n_codes)))}

    def _head_backward(self, dz_e: np.ndarray, head_cache: tuple, grads: dict) -> np.ndarray:
        dfeature, grads["enc.code.W"], grads["enc.code.b"] = Conv2d.backward(dz_e, head_cache)
        return dfeature.reshape(len(dfeature), -1)


@register_bottleneck
class VQBottleneck(_Quantized):
    """Vector quantization with a codebook of K vectors of size D (see the module
    docstring); parameters ``enc.code.W`` (D, C, 1, 1), ``enc.code.b`` (D,), ``vq.codebook``
    (K, D), and with the EMA ``vq.ema_count`` (K,) and ``vq.ema_sum`` (K, D), with restarts
    ``vq.usage`` (K,)."""

    name = "vq"
    description = "vector quantization (VQ-VAE, lesson 11)"

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        _common_checks(config)
        refuse_fields(config, "levels", *FLOW_FIELDS)
        resolved = {name: DEFAULTS[name] if getattr(config, name) is None
                    else getattr(config, name)
                    for name in ("codebook_size", "code_dim", "commitment", "codebook_update",
                                 "restart_every", "restart_below")}
        resolved["latent_dim"] = _latent_dim(config, resolved["code_dim"])
        return resolved

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior)
        self.n_codes = config.codebook_size
        self.ema = config.codebook_update == "ema"
        self.restarts = config.restart_every > 0

    def param_shapes(self, h_dim: int) -> dict[str, tuple[int, ...]]:
        k, d = self.n_codes, self.config.code_dim
        shapes = {**self.head.param_shapes(), "vq.codebook": (k, d)}
        if self.ema:
            shapes.update({"vq.ema_count": (k,), "vq.ema_sum": (k, d)})
        if self.restarts:
            shapes["vq.usage"] = (k,)
        return shapes

    def init_params(self, rng: np.random.Generator, params: dict, h_dim: int) -> None:
        """The head as PyTorch initialises a convolution; the codebook U(-1/K, 1/K) (a common
        choice, under which it collapses without a fix: lesson 11); the moving averages as
        if each code were the mean of one output (``quantize.ema_init``); no use counted."""
        self.head.init_params(rng, params)
        k = self.n_codes
        codebook = rng.uniform(-1.0 / k, 1.0 / k, size=(k, self.config.code_dim))
        params["vq.codebook"] = codebook
        if self.ema:
            params["vq.ema_count"], params["vq.ema_sum"] = vq.ema_init(codebook)
        if self.restarts:
            params["vq.usage"] = np.zeros(k)

    def quantize(self, params: dict, z_e: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        z_q, cache = vq.VectorQuantizer.forward(z_e, params["vq.codebook"])
        return z_q, cache.codes, cache

    def values(self, params: dict, codes: np.ndarray) -> np.ndarray:
        return vq.lookup(codes, params["vq.codebook"])

    def charged_kl(self, kl: np.ndarray, cache: tuple) -> tuple[float, None]:
        """(the batch mean of codebook loss + commitment * commitment loss, None); with the
        EMA codebook, the commitment term alone. (The codebook and commitment losses are
        equal in value; they differ in where their gradients go.)"""
        params, z_e, codes = cache[:3]
        commitment = vq.commitment_loss(z_e, params["vq.codebook"], codes)
        charged = self.config.commitment * commitment
        if not self.ema:
            charged = charged + vq.codebook_loss(z_e, params["vq.codebook"], codes)
        return float(np.mean(charged)), None

    def backward(self, dz: np.ndarray, dkl: np.ndarray, cache: tuple, grads: dict,
                 floors: None = None) -> np.ndarray:
        """dz (N, D*H*W) from the decoder, dkl (N,) = dLoss/d(each example's charged terms)
        -> dh (N, C*H*W). Straight through the quantizer to z_e, plus the commitment loss's
        gradient; the codebook loss's gradient to ``vq.codebook`` (0 with the EMA, and for
        the EMA's and the restarts' state)."""
        params, z_e, codes, q_cache, head_cache = cache
        codebook = params["vq.codebook"]
        dz_e = vq.VectorQuantizer.backward(dz.reshape(z_e.shape), q_cache)
        dz_e = dz_e + vq.commitment_loss_backward(self.config.commitment * dkl, z_e, codebook,
                                                  codes)
        if self.ema:
            grads["vq.codebook"] = np.zeros_like(codebook)
            grads["vq.ema_count"] = np.zeros_like(params["vq.ema_count"])
            grads["vq.ema_sum"] = np.zeros_like(params["vq.ema_sum"])
        else:
            grads["vq.codebook"] = vq.codebook_loss_backward(dkl, z_e, codebook, codes)
        if self.restarts:
            grads["vq.usage"] = np.zeros_like(params["vq.usage"])
        return self._head_backward(dz_e.astype(self.dtype, copy=False), head_cache, grads)

    def after_step(self, params: dict, step: int, rng: np.random.Generator) -> None:
        """After optimizer step number ``step`` (1, 2, ...): the EMA codebook step on the last
        forward's encoder outputs and codes, then, every ``restart_every`` steps, the dead
        codes (fewer than ``restart_below`` of the positions, and at least the unused ones)
        re-seeded from those outputs (a restarted code's moving averages start afresh,
        as if it were the mean of that one output). Changes ``params`` in place."""
        if self.last is None:
            return
        z_e, codes = self.last
        codebook = params["vq.codebook"]
        if self.ema:
            new, count, total = vq.ema_update(params["vq.ema_count"], params["vq.ema_sum"],
                                              z_e, codes)
            codebook[...], params["vq.ema_count"][...], params["vq.ema_sum"][...] = (
                new, count, total)
        if self.restarts:
            usage = params["vq.usage"]
            usage += vq.code_counts(codes, self.n_codes)
            if step % self.config.restart_every == 0:
                threshold = vq.dead_code_threshold(float(usage.sum()), self.config.restart_below)
                new, dead = vq.restart_dead_codes(codebook, usage, z_e, rng, threshold)
                codebook[...] = new
                if self.ema and dead.size:
                    params["vq.ema_count"][dead] = 1.0
                    params["vq.ema_sum"][dead] = new[dead]
                usage[...] = 0


@register_bottleneck
class FSQBottleneck(_Quantized):
    """Finite scalar quantization of d = len(levels) channels (see the module docstring);
    parameters ``enc.code.W`` (d, C, 1, 1) and ``enc.code.b`` (d,), no codebook."""

    name = "fsq"
    description = "finite scalar quantization (lesson 11)"

    @classmethod
    def configure(cls, config: Any) -> dict[str, Any]:
        _common_checks(config)
        # no codebook: its codes are the levels' grid
        refuse_fields(config, "codebook_size", "commitment", "codebook_update",
                      "restart_every", *FLOW_FIELDS)
        levels = DEFAULTS["levels"] if config.levels is None else config.levels
        if config.code_dim is not None and config.code_dim != len(levels):
            raise ValueError(f"code_dim is the number of levels for bottleneck='fsq': "
                             f"{len(levels)} for levels {levels}, got {config.code_dim}")
        return {"levels": levels, "code_dim": len(levels),
                "latent_dim": _latent_dim(config, len(levels))}

    def __init__(self, config: Any, prior: Any) -> None:
        super().__init__(config, prior)
        self.n_codes = math.prod(config.levels)

    def quantize(self, params: dict, z_e: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        z_q, cache = vq.FSQ.forward(z_e, self.config.levels)
        return z_q, vq.fsq_codes(cache), cache

    def values(self, params: dict, codes: np.ndarray) -> np.ndarray:
        return vq.fsq_values(codes, self.config.levels, self.dtype)

    def charged_kl(self, kl: np.ndarray, cache: tuple) -> tuple[float, None]:
        """Nothing to charge: (0.0, None)."""
        return 0.0, None

    def backward(self, dz: np.ndarray, dkl: np.ndarray, cache: tuple, grads: dict,
                 floors: None = None) -> np.ndarray:
        """dz (N, d*H*W) -> dh (N, C*H*W): straight through the rounding, exactly through
        the bounding (``quantize.FSQ.backward``)."""
        z_e, q_cache, head_cache = cache[1], cache[3], cache[4]
        dz_e = vq.FSQ.backward(dz.reshape(z_e.shape), q_cache)
        return self._head_backward(dz_e.astype(self.dtype, copy=False), head_cache, grads)
