"""Tests for the ``vae-course`` command line (vae_from_scratch.course.cli): train and its
outputs."""

from __future__ import annotations

import dataclasses
import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vae_from_scratch import VAE, data  # noqa: E402
from vae_from_scratch.course.checkpoint import load_vae, read_checkpoint  # noqa: E402
from vae_from_scratch.course.cli import build_parser, main  # noqa: E402
from vae_from_scratch.evaluate import negative_elbo  # noqa: E402
from vae_from_scratch.train import EVAL_SEED  # noqa: E402

# vae-course train is lesson 05's training run from the command line
pytestmark = pytest.mark.lesson05

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
        "run.json",
        "state.safetensors",
        "checkpoint.safetensors",
        "metrics.json",
        "loss_curves.png",
        "reconstructions.png",
        "samples.png",
    }
    manifest = json.loads((run20 / "run.json").read_text())
    assert manifest["status"] == "finished" and set(manifest["files"]) == names - {"run.json"}
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
        "kl_estimator",
        "interrupted",
    ):
        assert key in metrics, key
    assert metrics["epochs"] == 1 and metrics["backend"] == "numpy"
    assert metrics["kl_estimator"] == "analytic" and metrics["interrupted"] is False
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
        (["--hidden-dims", "0"], "hidden sizes are positive integers separated by commas"),
        (["--hidden-dims", "32,abc"], "hidden sizes are positive integers separated by commas"),
        (["--channels", "32,0"], "channel counts are positive integers separated by commas"),
        (["--architecture", "cnn"], "invalid choice: 'cnn'"),
        (["--free-bits", "-1"], "expected a finite number >= 0"),
        (["--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["--likelihood", "foo"], "invalid choice"),
        (["--latent-dim", "0"], "invalid value '0': expected a positive integer"),
        (["--latent-dim", "two"], "invalid value 'two': expected a positive integer"),
        (["--obs-var", "-1"], "argument --obs-var: invalid value '-1'"),
        (["--obs-var", "abc"], "expected a variance > 0, or 'learned'"),
        (["--batch-size", "0"], "expected a positive integer"),
        (["--epochs", "-3"], "argument --epochs: invalid value '-3': expected an integer >= 0"),
        (["--seed", "-1"], "argument --seed: invalid value '-1': expected an integer from 0 to "
                           "2**63 - 1"),
        (["--seed", str(2**63)], f"invalid value '{2**63}'"),
        (["--seed", str(2**64 + 5)], "from 0 to 2**63 - 1"),
        (["--lr", "nan"], "argument --lr: invalid value 'nan': expected a finite number > 0"),
        (["--lr", "0"], "expected a finite number > 0"),
        (["--beta", "-1"], "argument --beta: invalid value '-1'"),
        (["--beta", "inf"], "expected a finite number >= 0"),
        (["--kl-warmup", "-5"], "argument --kl-warmup"),
        (["--kl-warmup", "2.5"], "argument --kl-warmup"),
        (["--iwae-k", "-1"], "argument --iwae-k"),
        (["--limit", "0"], "argument --limit"),
    ],
    ids=[
        "hidden-0",
        "hidden-text",
        "channels-0",
        "architecture",
        "free-bits-negative",
        "likelihood-poisson",
        "likelihood",
        "latent-0",
        "latent-text",
        "obs-var",
        "obs-var-text",
        "batch-size",
        "epochs-negative",
        "seed-negative",
        "seed-2**63",
        "seed-huge",
        "lr-nan",
        "lr-0",
        "beta-negative",
        "beta-inf",
        "warmup-negative",
        "warmup-float",
        "iwae-negative",
        "limit-0",
    ],
)
def test_argparse_rejects_bad_values(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *args, "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: vae-course train")  # the usage line, like any bad flag
    assert "_obs_var" not in err and "_positive_int" not in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_the_largest_seed_is_accepted():
    assert build_parser().parse_args(["train", "--seed", str(2**63 - 1)]).seed == 2**63 - 1


def test_an_unknown_flag_shows_the_usage_of_train(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epoch-count", "3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: vae-course train")
    assert "vae-course train: error: unrecognized arguments: --epoch-count 3" in err


def test_help_shows_the_defaults_and_no_markup(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("--latent-dim N", "(default: 20)", "(default: 400)", "(default: 0.001)",
                     "(default: 50)", "(default: runs/train)", "--overwrite", "--resume DIR",
                     "--limit N"):
        assert fragment in text, fragment
    assert "``" not in text and "%(" not in text and "(400,)" not in text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "vae-course: train, compare" in top


def test_version(capsys):
    from vae_from_scratch import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vae-course {__version__}"


def test_epoch_counts_read_well(tmp_path, capsys):
    main([*QUICK, "--iwae-k", "0", "--limit", "64", "--out", str(tmp_path / "one")])
    out = capsys.readouterr().out
    assert "for 1 epoch;" in out and "1 epochs" not in out
    main([*QUICK, "--epochs", "2", "--iwae-k", "0", "--limit", "64", "--out",
          str(tmp_path / "two")])
    assert "for 2 epochs;" in capsys.readouterr().out


def test_metrics_record_the_kl_estimator_used(tmp_path):
    main([*QUICK, "--iwae-k", "0", "--limit", "64", "--prior", "mixture", "--latent-dim", "2",
          "--out", str(tmp_path / "mix")])
    metrics = json.loads((tmp_path / "mix" / "metrics.json").read_text())
    assert metrics["training"]["kl"] == "auto" and metrics["kl_estimator"] == "monte_carlo"


def test_limit_uses_a_fixed_sample_of_every_digit(tmp_path):
    from vae_from_scratch.course.train_command import load_data

    args = build_parser().parse_args(["train", "--limit", "300"])
    ds = load_data(args)
    assert ds.x_train.shape == (300, 784) and ds.x_test.shape == (300, 784)
    assert set(ds.y_train) == set(range(10))
    again = load_data(build_parser().parse_args(["train", "--limit", "300", "--seed", "5"]))
    np.testing.assert_array_equal(again.x_train, ds.x_train)  # not tied to --seed
    with pytest.raises(ValueError, match="only 4000 training examples"):
        load_data(build_parser().parse_args(["train", "--limit", "5000"]))


def test_model_flags_map_onto_the_configuration():
    from vae_from_scratch.config import VAEConfig
    from vae_from_scratch.course.flags import MODEL_FLAGS

    # --conditional stands for n_classes, which comes from the data
    assert set(MODEL_FLAGS) - {"conditional"} <= set(VAEConfig.__dataclass_fields__)
    args = build_parser().parse_args(["train"])
    assert args.conditional is False
    # the flags' defaults are the configuration's, unresolved (None: the architecture's own)
    defaults = {name: f.default for name, f in VAEConfig.__dataclass_fields__.items()}
    for dest in set(MODEL_FLAGS) - {"conditional"}:
        assert getattr(args, dest) == defaults[dest], dest


def test_saved_flags_read_back_as_the_same_values():
    from vae_from_scratch.course.flags import RUN_FLAGS, run_argv

    argv = ["train", "--hidden-dims", "64,32", "--lr", "0.0003", "--beta", "0.1",
            "--obs-var", "learned", "--likelihood", "gaussian", "--binarize", "--seed",
            str(2**63 - 1), "--limit", "77", "--data-dir", "/tmp/x y"]
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(["train", *run_argv(args)])
    for dest in RUN_FLAGS:
        assert getattr(again, dest) == getattr(args, dest), dest


def test_hidden_dims_accept_commas_and_spaces():
    parser = build_parser()
    assert parser.parse_args(["train", "--hidden-dims", "512,256"]).hidden_dims == (512, 256)
    assert parser.parse_args(["train", "--hidden-dims", "64"]).hidden_dims == (64,)
    assert parser.parse_args(["train", "--obs-var", "learned"]).obs_var == "learned"


def test_numpy_backend_on_cuda_is_a_clear_error(tmp_path, capsys):
    code = main([*QUICK, "--backend", "numpy", "--device", "cuda", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "numpy backend runs on the CPU only" in err and "--device cuda" in err
    assert not (tmp_path / "x").exists()


def test_invalid_model_settings_exit_with_status_2_and_a_message(tmp_path, capsys):
    code = main([*QUICK, "--kl", "analytic", "--prior", "mixture", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "vae-course train: error:" in err and "no closed form" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_diverged_run_ends_with_a_message_not_a_traceback(tmp_path, capsys):
    with np.errstate(all="ignore"):
        code = main([*QUICK, "--lr", "1e6", "--out", str(tmp_path / "x")])
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "diverged" in err and "try --lr" in err


def test_a_diverged_run_keeps_its_last_good_state(tmp_path, capsys):
    folder = tmp_path / "x"
    with np.errstate(all="ignore"):
        code = main([*QUICK, "--lr", "1e6", "--out", str(folder)])
    assert code == 1
    assert f"last good state (after 0 epochs) is in {folder}/" in capsys.readouterr().err
    assert json.loads((folder / "run.json").read_text())["status"] == "diverged"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "diverged" in metrics["error"]
    load_vae(folder / "checkpoint.safetensors")  # the starting point, finite


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    folder = tmp_path / "r"
    assert main([*QUICK, "--epochs", "2", "--iwae-k", "0", "--limit", "64",
                 "--out", str(folder)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(folder), "--epochs", "1"]) == 0  # finished: nothing
    assert "nothing to do" in capsys.readouterr().out
    manifest = json.loads((folder / "run.json").read_text())
    manifest["status"] = "interrupted"  # as if Ctrl-C came during the final figures
    (folder / "run.json").write_text(json.dumps(manifest))
    assert main(["train", "--resume", str(folder), "--epochs", "1"]) == 2
    assert "--epochs 1: " in capsys.readouterr().err
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"


def test_resume_notes_other_versions(capsys):
    from vae_from_scratch.course.run import versions
    from vae_from_scratch.course.train_command import note_versions

    note_versions(versions(), versions())
    assert capsys.readouterr().out == ""
    note_versions({**versions(), "numpy": "1.0"}, versions())
    out = capsys.readouterr().out
    assert out.startswith("note: this run started with numpy 1.0; it continues with numpy ")


# --- the architectures and models of lessons 08 and 09 ------------------------------------------


@pytest.mark.lesson08
def test_train_a_conv_vae(tmp_path):
    out = tmp_path / "conv"
    assert main(["train", "--epochs", "1", "--iwae-k", "5", "--quiet", "--out", str(out),
                 "--architecture", "conv", "--channels", "4,8", "--limit", "200",
                 "--latent-dim", "2"]) == 0
    vae = load_vae(out / "checkpoint.safetensors")
    assert vae.config.architecture == "conv" and vae.config.channels == (4, 8)
    assert vae.config.hidden_dims == ()
    assert _is_png(out / "latent_manifold.png")


@pytest.mark.lesson09
def test_train_a_conditional_vae_draws_one_row_per_digit(tmp_path, x_test):
    out = _train(tmp_path / "cvae", "--conditional", "--limit", "300")
    vae = load_vae(out / "checkpoint.safetensors")
    assert vae.config.n_classes == 10
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["conditional"] is True
    assert np.isfinite(metrics["test_nll_iwae_k5"])
    assert _is_png(out / "samples.png")


@pytest.mark.lesson09
def test_train_with_the_continuous_bernoulli_and_free_bits(tmp_path):
    out = _train(tmp_path / "cb", "--likelihood", "continuous_bernoulli", "--free-bits", "0.1",
                 "--limit", "200")
    cfg = load_vae(out / "checkpoint.safetensors").config
    assert cfg.likelihood == "continuous_bernoulli" and cfg.free_bits == 0.1
    assert cfg.obs_var is None


def test_flags_of_the_other_architecture_are_refused(tmp_path, capsys):
    code = main([*QUICK, "--out", str(tmp_path / "x"), "--channels", "8"])
    assert code == 2
    err = capsys.readouterr().err
    assert "channels belongs to architecture='conv'" in err and "Traceback" not in err


def test_metrics_record_the_thread_count(tmp_path):
    out = tmp_path / "t"
    assert main(["--threads", "1", *QUICK, "--out", str(out), "--limit", "100"]) == 0
    assert json.loads((out / "metrics.json").read_text())["threads"] == 1
