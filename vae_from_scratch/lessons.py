"""Build the learner notebooks in ``lessons/`` from the solved ones in ``solutions/``.

Solutions are written once. Inside a code cell, the part the learner writes is fenced::

    def class_means(x, y, n_classes=10):
        \"\"\"x (N, D), y (N,) -> (n_classes, D).\"\"\"
        ### BEGIN SOLUTION
        return np.stack([x[y == k].mean(axis=0) for k in range(n_classes)])
        ### END SOLUTION

and the lesson gets, at the indentation of the fence::

    def class_means(x, y, n_classes=10):
        \"\"\"x (N, D), y (N,) -> (n_classes, D).\"\"\"
        # YOUR CODE HERE
        raise NotImplementedError("Exercise 0.1: implement class_means")

The stub names its exercise: "Exercise <lesson>.<k>" where the lesson number is the
notebook's file-name prefix (``02_kl.ipynb`` -> 2) and k counts the fences of the notebook
in order (code and markdown alike), followed by "implement <function>" for the innermost
``def`` around the fence. Text after the marker replaces that label:
``### BEGIN SOLUTION Exercise 4.2: backward pass of Linear``. Code fences must sit inside a
function body (indented), so that the stub fails only when the exercise is used and "Run
all" still reaches the end of the notebook, where the checks fall back to the reference.

Written answers go in markdown cells, fenced the same way (``### BEGIN SOLUTION`` /
``### END SOLUTION`` lines, or ``<!-- BEGIN SOLUTION -->`` / ``<!-- END SOLUTION -->`` which
do not show when the solution is rendered); the lesson gets a line asking for the answer.

Lessons are written with no outputs and no execution counts; cell ids, cell metadata (less
run-time ``execution`` timestamps) and notebook metadata are kept; the JSON is written the
way nbformat writes it, so the same solutions always give the same bytes.
``stale_lessons()`` lists what a rebuild would change; the test suite requires it be empty.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "LessonBuildError",
    "build_lessons",
    "lesson_bytes",
    "make_lesson",
    "stale_lessons",
]

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\b[ \t]*(?P<label>.*?)[ \t]*$")
_END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
_MD_BEGIN = re.compile(r"^[ \t]*<!--[ \t]*BEGIN SOLUTION\b[ \t]*(?P<label>.*?)[ \t]*-->[ \t]*$")
_MD_END = re.compile(r"^[ \t]*<!--[ \t]*END SOLUTION[ \t]*-->[ \t]*$")
_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")
_PREFIX = re.compile(r"^(\d+)_")

#: Cell metadata that only records a particular run; not copied into lessons.
_RUN_METADATA = ("execution", "ExecuteTime")


class LessonBuildError(ValueError):
    """A solution notebook whose fences cannot be turned into a lesson."""


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _split_lines(text: str) -> list[str]:
    """nbformat's on-disk form of a multi-line string: lines keeping their newline."""
    return text.splitlines(keepends=True)


def _lesson_number(name: str) -> int | None:
    match = _PREFIX.match(name)
    return int(match.group(1)) if match else None


def _label(lesson: int | None, k: int, text: str) -> str:
    number = f"{lesson}.{k}" if lesson is not None else str(k)
    return f"Exercise {number}{text}"


def _enclosing_def(lines: list[str], fence_at: int, indent: str) -> str | None:
    for line in reversed(lines[:fence_at]):
        match = _DEF.match(line)
        if match and len(match.group("indent")) < len(indent):
            return match.group("name")
    return None


def _py_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _replace_fences(
    text: str, code: bool, lesson: int | None, counter: list[int], where: str
) -> str:
    """Replace every fenced region of one cell's source by its stub."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r\n")
        match = _BEGIN.match(line) or (None if code else _MD_BEGIN.match(line))
        if _END.match(line) or (not code and _MD_END.match(line)):
            raise LessonBuildError(f"{where}: END SOLUTION without BEGIN SOLUTION")
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        end_re = _END if match.re is _BEGIN else _MD_END
        j = i + 1
        while j < len(lines) and not end_re.match(lines[j].rstrip("\r\n")):
            inner = lines[j].rstrip("\r\n")
            if _BEGIN.match(inner) or (not code and _MD_BEGIN.match(inner)):
                raise LessonBuildError(f"{where}: BEGIN SOLUTION inside another fence")
            j += 1
        if j == len(lines):
            raise LessonBuildError(f"{where}: BEGIN SOLUTION without END SOLUTION")
        counter[0] += 1
        given = match.group("label")
        newline = "\n" if j + 1 < len(lines) or lines[j].endswith("\n") else ""
        if code:
            indent = match.group("indent")
            if not indent:
                raise LessonBuildError(
                    f"{where}: a code fence must be inside a function body, so that the "
                    "lesson's stub raises only when the exercise is used"
                )
            func = _enclosing_def(lines, i, indent)
            label = given or _label(lesson, counter[0], f": implement {func}" if func else "")
            out.append(f"{indent}# YOUR CODE HERE\n")
            out.append(f"{indent}raise NotImplementedError({_py_string(label)}){newline}")
        else:
            label = given or _label(lesson, counter[0], "")
            out.append(f"*{label}: write your answer here.*{newline}")
        i = j + 1
    return "".join(out)


def make_lesson(solution: dict, name: str = "") -> dict:
    """The lesson notebook (as a JSON-ready dict) for a solution notebook's dict.

    ``name`` is the notebook's file name; its ``NN_`` prefix numbers the exercises.
    """
    lesson = _lesson_number(name)
    counter = [0]
    cells = []
    for index, cell in enumerate(solution.get("cells", [])):
        kind = cell.get("cell_type")
        where = f"{name or 'notebook'}: cell {index}"
        new: dict[str, Any] = {"cell_type": kind}
        cell_id = cell.get("id") or hashlib.sha1(f"{name}:{index}".encode()).hexdigest()[:8]
        new["id"] = cell_id
        metadata = {k: v for k, v in cell.get("metadata", {}).items() if k not in _RUN_METADATA}
        new["metadata"] = metadata
        text = _source(cell)
        if kind == "code":
            new["execution_count"] = None
            new["outputs"] = []
            text = _replace_fences(text, True, lesson, counter, where)
        elif kind == "markdown":
            text = _replace_fences(text, False, lesson, counter, where)
            if "attachments" in cell:
                new["attachments"] = cell["attachments"]
        elif "attachments" in cell:
            new["attachments"] = cell["attachments"]
        new["source"] = _split_lines(text)
        cells.append(new)
    minor = solution.get("nbformat_minor", 5)
    return {
        "cells": cells,
        "metadata": solution.get("metadata", {}),
        "nbformat": solution.get("nbformat", 4),
        "nbformat_minor": max(minor, 5),
    }


def _dumps(nb: dict) -> bytes:
    """Serialise like nbformat.writes: sorted keys, one-space indent, UTF-8, final newline."""
    return (json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def lesson_bytes(solution_path: str | Path) -> bytes:
    """The exact bytes of the lesson generated from the solution notebook at this path."""
    path = Path(solution_path)
    try:
        solution = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LessonBuildError(f"{path}: not a readable notebook ({exc})") from exc
    return _dumps(make_lesson(solution, path.name))


def _solutions(solutions_dir: Path) -> list[Path]:
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"no solutions folder at {solutions_dir}")
    return sorted(p for p in solutions_dir.glob("*.ipynb") if p.is_file())


def build_lessons(solutions_dir: str | Path = "solutions",
                  lessons_dir: str | Path = "lessons") -> list[Path]:
    """Write ``lessons_dir/NAME.ipynb`` for every ``solutions_dir/NAME.ipynb``.

    Files whose bytes would not change are left alone. Returns the lesson paths, sorted.
    Lesson notebooks with no matching solution are not deleted; ``stale_lessons`` reports
    them.
    """
    solutions_dir, lessons_dir = Path(solutions_dir), Path(lessons_dir)
    built = []
    lessons_dir.mkdir(parents=True, exist_ok=True)
    for solution in _solutions(solutions_dir):
        target = lessons_dir / solution.name
        data = lesson_bytes(solution)
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
        built.append(target)
    return built


def stale_lessons(solutions_dir: str | Path = "solutions",
                  lessons_dir: str | Path = "lessons") -> list[str]:
    """One line per lesson a rebuild would change (missing, different, or without a
    solution); empty when ``lessons_dir`` is in step with ``solutions_dir``."""
    solutions_dir, lessons_dir = Path(solutions_dir), Path(lessons_dir)
    problems = []
    names = set()
    for solution in _solutions(solutions_dir):
        names.add(solution.name)
        target = lessons_dir / solution.name
        try:
            data = lesson_bytes(solution)
        except LessonBuildError as exc:
            problems.append(str(exc))
            continue
        if not target.is_file():
            problems.append(f"{target}: missing (generated from {solution})")
            continue
        if target.read_bytes() != data:
            problems.append(f"{target}: differs from what {solution} generates")
    if lessons_dir.is_dir():
        for lesson in sorted(lessons_dir.glob("*.ipynb")):
            if lesson.name not in names:
                problems.append(f"{lesson}: no matching solution in {solutions_dir}")
    return problems


def _main(argv: list[str] | None = None) -> int:
    """``python -m vae_from_scratch.lessons [build|check]``, run from the repository root."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "check"
    if command == "build":
        for path in build_lessons():
            print(f"wrote {path}")
        return 0
    if command == "check":
        problems = stale_lessons()
        for line in problems:
            print(line)
        print("lessons/ is in step with solutions/" if not problems else
              f"{len(problems)} lesson(s) out of step: run `vae-course lessons build`")
        return 1 if problems else 0
    print("usage: python -m vae_from_scratch.lessons [build|check]")
    return 2


if __name__ == "__main__":
    raise SystemExit(_main())
