"""Building lessons/ from solutions/: stubs, stripping, determinism, and the repo in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vae_from_scratch.course.lessons import (
    EDITED,
    METADATA_KEY,
    LessonBuildError,
    build_lessons,
    committed_bytes,
    lesson_bytes,
    lesson_state,
    make_lesson,
    stale_lessons,
)

# how every lesson is built from its solution
pytestmark = [pytest.mark.every_lesson]

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _code(source, cell_id="c", outputs=None, execution_count=1, metadata=None):
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": metadata or {},
        "execution_count": execution_count,
        "outputs": outputs or [],
        "source": source,
    }


def _md(source, cell_id="m"):
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": source}


def _nb(*cells):
    return {
        "cells": list(cells),
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _text(cell):
    return "".join(cell["source"])


KL = '''def kl_univariate(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, 1)), derived in lesson 02."""
    ### BEGIN SOLUTION
    var = np.exp(log_var)
    return 0.5 * (var + mu**2 - 1.0 - log_var)
    ### END SOLUTION
'''


def test_fence_becomes_a_named_stub_keeping_signature_docstring_and_indent():
    lesson = make_lesson(_nb(_code(KL)), "02_kl.ipynb")
    assert _text(lesson["cells"][0]) == (
        "def kl_univariate(mu, log_var):\n"
        '    """KL(N(mu, exp(log_var)) || N(0, 1)), derived in lesson 02."""\n'
        "    # YOUR CODE HERE\n"
        '    raise NotImplementedError("Exercise 2.1: implement kl_univariate")\n'
    )


def test_the_stub_is_valid_python_and_fails_loudly():
    lesson = make_lesson(_nb(_code(KL)), "02_kl.ipynb")
    namespace = {}
    exec(compile(_text(lesson["cells"][0]), "<lesson>", "exec"), namespace)
    with pytest.raises(NotImplementedError, match=r"^Exercise 2\.1: implement kl_univariate$"):
        namespace["kl_univariate"](0.0, 0.0)


def test_nested_fences_use_the_innermost_def_and_their_own_indent():
    source = (
        "class Linear:\n"
        "    def backward(self, dout, cache):\n"
        "        x, w = cache\n"
        "        if True:\n"
        "            ### BEGIN SOLUTION\n"
        "            return dout @ w.T\n"
        "            ### END SOLUTION\n"
    )
    lesson = make_lesson(_nb(_code(source)), "04_backprop.ipynb")
    lines = _text(lesson["cells"][0]).splitlines()
    assert lines[-2:] == [
        "            # YOUR CODE HERE",
        '            raise NotImplementedError("Exercise 4.1: implement backward")',
    ]


def test_fences_are_numbered_in_order_across_cells_and_kinds():
    nb = _nb(
        _code("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION", "a"),
        _md("Why?\n\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->", "b"),
        _code(
            "def g():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION\n\n\n"
            "def h():\n    ### BEGIN SOLUTION\n    return 3\n    ### END SOLUTION\n",
            "c",
        ),
        _md("### BEGIN SOLUTION\nA written answer.\n### END SOLUTION", "d"),
    )
    cells = make_lesson(nb, "07_prior.ipynb")["cells"]
    assert 'raise NotImplementedError("Exercise 7.1: implement f")' in _text(cells[0])
    assert _text(cells[1]) == "Why?\n\n*Exercise 7.2: write your answer here.*"
    assert 'NotImplementedError("Exercise 7.3: implement g")' in _text(cells[2])
    assert 'NotImplementedError("Exercise 7.4: implement h")' in _text(cells[2])
    assert _text(cells[3]) == "*Exercise 7.5: write your answer here.*"
    assert "return" not in _text(cells[2]) and "Because" not in _text(cells[1])


def test_a_label_after_the_marker_replaces_the_default():
    source = ('def f(x):\n    ### BEGIN SOLUTION Exercise 4.2: the "backward" pass\n'
              "    return x\n    ### END SOLUTION\n")
    lesson = make_lesson(_nb(_code(source)), "04_backprop.ipynb")
    assert 'raise NotImplementedError("Exercise 4.2: the \\"backward\\" pass")' in _text(
        lesson["cells"][0]
    )


def test_without_a_number_prefix_exercises_are_numbered_alone():
    lesson = make_lesson(_nb(_code(KL)), "scratch.ipynb")
    assert '"Exercise 1: implement kl_univariate"' in _text(lesson["cells"][0])


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "inside a function body"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "without END SOLUTION"),
        ("def f():\n    return 1\n    ### END SOLUTION\n", "without BEGIN SOLUTION"),
        ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION\n",
         "inside another fence"),
    ],
)
def test_malformed_fences_are_refused_with_their_place(source, message):
    with pytest.raises(LessonBuildError, match=message) as info:
        make_lesson(_nb(_md("intro", "m0"), _code(source)), "01_ae.ipynb")
    assert "01_ae.ipynb: cell 1" in str(info.value)


def test_outputs_and_counts_are_stripped_and_ids_and_metadata_kept():
    output = {"output_type": "stream", "name": "stdout", "text": ["✓ done\n"]}
    metadata = {"tags": ["keep"], "execution": {"iopub.status.busy": "2024-01-01"}}
    nb = _nb(
        _md("# Title", "title"),
        _code("print(1)", "cell-one", outputs=[output], execution_count=7, metadata=metadata),
        {"cell_type": "raw", "id": "raw", "metadata": {}, "source": "raw text"},
    )
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    lesson = make_lesson(nb, "00_tour.ipynb")
    code = lesson["cells"][1]
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"] == {"tags": ["keep"]}
    assert [c["id"] for c in lesson["cells"]] == ["title", "cell-one", "raw"]
    stamp = lesson["metadata"].pop(METADATA_KEY)
    assert lesson["metadata"] == nb["metadata"]
    assert stamp == {"generated_from": "solutions/00_tour.ipynb",
                     "content_sha256": stamp["content_sha256"]}
    assert _text(lesson["cells"][2]) == "raw text"


def test_cells_without_ids_get_stable_ones():
    nb = _nb(_code("x = 1"))
    del nb["cells"][0]["id"]
    nb["nbformat_minor"] = 4
    first = make_lesson(nb, "00_a.ipynb")
    assert first == make_lesson(nb, "00_a.ipynb")
    assert re.fullmatch(r"[0-9a-f]{8}", first["cells"][0]["id"])
    assert first["nbformat_minor"] == 5


def _write(path: Path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb), encoding="utf-8")


def test_build_is_deterministic_and_valid_nbformat(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    _write(tmp_path / "solutions" / "02_kl.ipynb",
           _nb(_md("# 02 · KL ✓"), _code(KL, "kl", execution_count=3)))
    built = build_lessons(tmp_path / "solutions", tmp_path / "lessons")
    assert [(b.path, b.action) for b in built] == [(tmp_path / "lessons" / "02_kl.ipynb",
                                                    "written")]
    data = built[0].path.read_bytes()
    assert build_lessons(tmp_path / "solutions", tmp_path / "other")[0].path.read_bytes() == data
    assert lesson_bytes(tmp_path / "solutions" / "02_kl.ipynb") == data
    assert data.endswith(b"}\n") and "✓".encode() in data  # UTF-8, not \u escapes
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    nbformat.validate(nb)
    assert data.decode("utf-8") == nbformat.writes(nb) + "\n"  # the way Jupyter writes it


def test_stale_lessons_reports_missing_changed_and_orphaned(tmp_path):
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    _write(solutions / "00_tour.ipynb", _nb(_code(KL)))
    _write(solutions / "01_ae.ipynb", _nb(_code("x = 1")))
    assert [b.path.name for b in build_lessons(solutions, lessons)] == ["00_tour.ipynb",
                                                                         "01_ae.ipynb"]
    assert stale_lessons(solutions, lessons) == []

    _write(solutions / "01_ae.ipynb", _nb(_code("x = 2")))
    (lessons / "00_tour.ipynb").unlink()
    _write(lessons / "09_extra.ipynb", _nb())
    problems = stale_lessons(solutions, lessons)
    assert len(problems) == 3
    assert "00_tour.ipynb: missing" in problems[0]
    assert "01_ae.ipynb: differs from what" in problems[1]
    assert "09_extra.ipynb: no matching solution" in problems[2]

    build_lessons(solutions, lessons)
    (lessons / "09_extra.ipynb").unlink()
    assert stale_lessons(solutions, lessons) == []


def test_a_broken_solution_is_reported_not_crashed_on(tmp_path):
    solutions, lessons = tmp_path / "solutions", tmp_path / "lessons"
    solutions.mkdir()
    (solutions / "00_tour.ipynb").write_text('{"cells": [', encoding="utf-8")
    _write(solutions / "01_ae.ipynb", _nb(_code("def f():\n    ### BEGIN SOLUTION\n")))
    problems = stale_lessons(solutions, lessons)
    assert "00_tour.ipynb: not a readable notebook" in problems[0]
    assert "01_ae.ipynb: cell 0: BEGIN SOLUTION without END SOLUTION" in problems[1]
    with pytest.raises(LessonBuildError, match="not a readable notebook"):
        build_lessons(solutions, lessons)


def test_building_twice_leaves_files_untouched(tmp_path):
    _write(tmp_path / "solutions" / "00_tour.ipynb", _nb(_code(KL)))
    (built,) = build_lessons(tmp_path / "solutions", tmp_path / "lessons")
    stamp = built.path.stat().st_mtime_ns
    (again,) = build_lessons(tmp_path / "solutions", tmp_path / "lessons")
    assert again.action == "unchanged"
    assert built.path.stat().st_mtime_ns == stamp


# -- the course's own notebooks ---------------------------------------------------------------


def _lesson_param(path: Path):
    match = re.match(r"(\d\d)_", path.name)
    marks = [getattr(pytest.mark, f"lesson{match.group(1)}")] if match else []
    return pytest.param(path, id=path.stem, marks=marks)


NOTEBOOKS = [_lesson_param(p) for p in SOLUTIONS]
_CHECK_CALL = re.compile(r"^(\w+)\s*=\s*check\.(\w+)\(\1\)\s*$", re.MULTILINE)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _output_text(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))


def test_no_lesson_without_a_solution():
    assert SOLUTIONS, "no notebooks in solutions/"
    orphans = [p for p in stale_lessons(ROOT / "solutions", ROOT / "lessons")
               if "no matching solution" in p]
    assert orphans == []


@pytest.mark.parametrize("solution", NOTEBOOKS)
def test_lesson_is_in_step_with_its_solution(solution):
    # The course's lesson is the committed one: a learner who works in lessons/ (JupyterLab
    # saves their code and outputs there) has not changed it, and is not sent to a command
    # that would overwrite their work.
    lesson = ROOT / "lessons" / solution.name
    rebuild = ("run `vae-course lessons build` (it rewrites only lessons nobody edited; "
               "any with your edits are left as they are)")
    assert lesson.is_file(), f"{lesson} is missing: {rebuild}"
    if lesson_state(lesson, solution) == EDITED:
        data = committed_bytes(lesson)
        if data is None:
            pytest.skip(f"lessons/{lesson.name} has your edits and there is no committed "
                        "version to compare instead (no git checkout)")
        where = "the committed version of "
    else:
        data, where = lesson.read_bytes(), ""
    assert data == lesson_bytes(solution), (
        f"{where}{lesson} is out of step with {solution}: {rebuild}"
    )


@pytest.mark.parametrize("solution", NOTEBOOKS)
def test_solution_was_run_top_to_bottom_and_is_committed_with_outputs(solution):
    nb = _load(solution)
    counts = [c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{solution.name}: execution counts {counts}; restart the kernel, run all, save"
    )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("solution", NOTEBOOKS)
def test_check_cells_are_compared_and_pass_in_the_solution(solution):
    cells = [c for c in _load(solution)["cells"] if c["cell_type"] == "code"]
    check_cells = [c for c in cells if _CHECK_CALL.search(_text(c))]
    for cell in check_cells:
        source, out = _text(cell), _output_text(cell)
        assert "# NBVAL_CHECK_OUTPUT" in source, f"{solution.name}: mark check cell\n{source}"
        for line in out.splitlines():
            assert not line.startswith(("○ Exercise", "✗ Exercise")), (
                f"{solution.name}: a check does not pass in the solution:\n{out}"
            )


@pytest.mark.parametrize("solution", NOTEBOOKS)
def test_notebooks_install_nothing(solution):
    for cell in _load(solution)["cells"]:
        if cell["cell_type"] == "code":
            assert not re.search(r"^\s*[!%]\s*(pip|conda|mamba)\b", _text(cell), re.MULTILINE)


# -- release validation (conftest.py asks each notebook's kernel for this report) -------


def _report(*records, expected=(("0.1", "f"), ("0.2", "g"))):
    keys = ("exercise", "name", "status", "detail", "example")
    return {
        "recorded": [dict(zip(keys, r, strict=True), message=f"{r[2]} message") for r in records],
        "expected": [list(e) for e in expected],
    }


def test_validation_accepts_passing_solutions_and_not_done_lessons():
    from conftest import validation_problems

    solved = _report(("0.1", "f", "passed", "", False), ("0.2", "g", "passed", "", False),
                     ("0.0", "demo", "wrong", "", True))
    assert validation_problems(solved, "solutions") == []
    fresh = _report(("0.1", "f", "not done", "Exercise 0.1: implement f", False),
                    ("0.2", "g", "not done", "Exercise 0.2: implement g", False))
    assert validation_problems(fresh, "lessons") == []


def test_validation_catches_failures_missing_checks_and_misnumbered_stubs():
    from conftest import validation_problems

    report = _report(("0.1", "f", "wrong", "", False))
    problems = validation_problems(report, "solutions")
    assert any("0.2 (g): the notebook never calls its check" in p for p in problems)
    assert any("0.1 (f): expected 'passed'" in p for p in problems)
    report = _report(("0.1", "f", "passed", "", False),
                     ("0.2", "g", "not done", "Exercise 0.3: implement g", False))
    problems = validation_problems(report, "lessons")
    assert any("0.1 (f): expected 'not done'" in p for p in problems)
    assert any("the fence numbering and the checker disagree" in p for p in problems)
