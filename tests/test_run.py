"""A run's lifecycle, through the real command line in a subprocess.

Bad output folders are refused before any training (one line, exit 2, no traceback, no
epoch, nothing written); Ctrl-C
(SIGINT) leaves a loadable checkpoint, a resumable state and metrics.json marked
interrupted, and exits 130; ``--resume`` then ends bit for bit where an uninterrupted run
ends; a folder holding a run is refused without ``--overwrite`` and replaced with it. The
folder rules themselves (vae_from_scratch.course.run) are also tested in-process.

The runs are tiny (784-32-2, a fixed sample of the digits, one BLAS thread) so that each
takes seconds. Run alone: ``pytest -n 0 tests/test_run.py -q -p no:cacheprovider``. No test
here asserts how long anything takes (a busy machine can be many times slower); the timeouts
only stop a hung subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vae_from_scratch.course import run as runs
from vae_from_scratch.course.checkpoint import load_vae, read_checkpoint, read_state

pytestmark = pytest.mark.lesson05

TINY = ["--hidden-dims", "32", "--latent-dim", "2", "--iwae-k", "0", "--quiet"]
FAST = [*TINY, "--limit", "256", "--batch-size", "64"]
# long epochs of small steps, so that a Ctrl-C lands inside an epoch
LONG = [*TINY, "--limit", "2048", "--batch-size", "8"]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",  # a fixed thread count: the same numbers, and fast on a busy CPU
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                   os.environ.get("PYTHONPATH", "")]),
}
COMMAND = [sys.executable, "-m", "vae_from_scratch.course.cli"]
HANG_GUARD = 600  # seconds: only a hung subprocess takes this long, however busy the machine


def _cli(*args, timeout=HANG_GUARD, cwd=None):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=cwd)


def _train(*args, timeout=HANG_GUARD, cwd=None):
    return _cli("train", *args, timeout=timeout, cwd=cwd)


def _assert_one_line_error(result, *fragments):
    """Exit 2 with one line on stderr naming ``fragments``, and nothing on stdout: no
    training started (it prints what it trains before its first epoch)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == "", result.stdout


def _tree(folder):
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def _fake_run(folder, status="finished", extra_files=()):
    """A folder holding a run as the CLI leaves it (manifest and listed files)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ["checkpoint.safetensors", "metrics.json", "samples.png", *extra_files]
    for name in files:
        (folder / name).write_bytes(b"old " + name.encode())
    manifest = {"format": runs.RUN_FORMAT, "format_version": 1, "status": status,
                "files": files}
    (folder / runs.MANIFEST).write_text(json.dumps(manifest))
    return folder


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --- the output folder, checked in-process ---------------------------------------------------


def test_a_new_or_empty_folder_is_fine_and_nothing_is_written(tmp_path):
    assert runs.check_new(tmp_path / "a" / "b") == []
    assert not (tmp_path / "a").exists()
    assert runs.check_new(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # the write probe left nothing


def test_a_folder_with_only_stale_temporaries_counts_as_empty(tmp_path):
    # the first manifest of a run killed before its rename: recognised by the id it carries
    run_id = "cd" * 16
    manifest = {"format": runs.RUN_FORMAT, "run_id": run_id, "status": "running", "files": []}
    leftover = runs.temporary_for(tmp_path, runs.MANIFEST, run_id)
    leftover.write_text(json.dumps(manifest))
    assert runs.check_new(tmp_path) == [leftover]  # to remove, once the folder is locked


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.write_text("x"), "is a file, not a folder"),
    (lambda p: p.parent.joinpath("file").write_text("x"), "cannot be created"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "holds no run"),
    (lambda p: _fake_run(p), "pass --overwrite to replace it"),
])
def test_folders_that_cannot_take_a_new_run(tmp_path, setup, message):
    target = tmp_path / "out"
    setup(target)
    if "cannot be created" in message:
        target = tmp_path / "file" / "out"
    with pytest.raises(runs.RunFolderError, match=message):
        runs.check_new(target)


def test_overwrite_removes_only_the_runs_own_files(tmp_path):
    folder = _fake_run(tmp_path / "run")
    removals = runs.check_new(folder, overwrite=True)
    assert [p.name for p in removals] == ["checkpoint.safetensors", "metrics.json",
                                          "samples.png", "run.json"]
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunFolderError, match="notes.txt, which --overwrite does not remove"):
        runs.check_new(folder, overwrite=True)
    (folder / "notes.txt").unlink()
    (folder / "samples.png").unlink()
    (folder / "samples.png").mkdir()  # a listed name that is now a folder
    with pytest.raises(runs.RunFolderError, match="samples.png"):
        runs.check_new(folder, overwrite=True)


def test_a_manifest_naming_files_outside_its_folder_is_refused(tmp_path):
    folder = _fake_run(tmp_path / "run")
    manifest = json.loads((folder / runs.MANIFEST).read_text())
    manifest["files"].append("../victim.txt")
    (folder / runs.MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "victim.txt").write_text("keep me")
    with pytest.raises(runs.RunFolderError, match="not a file the course writes"):
        runs.check_new(folder, overwrite=True)
    assert (tmp_path / "victim.txt").read_text() == "keep me"


def test_a_run_of_an_earlier_version_is_recognised(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    for name in ("checkpoint.safetensors", "samples.png"):
        (folder / name).write_text("old")
    (folder / "metrics.json").write_text('{"epochs_done": 1, "history": {}}')
    with pytest.raises(runs.RunFolderError, match="a run of an earlier version; pass --overwrite"):
        runs.check_new(folder)
    assert {p.name for p in runs.check_new(folder, overwrite=True)} == {
        "checkpoint.safetensors", "metrics.json", "samples.png"}


def test_a_folder_in_use_is_locked(tmp_path):
    with runs.Run.create(tmp_path / "run"):
        (tmp_path / "run" / runs.STATE).write_bytes(b"")  # reopen looks for it
        with pytest.raises(runs.RunFolderError, match="in use by another"):
            runs.Run.reopen(tmp_path / "run").close()
    runs.Run.reopen(tmp_path / "run").close()  # released


# --- bad output folders and devices through the command line -------------------------------


@pytest.mark.parametrize("place", ["a file", "below a file", "a folder of other files"])
def test_a_bad_out_is_refused_before_any_epoch_runs(tmp_path, place):
    (tmp_path / "file.txt").write_text("precious")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    out = {"a file": tmp_path / "file.txt", "below a file": tmp_path / "file.txt" / "run",
           "a folder of other files": tmp_path / "mine"}[place]
    before = _tree(tmp_path)
    # Not --quiet, so every epoch would print a line; three epochs that would each save.
    result = _train("--hidden-dims", "32", "--latent-dim", "2", "--iwae-k", "0", "--limit",
                    "256", "--batch-size", "64", "--epochs", "3", "--out", out, cwd=tmp_path)
    _assert_one_line_error(result)  # nothing on stdout: no "training ..." line, no epoch line
    assert "epoch" not in result.stderr
    assert _tree(tmp_path) == before  # no checkpoint, no state, no runs/ folder: nothing


def test_out_pointing_at_a_file_fails_fast_in_one_line(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("precious")
    _assert_one_line_error(_train(*FAST, "--out", target), "is a file, not a folder")
    assert target.read_text() == "precious"


def test_out_below_a_file_fails_fast_in_one_line(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    _assert_one_line_error(_train(*FAST, "--out", tmp_path / "file.txt" / "run"),
                           "cannot be created", "is a file")


def _read_only_place(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "run"
    if Path("/sys").is_dir():  # root ignores permissions, but not a pseudo file system
        return Path("/sys/vae-course-run")
    pytest.skip("no read-only place to test as root")


def test_out_in_a_read_only_place_fails_fast_in_one_line(tmp_path):
    target = _read_only_place(tmp_path)
    _assert_one_line_error(_train(*FAST, "--out", target), "cannot write in")
    assert not target.exists()


def test_out_holding_files_that_are_not_a_run_is_refused(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("mine")
    for extra in ([], ["--overwrite"]):
        _assert_one_line_error(_train(*FAST, "--out", folder, *extra), "holds no run",
                               "thesis.tex")
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]


def test_overwrite_keeps_what_the_user_put_beside_a_run(tmp_path):
    folder = _fake_run(tmp_path / "run")
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _assert_one_line_error(_train(*FAST, "--out", folder, "--overwrite"), "notes.txt")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.torch
@pytest.mark.parametrize("device, fragment", [("foo", "unknown device 'foo'"),
                                              ("cuda:7", "'cuda:7' is not available"),
                                              ("mps", "'mps' is not available")])
def test_a_device_this_machine_lacks_fails_before_training(tmp_path, device, fragment):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight GPUs")
    result = _train(*FAST, "--backend", "torch", "--device", device, "--out", tmp_path / "r")
    _assert_one_line_error(result, fragment, "this machine has: cpu")
    assert not (tmp_path / "r").exists()


@pytest.mark.torch
def test_compare_refuses_a_device_this_machine_lacks(tmp_path):
    _assert_one_line_error(_cli("compare", "--device", "foo"), "this machine has: cpu")


def test_numpy_backend_on_a_gpu_is_refused_in_one_line(tmp_path):
    _assert_one_line_error(_train(*FAST, "--device", "cuda", "--out", tmp_path / "r"),
                           "numpy backend runs on the CPU only")


def test_missing_mnist_names_the_data_dir_flag(tmp_path):
    result = _train(*FAST, "--data", "mnist", "--data-dir", tmp_path / "empty",
                    "--out", tmp_path / "r")
    _assert_one_line_error(result, "MNIST files not found", "--data-dir")
    assert "root=" not in result.stderr
    assert not (tmp_path / "r").exists()


# --- a run, Ctrl-C, --resume ----------------------------------------------------------------


def _epochs_in_checkpoint(path):
    try:
        return read_checkpoint(path)[2]["epochs"]
    except (FileNotFoundError, ValueError):
        return -1


def _interrupt(folder, *args, after_epoch=1):
    """Start a run, press Ctrl-C once ``after_epoch`` epochs are saved; the result."""
    hung = time.monotonic() + HANG_GUARD
    proc = subprocess.Popen([*COMMAND, "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        while _epochs_in_checkpoint(folder / runs.CHECKPOINT) < after_epoch:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < hung, "the run neither saved an epoch nor ended (hung?)"
            time.sleep(0.01)
        time.sleep(0.05)  # into the next epoch
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def _history(folder):
    history = json.loads((folder / runs.METRICS).read_text())["history"]
    history.pop("seconds")
    return history


def _params(folder):
    return load_vae(folder / runs.CHECKPOINT).params


def test_ctrl_c_saves_and_resume_ends_bit_for_bit_where_a_straight_run_ends(tmp_path):
    epochs = 4
    flags = [*LONG, "--epochs", epochs, "--binarize", "--kl-warmup", "300", "--seed", "3"]
    straight = tmp_path / "straight"
    assert _train(*flags, "--out", straight).returncode == 0

    stopped = tmp_path / "stopped"
    places = []
    for after in (1, 2):  # interrupt twice: in epoch 2, and again after resuming
        args = ["--out", stopped] if after == 1 else ["--resume", stopped]
        code, out, err = _interrupt(stopped, *flags, *args, after_epoch=after)
        assert code == 130, err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("interrupted ")
        assert f"Continue with: vae-course train --resume {stopped}" in lines[0]
        metrics = json.loads((stopped / runs.METRICS).read_text())
        assert metrics["interrupted"] is True and metrics["status"] == "interrupted"
        assert json.loads((stopped / runs.MANIFEST).read_text())["status"] == "interrupted"
        load_vae(stopped / runs.CHECKPOINT)  # loadable
        _, _, state, _ = read_state(stopped / runs.STATE)
        places.append((state["loop"]["epochs_done"], state["loop"]["step"]))
        assert state["loop"]["epochs_done"] < epochs
        assert _leftovers(stopped) == []

    result = _train("--resume", stopped)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert "note:" not in result.stdout  # same versions, same threads: nothing to warn of
    assert any(step > 0 for _, step in places), f"both stops fell on epoch ends: {places}"
    # the same model, byte for byte, and the same history
    assert (stopped / runs.CHECKPOINT).read_bytes() == (straight / runs.CHECKPOINT).read_bytes()
    a, b = _params(straight), _params(stopped)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert _history(stopped) == _history(straight)
    metrics = json.loads((stopped / runs.METRICS).read_text())
    assert metrics["interrupted"] is False and metrics["status"] == "finished"
    assert metrics["epochs_done"] == epochs
    assert metrics["threads"] == json.loads((straight / runs.METRICS).read_text())["threads"]
    print(f"stopped at (epochs done, step): {places}")

    again = _train("--resume", stopped)  # a finished run: nothing to do
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_resume_refuses_flags_that_differ_from_the_runs(tmp_path):
    folder = tmp_path / "run"
    assert _train(*FAST, "--epochs", 1, "--out", folder).returncode == 0
    before = (folder / runs.CHECKPOINT).read_bytes()
    _assert_one_line_error(_train("--resume", folder, "--latent-dim", 5, "--lr", "0.01"),
                           "--latent-dim 5 (the run has 2)", "--lr 0.01 (the run has 0.001)")
    _assert_one_line_error(_train("--resume", folder, "--overwrite"), "do not go together")
    _assert_one_line_error(_train("--resume", tmp_path / "nothing"), "does not exist")
    assert (folder / runs.CHECKPOINT).read_bytes() == before
    # the same values are no conflict, and --epochs may raise the total
    result = _train("--resume", folder, "--latent-dim", 2, "--epochs", 2)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((folder / runs.METRICS).read_text())
    assert metrics["epochs_done"] == 2 and metrics["history"]["epoch"] == [1, 2]


def test_resume_cleans_stale_temporaries_and_refuses_a_diverged_run(tmp_path):
    folder = tmp_path / "run"
    assert _train(*FAST, "--epochs", 1, "--out", folder).returncode == 0
    run_id = json.loads((folder / runs.MANIFEST).read_text())["run_id"]
    stale = runs.temporary_for(folder, runs.STATE, run_id)  # a name the run recorded
    stale.write_bytes(b"half a file from a killed process")
    assert _train("--resume", folder, "--epochs", 2).returncode == 0
    assert not stale.exists()
    manifest = json.loads((folder / runs.MANIFEST).read_text())
    manifest["status"] = "diverged"
    (folder / runs.MANIFEST).write_text(json.dumps(manifest))
    _assert_one_line_error(_train("--resume", folder, "--epochs", 3), "diverged")


def test_a_run_into_a_previous_runs_folder_needs_overwrite(tmp_path):
    folder = tmp_path / "run"
    first = _train(*FAST, "--epochs", 1, "--out", folder)
    assert first.returncode == 0, first.stderr
    assert "for 1 epoch;" in first.stdout  # not "1 epochs"
    assert (folder / "latent_scatter.png").is_file()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    again = _train(*FAST, "--epochs", 1, "--latent-dim", 3, "--out", folder)
    _assert_one_line_error(again, "holds a finished run", "--overwrite")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    replaced = _train(*FAST, "--epochs", 1, "--latent-dim", 3, "--out", folder, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    names = {p.name for p in folder.iterdir()}
    assert "latent_scatter.png" not in names and "latent_manifold.png" not in names
    manifest = json.loads((folder / runs.MANIFEST).read_text())
    assert set(manifest["files"]) | {runs.MANIFEST} == names
    assert load_vae(folder / runs.CHECKPOINT).latent_dim == 3


def test_identical_runs_write_identical_checkpoints(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        assert _train(*FAST, "--epochs", 2, "--out", folder).returncode == 0
    assert (a / runs.CHECKPOINT).read_bytes() == (b / runs.CHECKPOINT).read_bytes()
    metrics = json.loads((a / runs.METRICS).read_text())
    assert metrics["kl_estimator"] == "analytic" and metrics["interrupted"] is False
    assert np.isfinite(metrics["test_nelbo"])


def test_resume_with_other_threads_says_so_and_records_them(tmp_path):
    folder = tmp_path / "run"
    assert _train(*FAST, "--epochs", 1, "--out", folder, "--threads", "1").returncode == 0
    result = _train("--resume", folder, "--epochs", 2, "--threads", "2")
    assert result.returncode == 0, result.stderr
    assert "note: this run started with threads 1; it continues with threads 2" in result.stdout
    assert json.loads((folder / runs.METRICS).read_text())["threads"] == 2


def test_ctrl_c_after_the_last_epoch_lets_the_final_outputs_finish(tmp_path, monkeypatch,
                                                                    capsys):
    # Training is done once the IWAE estimate starts: a Ctrl-C there must neither throw the
    # estimate and figures away nor mark the finished run as interrupted.
    from vae_from_scratch import evaluate
    from vae_from_scratch.course.cli import main

    real = evaluate.iwae_nll

    def iwae_with_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the run's handler only notes the request
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "iwae_nll", iwae_with_ctrl_c)
    folder = tmp_path / "run"
    flags = [*FAST, "--epochs", "1", "--iwae-k", "5", "--threads", "1", "--out", str(folder)]
    assert main(["train", *flags]) == 0, capsys.readouterr().err
    metrics = json.loads((folder / runs.METRICS).read_text())
    assert metrics["status"] == "finished" and metrics["interrupted"] is False
    assert np.isfinite(metrics["test_nll_iwae_k5"])
    assert json.loads((folder / runs.MANIFEST).read_text())["status"] == "finished"
    assert (folder / "samples.png").is_file()
    assert "interrupted" not in capsys.readouterr().err
