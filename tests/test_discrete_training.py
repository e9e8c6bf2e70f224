"""Training a quantized bottleneck (lesson 11): fit with both backends, dead-code restarts
and the EMA inside training, a stopped and resumed run that ends bit for bit where a
straight one ends, and ``vae-course train --bottleneck vq|fsq`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae_from_scratch import VAE, data
from vae_from_scratch.course import run as runs
from vae_from_scratch.course.checkpoint import load_vae, read_state, save_state
from vae_from_scratch.course.cli import main
from vae_from_scratch.train import LoopState, NumpyBackend, fit

pytestmark = pytest.mark.lesson11

SMALL = dict(architecture="conv", channels=(8, 16), bottleneck="vq", codebook_size=8,
             code_dim=4)
STEPS = 3  # steps per epoch: 96 digits in batches of 32


@pytest.fixture(scope="module")
def digits():
    ds = data.load_mnist()
    return ds.x_train[:96], ds.x_test[:64]


def _numpy_backend(x_train, vae=None, **config):
    vae = vae or VAE(784, seed=2, **{**SMALL, **config})
    return NumpyBackend(vae, x_train, batch_size=32, lr=3e-3, seed=4)


def _restored(tmp_path, first, loop, make):
    """A stopped run through a state file into a fresh backend (``make(vae)``), as a resumed
    process does: (backend, loop)."""
    saved = {"backend": first.state_dict(), "loop": loop.to_dict()}
    params, cfg, state, _ = read_state(save_state(tmp_path / "state.safetensors",
                                                  first.to_vae(), saved))
    backend = make(VAE(config=cfg, params=params))
    backend.load_state_dict(state["backend"])
    return backend, LoopState.from_dict(state["loop"])


def _codes_used(vae, x):
    return vae.code_report(x)["codes_used"]


def test_restarts_inside_training_bring_dead_codes_back(digits):
    """From the collapsing initialisation, a few steps leave most codes unused; restarts
    every 2 steps put them back into use."""
    x_train, x_test = digits
    used = {}
    for every in (0, 2):
        backend = _numpy_backend(x_train, restart_every=every)
        fit(backend, None, epochs=2, progress=False)
        used[every] = _codes_used(backend.vae, x_test)
    assert used[2] > used[0], used


@pytest.mark.parametrize("config", [dict(restart_every=2),
                                    dict(codebook_update="ema", restart_every=4)])
@pytest.mark.parametrize("stop_at", [1, 4, 2 * STEPS])
def test_numpy_run_stopped_and_resumed_ends_bit_for_bit(digits, tmp_path, config, stop_at):
    x_train, x_test = digits
    straight = _numpy_backend(x_train, **config)
    h_straight = fit(straight, x_test, epochs=3, progress=False)

    first = _numpy_backend(x_train, **config)
    loop = LoopState()
    fit(first, x_test, epochs=3, progress=False, loop=loop,
        stop=lambda: first.steps_done >= stop_at)
    assert loop.stopped and loop.global_step == stop_at
    resumed, loop = _restored(tmp_path, first, loop, lambda vae: _numpy_backend(x_train, vae))
    h = fit(resumed, x_test, epochs=3, progress=False, loop=loop)
    for name, value in straight.vae.params.items():
        assert resumed.vae.params[name].tobytes() == value.tobytes(), name
    assert h.test_nelbo == h_straight.test_nelbo and h.train_loss == h_straight.train_loss


def test_torch_run_stopped_and_resumed_ends_bit_for_bit(digits, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    from vae_from_scratch.torch_vae import TorchBackend

    x_train, x_test = digits

    def backend(vae=None):
        vae = vae or VAE(784, seed=2, **SMALL, codebook_update="ema", restart_every=2)
        return TorchBackend(vae, x_train, batch_size=32, lr=3e-3, seed=4, device="cpu")

    straight = backend()
    h_straight = fit(straight, x_test, epochs=2, progress=False)
    first = backend()
    loop = LoopState()
    fit(first, x_test, epochs=2, progress=False, loop=loop, stop=lambda: first.steps_done >= 4)
    resumed, loop = _restored(tmp_path, first, loop, backend)
    h = fit(resumed, x_test, epochs=2, progress=False, loop=loop)
    for name, p in straight.model.params.items():
        assert torch.equal(resumed.model.params[name], p), name
    assert h.test_nelbo == h_straight.test_nelbo
    # the EMA and the restarts ran: the codebook moved away from its initialisation
    start = VAE(784, seed=2, **SMALL, codebook_update="ema", restart_every=2).params
    assert not np.allclose(straight.to_vae().params["vq.codebook"], start["vq.codebook"])


# --- vae-course train ---------------------------------------------------------------------------

CLI = ["train", "--architecture", "conv", "--channels", "8,16", "--limit", "96",
       "--batch-size", "32", "--iwae-k", "5", "--quiet"]


def _train(folder, *extra):
    assert main([*CLI, "--out", str(folder), *extra]) == 0
    return folder


def test_train_a_vq_vae_reports_rate_and_usage(tmp_path, capsys):
    folder = _train(tmp_path / "vq", "--epochs", "1", "--bottleneck", "vq", "--codebook-size",
                    "8", "--code-dim", "4", "--restart-every", "2")
    out = capsys.readouterr().out
    assert "rate 147.0 bits per digit" in out and "usage perplexity" in out
    metrics = json.loads((folder / runs.METRICS).read_text())
    vae = load_vae(folder / runs.CHECKPOINT)
    ds = data.load_mnist()
    pick = np.random.default_rng(0)  # --limit's fixed sample: training digits, then test
    pick.permutation(len(ds.x_train))
    test = ds.x_test[np.sort(pick.permutation(len(ds.x_test))[:96])]
    assert metrics["code"] == pytest.approx(vae.code_report(test))
    assert metrics["code"]["rate_bits"] == pytest.approx(49 * 3)
    assert not any(key.startswith("test_nll_iwae") for key in metrics)  # one-hot codes
    assert metrics["model"]["bottleneck"] == "vq" and metrics["model"]["codebook_size"] == 8
    assert set(vae.params) >= {"vq.codebook", "vq.usage", "enc.code.W", "dec.0.W"}
    for figure in ("reconstructions", "samples", "loss_curves"):
        assert (folder / f"{figure}.png").exists()


def test_train_fsq_and_ema_through_the_cli(tmp_path):
    fsq = _train(tmp_path / "fsq", "--epochs", "1", "--bottleneck", "fsq", "--levels", "4,4,2")
    assert json.loads((fsq / runs.METRICS).read_text())["code"]["n_codes"] == 32
    ema = _train(tmp_path / "ema", "--epochs", "1", "--bottleneck", "vq", "--codebook-update",
                 "ema")
    assert set(load_vae(ema / runs.CHECKPOINT).params) >= {"vq.ema_count", "vq.ema_sum"}


def test_resume_continues_exactly_with_the_codebook_state(tmp_path):
    flags = ["--bottleneck", "vq", "--codebook-size", "8", "--code-dim", "4",
             "--codebook-update", "ema", "--restart-every", "2"]  # 3 steps an epoch: odd
    straight = _train(tmp_path / "straight", "--epochs", "2", *flags)
    stopped = _train(tmp_path / "stopped", "--epochs", "1", *flags)
    assert main(["train", "--resume", str(stopped), "--epochs", "2", "--quiet"]) == 0
    assert (stopped / runs.CHECKPOINT).read_bytes() == (straight / runs.CHECKPOINT).read_bytes()


@pytest.mark.parametrize("flags, message", [
    (["--bottleneck", "vq"], "needs architecture='conv'"),  # the default, mlp
    (["--architecture", "conv", "--bottleneck", "vq", "--levels", "4,4"],
     "levels belongs to bottleneck='fsq'"),
    (["--codebook-size", "16"], "the gaussian bottleneck takes none"),
    (["--architecture", "conv", "--bottleneck", "fsq", "--commitment", "0.5"],
     "commitment belongs to bottleneck='vq'"),
])
def test_flags_that_do_not_apply_are_one_line_errors(tmp_path, capsys, flags, message):
    argv = ["train", "--epochs", "1", "--limit", "96", "--quiet", *flags]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_codebook_of_one_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*CLI, "--bottleneck", "vq", "--codebook-size", "1", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "expected an integer >= 2" in capsys.readouterr().err


def test_train_a_vq_vae_with_the_torch_backend(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    folder = _train(tmp_path / "torch", "--epochs", "1", "--bottleneck", "vq", "--backend",
                    "torch", "--device", "cpu", "--codebook-update", "ema")
    metrics = json.loads((folder / runs.METRICS).read_text())
    assert metrics["backend"] == "torch" and metrics["code"]["n_codes"] == 16
