"""Each configuration field is written once (config.py): its declaration gives the check,
the dict a checkpoint stores, and the command line's flag."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from vae_from_scratch import VAE
from vae_from_scratch.config import (
    Flag,
    TrainingOptions,
    VAEConfig,
    check_beta,
    flagged_fields,
    option,
    read_nonneg,
)
from vae_from_scratch.course import flags
from vae_from_scratch.course.cli import build_parser
from vae_from_scratch.train import NumpyBackend

pytestmark = pytest.mark.every_lesson


@dataclass(frozen=True)
class WithDropout(VAEConfig):
    """VAEConfig and one more field, declared in one line as a new field would be."""

    dropout: float = option(0.0, check=check_beta, flag=Flag(
        "share of hidden units dropped while training", read=read_nonneg, metavar="P"))


def _parse(table, argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    flags.add_flags(parser, table)
    return parser.parse_args(argv)


def test_a_new_field_gets_its_check_its_dict_entry_and_its_flag_from_one_line():
    table = flags.config_flags(WithDropout)
    assert list(table)[:-1] == list(flags.MODEL_FLAGS)  # the old flags, then the new one
    assert table["dropout"]["default"] == 0.0 and table["dropout"]["metavar"] == "P"
    args = _parse(table, ["--dropout", "0.25", "--latent-dim", "3"])
    config = WithDropout(input_dim=784, **flags.config_kwargs(args, WithDropout))
    assert config.dropout == 0.25 and config.latent_dim == 3
    assert WithDropout.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="dropout must be a finite number >= 0, got -1"):
        WithDropout(dropout=-1)
    with pytest.raises(argparse.ArgumentError, match="invalid value '-1': expected a finite"):
        _parse(table, ["--dropout", "-1"])


def test_the_train_command_shows_every_flagged_field_with_its_help_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for cls in (VAEConfig, TrainingOptions):
        for f in flagged_fields(cls):
            flag = f.metadata["flag"]
            assert flags.option_name(flag.name or f.name) in text, f.name
            assert " ".join(flag.help.split()) in text, f.name
            if not flag.switch and f.default is not None:
                assert f"(default: {flags.flag_text(f.default)})" in text, f.name


def test_the_flags_build_the_configuration_the_train_command_uses():
    args = build_parser().parse_args(["train", "--conditional", "--likelihood", "gaussian",
                                      "--obs-var", "learned", "--hidden-dims", "32,16",
                                      "--lr", "0.003", "--binarize", "--kl-warmup", "7"])
    config = flags.model_config(args, 784, 10)
    assert config == VAEConfig(input_dim=784, hidden_dims=(32, 16), likelihood="gaussian",
                               obs_var="learned", n_classes=10)
    assert flags.model_config(build_parser().parse_args(["train"]), 784, 10).n_classes is None
    assert flags.training_options(args) == TrainingOptions(lr=0.003, binarize=True,
                                                           kl_warmup=7)


def test_the_model_constructors_take_the_fields_as_keywords_and_nothing_else():
    vae = VAE(12, (5,), 2, beta=0.5, prior="mixture", n_components=3, dtype=np.float64)
    assert vae.config == VAEConfig(input_dim=12, hidden_dims=(5,), latent_dim=2, beta=0.5,
                                   prior="mixture", n_components=3, dtype="float64")
    with pytest.raises(TypeError, match="unknown model option 'dropout'; the options are "
                                        "the fields of VAEConfig: input_dim, architecture"):
        VAE(12, (5,), 2, dropout=0.1)
    with pytest.raises(TypeError, match="give a config or the options beta, not both"):
        VAE(config=vae.config, beta=2.0)


def test_training_options_are_checked_once_and_given_either_way():
    x = np.random.default_rng(0).random((20, 12))
    options = TrainingOptions(lr=3e-3, batch_size=8, optimizer="sgd", seed=4)
    by_object = NumpyBackend(VAE(12, (5,), 2), x, options=options)
    by_keywords = NumpyBackend(VAE(12, (5,), 2), x, lr=3e-3, batch_size=8, optimizer="sgd",
                               seed=4)
    assert by_object.options == by_keywords.options == options
    assert by_object.steps_per_epoch() == 3
    with pytest.raises(TypeError, match="not both"):
        NumpyBackend(VAE(12, (5,), 2), x, options=options, lr=1e-3)
    for bad, message in [(dict(lr=0), "lr must be a finite number > 0"),
                         (dict(lr=float("nan")), "lr must be a finite number > 0"),
                         (dict(seed=-1), "seed must be an integer >= 0"),
                         (dict(seed=1.5), "seed must be an integer >= 0"),
                         (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'; expected "
                                                     "one of adam, sgd")]:
        with pytest.raises(ValueError, match=message):
            TrainingOptions(**bad)
    assert dataclasses.replace(options, lr=1e-2).lr == 1e-2  # a new, checked copy
