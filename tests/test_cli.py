"""Tests for the ``vae-course`` command line (vae_from_scratch.cli): train and its outputs."""

from __future__ import annotations

import dataclasses
import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vae_from_scratch import VAE, data  # noqa: E402
from vae_from_scratch.checkpoint import load_vae, read_checkpoint  # noqa: E402
from vae_from_scratch.cli import build_parser, main  # noqa: E402
from vae_from_scratch.evaluate import negative_elbo  # noqa: E402
from vae_from_scratch.train import EVAL_SEED  # noqa: E402

QUICK = ["train", "--epochs", "1", "--hidden-dims", "32", "--iwae-k", "5", "--quiet"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(folder, *extra):
    code = main([*QUICK, "--out", str(folder), *extra])
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def run20(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("cli") / "run20")


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("cli") / "run2", "--latent-dim", "2", "--seed", "3")


@pytest.fixture(scope="module")
def x_test():
    return data.load_mnist().x_test


def _is_png(path):
    raw = path.read_bytes()
    return raw[:8] == PNG_MAGIC and len(raw) > 1000


def test_train_writes_checkpoint_metrics_and_figures(run20):
    names = {p.name for p in run20.iterdir()}
    assert names == {
        "checkpoint.safetensors",
        "metrics.json",
        "loss_curves.png",
        "reconstructions.png",
        "samples.png",
    }
    for name in ("loss_curves.png", "reconstructions.png", "samples.png"):
        assert _is_png(run20 / name), name


def test_metrics_hold_the_documented_keys(run20):
    metrics = json.loads((run20 / "metrics.json").read_text())
    for key in (
        "train_nelbo",
        "test_nelbo",
        "epochs",
        "seconds_per_epoch",
        "backend",
        "model",
        "history",
    ):
        assert key in metrics, key
    assert metrics["epochs"] == 1 and metrics["backend"] == "numpy"
    assert metrics["model"]["hidden_dims"] == [32] and metrics["model"]["latent_dim"] == 20
    assert metrics["seconds_per_epoch"] > 0
    history = metrics["history"]
    assert history["epoch"] == [1]
    assert history["train_nelbo"] == [metrics["train_nelbo"]]
    assert history["test_nelbo"] == [metrics["test_nelbo"]]
    # a first epoch on MNIST lands well below the ~543 nats of an untrained model
    assert 100 < metrics["test_nelbo"] < 540


def _iwae_written_out(vae, x, k, seed):
    """-log p(x) estimated with k importance samples per example, mean over examples."""
    n = len(x)
    x = x.astype(np.float64)
    eps = np.random.default_rng(seed).standard_normal((n * k, vae.latent_dim))
    mu, log_var = (np.repeat(a, k, axis=0) for a in vae.encode(x))
    z = mu + np.exp(0.5 * log_var) * eps
    logits = vae.decode(z)
    log_px_z = np.sum(np.repeat(x, k, axis=0) * logits - np.logaddexp(0.0, logits), axis=1)
    log_pz = -0.5 * np.sum(z**2 + np.log(2 * np.pi), axis=1)
    log_qz = -0.5 * np.sum(eps**2 + log_var + np.log(2 * np.pi), axis=1)
    log_w = (log_px_z + log_pz - log_qz).reshape(n, k)
    top = log_w.max(axis=1)
    return -np.mean(top + np.log(np.mean(np.exp(log_w - top[:, None]), axis=1)))


def test_checkpoint_is_the_trained_model_the_metrics_describe(run20, x_test):
    metrics = json.loads((run20 / "metrics.json").read_text())
    vae = load_vae(run20 / "checkpoint.safetensors")
    assert vae.config.to_dict() == metrics["model"]
    assert negative_elbo(vae, x_test, seed=EVAL_SEED)[0] == pytest.approx(
        metrics["test_nelbo"], rel=1e-12
    )
    # The IWAE figure, recomputed without evaluate.py: the same estimator written out from
    # the encoder and decoder, in float64, with the noise of seed 0 (row i*k+j: example i).
    vae64 = VAE(config=dataclasses.replace(vae.config, dtype="float64"), params=vae.params)
    assert _iwae_written_out(vae64, x_test, k=5, seed=0) == pytest.approx(
        metrics["test_nll_iwae_k5"], rel=1e-7)  # float32 round-off ~1e-9; another seed ~1e-5
    _, _, meta = read_checkpoint(run20 / "checkpoint.safetensors")
    assert meta["epochs"] == 1 and meta["backend"] == "numpy"
    assert meta["test_nelbo"] == pytest.approx(metrics["test_nelbo"], rel=1e-12)


def test_two_dimensional_latent_adds_the_latent_figures(run2):
    for name in (
        "latent_scatter.png",
        "latent_manifold.png",
        "loss_curves.png",
        "reconstructions.png",
        "samples.png",
    ):
        assert _is_png(run2 / name), name
    vae = load_vae(run2 / "checkpoint.safetensors")
    assert vae.latent_dim == 2
    metrics = json.loads((run2 / "metrics.json").read_text())
    assert metrics["training"]["seed"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden-dims", "0"], "hidden sizes must be positive"),
        (["--hidden-dims", "32,abc"], "hidden sizes are integers"),
        (["--likelihood", "foo"], "invalid choice"),
        (["--latent-dim", "0"], "must be a positive integer"),
        (["--latent-dim", "two"], "invalid"),
        (["--obs-var", "-1"], "obs-var"),
        (["--batch-size", "0"], "must be a positive integer"),
    ],
    ids=[
        "hidden-0",
        "hidden-text",
        "likelihood",
        "latent-0",
        "latent-text",
        "obs-var",
        "batch-size",
    ],
)
def test_argparse_rejects_bad_values(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *args, "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_hidden_dims_accept_commas_and_spaces():
    parser = build_parser()
    assert parser.parse_args(["train", "--hidden-dims", "512,256"]).hidden_dims == (512, 256)
    assert parser.parse_args(["train", "--hidden-dims", "64"]).hidden_dims == (64,)
    assert parser.parse_args(["train", "--obs-var", "learned"]).obs_var == "learned"


def test_numpy_backend_on_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--backend", "numpy", "--device", "cuda", "--out", str(tmp_path / "x")])
    assert "numpy backend runs on the CPU only" in str(info.value.code)
    assert "cuda" in str(info.value.code)
    assert not (tmp_path / "x").exists()


def test_invalid_model_settings_exit_with_status_2_and_a_message(tmp_path, capsys):
    code = main([*QUICK, "--beta", "-1", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "vae-course train: error:" in err and "beta" in err
    assert not (tmp_path / "x").exists()


def test_a_diverged_run_ends_with_a_message_not_a_traceback(tmp_path, capsys):
    with np.errstate(all="ignore"):
        code = main([*QUICK, "--lr", "1e6", "--out", str(tmp_path / "x")])
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "diverged" in err and "try --lr" in err


def test_negative_epochs_is_rejected(tmp_path):
    with pytest.raises(SystemExit, match="--epochs must be >= 0"):
        main(["train", "--epochs", "-1", "--out", str(tmp_path / "x")])


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
