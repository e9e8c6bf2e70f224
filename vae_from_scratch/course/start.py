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
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

__all__ = ["DEFAULT_FOLDER", "StartReport", "course_root", "open_command", "start_course"]

#: The learner's folder, at the repository root (listed in .gitignore).
DEFAULT_FOLDER = "my-lessons"


def _is_course_root(path: Path) -> bool:
    return (path / "lessons").is_dir() and any((path / "lessons").glob("*.ipynb")) \
        and (path / "solutions").is_dir()


#: The checkout this package was imported from, if it was installed from one.
_PACKAGE_CHECKOUT = Path(__file__).resolve().parents[1]


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
    """What :func:`start_course` did: the lessons it copied and those already there."""

    root: Path
    folder: Path
    copied: list[Path]
    kept: list[Path]


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
    copied, kept = [], []
    for lesson in sorted((root / "lessons").glob("*.ipynb")):
        target = folder / lesson.name
        if target.exists():
            kept.append(target)
            continue
        # Copy to a temporary name first, so a copy cut short never leaves half a notebook
        # under the real name (which the next start would then keep).
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(lesson, partial)
        os.replace(partial, target)
        copied.append(target)
    return StartReport(root, folder, copied, kept)


def open_argv(report: StartReport) -> tuple[Path, list[str]]:
    """(folder, argv): the JupyterLab command, run in that folder, that opens the first
    lesson with a file browser reaching the learner's folder, ``lessons/`` and
    ``solutions/``.

    JupyterLab roots its file browser at the folder it is given (``jupyter lab lessons/``
    shows nothing else), and at a notebook's own folder when given a notebook; so the
    command starts it in a folder above all three and says so with ``root_dir``."""
    first = min((p.name for p in report.copied + report.kept), default="")
    top = Path(os.path.commonpath([report.root, report.folder]))
    target = (report.folder / first).relative_to(top).as_posix() if first else \
        report.folder.relative_to(top).as_posix()
    return top, ["jupyter", "lab", "--ServerApp.root_dir=.", target]


def open_command(report: StartReport) -> str:
    """:func:`open_argv` as one shell command line (with a ``cd`` when it is needed)."""
    top, argv = open_argv(report)
    cd = f"cd {_quote(top)} && " if top != Path.cwd().resolve() else ""
    return cd + " ".join(_quote(a) for a in argv)


def _quote(path: str | Path) -> str:
    import shlex

    return shlex.quote(str(path))
