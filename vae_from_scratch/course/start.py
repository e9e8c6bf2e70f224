"""``vae-course start``: the learner's own copy of the lessons.

Learners work in a folder of their own, ``my-lessons/`` at the repository root (git-ignored),
so that nothing the course does to ``lessons/`` (rebuilding it from ``solutions/``, pulling a
new version of the course) can touch their work. :func:`start_course` copies every lesson
notebook that is not there yet and never overwrites one that is: run it again after pulling
a new lesson and it copies just that one.

The lessons are found in the checkout you are in (the current directory or one above it),
or else in the checkout the package was installed from (``pip install -e .`` from a clone);
a package installed without the repository has no lessons to copy, and :func:`course_root`
says so.

Each copy is written atomically (:mod:`vae_from_scratch.course.files`). A damaged lesson
(not a readable notebook: :func:`vae_from_scratch.course.lessons.damage`) is never copied;
a damaged copy already in the learner's folder (left by a cut-short write, or copied from a
damaged lesson by an earlier version) is moved aside to ``NAME.ipynb.damaged-<time>``,
never deleted, and a fresh copy takes its place.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from vae_from_scratch.course.files import atomic_write_bytes
from vae_from_scratch.course.lessons import damage

__all__ = ["DEFAULT_FOLDER", "StartReport", "browser_reach", "course_root", "open_argv",
           "open_command", "start_course"]

#: The learner's folder, at the repository root (listed in .gitignore).
DEFAULT_FOLDER = "my-lessons"


def _is_course_root(path: Path) -> bool:
    return (path / "lessons").is_dir() and any((path / "lessons").glob("*.ipynb")) \
        and (path / "solutions").is_dir()


#: The checkout this package was imported from, if it was installed from one
#: (vae_from_scratch/course/start.py -> the folder holding vae_from_scratch/).
_PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]


def course_root() -> Path:
    """The checkout that holds ``lessons/`` and ``solutions/``.

    First the current directory or the nearest folder above it that is one, then the
    checkout this package was imported from (an editable install). Raises
    FileNotFoundError, saying what to do, when neither has the lessons.
    """
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents, _PACKAGE_CHECKOUT):
        if _is_course_root(candidate):
            return candidate
    raise FileNotFoundError(
        f"no lessons/ folder in {here}, above it or beside the installed package: the "
        "lessons come with the course's repository, so run this inside a clone of it "
        "(installed with pip install -e '.[dev]')"
    )


@dataclasses.dataclass(frozen=True)
class StartReport:
    """What :func:`start_course` did: the lessons it copied, those already there, the
    damaged lessons it did not copy (lesson path -> why) and the damaged copies it moved
    aside (copy -> where it went)."""

    root: Path
    folder: Path
    copied: list[Path]
    kept: list[Path]
    damaged: dict[Path, str] = dataclasses.field(default_factory=dict)
    moved: dict[Path, Path] = dataclasses.field(default_factory=dict)


def start_course(folder: str | Path | None = None) -> StartReport:
    """Copy the course's lessons into ``folder`` (default ``<root>/my-lessons``), copying only
    the notebooks that are not there yet; an existing file is never overwritten.

    ``folder`` relative to the current directory; the root is the checkout
    :func:`course_root` finds.
    """
    root = course_root()
    folder = root / DEFAULT_FOLDER if folder is None else Path(folder).resolve()
    if folder == (root / "lessons").resolve():
        raise ValueError("the folder to start in must not be lessons/ itself: pick another, "
                         f"e.g. {DEFAULT_FOLDER}/")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    report = StartReport(root, folder, [], [])
    for lesson in sorted((root / "lessons").glob("*.ipynb")):
        target = folder / lesson.name
        data = lesson.read_bytes()
        problem = damage(data)
        if problem:
            report.damaged[lesson] = problem
        if target.exists() or target.is_symlink():
            if not target.is_file() or not damage(target.read_bytes()) or problem:
                report.kept.append(target)
                continue
            aside = _aside(target)
            os.replace(target, aside)  # the damaged copy is kept, under another name
            report.moved[target] = aside
        if problem:
            continue
        atomic_write_bytes(target, data)  # a copy cut short never leaves half a notebook
        report.copied.append(target)
    return report


def _aside(target: Path) -> Path:
    """A name no file has yet for a damaged copy: ``NAME.damaged-<time>[-k]``."""
    stem = f"{target.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, k = target.with_name(stem), 1
    while aside.exists() or aside.is_symlink():
        aside, k = target.with_name(f"{stem}-{k}"), k + 1
    return aside


def open_argv(report: StartReport, as_root: bool = False) -> tuple[Path, list[str]]:
    """(folder, argv): the JupyterLab command, run in that folder, that opens the first
    lesson; its file browser is rooted at that folder (:func:`browser_reach` says what it
    reaches).

    JupyterLab roots its file browser at the folder it is given (``jupyter lab lessons/``
    shows nothing else), and at a notebook's own folder when given a notebook; so for a
    learner's folder inside the checkout the command starts it at the checkout's root,
    which reaches all three. A folder outside the checkout is its own root (rooting the
    browser at a common ancestor such as ``/`` would show the whole disk). ``as_root``:
    add ``--allow-root``, without which JupyterLab refuses to run as root."""
    first = min((p.name for p in report.copied + report.kept), default="")
    top = report.root if _inside(report.folder, report.root) else report.folder
    target = (report.folder / first).relative_to(top).as_posix() if first else \
        report.folder.relative_to(top).as_posix()
    return top, ["jupyter", "lab", "--ServerApp.root_dir=.", target,
                 *(["--allow-root"] if as_root else [])]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def browser_reach(report: StartReport) -> str:
    """Where the file browser of :func:`open_argv` is rooted and what it reaches, truly."""
    top, _ = open_argv(report)
    if top == report.root:
        mine = report.folder.relative_to(top).as_posix()
        return f"the file browser then reaches {mine}/, lessons/ and solutions/"
    return (f"the file browser is rooted at {top}/; the course's lessons/ and solutions/ stay "
            f"in {report.root}/, outside it")


def open_command(report: StartReport, as_root: bool = False) -> str:
    """:func:`open_argv` as one shell command line (with a ``cd`` when it is needed)."""
    top, argv = open_argv(report, as_root)
    cd = f"cd {_quote(top)} && " if top != Path.cwd().resolve() else ""
    return cd + " ".join(_quote(a) for a in argv)


def _quote(path: str | Path) -> str:
    import shlex

    return shlex.quote(str(path))
