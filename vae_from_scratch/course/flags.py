"""The flags of ``vae-course train`` (and ``compare``), in one place.

The model's flags and the training options' flags are made from the fields of
:class:`~vae_from_scratch.config.VAEConfig` and
:class:`~vae_from_scratch.config.TrainingOptions` (:func:`config_flags`): a field declared
with a :class:`~vae_from_scratch.config.Flag` becomes ``--field-name``, with its help text,
its default, its reader or its choices. Adding a configuration field with a flag therefore
needs nothing here. The flags that are not configuration -- epochs, data, backend, device,
the IWAE estimate -- are written out below.

A run saves its flags (:func:`run_argv`) and ``--resume`` parses them again, so every flag's
value reads back as the same value (:func:`flag_text`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vae_from_scratch.config import (
    TrainingOptions,
    VAEConfig,
    flagged_fields,
    read_count,
    read_positive_int,
    read_seed,
)


def argument_type(read: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a reader whose ValueError says what was wrong."""

    def parse(text: str) -> Any:
        try:
            return read(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = getattr(read, "__name__", "value")
    return parse


def config_flags(cls: type) -> dict[str, dict[str, Any]]:
    """dest -> argparse spec for each field of the configuration class ``cls`` that declares
    a flag, in the order of its fields."""
    table = {}
    for f in flagged_fields(cls):
        flag = f.metadata["flag"]
        spec: dict[str, Any] = {"help": flag.help}
        if flag.switch:
            spec["action"] = "store_true"
        else:
            spec["default"] = f.default
            if flag.choices is not None:
                spec["choices"] = flag.choices
            else:
                spec["type"] = argument_type(flag.read)
                spec["metavar"] = flag.metavar
        table[flag.name or f.name] = spec
    return table


def config_kwargs(args: argparse.Namespace, cls: type,
                  filled: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that the parsed flags set. A switch named apart from
    its field (``--conditional`` for ``n_classes``) takes the value ``filled[field]`` when on,
    None when off."""
    kwargs = {}
    for f in flagged_fields(cls):
        flag = f.metadata["flag"]
        value = getattr(args, flag.name or f.name)
        if flag.name is not None and flag.name != f.name:
            value = (filled or {}).get(f.name) if value else None
        kwargs[f.name] = value
    return kwargs


#: The model's flags: one per VAEConfig field that declares one (config.py).
MODEL_FLAGS = config_flags(VAEConfig)

#: How the model is trained; with MODEL_FLAGS, what a run saves and --resume restores.
TRAINING_FLAGS = {
    "epochs": dict(type=argument_type(read_count), default=50, metavar="N",
                   help="passes over the training set"),
    **config_flags(TrainingOptions),
    "data": dict(choices=("embedded", "mnist"), default="embedded",
                 help="the 5,000 digits shipped with the course, or full MNIST"),
    "data_dir": dict(type=Path, default=None, metavar="DIR",
                     help="folder of the MNIST IDX files (default: where download puts them)"),
    "limit": dict(type=argument_type(read_positive_int), default=None, metavar="N",
                  help="use N training and at most N test examples, a fixed sample (quick trials)"),
    "backend": dict(choices=("numpy", "torch"), default="numpy",
                    help="the hand-written NumPy model or its PyTorch mirror"),
    "device": dict(default=None, metavar="DEVICE",
                   help="torch device: cpu, cuda, cuda:N or mps (default: the fastest present)"),
    "iwae_k": dict(type=argument_type(read_count), default=100, metavar="K",
                   help="samples for the final importance-weighted -log p(x); 0 skips it"),
}
RUN_FLAGS = {**MODEL_FLAGS, **TRAINING_FLAGS}
#: The model flags vae-course compare takes.
COMPARE_MODEL_FLAGS = ("architecture", "hidden_dims", "channels", "likelihood", "conditional")
#: Flags a resumed run may change: a new total of epochs.
RESUME_MAY_CHANGE = ("epochs",)
SEED_TYPE = argument_type(read_seed)
POSITIVE_INT_TYPE = argument_type(read_positive_int)


def option_name(dest: str) -> str:
    """'hidden_dims' -> '--hidden-dims'."""
    return "--" + dest.replace("_", "-")


def flag_text(value: Any) -> str:
    """A flag's value as typed on the command line (the inverse of its type)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


def add_flags(parser: Any, table: dict[str, dict[str, Any]],
              only: Iterable[str] | None = None) -> None:
    """Add the flags of ``table`` (those named in ``only``, if given) to an argparse parser
    or group; the help shows each default."""
    for dest, spec in table.items():
        if only is not None and dest not in only:
            continue
        spec = dict(spec)
        help_text = spec.pop("help")
        default = spec.get("default")
        if default is not None and spec.get("action") != "store_true":
            help_text += f" (default: {flag_text(default)})"
        parser.add_argument(option_name(dest), dest=dest, help=help_text.replace("%", "%%"),
                            **spec)


TRAIN_DESCRIPTION = ("Train a VAE. Writes --out DIR as it goes (state and checkpoint after "
                     "every epoch); Ctrl-C stops at the next step and saves, and --resume DIR "
                     "continues.")


def add_train_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``vae-course train``, in their groups; returns the parser."""
    add_flags(parser.add_argument_group("model"), MODEL_FLAGS)
    add_flags(parser.add_argument_group("training"), TRAINING_FLAGS)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder: new or empty, or a previous run's with --overwrite "
                     "(default: runs/train)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace the run in --out (removes only the files that run wrote)")
    out.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue the run in DIR with its saved flags (--epochs may raise "
                     "the total)")
    out.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def train_parser() -> argparse.ArgumentParser:
    """A parser of the train flags alone: what ``--resume`` reads a run's saved flags with."""
    return add_train_flags(argparse.ArgumentParser(prog="vae-course train",
                                                   description=TRAIN_DESCRIPTION))


# --- the flags of a run, saved and read back -------------------------------------------------


class _Unset:
    """Marks a flag the user did not type."""

    def __repr__(self) -> str:
        return "<unset>"


def typed_flags(argv: Iterable[str]) -> dict[str, Any]:
    """The run flags typed on the command line (dest -> value), found by parsing ``argv``
    again with every default replaced by a marker."""
    unset = _Unset()
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser, {k: {**v, "default": unset} for k, v in RUN_FLAGS.items()})
    args, _ = parser.parse_known_args(list(argv))
    return {k: v for k, v in vars(args).items() if v is not unset}


def run_argv(args: argparse.Namespace) -> list[str]:
    """The run flags of ``args`` as a command line: parsing it gives the same values."""
    argv = []
    for dest, spec in RUN_FLAGS.items():
        value = getattr(args, dest)
        if spec.get("action") == "store_true":
            argv += [option_name(dest)] if value else []
        elif value is not None:
            argv += [option_name(dest), flag_text(value)]
    return argv


def run_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The run flags as JSON values, for metrics.json."""
    return {
        dest: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
        for dest in RUN_FLAGS
        for v in [getattr(args, dest)]
    }


def training_options(args: argparse.Namespace) -> TrainingOptions:
    """The TrainingOptions the parsed flags set (the others keep their defaults)."""
    return TrainingOptions(**config_kwargs(args, TrainingOptions))


def model_config(args: argparse.Namespace, input_dim: int, n_classes: int) -> VAEConfig:
    """The VAEConfig of the parsed model flags, for data of ``input_dim`` pixels;
    ``--conditional`` takes the data's ``n_classes``."""
    kwargs = config_kwargs(args, VAEConfig, {"n_classes": n_classes})
    return VAEConfig(input_dim=input_dim, **kwargs)

