"""A learner's work is never lost: their own copy (``vae-course start``), lessons that know
whether they were edited, a build that keeps edited lessons (or backs them up with
``--force``), and a test run that neither fails on their work nor sends them to a command
that would destroy it."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vae_from_scratch.course import start as start_module
from vae_from_scratch.course.cli import main
from vae_from_scratch.course.lessons import (
    DAMAGED,
    EDITED,
    MISSING,
    PRISTINE,
    backup_dir_for,
    build_lessons,
    committed_bytes,
    lesson_bytes,
    lesson_state,
    stale_lessons,
)
from vae_from_scratch.course.start import course_root, open_command, start_course

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "solutions" / "02_kl_divergence.ipynb"  # a quick one: three exercises
HAS_GIT = shutil.which("git") is not None

pytestmark = pytest.mark.lesson02


# -- what a learner does in JupyterLab ---------------------------------------------------------


def work_on(lesson: Path) -> bytes:
    """Edit a lesson as a learner in JupyterLab would: fill in exercise 2.1 with their code,
    run the cells (execution counts, outputs, timing metadata), and save the way JupyterLab
    does (nbformat's JSON). Returns the saved bytes."""
    nb = json.loads(lesson.read_text(encoding="utf-8"))
    count = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if 'raise NotImplementedError("Exercise 2.1' in source:
            source = re.sub(r"    # YOUR CODE HERE\n    raise NotImplementedError\(.*\)",
                            "    # my answer\n    return 0.5 * (log_var_p - log_var_q - 1.0 + "
                            "(np.exp(log_var_q) + (mu_q - mu_p) ** 2) / np.exp(log_var_p))",
                            source)
            cell["source"] = source.splitlines(keepends=True)
        count += 1
        cell["execution_count"] = count
        cell["metadata"]["execution"] = {"iopub.execute_input": "2025-01-01T10:00:00.000001Z"}
        if "check.kl_univariate(" in source:
            cell["outputs"] = [{"name": "stdout", "output_type": "stream",
                                "text": ["✓ Exercise 2.1 (kl_univariate): correct.\n"]}]
    nb["metadata"]["language_info"]["version"] = "3.12.1"
    data = (json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
    lesson.write_bytes(data)
    return data


def _course(tmp_path: Path, *, git: bool = False) -> Path:
    """A small copy of the course: lesson 02's solution and its generated lesson."""
    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(SOLUTION, root / "solutions")
    build_lessons(root / "solutions", root / "lessons")
    if git:
        _git(root, "init", "-q")
        _git(root, "add", "-A")
        _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "course")
    return root


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


# -- telling an edited lesson from a generated one ---------------------------------------------


def test_a_generated_lesson_is_pristine_and_a_worked_one_is_edited(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / SOLUTION.name
    assert lesson_state(lesson) == PRISTINE  # by the hash it carries
    work_on(lesson)
    assert lesson_state(lesson, SOLUTION) == EDITED
    assert lesson_state(root / "lessons" / "99_none.ipynb") == MISSING


def test_only_outputs_or_only_metadata_count_as_edits_too(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / SOLUTION.name
    nb = json.loads(lesson.read_text())
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]
    lesson.write_text(json.dumps(nb))
    assert lesson_state(lesson, SOLUTION) == EDITED
    lesson.write_text("{ not json")
    assert lesson_state(lesson, SOLUTION) == DAMAGED  # said as such, not "your edits"


def test_the_same_content_written_another_way_is_still_pristine(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / SOLUTION.name
    lesson.write_text(json.dumps(json.loads(lesson.read_text()), indent=2))
    assert lesson_state(lesson) == PRISTINE


def test_a_lesson_built_before_lessons_were_stamped_is_pristine_if_in_step(tmp_path):
    root = _course(tmp_path)
    lesson = root / "lessons" / SOLUTION.name
    nb = json.loads(lesson.read_text())
    del nb["metadata"]["vae_course"]
    lesson.write_text(json.dumps(nb))
    assert lesson_state(lesson, SOLUTION) == PRISTINE
    assert lesson_state(lesson) == EDITED  # without the solution there is no telling


# -- lessons build: keeps edits, or backs them up with --force ---------------------------------


def test_build_keeps_an_edited_lesson_and_says_what_to_do(tmp_path, monkeypatch, capsys):
    root = _course(tmp_path)
    lesson = root / "lessons" / SOLUTION.name
    mine = work_on(lesson)
    monkeypatch.chdir(root)
    assert main(["lessons", "build"]) == 1
    assert lesson.read_bytes() == mine
    out, err = capsys.readouterr()
    assert f"kept {Path('lessons') / SOLUTION.name}: it has your edits" in out
    assert "vae-course start" in err and "vae-course lessons build --force" in err
    assert not backup_dir_for(root / "lessons").exists()


def test_build_force_rewrites_an_edited_lesson_keeping_a_backup(tmp_path, monkeypatch, capsys):
    root = _course(tmp_path)
    lesson = root / "lessons" / SOLUTION.name
    mine = work_on(lesson)
    monkeypatch.chdir(root)
    assert main(["lessons", "build", "--force"]) == 0
    assert lesson.read_bytes() == lesson_bytes(SOLUTION)
    (backup,) = (root / "lessons-backups").glob("02_kl_divergence-*.ipynb")
    assert backup.read_bytes() == mine
    assert str(backup.relative_to(root)) in capsys.readouterr().out
    # a second forced build has nothing edited to back up
    mine_again = work_on(lesson)
    build_lessons(root / "solutions", root / "lessons", force=True)
    backups = sorted((root / "lessons-backups").glob("*.ipynb"))
    assert len(backups) == 2 and mine_again in [b.read_bytes() for b in backups]


def test_build_rewrites_a_pristine_lesson_whose_solution_changed(tmp_path):
    root = _course(tmp_path)
    solution = root / "solutions" / SOLUTION.name
    nb = json.loads(solution.read_text())
    nb["cells"][0]["source"] = ["# 02 · a new title\n"]
    solution.write_text(json.dumps(nb))
    (built,) = build_lessons(root / "solutions", root / "lessons")
    assert built.action == "written"
    assert built.path.read_bytes() == lesson_bytes(solution)


@pytest.mark.skipif(not HAS_GIT, reason="needs git")
def test_check_judges_an_edited_lesson_by_its_committed_version(tmp_path, monkeypatch, capsys):
    root = _course(tmp_path, git=True)
    lesson = root / "lessons" / SOLUTION.name
    work_on(lesson)
    assert committed_bytes(lesson) == lesson_bytes(SOLUTION)
    assert stale_lessons(root / "solutions", root / "lessons") == []
    monkeypatch.chdir(root)
    assert main(["lessons", "check"]) == 0
    assert "has your edits; judged by its committed version" in capsys.readouterr().out


def test_without_git_an_edited_lesson_is_not_judged(tmp_path):
    root = _course(tmp_path)
    work_on(root / "lessons" / SOLUTION.name)
    assert committed_bytes(root / "lessons" / SOLUTION.name) is None
    assert stale_lessons(root / "solutions", root / "lessons") == []


# -- vae-course start ------------------------------------------------------------------------


def test_start_copies_the_lessons_and_never_overwrites(tmp_path, monkeypatch, capsys):
    root = _course(tmp_path)
    monkeypatch.chdir(root)
    assert main(["start"]) == 0
    mine = root / "my-lessons" / SOLUTION.name
    assert mine.read_bytes() == (root / "lessons" / SOLUTION.name).read_bytes()
    out = capsys.readouterr().out
    assert f"copied 1 lesson(s) into {root / 'my-lessons'}/: {SOLUTION.name}" in out
    assert f"jupyter lab --ServerApp.root_dir=. my-lessons/{SOLUTION.name}" in out

    work = work_on(mine)
    shutil.copy(ROOT / "solutions" / "00_tour.ipynb", root / "solutions")
    build_lessons(root / "solutions", root / "lessons")  # a new lesson arrives
    assert main(["start"]) == 0
    out = capsys.readouterr().out
    assert f"copied 1 lesson(s) into {root / 'my-lessons'}/: 00_tour.ipynb" in out
    assert f"kept 1 already there (your work is never overwritten): {SOLUTION.name}" in out
    assert mine.read_bytes() == work
    assert "jupyter lab --ServerApp.root_dir=. my-lessons/00_tour.ipynb" in out


def test_start_into_another_folder_and_from_a_subfolder(tmp_path, monkeypatch):
    root = _course(tmp_path)
    (root / "notes").mkdir()
    monkeypatch.chdir(root / "notes")
    assert course_root() == root
    report = start_course("../elsewhere")
    assert report.folder == root / "elsewhere"
    assert [p.name for p in report.copied] == [SOLUTION.name]
    assert open_command(report) == (f"cd {root} && jupyter lab --ServerApp.root_dir=. "
                                    f"elsewhere/{SOLUTION.name}")
    with pytest.raises(ValueError, match="must not be lessons/ itself"):
        start_course(root / "lessons")


def test_start_outside_a_checkout_says_where_the_lessons_come_from(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setattr(start_module, "_PACKAGE_CHECKOUT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    assert main(["start"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vae-course start: error: no lessons/ folder in")
    assert "run this inside a clone" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not HAS_GIT, reason="needs git")
def test_the_learners_folders_are_ignored_by_git():
    for path in ("my-lessons/00_tour.ipynb", "lessons-backups/00_tour-20250101-100000.ipynb"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        if ignored.returncode == 128:
            pytest.skip("not a git checkout")
        assert ignored.returncode == 0, f"{path} is not git-ignored"


# -- the whole path: no course command loses a learner's edit ---------------------------------


def _run(root: Path, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)


def _course_command(text: str) -> list[str]:
    """A ``vae-course ...`` command line as this interpreter runs it."""
    return [sys.executable, "-m", "vae_from_scratch.course.cli", *shlex.split(text)[1:]]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GIT, reason="needs git")
def test_no_course_command_loses_a_lesson_edited_in_place(tmp_path):
    root = _course(tmp_path, git=True)
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, root)
    (root / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "test_lessons_build.py", root / "tests")
    lesson = root / "lessons" / SOLUTION.name
    mine = work_on(lesson)

    def work_is_safe():
        """The learner's bytes are in lessons/, in their own folder or in a backup."""
        places = [lesson, *(root / "my-lessons").glob("*.ipynb"),
                  *(root / "lessons-backups").glob("*.ipynb")]
        return any(p.read_bytes() == mine for p in places if p.is_file())

    for command in ("vae-course lessons build", "vae-course lessons check",
                    "vae-course start"):
        _run(root, _course_command(command))
        assert lesson.read_bytes() == mine, command

    # The README's test command: green, with the edited lesson skipped and explained.
    tested = _run(root, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"])
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert lesson.read_bytes() == mine
    assert "Skipped, because they have your edits: lessons/02_kl_divergence.ipynb" in \
        tested.stdout
    assert "Your work is safe and was not run" in tested.stdout

    # The one course command it names, as the README promises, overwrites nothing: it puts
    # the work where the learner carries on with it.
    named = sorted(set(re.findall(r"`(vae-course [^`]+)`", tested.stdout)))
    assert named == ["vae-course start"]
    assert "my-lessons/" in tested.stdout and "--force" not in tested.stdout
    for command in named:
        assert _run(root, _course_command(command)).returncode == 0, command
        assert work_is_safe(), command
    assert lesson.read_bytes() == mine
    assert (root / "my-lessons" / SOLUTION.name).read_bytes() == mine
