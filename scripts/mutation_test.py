"""Mutation testing of the numerical core: do the unit tests notice a small wrong change?

Each mutant is one small edit to one module -- a swapped operator, a dropped term, a
flipped comparison, a removed transpose, a swapped axis, a changed constant, a deleted
statement -- and the module's unit tests (``TARGETS`` below) are run against it in a fresh
process. A mutant is *killed* when a test fails, *survives* when every test passes. A
survivor is either a gap in the tests or a change that alters nothing observable; look at
each one (``scripts/README.md``).

Mutants are written into temporary copies of the repository (one per worker), never into
the working tree; Python imports ``vae_from_scratch`` from the copy (checked before the
run), writes no bytecode there, and each mutant's tests stop at the first failure (``-x``)
under a time limit.

Usage::

    python scripts/mutation_test.py                         # every module, 2 workers
    python scripts/mutation_test.py --modules optim layers  # some modules
    python scripts/mutation_test.py --list                  # the mutants, nothing run
    python scripts/mutation_test.py --only optim.py#12      # re-run chosen mutants
    python scripts/mutation_test.py --out mutation.json     # also write a JSON report

To cover a new module, add a ``Target`` to ``TARGETS``: the module's path, the test files
that exercise it (most specific first: ``-x`` stops at the first failure), and optionally
the functions to mutate. Modules and test files that do not exist yet are skipped with a
note, so a target can be listed before its code lands.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """A module to mutate and the unit tests that should notice."""

    module: str  # path from the repository root
    tests: tuple[str, ...]  # test files, most specific first
    functions: tuple[str, ...] | None = None  # mutate only inside these (None: everywhere)


_VAE_LOSS_CODE = (
    "build_parts", "_extra_shapes", "init_params", "param_shapes", "one_hot", "check_y",
    "kl_mode_for", "_forward", "_checked", "elbo_terms", "loss", "loss_and_grads", "_terms",
    "decode_mean", "sample", "reconstruct",
)
#: The model's own test files for conditioning, free bits and the conv architecture: they
#: run whole VAEs, so they exercise every module of the core.
_MODEL_TESTS = ("tests/test_conditional.py", "tests/test_free_bits.py", "tests/test_conv_vae.py")
_PARITY = "tests/test_torch_parity.py"

#: The modules to mutate, each with the tests that exercise it. Entries whose files do not
#: exist yet (modules landing in parallel) are skipped with a note. In every module,
#: docstrings, imports, ``__all__`` (the list of public names) and the messages of errors are
#: left alone: they are not numerical code (deleting a ``raise`` is still a mutant).
TARGETS: tuple[Target, ...] = (
    Target("vae_from_scratch/distributions.py", (
        "tests/test_distributions.py", "tests/test_continuous_bernoulli.py",
        "tests/test_vae_gradients.py", "tests/test_vae.py", "tests/test_evaluate.py",
        "tests/test_diagnostics.py", *_MODEL_TESTS, _PARITY,
    )),
    Target("vae_from_scratch/layers.py", (
        "tests/test_layers.py", "tests/test_conv.py", "tests/test_networks.py",
        "tests/test_vae_gradients.py", "tests/test_vae.py", "tests/test_autoencoder.py",
        *_MODEL_TESTS, _PARITY,
    )),
    Target("vae_from_scratch/optim.py", (
        "tests/test_optim.py", "tests/test_defaults.py", "tests/test_train.py",
        "tests/test_checks_lesson05.py", _PARITY,
    )),
    Target("vae_from_scratch/evaluate.py", (
        "tests/test_evaluate.py", "tests/test_conditional.py", "tests/test_defaults.py",
        "tests/test_train.py", "tests/test_checks_lesson05.py", _PARITY,
    )),
    Target("vae_from_scratch/gradcheck.py", (
        "tests/test_gradcheck.py", "tests/test_vae_gradients.py",
        "tests/test_checks_lesson04.py", *_MODEL_TESTS, "tests/test_continuous_bernoulli.py",
        "tests/test_conv.py", "tests/test_networks.py",
    )),
    Target("vae_from_scratch/likelihoods.py", (
        "tests/test_vae_gradients.py", "tests/test_vae.py", "tests/test_new_likelihood.py",
        "tests/test_continuous_bernoulli.py", "tests/test_diagnostics.py", *_MODEL_TESTS,
        _PARITY,
    )),
    Target("vae_from_scratch/priors.py", (
        "tests/test_vae_gradients.py", "tests/test_vae.py", "tests/test_diagnostics.py",
        "tests/test_evaluate.py", *_MODEL_TESTS, _PARITY,
    )),
    Target("vae_from_scratch/bottleneck.py", (
        "tests/test_vae_gradients.py", "tests/test_vae.py", "tests/test_evaluate.py",
        *_MODEL_TESTS, _PARITY,
    )),
    Target("vae_from_scratch/vae.py", (
        "tests/test_vae.py", "tests/test_vae_gradients.py", "tests/test_evaluate.py",
        *_MODEL_TESTS, _PARITY,
    ), functions=_VAE_LOSS_CODE),
    Target("vae_from_scratch/conv.py", (
        "tests/test_conv.py", "tests/test_networks.py", "tests/test_conv_vae.py",
        "tests/test_vae.py", _PARITY,
    )),
    Target("vae_from_scratch/networks.py", (
        "tests/test_networks.py", "tests/test_conv_vae.py", "tests/test_conditional.py",
        "tests/test_vae.py", "tests/test_vae_gradients.py", "tests/test_conv.py",
        "tests/test_free_bits.py", _PARITY,
    )),
)


# --- making mutants -------------------------------------------------------------------------


@dataclass
class Mutant:
    id: str  # "<file name>#<n>", stable while the module does not change
    module: str
    line: int
    operator: str
    original: str  # the changed source line(s), as in the file
    mutated: str  # the same line(s) after the change
    source: bytes = field(repr=False)  # the whole mutated module


_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.Pow: ast.Mult, ast.FloorDiv: ast.Div}
#: Which operand survives when a term is dropped: a + b -> a, b; a - b -> a; a * b -> a, b...
_BINOP_DROP = {ast.Add: ("left", "right"), ast.Sub: ("left",), ast.Mult: ("left", "right"),
               ast.Div: ("left",), ast.Pow: ("left",)}
_CMP_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_CMP_NEGATE = {ast.Lt: ast.GtE, ast.LtE: ast.Gt, ast.Gt: ast.LtE, ast.GtE: ast.Lt,
               ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
               ast.In: ast.NotIn, ast.NotIn: ast.In}
#: NumPy functions swapped for a sibling (np.sum -> np.mean, ...).
_CALL_SWAP = {"maximum": "minimum", "minimum": "maximum", "max": "min", "min": "max",
              "sum": "mean", "mean": "sum"}
_AXIS_SWAP = {0: 1, 1: 0, 2: 1, -1: 0}
_DELETABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Raise)


def _is_docstring(node, parent) -> bool:
    body = getattr(parent, "body", None)
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(body, list)
        and body
        and body[0] is node
    )


class _Finder(ast.NodeVisitor):
    """Collects (node, replacement text, operator) for every mutation of a module."""

    def __init__(self, functions):
        self.functions = set(functions) if functions is not None else None
        self.stack: list[str] = []
        self.edits: list[tuple[ast.AST, str, str]] = []

    # -- where to look ------------------------------------------------------------------------

    def _active(self) -> bool:
        return self.functions is None or any(name in self.functions for name in self.stack)

    def _visit_def(self, node):
        # Defaults are code (documented defaults); decorators and annotations are not.
        self.stack.append(node.name)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        self._visit_body(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_def

    def visit_ClassDef(self, node):
        self.stack.append(node.name)
        self._visit_body(node)
        self.stack.pop()

    def visit_Module(self, node):
        self._visit_body(node)

    def _visit_body(self, node):
        for stmt in node.body:
            if _is_docstring(stmt, node) or _is_dunder_all(stmt):
                continue
            if isinstance(stmt, _DELETABLE) and self._active():
                self.edits.append((stmt, "pass", "delete"))
            if isinstance(stmt, ast.Raise):
                continue  # its message is not numerics; deleting the raise is the mutant
            self.visit(stmt)

    def generic_visit(self, node):
        for name, value in ast.iter_fields(node):
            if name in ("body", "orelse", "finalbody") and isinstance(value, list):
                if value and isinstance(value[0], ast.stmt):
                    holder = ast.Module(body=value, type_ignores=[])
                    self._visit_body(holder)
                    continue
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    def visit_Import(self, node):
        pass

    visit_ImportFrom = visit_JoinedStr = visit_Global = visit_Nonlocal = visit_Import

    def visit_If(self, node):
        if _is_main_guard(node):
            return
        self.generic_visit(node)

    # -- the mutations -------------------------------------------------------------------------

    def _add(self, node, new_node, operator):
        if self._active():
            self.edits.append((node, "(" + ast.unparse(new_node) + ")", operator))

    def visit_BinOp(self, node):
        if not (_is_str(node.left) or _is_str(node.right)):
            swap = _BINOP_SWAP.get(type(node.op))
            if swap is not None:
                self._add(node, ast.BinOp(node.left, swap(), node.right), "swap-operator")
            for side in _BINOP_DROP.get(type(node.op), ()):
                self._add(node, getattr(node, side), "drop-term")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.USub, ast.Not)):
            self._add(node, node.operand, "drop-negation")
        number = node.operand
        if (isinstance(node.op, ast.USub) and isinstance(number, ast.Constant)
                and type(number.value) in (int, float)):
            self._add_number(node, -number.value)  # -1 is one number: -1 -> 0, not -(2)
            return
        self.generic_visit(node)

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            for table, name in ((_CMP_BOUNDARY, "compare-boundary"),
                                (_CMP_NEGATE, "compare-negate")):
                new = table.get(type(op))
                if new is not None:
                    ops = list(node.ops)
                    ops[i] = new()
                    self._add(node, ast.Compare(node.left, ops, node.comparators), name)
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, ast.BoolOp(other, node.values), "swap-boolean")
        self.generic_visit(node)

    def visit_Attribute(self, node):
        if node.attr == "T" and isinstance(node.ctx, ast.Load):
            self._add(node, node.value, "drop-transpose")
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "np" and func.attr in _CALL_SWAP):
            new_func = ast.Attribute(func.value, _CALL_SWAP[func.attr], ast.Load())
            self._add(func, new_func, "swap-function")
        for kw in node.keywords:
            if kw.arg == "axis":
                axis = _int_value(kw.value)
                if axis in _AXIS_SWAP:
                    self._add(kw.value, ast.Constant(_AXIS_SWAP[axis]), "swap-axis")
                if axis is not None or isinstance(kw.value, ast.UnaryOp):
                    self.visit(func)
                    for arg in node.args:
                        self.visit(arg)
                    for other in node.keywords:
                        if other is not kw:
                            self.visit(other.value)
                    return  # the axis constant is not mutated a second time as a number
        self.generic_visit(node)

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            self._add(node, ast.Constant(not value), "constant")
        elif isinstance(value, (int, float)):
            self._add_number(node, value)

    def _add_number(self, node, value):
        """An int n becomes n + 1; a float x becomes 2x (1.0 for 0.0)."""
        if isinstance(value, int):
            new = value + 1
        else:
            new = 1.0 if value == 0 else 2 * value
        self._add(node, ast.Constant(new), "constant")


def _is_dunder_all(node) -> bool:
    return isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and any(
        isinstance(t, ast.Name) and t.id == "__all__"
        for t in getattr(node, "targets", [getattr(node, "target", None)]))


def _is_str(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _int_value(node):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
        return -node.operand.value
    return None


def _is_main_guard(node) -> bool:
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def make_mutants(target: Target, root: Path = ROOT) -> list[Mutant]:
    """Every mutant of ``target.module`` (deduplicated, each one valid Python)."""
    path = root / target.module
    source = path.read_bytes()
    tree = ast.parse(source, filename=str(path))
    finder = _Finder(target.functions)
    finder.visit(tree)
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    seen = {source}
    mutants = []
    name = Path(target.module).name
    for node, text, operator in finder.edits:
        # ast offsets are UTF-8 byte columns, so splice the bytes.
        a = starts[node.lineno - 1] + node.col_offset
        b = starts[node.end_lineno - 1] + node.end_col_offset
        new_source = source[:a] + text.encode("utf-8") + source[b:]
        if new_source in seen:
            continue
        try:
            compile(new_source, str(path), "exec", dont_inherit=True)
        except SyntaxError:
            continue
        seen.add(new_source)
        first, last = starts[node.lineno - 1], starts[node.end_lineno]
        tail = len(source) - last
        mutants.append(Mutant(
            id=f"{name}#{len(mutants) + 1}",
            module=target.module,
            line=node.lineno,
            operator=operator,
            original=source[first:last].decode("utf-8").rstrip("\n"),
            mutated=new_source[first:len(new_source) - tail].decode("utf-8").rstrip("\n"),
            source=new_source,
        ))
    return mutants


# --- running the tests against each mutant -----------------------------------------------------

_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "venv", ".ci-venv", "__pycache__", "*.egg-info", ".pytest_cache",
    ".ruff_cache", "*.ipynb", "runs", "build", "dist", ".ipynb_checkpoints",
)
_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)", re.M)
#: What a worker imports once, before it forks a process per mutant (never the package).
_PRELOAD = ("numpy", "matplotlib", "pytest", "torch")


def pytest_args(tests) -> list[str]:
    # Only pass or fail matters: plain asserts (no rewriting of every test module), and none
    # of the plugins unit tests do not need (notebooks, xdist, async). -x stops at the first
    # failing test. Together these make a mutant's run several times faster.
    return ["-x", "-q", "-rfE", "--no-header", "--assert=plain", "-o", "addopts=",
            "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:nbval", "-p", "no:anyio",
            *tests]


def _environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc must never stand in for a mutant
    env["MPLBACKEND"] = "Agg"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # one thread per worker
    env.pop("PYTEST_ADDOPTS", None)
    return env


def make_copy(root: Path = ROOT) -> Path:
    """A temporary copy of the repository without notebooks, caches or environments."""
    parent = Path(tempfile.mkdtemp(prefix="mutation-"))
    workdir = parent / "repo"
    shutil.copytree(root, workdir, ignore=_COPY_IGNORE, symlinks=True)
    return workdir


def serve(workdir: str) -> int:
    """The worker process: import the heavy libraries once, then for each request read from
    stdin (a JSON list of pytest arguments and a time limit) fork a fresh process that runs
    pytest in ``workdir`` and answer with its exit code and output (one JSON line)."""
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    if any(name.split(".")[0] == "vae_from_scratch" for name in sys.modules):
        raise SystemExit("the worker imported vae_from_scratch before forking")
    import gc

    import pytest

    gc.freeze()  # what is loaded now is shared: the forks' garbage collections skip it

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        fd, log = tempfile.mkstemp(prefix="mutant-", suffix=".log")
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the mutant's own process
            code = 3
            try:
                os.setpgid(0, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                if request.get("probe"):
                    import vae_from_scratch

                    print(vae_from_scratch.__file__)
                    code = 0
                else:
                    code = int(pytest.main(request["args"]))
            except BaseException:  # noqa: BLE001 -- report anything, then leave
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = start + request["timeout"]
        code = None
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                for target in (-pid, pid):
                    try:
                        os.kill(target, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        os.close(fd)
        with open(log, encoding="utf-8", errors="replace") as f:
            output = f.read()
        os.unlink(log)
        print(json.dumps({"code": code, "output": output[-20000:], "seconds": seconds}),
              flush=True)
    return 0


class Worker:
    """A copy of the repository and the process that runs tests in it, a fork per mutant."""

    def __init__(self, root: Path = ROOT):
        self.workdir = make_copy(root)
        self.proc = None

    def _start(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(self.workdir)],
            cwd=self.workdir, env=_environment(self.workdir), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        hello = self.proc.stdout.readline()
        if not hello:
            raise SystemExit(f"the worker in {self.workdir} did not start")

    def request(self, timeout: float, **fields):
        """(exit code or None on timeout, output, seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"timeout": timeout, **fields}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:  # the worker itself died: start a new one for the next mutant
            self.proc = None
            return 3, "the worker process died", 0.0
        reply = json.loads(answer)
        return reply["code"], reply["output"], reply["seconds"]

    def run_tests(self, tests, timeout: float):
        return self.request(timeout, args=pytest_args(tests))

    def check_imports_the_copy(self) -> None:
        code, out, _ = self.request(120, probe=True)
        lines = out.strip().splitlines()
        found = Path(lines[-1]).resolve() if code == 0 and lines else None
        if found is None or self.workdir.resolve() not in found.parents:
            raise SystemExit(f"the tests in {self.workdir} import vae_from_scratch from "
                             f"{found}, not from the copy; mutants would not be seen:\n{out}")

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir.parent, ignore_errors=True)

    def run_mutant(self, mutant: Mutant, tests, timeout: float) -> dict:
        path = self.workdir / mutant.module
        pristine = path.read_bytes()
        path.write_bytes(mutant.source)
        try:
            code, out, seconds = self.run_tests(tests, timeout)
        finally:
            path.write_bytes(pristine)
        if code is None:
            status = "timeout"
        elif code == 0:
            status = "survived"
        elif code in (1, 2) or code < 0:  # a failing test, a collection error, a crash
            status = "killed"
        else:  # pytest's own trouble (3: internal error, 4: usage, 5: no tests)
            status = "error"
        match = _FAILED.search(out)
        result = {"status": status, "seconds": round(seconds, 2),
                  "killed_by": match.group(2) if match and status == "killed" else None}
        if status == "error":
            result["output"] = out[-2000:]
        return result


# --- the command line -------------------------------------------------------------------------


def select_targets(names, root: Path = ROOT):
    """(targets with their existing test files, notes about what was skipped)."""
    chosen, notes = [], []
    for target in TARGETS:
        stem = Path(target.module).stem
        if names and stem not in names and target.module not in names:
            continue
        if not (root / target.module).exists():
            notes.append(f"{target.module}: not in this checkout yet, skipped")
            continue
        tests = tuple(t for t in target.tests if (root / t).exists())
        for t in target.tests:
            if t not in tests:
                notes.append(f"{target.module}: {t} does not exist yet, left out of its tests")
        if not tests:
            notes.append(f"{target.module}: none of its test files exist, skipped")
            continue
        chosen.append(Target(target.module, tests, target.functions))
    unknown = set(names or ()) - {Path(t.module).stem for t in TARGETS} - {
        t.module for t in TARGETS}
    if unknown:
        raise SystemExit(f"unknown module(s) {sorted(unknown)}; known: "
                         f"{', '.join(Path(t.module).stem for t in TARGETS)}")
    return chosen, notes


def _show(mutant: Mutant, indent="    ") -> str:
    minus = "\n".join(f"{indent}- {line.strip()}" for line in mutant.original.splitlines())
    plus = "\n".join(f"{indent}+ {line.strip()}" for line in mutant.mutated.splitlines())
    return f"{minus}\n{plus}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Mutation testing of the numerical core (see scripts/README.md).")
    parser.add_argument("--modules", nargs="+", metavar="NAME",
                        help="modules to mutate, by name (optim) or path; default: all of "
                             + ", ".join(Path(t.module).stem for t in TARGETS))
    parser.add_argument("--list", action="store_true",
                        help="list the mutants without running anything")
    parser.add_argument("--only", nargs="+", metavar="ID",
                        help="run only these mutants (ids as listed, e.g. optim.py#12)")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 5 x the module's clean test run, "
                             "at least 30)")
    parser.add_argument("--out", type=Path, help="write a JSON report here")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:  # internal: a worker process (see Worker)
        return serve(argv[1])
    args = parse_args(argv)
    targets, notes = select_targets(args.modules)
    for note in notes:
        print(f"note: {note}")
    plan = [(t, make_mutants(t)) for t in targets]
    if args.only:
        wanted = set(args.only)
        plan = [(t, [m for m in ms if m.id in wanted]) for t, ms in plan]
        missing = wanted - {m.id for _, ms in plan for m in ms}
        if missing:
            raise SystemExit(f"no mutant with id {', '.join(sorted(missing))}")
        plan = [(t, ms) for t, ms in plan if ms]
    total = sum(len(ms) for _, ms in plan)

    if args.list:
        for target, mutants in plan:
            print(f"{target.module}: {len(mutants)} mutants; tests: {' '.join(target.tests)}")
            for m in mutants:
                print(f"  {m.id}  line {m.line}  {m.operator}\n{_show(m)}")
        print(f"{total} mutants")
        if args.out:
            _write_report(args.out, plan, {}, {}, notes, args, seconds=0.0)
        return 0

    if not hasattr(os, "fork"):
        raise SystemExit("mutation_test.py forks a process per mutant: it needs Linux or macOS")
    started = time.perf_counter()
    workers = [Worker() for _ in range(args.workers)]
    try:
        for worker in workers:
            worker.check_imports_the_copy()
        free = list(workers)
        lock = threading.Lock()

        def clean_run(target):  # the unmutated tests must pass; their time sets the limit
            with lock:
                worker = free.pop()
            try:
                return worker.run_tests(target.tests, timeout=900)
            finally:
                with lock:
                    free.append(worker)

        timeouts, baselines = {}, {}
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            clean = list(pool.map(clean_run, [t for t, _ in plan]))
        for (target, mutants), (code, out, seconds) in zip(plan, clean, strict=True):
            if code != 0:
                raise SystemExit(f"the tests of {target.module} fail before any mutation; "
                                 f"fix them first:\n{out[-3000:]}")
            baselines[target.module] = round(seconds, 2)
            timeouts[target.module] = args.timeout or max(30.0, 5 * seconds)
            print(f"{target.module}: {len(mutants)} mutants; clean run {seconds:.1f} s, "
                  f"limit {timeouts[target.module]:.0f} s per mutant", flush=True)

        jobs = [(t, m) for t, ms in plan for m in ms]
        results: dict[str, dict] = {}

        def work(job):
            target, mutant = job
            with lock:
                worker = free.pop()
            try:
                result = worker.run_mutant(mutant, target.tests, timeouts[target.module])
            finally:
                with lock:
                    free.append(worker)
            with lock:
                results[mutant.id] = result
                if not args.quiet:
                    print(f"[{len(results):4d}/{total}] {result['status']:8s} {mutant.id:22s} "
                          f"line {mutant.line:<4d} {mutant.operator} ({result['seconds']} s)",
                          flush=True)

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            list(pool.map(work, jobs))
    finally:
        for worker in workers:
            worker.close()
    seconds = time.perf_counter() - started

    counts = {s: sum(r["status"] == s for r in results.values())
              for s in ("killed", "survived", "timeout", "error")}
    share = 100.0 * counts["survived"] / total if total else 0.0
    print(f"\nmutants: {total}  killed: {counts['killed']}  survived: {counts['survived']} "
          f"({share:.1f}%)  timed out: {counts['timeout']}  errors: {counts['error']}  "
          f"in {seconds:.0f} s on {args.workers} worker(s)")
    for _, mutants in plan:
        for m in mutants:
            status = results[m.id]["status"]
            if status in ("survived", "error"):
                print(f"{status}: {m.module}:{m.line} {m.id} {m.operator}\n{_show(m)}")
    if args.out:
        _write_report(args.out, plan, results, {"timeouts": timeouts, "baselines": baselines},
                      notes, args, seconds)
    return 0


def _write_report(path: Path, plan, results, runs, notes, args, seconds) -> None:
    mutants = []
    for _, ms in plan:
        for m in ms:
            entry = {"id": m.id, "module": m.module, "line": m.line, "operator": m.operator,
                     "original": m.original, "mutated": m.mutated}
            entry.update(results.get(m.id, {"status": "not run"}))
            mutants.append(entry)
    statuses = [m["status"] for m in mutants]
    report = {
        "workers": args.workers,
        "seconds": round(seconds, 1),
        "targets": [{"module": t.module, "tests": list(t.tests),
                     "functions": list(t.functions) if t.functions else None,
                     "mutants": len(ms),
                     "clean_run_seconds": runs.get("baselines", {}).get(t.module),
                     "timeout_seconds": runs.get("timeouts", {}).get(t.module)}
                    for t, ms in plan],
        "notes": notes,
        "summary": {"mutants": len(mutants),
                    **{s: statuses.count(s) for s in ("killed", "survived", "timeout",
                                                       "error")}},
        "mutants": mutants,
    }
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"report written to {path}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the listing piped into head
        sys.exit(0)
