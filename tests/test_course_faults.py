"""The course's other commands under faults: a full disk or a read-only place while lessons
are built or copied, damaged lessons, a backup folder that is a file, a download server that
sends its headers one byte at a time, and the two ``vae-course start`` slips (root, a
folder outside the checkout).

Each case ends in one line and a non-zero exit status, never a traceback, and never loses
or hides a learner's file. A full disk is the fault-injection hook of
``vae_from_scratch.course.files`` (``VAE_COURSE_FAIL_WRITE``); a read-only place is a
read-only tmpfs as root (permissions do not stop root), a folder without write permission
otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.one_line import assert_one_line
from vae_from_scratch.course import start as start_module
from vae_from_scratch.course.cli import main
from vae_from_scratch.course.lessons import DAMAGED, PRISTINE, build_lessons, lesson_state

pytestmark = pytest.mark.lesson02

ROOT = Path(__file__).resolve().parents[1]
NAME = "02_kl_divergence.ipynb"  # a small lesson
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
COMMAND = [sys.executable, "-m", "vae_from_scratch.course.cli"]


def _course(parent: Path) -> Path:
    root = parent / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / NAME, root / "solutions")
    build_lessons(root / "solutions", root / "lessons")
    return root


def _cli(root, *args, env=None, timeout=120):
    return subprocess.run([*COMMAND, *map(str, args)], cwd=root, capture_output=True,
                          text=True, env={**ENV, **(env or {})}, timeout=timeout)


def _change_solution(root):
    """Edit the solution so that the next build rewrites the lesson."""
    path = root / "solutions" / NAME
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "markdown", "id": "added0", "metadata": {},
                        "source": ["A new closing note."]})
    path.write_text(json.dumps(nb, indent=1))


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --- full disks and read-only places ----------------------------------------------------------


def test_a_full_disk_during_lessons_build_leaves_the_lesson_whole(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / NAME
    before = lesson.read_bytes()
    _change_solution(root)
    full = _cli(root, "lessons", "build", env={"VAE_COURSE_FAIL_WRITE": f"{NAME}:1"})
    assert_one_line(full, 1, "No space left on device", str(Path("lessons") / NAME))
    assert lesson.read_bytes() == before  # the old lesson, whole: not half of the new one
    assert lesson_state(lesson) == PRISTINE
    assert _hidden(root / "lessons") == []
    assert _cli(root, "lessons", "build").returncode == 0  # room again: the new lesson
    assert lesson.read_bytes() != before and lesson_state(lesson) == PRISTINE


def _read_only(folder: Path) -> None:
    """Make ``folder`` (holding files) read-only, even for root; skip where that fails."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        keep = folder.with_name(folder.name + "-content")
        shutil.copytree(folder, keep)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs",
                                  str(folder)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        for item in keep.iterdir():
            shutil.copy2(item, folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        folder.chmod(0o555)


def _release(folder: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
    else:
        folder.chmod(0o755)


def test_a_read_only_lessons_folder_ends_inassert_one_line(tmp_path):
    root = _course(tmp_path)
    _change_solution(root)
    _read_only(root / "lessons")
    try:
        assert_one_line(_cli(root, "lessons", "build"), 1, NAME)
    finally:
        _release(root / "lessons")


def test_start_into_a_read_only_folder_or_below_a_file_ends_inassert_one_line(tmp_path):
    root = _course(tmp_path)
    mine = root / "my-lessons"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    _read_only(mine)
    try:
        assert_one_line(_cli(root, "start", "--no-lab"), 1, NAME)
    finally:
        _release(mine)
    (root / "afile").write_text("a file")
    assert_one_line(_cli(root, "start", "--no-lab", "afile/sub"), 1, "afile")
    assert (root / "afile").read_text() == "a file"


def test_force_with_a_backup_folder_that_is_a_file_ends_inassert_one_line(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / NAME
    lesson.write_text(lesson.read_text().replace("Exercise 2.1", "Exercise 2.1 (mine)", 1))
    mine = lesson.read_bytes()
    (root / "lessons-backups").write_text("a file")
    assert_one_line(_cli(root, "lessons", "build", "--force"), 2, "lessons-backups", "is a file")
    assert lesson.read_bytes() == mine


# --- damaged lessons ----------------------------------------------------------------------------


def test_a_damaged_lesson_is_called_damaged_and_never_copied(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / NAME
    whole = lesson.read_bytes()
    lesson.write_bytes(whole[: len(whole) // 2])  # what a full disk left in place before
    half = lesson.read_bytes()
    assert lesson_state(lesson, root / "solutions" / NAME) == DAMAGED

    built = _cli(root, "lessons", "build")
    assert built.returncode == 1 and "Traceback" not in built.stderr
    assert f"kept lessons/{NAME}: it is damaged" in built.stdout
    assert "your edits" not in built.stdout + built.stderr
    assert lesson.read_bytes() == half

    started = _cli(root, "start", "--no-lab")
    assert started.returncode == 0, started.stderr
    assert "is damaged" in started.stderr and "not copied" in started.stderr
    assert not (root / "my-lessons" / NAME).exists()

    forced = _cli(root, "lessons", "build", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "the damaged file is kept in" in forced.stdout
    assert lesson.read_bytes() == whole
    assert [p.read_bytes() for p in (root / "lessons-backups").iterdir()] == [half]

    # a damaged copy already in my-lessons/ (an earlier version copied it): moved aside
    (root / "my-lessons").mkdir(exist_ok=True)
    (root / "my-lessons" / NAME).write_bytes(half)
    again = _cli(root, "start", "--no-lab")
    assert again.returncode == 0, again.stderr
    assert (root / "my-lessons" / NAME).read_bytes() == whole
    aside = [p for p in (root / "my-lessons").iterdir() if ".damaged-" in p.name]
    assert [p.read_bytes() for p in aside] == [half]


def test_a_lesson_whose_metadata_is_a_list_ends_without_a_traceback(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / NAME
    nb = json.loads(lesson.read_text())
    nb["metadata"] = ["not", "a", "table"]
    lesson.write_text(json.dumps(nb))
    for action in ("build", "check"):
        result = _cli(root, "lessons", action)
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr
        assert '"metadata" is not a table' in result.stdout, (action, result.stdout)


# --- the download deadline ----------------------------------------------------------------------


class _DrippingServer:
    """Accepts connections and sends a status line and headers one byte at a time, for
    ever: each byte restarts a read timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        text = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 60000
        with conn:
            for i in range(len(text)):
                if self.stop.is_set():
                    return
                try:
                    conn.sendall(text[i:i + 1])
                except OSError:
                    return
                time.sleep(0.1)

    def close(self):
        self.stop.set()
        self.sock.close()


def test_the_deadline_bounds_a_server_that_drips_its_headers(tmp_path):
    server = _DrippingServer()
    try:
        # --timeout 5 is never reached (a byte every 0.1 s); only the deadline can end it.
        # The subprocess timeout only keeps a broken version from hanging the suite.
        result = _cli(tmp_path, "download", "mnist", "--dest", tmp_path / "mnist",
                      "--mirror", f"http://127.0.0.1:{server.port}/", "--timeout", "5",
                      "--deadline", "2", timeout=90)
    finally:
        server.close()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "longer than its deadline of 2 s" in result.stderr
    assert not any(p.name.endswith(".part") for p in (tmp_path / "mnist").iterdir())


# --- vae-course start: as root, and into a folder outside the checkout -----------------------


def test_start_as_root_passes_allow_root_and_says_why(tmp_path, monkeypatch, capsys):
    root = _course(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert main(["start", "--no-lab"]) == 0
    out = capsys.readouterr().out
    assert "running as root" in out and "--allow-root" in out
    assert f"jupyter lab --ServerApp.root_dir=. my-lessons/{NAME} --allow-root" in out
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["start", "--no-lab"]) == 0
    assert "--allow-root" not in capsys.readouterr().out


def test_start_into_a_folder_outside_the_checkout_says_where_the_browser_is_rooted(
        tmp_path, monkeypatch, capsys):
    root = _course(tmp_path)
    outside = tmp_path / "elsewhere" / "mine"
    monkeypatch.chdir(root)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["start", "--no-lab", str(outside)]) == 0
    out = capsys.readouterr().out
    assert f"the file browser is rooted at {outside}/" in out
    assert f"lessons/ and solutions/ stay in {root}/, outside it" in out
    assert f"cd {outside} && jupyter lab --ServerApp.root_dir=. {NAME}" in out
    assert "reaches" not in out


def test_start_from_outside_the_checkout_finds_the_installed_checkouts_lessons(tmp_path,
                                                                               monkeypatch):
    if Path(start_module.__file__).resolve().parents[2] != ROOT:
        pytest.skip("the package is not imported from this checkout")
    monkeypatch.chdir(tmp_path)
    assert start_module.course_root() == ROOT
