"""A run under faults: a second process, a user's files, files from another run, a full
disk, SIGTERM, Ctrl-C twice or during the final outputs, Ctrl-C while Python imports.

Each test is a case of the run folder's rules (the docstring of
``vae_from_scratch.course.run``), most through the real command line in a subprocess. The
runs are tiny (784-32-2, a fixed sample of the digits, one BLAS thread). A full disk is
made two ways: the fault-injection hook of ``vae_from_scratch.course.files``
(``VAE_COURSE_FAIL_WRITE``, everywhere) and a small tmpfs (only as root, where mount works).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.one_line import assert_one_line
from vae_from_scratch.course import run as runs
from vae_from_scratch.course.checkpoint import load_vae, read_checkpoint, read_state

pytestmark = pytest.mark.lesson05

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden-dims", "32", "--latent-dim", "2", "--iwae-k", "0", "--quiet"]
FAST = [*TINY, "--limit", "256", "--batch-size", "64"]
LONG = [*TINY, "--limit", "2048", "--batch-size", "8"]  # epochs of many small steps
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}
COMMAND = [sys.executable, "-m", "vae_from_scratch.course.cli"]


def _cli(*args, env=None, cwd=None, timeout=300):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, cwd=cwd, timeout=timeout)


def _train(*args, env=None, timeout=300):
    return _cli("train", *args, env=env, timeout=timeout)


def _manifest(folder):
    return json.loads((folder / runs.MANIFEST).read_text())


def _metrics(folder):
    return json.loads((folder / runs.METRICS).read_text())


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _epochs(folder):
    try:
        return read_checkpoint(folder / runs.CHECKPOINT)[2]["epochs"]
    except (FileNotFoundError, ValueError):
        return -1


def _start(folder, *args):
    """A long run in the background, once it has saved its first epoch."""
    argv = [*LONG, "--epochs", 50, "--out", folder, *args]
    proc = subprocess.Popen([*COMMAND, "train", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    start = time.monotonic()
    while _epochs(folder) < 1:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        if time.monotonic() - start > 180:
            proc.kill()
            raise AssertionError("no epoch was saved in three minutes")
        time.sleep(0.02)
    return proc


def _stop(proc, signum=signal.SIGINT):
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


# --- the lock first: a running run is never replaced ---------------------------------------


def test_overwrite_of_a_running_run_is_refused_and_removes_nothing(tmp_path):
    folder = tmp_path / "run"
    proc = _start(folder)
    try:
        before = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        plain = _train(*FAST, "--epochs", 1, "--out", folder)
        line = assert_one_line(plain, 2, "a run is training there now")
        assert "--overwrite" not in line  # it must not send the user to replace a live run
        replaced = _train(*FAST, "--epochs", 1, "--out", folder, "--overwrite")
        assert_one_line(replaced, 2, "a run is training there now")
        resumed = _train("--resume", folder)
        assert_one_line(resumed, 2, "a run is training there now")
        after = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert set(before) <= set(after), (before, after)
        assert proc.poll() is None  # the live run goes on
    finally:
        code, _, err = _stop(proc)
    assert code == 130, err
    assert _manifest(folder)["status"] == "interrupted"
    load_vae(folder / runs.CHECKPOINT)


# --- the course deletes only files it wrote itself --------------------------------------------


def test_a_users_file_shaped_like_a_temporary_is_never_removed(tmp_path):
    precious = b"precious"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / ".thesis.a1b2c3d4.tmp").write_bytes(precious)
    assert_one_line(_train(*FAST, "--epochs", 1, "--out", alone), 2, "not empty", ".thesis")
    assert (alone / ".thesis.a1b2c3d4.tmp").read_bytes() == precious

    folder = tmp_path / "run"
    assert _train(*FAST, "--epochs", 1, "--out", folder).returncode == 0
    mine = [folder / ".thesis.a1b2c3d4.tmp", folder / ".checkpoint.safetensors.0badbeef.tmp"]
    for path in mine:
        path.write_bytes(precious)
    resumed = _train("--resume", folder, "--epochs", 2)
    assert resumed.returncode == 0, resumed.stderr
    assert all(path.read_bytes() == precious for path in mine)
    assert_one_line(_train(*FAST, "--epochs", 1, "--out", folder, "--overwrite"), 2,
              "which --overwrite does not remove")
    assert all(path.read_bytes() == precious for path in mine)


def test_a_manifest_listing_a_users_file_is_refused(tmp_path):
    folder = tmp_path / "run"
    assert _train(*FAST, "--epochs", 1, "--out", folder).returncode == 0
    (folder / "thesis.txt").write_text("precious")
    manifest = _manifest(folder)
    manifest["files"].append("thesis.txt")
    (folder / runs.MANIFEST).write_text(json.dumps(manifest))
    before = _files(folder)
    assert_one_line(_train(*FAST, "--epochs", 1, "--out", folder, "--overwrite"), 2,
              "thesis.txt", "not a file the course writes")
    assert _files(folder) == before


def test_a_users_own_checkpoint_is_not_taken_for_a_run(tmp_path):
    folder = tmp_path / "mine"
    assert _train(*FAST, "--epochs", 1, "--out", tmp_path / "run").returncode == 0
    folder.mkdir()
    shutil.copy(tmp_path / "run" / runs.CHECKPOINT, folder)
    before = _files(folder)
    assert_one_line(_train(*FAST, "--epochs", 1, "--out", folder, "--overwrite"), 2, "holds no run")
    assert _files(folder) == before


def test_resume_removes_the_runs_own_leftovers_even_when_it_refuses(tmp_path):
    # a run killed before its first state save: a manifest and the temporaries it recorded
    folder = tmp_path / "run"
    folder.mkdir()
    run_id = "ab" * 16
    manifest = {"format": runs.RUN_FORMAT, "format_version": 2, "run_id": run_id,
                "status": "running", "files": [runs.STATE, runs.CHECKPOINT]}
    (folder / runs.MANIFEST).write_text(json.dumps(manifest))
    leftovers = [runs.temporary_for(folder, name, run_id)
                 for name in (runs.MANIFEST, runs.STATE)]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert_one_line(_train("--resume", folder), 2, "saved no state")
    assert not any(path.exists() for path in leftovers)
    # and a new run there (with --overwrite) starts clean
    replaced = _train(*FAST, "--epochs", 1, "--out", folder, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


# --- one run id for a run's files ---------------------------------------------------------------


@pytest.mark.parametrize("name", [runs.STATE, runs.CHECKPOINT])
def test_a_file_from_another_run_is_refused_on_resume(tmp_path, name):
    other, run = tmp_path / "other", tmp_path / "run"
    assert _train(*FAST, "--epochs", 1, "--out", other).returncode == 0
    flags = [*FAST[:2], "--latent-dim", "5", *FAST[4:]]
    assert _train(*flags, "--epochs", 1, "--out", run).returncode == 0
    shutil.copy(other / name, run / name)
    manifest = _manifest(run)
    manifest["status"] = "interrupted"  # as if it had been stopped
    (run / runs.MANIFEST).write_text(json.dumps(manifest))
    before = _files(run)
    line = assert_one_line(_train("--resume", run, "--epochs", 2), 2, name,
                           "not from this folder's run")
    assert manifest["run_id"][:8] in line
    assert _files(run) == before
    ids = {read_state(run / runs.STATE)[3]["run_id"], _metrics(run)["run_id"],
           read_checkpoint(other / runs.CHECKPOINT)[2]["run_id"], manifest["run_id"]}
    assert len(ids) == 2  # the run's own files carry its id; the other run's, another


# --- a full disk, a name too long ---------------------------------------------------------------


def _check_failed_run(folder, result, epochs_kept):
    line = assert_one_line(result, 1, "No space left on device", f"--resume {folder}")
    assert "state.safetensors" in line
    assert _manifest(folder)["status"] == "failed"
    assert _metrics(folder)["status"] == "failed"
    _, _, state, _ = read_state(folder / runs.STATE)
    assert state["loop"]["epochs_done"] == epochs_kept
    assert f"after {epochs_kept} epoch" in line
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_full_disk_during_a_save_ends_in_one_line_and_the_run_resumes(tmp_path):
    folder = tmp_path / "run"
    # saves: the starting point, then after epochs 1, 2, 3; the fourth write fails
    full = _train(*FAST, "--epochs", 4, "--out", folder,
                  env={"VAE_COURSE_FAIL_WRITE": "state.safetensors:4"})
    _check_failed_run(folder, full, 2)
    resumed = _train("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    assert _train(*FAST, "--epochs", 4, "--out", straight).returncode == 0
    assert (folder / runs.CHECKPOINT).read_bytes() == (straight / runs.CHECKPOINT).read_bytes()


def _mount_tmpfs(where, size):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the fault-injection test covers it")
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


@pytest.mark.slow
def test_a_real_full_disk_ends_in_one_line_and_the_run_resumes_elsewhere(tmp_path):
    sizes = tmp_path / "sizes"
    assert _train(*FAST, "--epochs", 1, "--out", sizes).returncode == 0
    state = (sizes / runs.STATE).stat().st_size
    checkpoint = (sizes / runs.CHECKPOINT).stat().st_size
    disk = tmp_path / "disk"
    # room for a state, a checkpoint and the small files: not for the next state beside them
    _mount_tmpfs(disk, state + checkpoint + state // 2 + 65536)
    try:
        folder = disk / "run"
        full = _train(*FAST, "--epochs", 3, "--out", folder)
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        line = assert_one_line(full, 1, "No space left on device")
        assert "is kept" in line
        moved = tmp_path / "moved"
        shutil.copytree(folder, moved)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    resumed = _train("--resume", moved)
    assert resumed.returncode == 0, resumed.stderr
    assert _manifest(moved)["status"] == "finished"


def test_an_out_name_too_long_ends_inassert_one_line(tmp_path):
    assert_one_line(_train(*FAST, "--epochs", 1, "--out", tmp_path / ("x" * 300)), 2,
              "File name too long")


# --- SIGTERM, Ctrl-C twice, Ctrl-C during the final outputs, Ctrl-C while importing -----------


def test_sigterm_saves_marks_the_run_and_exits_143(tmp_path):
    folder = tmp_path / "run"
    proc = _start(folder)
    code, _, err = _stop(proc, signal.SIGTERM)
    assert code == 143, err
    assert "Traceback" not in err
    assert "interrupted by SIGTERM" in err and f"--resume {folder}" in err
    assert _manifest(folder)["status"] == "interrupted"
    metrics = _metrics(folder)
    assert metrics["interrupted"] is True and metrics["signal"] == "SIGTERM"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    _, _, state, _ = read_state(folder / runs.STATE)
    assert state["loop"]["epochs_done"] >= 1


def _main_with_signals_at(monkeypatch, capsys, where, count, *flags):
    """Run the CLI in this process, sending SIGINT ``count`` times from inside ``where``
    (a (module, name) whose function is wrapped), the first time it is called."""
    from vae_from_scratch.course.cli import main

    module, name = where
    real = getattr(module, name)
    sent = []

    def with_signals(*args, **kwargs):
        if not sent:
            for _ in range(count):
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # each handler runs before the next signal
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, with_signals)
    code = main(["train", *flags])
    return code, capsys.readouterr()


def test_ctrl_c_twice_stops_at_once_and_marks_the_run(tmp_path, monkeypatch, capsys):
    from vae_from_scratch.train import NumpyBackend

    folder = tmp_path / "run"
    flags = [*FAST, "--epochs", 3, "--threads", 1, "--out", folder]
    # both signals inside the first step: the second one stops at once
    code, out = _main_with_signals_at(monkeypatch, capsys, (NumpyBackend, "step"), 2,
                                      *map(str, flags))
    assert code == 130
    assert "Traceback" not in out.err
    assert "interrupted at once" in out.err and f"--resume {folder}" in out.err
    assert _manifest(folder)["status"] == "interrupted"
    metrics = _metrics(folder)
    assert metrics["interrupted"] is True and metrics["stopped_at_once"] is True
    _, _, state, _ = read_state(folder / runs.STATE)  # the starting point, as saved
    assert state["loop"]["epochs_done"] == 0 and state["loop"]["step"] == 0
    resumed = _train("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("count", [1, 2])
def test_ctrl_c_during_the_final_outputs_says_what_happens(tmp_path, monkeypatch, capsys,
                                                          count):
    from vae_from_scratch import evaluate

    folder = tmp_path / "run"
    flags = [*FAST, "--epochs", "1", "--iwae-k", "5", "--threads", "1", "--out", str(folder)]
    code, out = _main_with_signals_at(monkeypatch, capsys, (evaluate, "iwae_nll"), count,
                                      *flags)
    assert "Traceback" not in out.err
    assert "finishing the IWAE estimate and the figures" in out.err
    assert _manifest(folder)["status"] == "finished"
    metrics = _metrics(folder)
    assert metrics["status"] == "finished" and metrics["interrupted"] is False
    if count == 1:  # the first lets them finish
        assert code == 0
        assert np.isfinite(metrics["test_nll_iwae_k5"])
        assert (folder / "samples.png").is_file()
    else:  # the second skips them, and says so
        assert code == 130
        assert "the IWAE estimate and the figures were skipped" in out.err
        assert metrics["final_outputs"] == "skipped (interrupted)"
        assert "test_nll_iwae_k5" not in metrics
        load_vae(folder / runs.CHECKPOINT)


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_python_imports_ends_quietly(signame, code):
    # a real signal, sent by the process to itself when the command starts importing NumPy
    script = (
        "import builtins, os, signal, sys\n"
        "real = builtins.__import__\n"
        "def hook(name, *args, **kwargs):\n"
        "    if name == 'numpy':\n"
        "        builtins.__import__ = real\n"
        f"        os.kill(os.getpid(), signal.{signame})\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hook\n"
        "sys.argv = ['vae-course', 'train', '--help']\n"
        "import vae_course\n"
        "sys.exit(vae_course.main())\n"
    )
    # A shell's background job inherits SIGINT ignored, and Python then keeps ignoring it: give
    # the child the disposition a learner's terminal gives, whatever this process was started with.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=ENV, timeout=120, preexec_fn=_default_sigint)
    assert result.returncode == code, result.stderr
    assert result.stderr == "" and result.stdout == ""


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_installed_command_is_the_quiet_entry_point():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vae-course"] == "vae_course:main"
