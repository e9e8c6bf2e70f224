"""``pytest -m lessonNN`` runs every test of lesson NN: each test module says which lessons
it serves in a module-level ``pytestmark`` list (``every_lesson`` for all of them), and
every lesson has unit tests.

The root conftest marks the notebooks themselves (``lessonNN`` from the file name, and
``notebook``); this file checks the unit tests under ``tests/``.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = sorted((ROOT / "tests").glob("test_*.py"))
#: One lesson per numbered notebook in solutions/, and per lessonNN marker registered in
#: pyproject.toml (a lesson's tests may land before its notebook).
LESSONS = sorted(
    {f"lesson{m.group(1)}" for p in (ROOT / "solutions").glob("*.ipynb")
     if (m := re.match(r"(\d\d)_", p.name))}
    | set(re.findall(r'"(lesson\d\d):', (ROOT / "pyproject.toml").read_text(encoding="utf-8")))
)
#: Modules whose markers are added where those files are being changed; remove an entry
#: when its file gets its pytestmark (the strict xfail then fails, as a reminder).
PENDING: dict[str, str] = {}

# This check keeps every lesson's selection complete, so it runs with each of them.
pytestmark = [pytest.mark.every_lesson]


@functools.cache
def module_marks(path: Path) -> frozenset[str]:
    """The marker names in the module-level ``pytestmark`` of a test file ({} if none)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
            items = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [
                node.value]
            names = {item.attr for item in items if isinstance(item, ast.Attribute)}
            if "every_lesson" in names:  # the root conftest expands it into each lesson
                names |= set(LESSONS)
            return frozenset(names)
    return frozenset()


def test_the_course_has_lessons_00_to_07():
    assert LESSONS[:8] == [f"lesson{n:02d}" for n in range(8)]


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name, marks=pytest.mark.xfail(strict=True, reason=PENDING[p.name]))
     if p.name in PENDING else pytest.param(p, id=p.name) for p in TESTS],
)
def test_every_test_module_serves_at_least_one_lesson(path):
    marks = module_marks(path)
    lessons = {m for m in marks if re.fullmatch(r"lesson\d\d", m)}
    assert lessons, (f"{path.name} has no module-level pytestmark with the lessons it serves "
                     "(e.g. pytestmark = [pytest.mark.lesson04])")
    assert lessons <= set(LESSONS), f"{path.name} names lessons that do not exist: {lessons}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_has_unit_tests(lesson):
    serving = [p.name for p in TESTS if p.name != Path(__file__).name
               and lesson in module_marks(p)]
    assert serving, f"no test module under tests/ is marked {lesson}"


def test_module_marks_reads_single_marks_and_lists(tmp_path):
    one = tmp_path / "test_one.py"
    one.write_text("import pytest\n\npytestmark = pytest.mark.lesson03\n")
    many = tmp_path / "test_many.py"
    many.write_text("import pytest\n\npytestmark = [\n    pytest.mark.lesson01,\n"
                    "    pytest.mark.torch,\n]\n")
    none = tmp_path / "test_none.py"
    none.write_text("import pytest\n\n\n@pytest.mark.lesson02\ndef test_x():\n    pass\n")
    assert module_marks(one) == {"lesson03"}
    assert module_marks(many) == {"lesson01", "torch"}
    assert module_marks(none) == set()


def test_module_marks_expands_every_lesson(tmp_path):
    every = tmp_path / "test_every.py"
    every.write_text("import pytest\n\npytestmark = [pytest.mark.every_lesson]\n")
    assert module_marks(every) == {"every_lesson", *LESSONS}


@pytest.mark.parametrize("lesson", [LESSONS[0], LESSONS[-1]])
def test_pytest_selects_an_every_lesson_module_by_each_lesson(lesson):
    # What module_marks assumes, run for real: the conftest gives every_lesson's tests
    # each lessonNN marker before pytest's -m selection sees them.
    target = "tests/test_checks_core.py"
    args = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0",
            "-p", "no:cacheprovider", target]
    chosen = subprocess.run([*args, "-m", lesson], cwd=ROOT, capture_output=True, text=True)
    dropped = subprocess.run([*args, "-m", f"not {lesson}"], cwd=ROOT, capture_output=True,
                             text=True)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    every = re.search(r"^(\d+) tests collected", chosen.stdout, re.M)
    assert every and int(every.group(1)) > 0, chosen.stdout  # all of them, none deselected
    assert re.search(rf"no tests collected \({every.group(1)} deselected\)", dropped.stdout), (
        dropped.stdout)


def test_the_conftest_marks_items_before_pytest_deselects_them(request):
    # -m reads the markers in pytest's own collection hook; the root conftest's hook adds
    # lessonNN markers (every_lesson, notebooks), so it must run first whatever the order
    # in which the plugins were registered.
    hook = request.config.pluginmanager.hook.pytest_collection_modifyitems
    ours = [impl for impl in hook.get_hookimpls()
            if Path(getattr(impl.plugin, "__file__", "")) == ROOT / "conftest.py"]
    assert len(ours) == 1 and ours[0].tryfirst
