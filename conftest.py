"""Test-suite plumbing: lesson markers, the notebooks' kernels, and release validation.

* Markers. A notebook's items get ``lessonNN`` from its file-name prefix (``02_kl.ipynb`` ->
  ``lesson02``), so ``pytest -m lesson02`` runs that lesson's notebooks in ``lessons/`` and
  ``solutions/`` together with the unit tests marked ``@pytest.mark.lesson02`` (or
  ``every_lesson``, which stands for all of them). Tests marked ``torch`` are skipped when
  PyTorch is not installed and ``cuda`` when there is no CUDA GPU.
* Kernels. nbval runs every notebook in a kernel of this very Python (``--nbval-current-env``)
  that imports ``vae_from_scratch`` from this checkout (``PYTHONPATH``) and draws figures
  with the inline backend, as JupyterLab does, whatever ``MPLBACKEND`` says. Under pytest-xdist
  each worker's numerical libraries get one thread, so two workers do not fight over two
  cores; no output may depend on the thread count anyway.
* Release validation. After the last cell of every notebook in ``lessons/`` and
  ``solutions/`` one more item, ``<notebook>::checks``, asks that notebook's still-running
  kernel which checks it printed (``vae_from_scratch.checks.core.report_json``). In
  ``solutions/`` every exercise's check must have passed; in ``lessons/`` every one must say
  "not done" (the stubs are in place and nothing else is broken), and the stub must name the
  exercise its check is for. Each notebook runs once; nothing is executed twice.
* A learner's work. A notebook in ``lessons/`` that a learner edited (it is not what
  ``vae-course lessons build`` wrote: ``vae_from_scratch.course.lessons.lesson_state``) would fail
  that release check, since its exercises are done. Its items are skipped, with a reason
  that says the work is safe and how to test the pristine lesson; nothing is written. In a
  clean clone (CI) no lesson is edited and nothing is skipped.
* Without PyTorch. Unit tests marked ``torch`` are skipped, and so are the notebooks that
  import torch (or the torch mirror) at the top level of a cell, with a reason that says how
  to install it; the other notebooks run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_PREFIX = re.compile(r"^(\d\d)_")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Notebook folders whose notebooks get the release-validation item, and the status expected.
_VALIDATED = {"solutions": "passed", "lessons": "not done"}


def _lesson_of(path: Path) -> int | None:
    match = _PREFIX.match(path.name)
    return int(match.group(1)) if match else None


def pytest_configure(config: pytest.Config) -> None:
    # Markers for every lesson that has a notebook, beyond those pyproject.toml registers.
    for folder in ("solutions", "lessons"):
        for notebook in sorted((ROOT / folder).glob("*.ipynb")):
            lesson = _lesson_of(notebook)
            if lesson is not None:
                config.addinivalue_line("markers", f"lesson{lesson:02d}: lesson {lesson}")
    # Kernels started by nbval inherit this environment.
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    # Notebook kernels draw with the inline backend, as in JupyterLab, even where MPLBACKEND
    # is set for the tests (CI sets Agg): this process keeps the backend it was asked for.
    backend = os.environ.pop("MPLBACKEND", None)
    if backend and "inline" not in backend:
        import matplotlib

        matplotlib.use(backend)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in _THREAD_VARS:
            os.environ.setdefault(var, "1")


# -- release validation -----------------------------------------------------------------------


class ChecksFailed(Exception):
    """The checks a notebook printed are not what its folder requires."""


def validation_problems(report: dict, folder: str) -> list[str]:
    """What is wrong with a notebook's check report (see ``core.report_json``); [] if nothing.

    ``folder`` is ``"solutions"`` (every exercise must pass) or ``"lessons"`` (every
    exercise must be "not done", with a stub naming the same exercise).
    """
    want = _VALIDATED[folder]
    records = [r for r in report["recorded"] if not r["example"]]
    problems = []
    ran = {(r["exercise"], r["name"]) for r in records}
    for exercise, name in report["expected"]:
        if (exercise, name) not in ran:
            problems.append(f"Exercise {exercise} ({name}): the notebook never calls its check")
    for r in records:
        label = f"Exercise {r['exercise']} ({r['name']})"
        if r["status"] != want:
            problems.append(f"{label}: expected '{want}' in {folder}/, the check said:\n"
                            f"{r['message']}")
        elif folder == "lessons" and r["detail"].startswith("Exercise "):
            stub_number = r["detail"].split(":")[0].split()[-1]
            if stub_number != r["exercise"]:
                problems.append(f"{label}: the lesson's stub says {r['detail']!r}; the fence "
                                f"numbering and the checker disagree")
    return problems


class NotebookChecks(pytest.Item):
    """Asks a notebook's kernel, after its last cell, which checks ran and how they ended."""

    def __init__(self, *, folder: str, lesson: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder = folder
        self.lesson = lesson

    def runtest(self) -> None:
        ran = sum(_notebook_file(i) is self.parent and not isinstance(i, NotebookChecks)
                  for i in self.session.items)
        if ran != _code_cells(self.parent):
            pytest.skip("only part of the notebook ran, so its checks cannot be judged")
        kernel = getattr(self.parent, "kernel", None)
        if kernel is None or not kernel.is_alive():
            raise ChecksFailed("the notebook's kernel is not running; see the cells above")
        module = "vae_from_scratch.checks.core"
        expression = f"__import__({module!r}, fromlist=['_']).report_json({self.lesson})"
        msg_id = kernel.kc.execute("", silent=True, store_history=False,
                                   user_expressions={"report": expression})
        while True:
            reply = kernel.kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result = reply["content"]["user_expressions"]["report"]
        if result["status"] != "ok":
            raise ChecksFailed(f"could not read the check report: {result.get('ename')}: "
                               f"{result.get('evalue')}")
        report = json.loads(ast.literal_eval(result["data"]["text/plain"]))
        problems = validation_problems(report, self.folder)
        if problems:
            raise ChecksFailed("\n".join(problems))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ChecksFailed):
            return f"{self.path.name} in {self.folder}/:\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, 0, f"{self.folder}/{self.path.name}::checks"


def _code_cells(notebook) -> int:
    return sum(cell.cell_type == "code" for cell in notebook.nb.cells)


def _notebook_file(item: pytest.Item):
    parent = item.parent
    if item.path.suffix == ".ipynb" and parent is not None and hasattr(parent, "kernel"):
        return parent
    return None


def _lesson_markers(config: pytest.Config) -> list[str]:
    """Every registered ``lessonNN`` marker (pyproject.toml's and one per notebook)."""
    names = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    return sorted(n for n in names if re.fullmatch(r"lesson\d\d", n))


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so the markers count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    torch_missing = importlib.util.find_spec("torch") is None
    collected: dict[int, int] = {}  # id(notebook) -> how many of its cells were collected
    for item in items:
        notebook = _notebook_file(item)
        if notebook is not None:
            collected[id(notebook)] = collected.get(id(notebook), 0) + 1
    every_lesson = _lesson_markers(config)
    out: list[pytest.Item] = []
    for i, item in enumerate(items):
        out.append(item)
        if item.get_closest_marker("every_lesson"):
            for name in every_lesson:  # e.g. the check machinery, which each lesson uses
                item.add_marker(name)
        notebook = _notebook_file(item)
        if notebook is None:
            continue
        item.add_marker("notebook")  # pytest -m "not notebook": the unit tests alone
        lesson = _lesson_of(item.path)
        if lesson is not None:
            item.add_marker(f"lesson{lesson:02d}")
        last_of_notebook = i + 1 == len(items) or _notebook_file(items[i + 1]) is not notebook
        folder = item.path.parent.name
        if (
            last_of_notebook
            and lesson is not None
            and folder in _VALIDATED
            and item.path.parent.parent == ROOT
            and collected[id(notebook)] == _code_cells(notebook)  # the whole notebook runs
        ):
            checks = NotebookChecks.from_parent(notebook, name="checks", folder=folder,
                                                lesson=lesson)
            checks.add_marker(f"lesson{lesson:02d}")
            checks.add_marker("notebook")
            out.append(checks)
    edited = _edited_lessons({_notebook_file(i) for i in out} - {None})
    for item in out:
        notebook = _notebook_file(item)
        if torch_missing and item.get_closest_marker("torch"):
            item.add_marker(pytest.mark.skip(reason="PyTorch is not installed"))
        elif torch_missing and notebook is not None and _needs_torch(Path(notebook.path)):
            item.add_marker(pytest.mark.skip(reason=_NO_TORCH))
        reason = edited.get(_notebook_file(item))
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    items[:] = out


_NO_TORCH = ("this notebook needs PyTorch, which is not installed: pip install -e '.[torch]' "
             "(the README's 'No NVIDIA GPU?' gives the smaller CPU-only build)")


_MIRROR = "vae_from_scratch.torch_vae"
_NEEDS_TORCH: dict[Path, bool] = {}


def _needs_torch(path: Path) -> bool:
    """Whether a notebook imports torch (or the torch mirror) outside a try block: at the top
    level of a code cell. Lessons that only try torch, and say so when it is absent (00,
    04), run without it."""
    if path not in _NEEDS_TORCH:
        import nbformat

        found = False
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            try:
                body = ast.parse(cell.source).body
            except SyntaxError:  # IPython magics; not an import of torch either way
                continue
            for node in body:
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                found |= any(n.split(".")[0] == "torch" or n.startswith(_MIRROR) for n in names)
        _NEEDS_TORCH[path] = found
    return _NEEDS_TORCH[path]


def _what_to_do() -> str:
    return ("Your work is safe and was not run. Carry on in your own copy: `vae-course start` "
            "copies lessons/ into my-lessons/, your edited lessons as they are, and never "
            "overwrites a file there; `pytest my-lessons/NAME.ipynb` then runs one of yours.")


def _edited_reason(lesson: str) -> str:
    """The skip reason of the items of ``lesson`` (``lessons/NAME.ipynb``), which a learner
    edited."""
    return (f"{lesson} has your edits, so its release check (every exercise 'not done') "
            f"cannot pass. {_what_to_do()}")


def _edited_lessons(notebooks) -> dict:
    """{notebook: skip reason} for the notebooks in lessons/ that a learner edited."""
    lessons = [n for n in notebooks if Path(n.path).parent == ROOT / "lessons"]
    if not lessons:
        return {}
    from vae_from_scratch.course.lessons import edited_lessons

    edited = set(edited_lessons(ROOT / "solutions", ROOT / "lessons"))
    return {n: _edited_reason(f"lessons/{Path(n.path).name}") for n in lessons
            if Path(n.path) in edited}


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say which lessons were skipped because a learner edited them (under pytest-xdist the
    skip reasons are not shown without -rs). They are told by their skip reason, which the
    reports bring back from the workers (this process collects nothing under pytest-xdist)."""
    edited = set()
    for report in terminalreporter.stats.get("skipped", []):
        lesson = report.nodeid.split("::")[0]
        if _skip_reason(report) == _edited_reason(lesson):
            edited.add(lesson)
    if edited:
        terminalreporter.section("your lessons")
        terminalreporter.write_line("Skipped, because they have your edits: "
                                    f"{', '.join(sorted(edited))}.")
        terminalreporter.write_line(_what_to_do())


def _skip_reason(report) -> str | None:
    """The reason of a skipped test's report (its longrepr is (file, line, "Skipped: ..."))."""
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda"):
        if not _cuda_available():
            pytest.skip("no CUDA GPU")


_CUDA: list[bool] = []


def _cuda_available() -> bool:
    if not _CUDA:
        try:
            import torch

            _CUDA.append(bool(torch.cuda.is_available()))
        except ImportError:
            _CUDA.append(False)
    return _CUDA[0]
