"""Every list of the course's lessons agrees with one place: the README's course table.

The README's table ("The course: what you will learn") names each lesson by its number and a
short name. The notebooks in ``solutions/`` and ``lessons/``, lesson 00's table of the course,
the run times in ``solutions/README.md`` and each lesson's closing "Next:" line must follow
it. Adding a lesson is one README row plus its notebooks, its row in lesson 00's table and its
run time; the lesson before it then points to it, and the new last lesson says it is last.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.every_lesson

ROOT = Path(__file__).resolve().parents[1]


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def readme_lessons() -> list[tuple[str, str]]:
    """(number, name) of every row of the README's course table, in order."""
    table = _section((ROOT / "README.md").read_text(), "The course: what you will learn")
    return re.findall(r"^\| (\d\d) ([^|]+?) \|", table, flags=re.M)


def _notebooks(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def test_the_readme_table_lists_lessons_00_onwards_in_order():
    numbers = [n for n, _ in readme_lessons()]
    assert numbers == [f"{i:02d}" for i in range(len(numbers))] and len(numbers) >= 10


@pytest.mark.parametrize("folder", ["solutions", "lessons"])
def test_every_lesson_in_the_table_has_its_notebook_and_no_other(folder):
    assert [p.name[:2] for p in _notebooks(folder)] == [n for n, _ in readme_lessons()]


def test_lesson_00s_course_table_is_the_readmes():
    (path_cell,) = [c for c in _cells(ROOT / "solutions" / "00_tour.ipynb") if c.id == "path"]
    rows = re.findall(r"^\| (\d\d) \| ([^|]+?) \|", path_cell.source, flags=re.M)
    assert rows == readme_lessons()


def test_solutions_readme_has_a_run_time_for_every_notebook():
    table = _section((ROOT / "solutions" / "README.md").read_text(), "Run times")
    listed = re.findall(r"^\| `(\d\d_\w+\.ipynb)` \|", table, flags=re.M)
    assert listed == [p.name for p in _notebooks("solutions")]


def _next_line(path: Path) -> str:
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    found = re.findall(r"\*\*Next:\*\*(.*?)(?:\n\n|\Z)", text, flags=re.S)
    assert len(found) == 1, f"{path.name}: one closing **Next:** line"
    return " ".join(found[0].split())


def test_each_lesson_closes_by_pointing_to_the_next_and_the_last_says_so():
    lessons = readme_lessons()
    for i, path in enumerate(_notebooks("solutions")):
        line = _next_line(path)
        if i + 1 < len(lessons):
            number, name = lessons[i + 1]
            assert re.search(rf"(`{number}`|lesson {number})", line), (path.name, line)
            assert "last lesson" not in line, (path.name, line)
        else:
            assert "last lesson" in line, (path.name, line)
