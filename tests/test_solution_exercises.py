"""Every solution's exercise code passes its checker, without running the notebook.

nbval runs each solution notebook whole (tens of seconds each); this runs only what the
checks need: the notebook's import cells, its fenced exercise cells and its check cells.
So a checker made stricter (a new case, a strict numerics case) is tried against the
solutions' own code within seconds, by ``pytest tests``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest

from vae_from_scratch.checks import core

# each solution's exercises against its checkers: every lesson
pytestmark = [pytest.mark.every_lesson]

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
_IMPORT = re.compile(r"^(import|from) \w", re.MULTILINE)
_TORCH_LESSONS = {6}


def _param(path: Path):
    lesson = int(path.name[:2])
    marks = [getattr(pytest.mark, f"lesson{lesson:02d}")]
    if lesson in _TORCH_LESSONS:
        marks.append(pytest.mark.torch)
    return pytest.param(path, id=path.stem, marks=marks)


def _cells_the_checks_need(nb: dict) -> list[str]:
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    needed = []
    for i, source in enumerate(code):
        setup = i < 3 and _IMPORT.search(source)
        if setup or "### BEGIN SOLUTION" in source or re.search(r"\bcheck\.\w+\(", source):
            needed.append(source)
    return needed


@pytest.fixture(autouse=True)
def _fresh_record(monkeypatch):
    """A clean check record, and thread settings a notebook's first cell may change (its
    limit_threads() call) put back afterwards."""
    from threadpoolctl import threadpool_limits

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)
    core.clear_recorded()
    with threadpool_limits(limits=None):  # restores the original limits on leaving
        yield
    core.clear_recorded()


@pytest.mark.parametrize("solution", [_param(p) for p in SOLUTIONS])
def test_the_solutions_exercise_code_passes_every_check(solution, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(solution.parent)
    nb = json.loads(solution.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for source in _cells_the_checks_need(nb):
            exec(compile(source, solution.name, "exec"), namespace)
    lesson = int(solution.name[:2])
    results = [r for r in core.recorded() if not r.example]
    failed = [r.message for r in results if r.status != core.PASSED]
    assert not failed, "\n\n".join(failed)
    expected = {(c.exercise, c.name) for c in core.checkers(lesson)}
    assert {(r.exercise, r.name) for r in results} == expected
