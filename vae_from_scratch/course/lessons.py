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

A learner's edits are never lost. Every generated lesson carries, in its notebook metadata
(``vae_course``), the solution it came from and a SHA-256 of its own content, so a lesson
file can be told apart as *pristine* (exactly what a build wrote, or what this build would
write) or *edited* (a learner's code, outputs JupyterLab saved, anything else):
:func:`lesson_state`. ``build_lessons`` rewrites pristine lessons only; an edited one is
kept as it is unless ``force=True``, and then a copy of it goes to a time-stamped backup
first (``lessons-backups/`` next to ``lessons/``).

``stale_lessons()`` lists what a rebuild would change; the test suite requires it be empty.
For an edited lesson it compares the committed version (``git show HEAD:lessons/NAME``)
instead, so a learner who works in ``lessons/`` does not make the check fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = [
    "EDITED",
    "MISSING",
    "PRISTINE",
    "LessonBuild",
    "LessonBuildError",
    "backup_dir_for",
    "build_lessons",
    "committed_bytes",
    "edited_lessons",
    "lesson_bytes",
    "lesson_state",
    "make_lesson",
    "stale_lessons",
]

#: Notebook metadata key of a generated lesson: where it came from and its content's hash.
METADATA_KEY = "vae_course"
PRISTINE, EDITED, MISSING = "pristine", "edited", "missing"

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
    metadata = {k: v for k, v in solution.get("metadata", {}).items() if k != METADATA_KEY}
    lesson = {
        "cells": cells,
        "metadata": metadata,
        "nbformat": solution.get("nbformat", 4),
        "nbformat_minor": max(minor, 5),
    }
    if name:
        metadata[METADATA_KEY] = {"generated_from": f"solutions/{name}"}
    metadata.setdefault(METADATA_KEY, {})["content_sha256"] = _content_hash(lesson)
    return lesson


def _dumps(nb: dict) -> bytes:
    """Serialise like nbformat.writes: sorted keys, one-space indent, UTF-8, final newline."""
    return (json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _without_stamp(nb: dict, field: str | None = None) -> dict:
    """``nb`` less its stamp (``METADATA_KEY`` in its metadata), or less that ``field`` of the
    stamp; ``nb`` itself is left as it is (what changes is copied, the rest shared)."""
    metadata = nb.get("metadata", {})
    stamp = metadata.get(METADATA_KEY)
    if field is None and METADATA_KEY in metadata:
        metadata = {k: v for k, v in metadata.items() if k != METADATA_KEY}
    elif field is not None and isinstance(stamp, dict):
        metadata = {**metadata, METADATA_KEY: {k: v for k, v in stamp.items() if k != field}}
    else:
        return nb
    return {**nb, "metadata": metadata}


def _content_hash(nb: dict) -> str:
    """SHA-256 of a notebook's canonical JSON, leaving out the hash field itself."""
    return hashlib.sha256(_dumps(_without_stamp(nb, "content_sha256"))).hexdigest()


def _read_solution(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LessonBuildError(f"{path}: not a readable notebook ({exc})") from exc


def _generate(solution_path: Path) -> tuple[dict, bytes]:
    """The lesson generated from the solution notebook at this path, and its file's bytes."""
    lesson = make_lesson(_read_solution(solution_path), solution_path.name)
    return lesson, _dumps(lesson)


def lesson_bytes(solution_path: str | Path) -> bytes:
    """The exact bytes of the lesson generated from the solution notebook at this path."""
    return _generate(Path(solution_path))[1]


def lesson_state(lesson_path: str | Path, solution_path: str | Path | None = None) -> str:
    """``MISSING``, ``PRISTINE`` or ``EDITED``: whether a lesson file is safe to rewrite.

    Pristine: the file's content is what a build wrote (its ``content_sha256`` matches its
    content) or what building ``solution_path`` would write, stamp aside (a lesson built
    before lessons carried the stamp). Anything else is the learner's: code, outputs, even
    metadata JupyterLab added on saving.
    """
    path = Path(lesson_path)
    if not path.is_file():
        return MISSING
    try:
        data = path.read_bytes()
    except OSError:
        return EDITED
    state = _state(data, None)
    if state != EDITED or solution_path is None:
        return state
    try:  # the solution is read only when the stamp does not settle it
        generated = make_lesson(_read_solution(Path(solution_path)), Path(solution_path).name)
    except LessonBuildError:
        return EDITED
    return _state(data, generated)


def _state(data: bytes | None, generated: dict | None) -> str:
    """:func:`lesson_state` of a lesson file's bytes (None: there is no file), given the
    lesson its solution generates (None: judged by the stamp alone)."""
    if data is None:
        return MISSING
    try:
        nb = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return EDITED
    if not isinstance(nb, dict):
        return EDITED
    stamp = nb.get("metadata", {}).get(METADATA_KEY)
    if isinstance(stamp, dict) and stamp.get("content_sha256") == _content_hash(nb):
        return PRISTINE
    if generated is not None and _without_stamp(nb) == _without_stamp(generated):
        return PRISTINE
    return EDITED


def committed_bytes(path: str | Path) -> bytes | None:
    """The file's content in the last commit (``git show HEAD:path``), or None where there is
    no git, no repository or no committed version."""
    path = Path(path).resolve()
    try:  # HEAD:./NAME is NAME in the current directory, wherever the checkout's root is
        shown = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent,
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return shown.stdout if shown.returncode == 0 else None


def _solutions(solutions_dir: Path) -> list[Path]:
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"no solutions folder at {solutions_dir}")
    return sorted(p for p in solutions_dir.glob("*.ipynb") if p.is_file())


@dataclasses.dataclass(frozen=True)
class LessonBuild:
    """What ``build_lessons`` did with one lesson.

    ``action``: ``"written"`` (new or pristine, rewritten), ``"unchanged"`` (already right),
    ``"kept"`` (edited by a learner, left alone), ``"replaced"`` (edited, rewritten with
    ``force``; the learner's version is at ``backup``).
    """

    path: Path
    action: str
    backup: Path | None = None


def backup_dir_for(lessons_dir: str | Path) -> Path:
    """Where ``build_lessons(force=True)`` keeps edited lessons: ``lessons-backups/`` beside
    ``lessons/`` (outside it, so the tests and the build never see the copies)."""
    lessons_dir = Path(lessons_dir)
    return lessons_dir.parent / f"{lessons_dir.name}-backups"


def _backup(path: Path, backup_dir: Path) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = backup_dir / f"{path.stem}-{stamp}{path.suffix}"
    k = 1
    while target.exists():
        target = backup_dir / f"{path.stem}-{stamp}-{k}{path.suffix}"
        k += 1
    target.write_bytes(path.read_bytes())
    return target


def build_lessons(solutions_dir: str | Path = "solutions", lessons_dir: str | Path = "lessons",
                  *, force: bool = False) -> list[LessonBuild]:
    """Write ``lessons_dir/NAME.ipynb`` for every ``solutions_dir/NAME.ipynb``, never losing
    a learner's edits.

    A missing or pristine lesson is (re)written; one whose bytes would not change is left
    alone. An edited lesson (:func:`lesson_state`) is kept as it is, unless ``force``: then
    it is copied to ``backup_dir_for(lessons_dir)/NAME-<time>.ipynb`` first. Every solution
    is turned into a lesson before anything is written, so a broken solution writes nothing.
    Lessons with no matching solution are not deleted; ``stale_lessons`` reports them.
    Returns one :class:`LessonBuild` per solution, sorted by name.
    """
    solutions_dir, lessons_dir = Path(solutions_dir), Path(lessons_dir)
    generated = [(s, *_generate(s)) for s in _solutions(solutions_dir)]
    lessons_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for solution, lesson, data in generated:
        target = lessons_dir / solution.name
        have = target.read_bytes() if target.is_file() else None
        state = _state(have, lesson)
        if have == data:
            report.append(LessonBuild(target, "unchanged"))
        elif state == EDITED and not force:
            report.append(LessonBuild(target, "kept"))
        elif state == EDITED:
            backup = _backup(target, backup_dir_for(lessons_dir))
            target.write_bytes(data)
            report.append(LessonBuild(target, "replaced", backup))
        else:
            target.write_bytes(data)
            report.append(LessonBuild(target, "written"))
    return report


def stale_lessons(solutions_dir: str | Path = "solutions",
                  lessons_dir: str | Path = "lessons") -> list[str]:
    """One line per lesson a rebuild would change (missing, different, or without a
    solution); empty when ``lessons_dir`` is in step with ``solutions_dir``.

    A lesson a learner edited is judged by its committed version (:func:`committed_bytes`)
    and is not reported when that one is in step (or when there is none to read: the
    learner's copy says nothing about the course).
    """
    solutions_dir, lessons_dir = Path(solutions_dir), Path(lessons_dir)
    problems = []
    names = set()
    for solution in _solutions(solutions_dir):
        names.add(solution.name)
        target = lessons_dir / solution.name
        try:
            lesson, data = _generate(solution)
        except LessonBuildError as exc:
            problems.append(str(exc))
            continue
        have = target.read_bytes() if target.is_file() else None
        state = _state(have, lesson)
        if state == MISSING:
            problems.append(f"{target}: missing (generated from {solution})")
            continue
        if state == EDITED:
            have = committed_bytes(target)
            if have is None:
                continue
        if have != data:
            which = "its committed version differs" if state == EDITED else "differs"
            problems.append(f"{target}: {which} from what {solution} generates")
    if lessons_dir.is_dir():
        for lesson in sorted(lessons_dir.glob("*.ipynb")):
            if lesson.name not in names:
                problems.append(f"{lesson}: no matching solution in {solutions_dir}")
    return problems


def edited_lessons(solutions_dir: str | Path = "solutions",
                   lessons_dir: str | Path = "lessons") -> list[Path]:
    """The lessons in ``lessons_dir`` that a learner edited (see :func:`lesson_state`)."""
    solutions_dir, lessons_dir = Path(solutions_dir), Path(lessons_dir)
    return [lessons_dir / s.name for s in _solutions(solutions_dir)
            if lesson_state(lessons_dir / s.name, s) == EDITED]
