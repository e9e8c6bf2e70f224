"""The configuration of a model and of its training: every field written once, here.

Two frozen dataclasses, each checked in full when it is made:

* :class:`VAEConfig` fixes the model: its networks, likelihood, prior, KL estimator, loss
  weights and dtype. The NumPy :class:`~vae_from_scratch.vae.VAE` and its PyTorch mirror
  both take it, and checkpoints store it (``to_dict`` / ``from_dict``).
* :class:`TrainingOptions` says how a model is trained: learning rate, batch size,
  optimizer, seed, dynamic binarization and KL warm-up. Both training backends take it.

A field is declared once, with its type, default, check and -- where ``vae-course train``
shows it -- its flag::

    latent_dim: int = option(20, check=positive_int,
                             flag=Flag("size of the code z", read=read_positive_int, metavar="N"))

``check`` is called with the value and the field's name when the object is made, and returns
the value to keep (or raises ValueError saying what was wrong and what was expected).
``vae-course train`` makes its model and training flags from these declarations
(:mod:`vae_from_scratch.course.flags`): **a new configuration field needs one line here,
nothing else.** A field without a flag is configuration the command line does not set (the
data decide ``input_dim``, the architecture ``image_shape``).

Free bits are a field of :class:`VAEConfig`, not a training option: like ``beta`` they
change the loss the model computes (``VAE.loss`` and ``loss_and_grads`` charge each latent
dimension at least ``free_bits`` nats, and the hand-derived backward masks the dimensions
below that floor), so a checkpoint must record them to reproduce its loss. KL warm-up is a
training option: a schedule the training loop applies to ``beta`` step by step.

The likelihood, the prior and the bottleneck are looked up by name in their registries
(:data:`~vae_from_scratch.likelihoods.LIKELIHOODS`, :data:`~vae_from_scratch.priors.PRIORS`,
:data:`~vae_from_scratch.bottleneck.BOTTLENECKS`);
the choices the command line offers are the registries' names when its parser is built.
Each class checks the fields that belong to it (``configure``): the Gaussian likelihood its
``obs_var``, for instance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vae_from_scratch import (  # noqa: F401 (lesson 12's bottlenecks)
    discrete,  # noqa: F401  (registers the bottlenecks "vq", "fsq")
    flow_bottleneck,
    hierarchical,
)
from vae_from_scratch.bottleneck import BOTTLENECKS
from vae_from_scratch.likelihoods import LIKELIHOODS
from vae_from_scratch.networks import conv_sizes
from vae_from_scratch.priors import PRIORS

ACTIVATIONS = ("relu", "tanh")
KL_MODES = ("auto", "analytic", "monte_carlo")
ARCHITECTURES = ("mlp", "conv")
OPTIMIZERS = ("adam", "sgd")
CODEBOOK_UPDATES = ("grad", "ema")
DTYPES = {"float32": np.float32, "float64": np.float64}

#: Defaults of the networks' sizes, per architecture.
DEFAULT_HIDDEN_DIMS = (400,)
DEFAULT_CHANNELS = (32, 64)
#: The momentum of the "sgd" optimizer, in both backends.
SGD_MOMENTUM = 0.9
#: The prior of ``vae-course train --conditional`` when --prior is not given: one
#: full-covariance Gaussian per class, fitted to that class's codes (priors.ClassGaussian).
#: With the standard normal prior 57 % of a latent-20 model's samples were read as the digit
#: asked for, with this one over 90 % (benchmarks/conditional_agreement.py).
CONDITIONAL_PRIOR = "class_gaussian"


# --- declaring a field ----------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """How ``vae-course train`` shows a configuration field.

    help: the flag's help text (its default is added unless ``switch``).
    read: text -> value, raising ValueError whose message is the whole complaint (for
        ``--name VALUE`` flags without ``choices``).
    choices: the values allowed (a registry's names, read when the parser is built).
    metavar: the value's placeholder in the help, e.g. ``N``.
    name: the flag's name when it is not the field's: ``--conditional`` for ``n_classes``.
    switch: an on/off flag (``store_true``). Named after its field it sets it to True; named
        otherwise, it asks the command to fill the field in (``--conditional`` takes the
        number of classes from the data).
    filled: the flag's default is not the field's but one the command fills in from the
        other flags when the flag is not given (``--prior``: :data:`CONDITIONAL_PRIOR` for a
        ``--conditional`` run); its help says which.
    """

    help: str
    read: Callable[[str], Any] | None = None
    choices: Container | None = None
    metavar: str | None = None
    name: str | None = None
    switch: bool = False
    filled: bool = False


def option(default: Any, *, check: Callable[[Any, str], Any] | None = None,
           flag: Flag | None = None) -> Any:
    """A dataclass field with its check and its command-line flag (see the module docstring)."""
    return field(default=default, metadata={"check": check, "flag": flag})


def flagged_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a configuration class that the command line shows, in order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag") is not None]


def _check_fields(obj: Any) -> None:
    """Run every field's check and keep what it returns (the dataclass is frozen)."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is not None:
            object.__setattr__(obj, f.name, check(getattr(obj, f.name), f.name))


# --- checks: (value, name) -> the value to keep, or ValueError --------------------------------


def is_number(value: Any) -> bool:
    """A real number (NumPy scalars too), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def is_int(value: Any) -> bool:
    """An int or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def choose(name: str, value: Any, options: Iterable) -> Any:
    """``value`` if it is one of ``options``, else ValueError listing them."""
    options = tuple(options)
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
    return value


def one_of(options: Iterable) -> Callable[[Any, str], Any]:
    """A check: the value is one of ``options`` (a live registry is read at each call)."""
    return lambda value, name: choose(name, value, options)


def positive_int(value: Any, name: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def count(value: Any, name: str, what: str = "an integer >= 0") -> int:
    """A whole number >= 0 (an int or NumPy integer, not a bool), as an int."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_beta(beta: Any, name: str = "beta") -> float:
    """A KL weight is a finite number >= 0 (not a bool); returns it as a float."""
    if not (is_number(beta) and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {beta!r}")
    return float(beta)


def _positive_number(value: Any, name: str) -> float:
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def share(value: Any, name: str) -> float:
    """A share of a whole: a number in [0, 1) (not a bool), as a float."""
    if not (is_number(value) and math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"{name} must be a number from 0 up to (not including) 1, got "
                         f"{value!r}")
    return float(value)


def _n_classes(value: Any, name: str) -> int | None:
    if value is not None and (not is_int(value) or value < 2):
        raise ValueError(f"{name} must be an integer >= 2, or None for an unconditional VAE; "
                         f"got {value!r}")
    return value


def unset_or(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """A check that lets None (not set: the bottleneck resolves it) through."""
    return lambda value, name: None if value is None else check(value, name)


def _codebook_size(value: Any, name: str) -> int:
    if not is_int(value) or value < 2:
        raise ValueError(f"{name} must be an integer >= 2 (codes in the codebook), got "
                         f"{value!r}")
    return int(value)


def _levels(value: Any, name: str) -> tuple[int, ...]:
    levels = int_tuple(name, value, "(4, 4) or (8, 5, 5)", allow_empty=False)
    if min(levels) < 2:
        raise ValueError(f"{name} must be integers >= 2 (levels per channel), got {value!r}")
    return levels


def _top_latent_dim(value: Any, name: str) -> int | None:
    return None if value is None else positive_int(value, name)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def int_tuple(name: str, value: Any, example: str, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints, or ValueError naming ``name``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a sequence of positive integers such as {example}, "
                         f"got {value!r}")
    items = tuple(value)
    if not all(is_int(v) and v >= 1 for v in items) or (not items and not allow_empty):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}sequence of "
                         f"positive integers such as {example}, got {value!r}")
    return tuple(int(v) for v in items)


# --- reading a flag's text: text -> value, or ValueError with the whole complaint -------------


def read_int(low: int, high: int | None = None,
             what: str = "an integer") -> Callable[[str], int]:
    """A reader of integers in [low, high]."""

    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise ValueError(f"invalid value {text!r}: expected {what}")
        return value

    return read


def read_real(low: float, inclusive: bool, what: str) -> Callable[[str], float]:
    """A reader of finite numbers above ``low`` (or equal to it, if ``inclusive``)."""

    def read(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value >= low if inclusive else value > low)):
            raise ValueError(f"invalid value {text!r}: expected {what}")
        return value

    return read


def read_sizes(what: str, example: str) -> Callable[[str], tuple[int, ...]]:
    """A reader of positive integers separated by commas (or spaces)."""

    def read(text: str) -> tuple[int, ...]:
        try:
            dims = tuple(int(t) for t in text.replace(",", " ").split())
        except ValueError:
            dims = ()
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"{what} are positive integers separated by commas, e.g. "
                             f"{example}; got {text!r}")
        return dims

    return read


read_positive_int = read_int(1, what="a positive integer")
read_count = read_int(0, what="an integer >= 0")
read_seed = read_int(0, 2**63 - 1, what="an integer from 0 to 2**63 - 1 (9223372036854775807)")
read_positive = read_real(0.0, False, "a finite number > 0")
read_nonneg = read_real(0.0, True, "a finite number >= 0")


def read_share(text: str) -> float:
    value = read_nonneg(text)
    if value >= 1:
        raise ValueError(f"invalid value {text!r}: expected a number from 0 up to (not "
                         "including) 1")
    return value


def read_obs_var(text: str) -> float | str:
    if text == "learned":
        return text
    return read_real(0.0, False, "a variance > 0, or 'learned'")(text)


def dtype_name(dtype: Any) -> str:
    """'float32' or 'float64' from a NumPy dtype, type or name; ValueError otherwise."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return name


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEConfig:
    """Everything that fixes the model's architecture and loss; saved with checkpoints.

    ``architecture``: ``"mlp"`` (``hidden_dims``, default (400,)) or ``"conv"``
    (``image_shape`` (C, H, W), default (1, s, s) for D = s^2, and ``channels``, default
    (32, 64): one 4x4 stride-2 convolution per entry). ``n_classes``: labels 0..K-1 that
    a conditional VAE takes (None: unconditional). ``likelihood`` and ``prior`` name entries
    of their registries; ``obs_var`` is the Gaussian decoder's variance: a positive number
    (fixed) or ``"learned"`` (one log-variance per pixel, ``params["dec.log_var"]``); other
    likelihoods have none (None). ``n_components``: the mixture prior's. ``kl="auto"`` means
    analytic where the prior has a closed-form KL (the standard normal), Monte Carlo
    otherwise. ``free_bits`` (nats per latent dimension, for priors whose KL splits over the
    dimensions): the training loss charges each dimension at least this much KL, so
    dimensions below it get no push towards the prior. ``bottleneck`` names an entry of
    :data:`~vae_from_scratch.bottleneck.BOTTLENECKS`: "gaussian" (lessons 04-10), or a grid
    of discrete codes (lesson 11, conv only; :mod:`~vae_from_scratch.discrete`), "vq" with
    ``codebook_size`` K, ``code_dim`` D, ``commitment`` (the commitment loss's weight),
    ``codebook_update`` ("grad" or "ema"), ``restart_every`` (steps between restarts of dead
    codes, 0 for none) and ``restart_below`` (a code is dead when it took fewer than this
    share of the positions since the last restart; 0: only unused codes), or "fsq" with
    ``levels``; ``latent_dim`` is then D times the number of positions. Those fields are
    None ("not set") until the bottleneck resolves them; one that does not apply is refused.
    The EMA and the restarts are fields of the model, not training options: they decide how
    its codebook learns and what state its checkpoint holds.
    """

    input_dim: int = option(784, check=positive_int)
    architecture: str = option("mlp", check=one_of(ARCHITECTURES), flag=Flag(
        "the networks: fully connected, or convolutional (lesson 08)", choices=ARCHITECTURES))
    latent_dim: int = option(20, check=positive_int, flag=Flag(
        "size of the code z", read=read_positive_int, metavar="N"))
    hidden_dims: tuple | None = option(None, flag=Flag(
        "hidden layer sizes of the mlp architecture, e.g. 400 or 512,256 (default: 400)",
        read=read_sizes("hidden sizes", "512,256"), metavar="SIZES"))
    channels: tuple | None = option(None, flag=Flag(
        "channels of the conv architecture's convolutions, e.g. 32,64 (default: 32,64)",
        read=read_sizes("channel counts", "32,64"), metavar="SIZES"))
    n_classes: int | None = option(None, check=_n_classes, flag=Flag(
        "a conditional VAE: encoder and decoder also see the digit's label (lesson 09)",
        name="conditional", switch=True))
    image_shape: tuple | None = option(None)
    activation: str = option("relu", check=one_of(ACTIVATIONS), flag=Flag(
        "hidden-layer nonlinearity", choices=ACTIVATIONS))
    likelihood: str = option("bernoulli", check=one_of(LIKELIHOODS), flag=Flag(
        "the decoder's distribution p(x|z)", choices=LIKELIHOODS))
    obs_var: float | str | None = option(None, flag=Flag(
        "the Gaussian decoder's variance, or 'learned' for one per pixel (default: 1.0)",
        read=read_obs_var, metavar="VAR"))
    beta: float = option(1.0, check=check_beta, flag=Flag(
        "weight on the KL term", read=read_nonneg, metavar="B"))
    kl: str = option("auto", check=one_of(KL_MODES), flag=Flag(
        "KL estimator; auto: analytic for the standard prior, else Monte Carlo",
        choices=KL_MODES))
    prior: str = option("standard", check=one_of(PRIORS), flag=Flag(
        "the prior p(z) (default: standard; with --conditional: class_gaussian, one "
        "full-covariance Gaussian per label fitted to that label's codes, so that samples "
        "show the digit asked for)", choices=PRIORS, filled=True))
    n_components: int = option(10, check=positive_int, flag=Flag(
        "components of the mixture prior", read=read_positive_int, metavar="K"))
    free_bits: float = option(0.0, check=check_beta, flag=Flag(
        "KL charged at least per latent dimension while training", read=read_nonneg,
        metavar="NATS"))
    dtype: str = option("float32", check=one_of(DTYPES), flag=Flag(
        "floating-point precision", choices=DTYPES))
    # the bottleneck between encoder and decoder, and the fields of the quantized ones
    # (lesson 11; vae_from_scratch/discrete.py): None is "not set", resolved by the
    # bottleneck to its default, and refused by a bottleneck that has no use for it
    bottleneck: str = option("gaussian", check=one_of(BOTTLENECKS), flag=Flag(
        "the code between encoder and decoder: a Gaussian z; a 7x7 grid of discrete codes by "
        "vector quantization or finite scalar quantization (vq, fsq: lesson 11, conv only); "
        "a flow after the Gaussian (planar, iaf) or two stochastic layers (two_level: "
        "lesson 12)",
        choices=BOTTLENECKS))
    codebook_size: int | None = option(None, check=unset_or(_codebook_size), flag=Flag(
        "vq: codes in the codebook, K (default: 16)", read=read_int(2, what="an integer >= 2"),
        metavar="K"))
    code_dim: int | None = option(None, check=unset_or(positive_int), flag=Flag(
        "vq: size of each codebook vector, D (default: 16); fsq: the number of levels",
        read=read_positive_int, metavar="D"))
    levels: tuple | None = option(None, check=unset_or(_levels), flag=Flag(
        "fsq: levels per channel, e.g. 4,4 (default: 4,4)",
        read=read_sizes("levels", "4,4"), metavar="LEVELS"))
    commitment: float | None = option(None, check=unset_or(check_beta), flag=Flag(
        "vq: weight of the commitment loss (default: 0.25)", read=read_nonneg, metavar="B"))
    codebook_update: str | None = option(None, check=unset_or(one_of(CODEBOOK_UPDATES)),
                                         flag=Flag("vq: the codebook learns by its gradient "
                                                   "or by moving averages (default: grad)",
                                                   choices=CODEBOOK_UPDATES))
    restart_every: int | None = option(None, check=unset_or(count), flag=Flag(
        "vq: steps between restarts of dead codes, 0 for none (default: 8)", read=read_count,
        metavar="STEPS"))
    restart_below: float | None = option(None, check=unset_or(share), flag=Flag(
        "vq: a code that took fewer than this share of the positions since the last restart "
        "is restarted, 0 for unused codes only (default: 0.01)", read=read_share,
        metavar="SHARE"))
    # the fields of the flow and two-level bottlenecks
    flow_steps: int = option(0, check=count, flag=Flag(
        "steps of the planar or iaf bottleneck's flow", read=read_count, metavar="K"))
    top_latent_dim: int | None = option(None, check=_top_latent_dim, flag=Flag(
        "size of the two_level bottleneck's top code z2 (default: 10)",
        read=read_positive_int, metavar="N"))

    def __post_init__(self) -> None:
        _check_fields(self)
        self._resolve_networks()
        for parts in (BOTTLENECKS[self.bottleneck], LIKELIHOODS[self.likelihood],
                      PRIORS[self.prior]):
            for name, value in parts.configure(self).items():
                object.__setattr__(self, name, value)
        prior = PRIORS[self.prior]
        if self.kl == "analytic" and not prior.analytic_kl:
            raise ValueError(f"the KL to {prior.description} has no closed form; use "
                             "kl='monte_carlo' (or 'auto')")
        if self.kl == "analytic" and not BOTTLENECKS[self.bottleneck].analytic_kl:
            raise ValueError(f"the {self.bottleneck} bottleneck's KL has no closed form; use "
                             "kl='monte_carlo' (or 'auto')")
        if self.free_bits > 0 and not prior.per_dimension:
            raise ValueError(
                "free bits need a KL that splits over latent dimensions, which the "
                f"{self.prior} prior's does not; use prior='standard' or free_bits=0"
            )

    def _resolve_networks(self) -> None:
        """Fill in the architecture's size defaults; refuse sizes of the other one."""
        def keep(name, value):
            object.__setattr__(self, name, value)

        mlp = self.architecture == "mlp"
        hidden = DEFAULT_HIDDEN_DIMS if (mlp and self.hidden_dims is None) else self.hidden_dims
        keep("hidden_dims", int_tuple("hidden_dims", hidden or (), "(400,) or (512, 256)"))
        if mlp:
            for name in ("image_shape", "channels"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} belongs to architecture='conv'; the mlp "
                                     f"architecture takes hidden_dims")
            return
        if self.hidden_dims:
            raise ValueError("hidden_dims belongs to architecture='mlp'; the conv "
                             "architecture's sizes are image_shape and channels")
        channels = DEFAULT_CHANNELS if self.channels is None else self.channels
        keep("channels", int_tuple("channels", channels, "(32, 64)", allow_empty=False))
        shape = self.image_shape
        if shape is None:
            side = math.isqrt(self.input_dim)
            if side * side != self.input_dim:
                raise ValueError(f"input_dim {self.input_dim} is not a square image: give "
                                 "image_shape=(channels, height, width)")
            shape = (1, side, side)
        shape = int_tuple("image_shape", shape, "(1, 28, 28)", allow_empty=False)
        if len(shape) != 3 or math.prod(shape) != self.input_dim:
            raise ValueError(
                f"image_shape must be (channels, height, width) with channels * height * "
                f"width = input_dim = {self.input_dim}; got {shape}"
            )
        keep("image_shape", shape)
        conv_sizes(shape, len(self.channels))  # raises when the image gets too small

    @property
    def kl_mode(self) -> str:
        """The KL estimator actually used: 'analytic' or 'monte_carlo'."""
        if self.kl == "auto":
            analytic = PRIORS[self.prior].analytic_kl and BOTTLENECKS[self.bottleneck].analytic_kl
            return "analytic" if analytic else "monte_carlo"
        return self.kl

    def to_dict(self) -> dict[str, Any]:
        """JSON values (tuples as lists): what a checkpoint stores."""
        return {name: list(v) if isinstance(v, tuple) else v
                for name, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VAEConfig:
        """The inverse of :meth:`to_dict`; ValueError for a key that is not a field.

        A VQ configuration saved before ``restart_below`` existed restarted unused codes only,
        so it reads as ``restart_below=0``: a resumed run goes on with the rule it began with.
        """
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        d = dict(d)
        if d.get("bottleneck") == "vq" and "restart_below" not in d:
            d["restart_below"] = 0.0
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def from_arguments(cls, input_dim: int, hidden_dims: Any, latent_dim: int, dtype: Any,
                       options: Mapping[str, Any]) -> VAEConfig:
        """The configuration of a model constructor's keyword form, ``VAE(784, (400,), 20,
        likelihood=..., dtype=np.float64)``: ``options`` are the other fields by name."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown model option {unknown[0]!r}; the options are the fields "
                            f"of VAEConfig: {', '.join(f.name for f in dataclasses.fields(cls))}")
        return cls(input_dim=input_dim, hidden_dims=hidden_dims, latent_dim=latent_dim,
                   dtype=dtype_name(dtype), **options)


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOptions:
    """How a model is trained; both training backends take it, checked once.

    ``lr``: the optimizer's learning rate; ``batch_size``: examples per step; ``optimizer``:
    ``"adam"`` or ``"sgd"`` (with momentum :data:`SGD_MOMENTUM`); ``seed``: the shuffling,
    the binarization and the noise; ``binarize``: draw each pixel as 0 or 1 anew at every
    step (dynamic binarization); ``kl_warmup``: steps over which the KL weight grows
    linearly from 0 to the model's beta (0: no warm-up).
    """

    batch_size: int = option(128, check=lambda v, name: int(positive_int(v, name)), flag=Flag(
        "examples per step", read=read_positive_int, metavar="N"))
    lr: float = option(1e-3, check=_positive_number, flag=Flag(
        "Adam's learning rate", read=read_positive, metavar="LR"))
    kl_warmup: int = option(0, check=lambda v, name: count(v, name, "a whole number of steps "
                                                          ">= 0"), flag=Flag(
        "steps over which the KL weight ramps up from 0 to beta", read=read_count,
        metavar="STEPS"))
    binarize: bool = option(False, check=_bool, flag=Flag(
        "draw each pixel as 0 or 1 anew at every step (dynamic binarization)", switch=True))
    seed: int = option(0, check=lambda v, name: count(v, name), flag=Flag(
        "seeds the initial weights, the shuffling and the noise", read=read_seed,
        metavar="S"))
    optimizer: str = option("adam", check=one_of(OPTIMIZERS))

    def __post_init__(self) -> None:
        _check_fields(self)

    @classmethod
    def given(cls, options: TrainingOptions | None = None, **values: Any) -> TrainingOptions:
        """``options``, or options made from keyword ``values`` (a backend's keyword form,
        ``NumpyBackend(vae, x, lr=3e-3, seed=0)``); not both."""
        if options is None:
            return cls(**values)
        if values:
            raise TypeError(f"give options or {', '.join(values)}, not both")
        if not isinstance(options, cls):
            raise TypeError(f"options must be {cls.__name__}, got {type(options).__name__}")
        return options
