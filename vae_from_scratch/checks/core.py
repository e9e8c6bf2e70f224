"""Exercise checks: run a learner's function on small cases and say at once whether it is right.

Every exercise in the course is a function the learner writes. The cell after it hands that
function to a *checker* and keeps what comes back::

    from vae_from_scratch.checks import lesson02 as check

    def kl_univariate(mu, log_var):
        ...  # the learner's code

    kl_univariate = check.kl_univariate(kl_univariate)

The checker calls the function on a few small, fixed cases, compares each result with the
reference implementation's and prints one of three outcomes::

    ✓ Exercise 2.1 (kl_univariate): correct.
    ○ Exercise 2.1 (kl_univariate): not done yet. Using the reference implementation ...
    ✗ Exercise 2.1 (kl_univariate): wrong answer.  (then the case, expected, got, and why)

It returns the learner's function when every case passes and the reference otherwise, so a
learner who skips or gets stuck on an exercise can still run the rest of the notebook. A
function that raises ``NotImplementedError`` (the stubs in ``lessons/`` do) counts as
"not done"; any other exception, a wrong shape or a wrong value counts as "wrong". The text
is deterministic (no timings, addresses or varying random numbers), so solution notebooks
commit it and nbval compares it (mark the check cell ``# NBVAL_CHECK_OUTPUT``).

Writing the checks for a lesson
-------------------------------
Add ``vae_from_scratch/checks/lessonNN.py`` with one :class:`Checker` per exercise, named
like the function the learner writes::

    import numpy as np

    from vae_from_scratch import distributions
    from vae_from_scratch.checks.core import Case, Checker

    kl_univariate = Checker(
        "2.1",                                   # exercise number, as the notebook says it
        reference=distributions.kl_univariate,   # the package's implementation
        cases=[
            Case(0.0, 0.0),                                         # positional arguments
            Case(mu=np.array([0.5, -1.0]), log_var=np.array([0.2, -0.3])),  # or keywords
        ],
        rtol=1e-6,                               # optional, these are the defaults
        atol=1e-8,
    )

Rules of thumb:

* Keep cases small (a dozen numbers or so): a failing check prints them.
* Arguments are deep-copied for every call, so a case may hold a
  ``np.random.default_rng(0)``: the learner's function and the reference then see the same
  random numbers, and a function that modifies its inputs cannot spoil the next case.
* Results may be numbers, arrays, torch tensors, tuples, lists, dicts and dataclasses,
  nested in any way; shapes must match exactly and values within ``rtol``/``atol``.
* ``call=lambda obj, *args, **kwargs: ...`` says how to run what the learner wrote when it
  is not a plain function (say a class: ``call=lambda cls, x: cls().forward(x)[0]``).
* ``compare=lambda expected, got: None or "what is wrong"`` replaces the comparison, for
  answers that are right in more than one way.
* ``example=True`` marks a worked example the notebook shows in all three states; the
  release validation does not expect it to pass or to be "not done".

Every checker registers itself; :func:`checkers` lists them (tests run each one against its
reference, a stub and a deliberately wrong answer), and every outcome printed in a kernel is
also recorded (:func:`recorded`), which is how the test suite confirms that the solution
notebooks pass every check and the generated lessons report every exercise "not done".
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "PASSED",
    "NOT_DONE",
    "WRONG",
    "Case",
    "Checker",
    "Result",
    "checkers",
    "compare_values",
    "format_value",
    "recorded",
    "clear_recorded",
]

PASSED = "passed"
NOT_DONE = "not done"
WRONG = "wrong"

_SYMBOLS = {PASSED: "✓", NOT_DONE: "○", WRONG: "✗"}
_FALLBACK = "Using the reference implementation from here on, so the rest of the notebook runs."

#: Arrays with at most this many entries are printed in full in a "wrong" message.
SMALL = 24

# Print options fixed here so a learner's np.set_printoptions cannot change the messages.
_PRINT = dict(
    precision=6,
    suppress=True,
    threshold=1000,
    edgeitems=3,
    linewidth=88,
    floatmode="maxprec",
    sign="-",
    legacy=False,
)


class Case:
    """One set of arguments to call both the learner's function and the reference with.

    ``Case(x, y, n_classes=3)`` calls ``fn(x, y, n_classes=3)``. The arguments are
    deep-copied before every call.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def fresh(self) -> tuple[tuple, dict]:
        """A deep copy of the arguments, safe to hand to code that may modify them."""
        return copy.deepcopy(self.args), copy.deepcopy(self.kwargs)

    def __repr__(self) -> str:
        parts = [format_value(a) for a in self.args]
        parts += [f"{k}={format_value(v)}" for k, v in self.kwargs.items()]
        return f"Case({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class Result:
    """What one check concluded.

    Attributes:
        exercise: the exercise number, e.g. ``"2.1"``.
        name: the function's name, e.g. ``"kl_univariate"``.
        status: ``PASSED``, ``NOT_DONE`` or ``WRONG``.
        message: the text the check prints.
        detail: for ``NOT_DONE``, the text of the ``NotImplementedError`` (the stubs in
            ``lessons/`` name their exercise there); for ``WRONG``, the one-line reason.
        example: whether this is a worked example rather than an exercise.
    """

    exercise: str
    name: str
    status: str
    message: str
    detail: str = ""
    example: bool = False

    @property
    def lesson(self) -> int:
        return _lesson_of(self.exercise)


_REGISTRY: dict[tuple[str, str], Checker] = {}
_RECORDED: list[Result] = []


class Checker:
    """Checks one exercise; call it with the learner's function.

    Args:
        exercise: the exercise number as the notebook writes it, ``"<lesson>.<k>"``.
        reference: the correct implementation.
        cases: the :class:`Case` objects to try, in order; the first failure is reported.
        name: the name of the function the learner writes; defaults to the reference's
            ``__name__`` without leading underscores.
        rtol, atol: tolerances for numbers, as in ``np.isclose``.
        call: ``call(obj, *args, **kwargs)`` runs the learner's object (and the reference)
            on a case; by default ``obj(*args, **kwargs)``.
        compare: ``compare(expected, got)`` returns ``None`` when ``got`` is right and a
            one-line reason otherwise; by default :func:`compare_values`.
        example: a worked example, shown to the learner but never graded.

    ``checker(fn)`` prints the outcome, records it and returns ``fn`` if it passed, else the
    reference. ``checker.run(fn)`` only computes the :class:`Result`.
    """

    def __init__(
        self,
        exercise: str,
        reference: Callable,
        cases: Sequence[Case],
        *,
        name: str | None = None,
        rtol: float = 1e-6,
        atol: float = 1e-8,
        call: Callable | None = None,
        compare: Callable[[Any, Any], str | None] | None = None,
        example: bool = False,
    ) -> None:
        _lesson_of(exercise)  # validates the format
        if not cases:
            raise ValueError(f"Checker for exercise {exercise}: give at least one Case")
        for case in cases:
            if not isinstance(case, Case):
                raise TypeError(f"Checker for exercise {exercise}: cases must be Case objects")
        self.exercise = exercise
        self.reference = reference
        self.cases = list(cases)
        self.name = name or getattr(reference, "__name__", "function").lstrip("_")
        self.rtol = rtol
        self.atol = atol
        self.call = call
        self.compare = compare
        self.example = example
        _REGISTRY[(exercise, self.name)] = self

    @property
    def lesson(self) -> int:
        return _lesson_of(self.exercise)

    @property
    def label(self) -> str:
        kind = "Example" if self.example else f"Exercise {self.exercise}"
        return f"{kind} ({self.name})"

    def __repr__(self) -> str:
        return f"Checker({self.exercise!r}, name={self.name!r}, {len(self.cases)} cases)"

    def __call__(self, fn: Any) -> Any:
        result = self.run(fn)
        print(result.message)
        _RECORDED.append(result)
        return fn if result.status == PASSED else self.reference

    # -- the check itself -------------------------------------------------------------------

    def _run_on(self, obj: Any, case: Case) -> Any:
        args, kwargs = case.fresh()
        if self.call is not None:
            return self.call(obj, *args, **kwargs)
        return obj(*args, **kwargs)

    def run(self, fn: Any) -> Result:
        """Try ``fn`` on every case and return the :class:`Result` (prints nothing)."""
        if fn is None or not (callable(fn) or self.call is not None):
            reason = f"expected a function, got {_type_name(fn)}"
            return self._result(WRONG, self._wrong_header() + f"\n    {reason}", reason)
        for case in self.cases:
            expected = self._run_on(self.reference, case)
            try:
                got = self._run_on(fn, case)
            except NotImplementedError as exc:
                message = (
                    f"{_SYMBOLS[NOT_DONE]} {self.label}: not done yet. "
                    "Using the reference implementation for now, so the rest of the "
                    "notebook runs."
                )
                return self._result(NOT_DONE, message, str(exc))
            except Exception as exc:  # noqa: BLE001 - any error in learner code is "wrong"
                reason = f"raised {type(exc).__name__}: {_scrub(str(exc))}"
                lines = [self._wrong_header(), *self._case_lines(case), f"    {reason}"]
                return self._result(WRONG, "\n".join(lines), reason)
            if self.compare is not None:
                reason = self.compare(expected, got)
                mismatch = None if reason is None else Mismatch("", reason)
            else:
                mismatch = compare_values(expected, got, rtol=self.rtol, atol=self.atol)
            if mismatch is not None:
                lines = [self._wrong_header(), *self._case_lines(case)]
                lines += _labelled("expected", format_value(expected), 4)
                lines += _labelled("got     ", format_value(got), 4)
                lines.append(f"    {mismatch.describe()}")
                return self._result(WRONG, "\n".join(lines), mismatch.describe())
        return self._result(PASSED, f"{_SYMBOLS[PASSED]} {self.label}: correct.", "")

    def _wrong_header(self) -> str:
        return f"{_SYMBOLS[WRONG]} {self.label}: wrong answer."

    def _result(self, status: str, message: str, detail: str) -> Result:
        if status == WRONG:
            message = f"{message}\n  {_FALLBACK}"
        return Result(self.exercise, self.name, status, message, detail, self.example)

    def _case_lines(self, case: Case) -> list[str]:
        args, kwargs = case.args, case.kwargs
        named: list[tuple[str, Any]] = []
        try:
            bound = inspect.signature(self.reference).bind(*args, **kwargs)
            named = list(bound.arguments.items())
        except (TypeError, ValueError):
            named = [(f"argument {i + 1}", a) for i, a in enumerate(args)]
            named += list(kwargs.items())
        lines = [f"    for {self.name}({', '.join(n for n, _ in named)}) with"]
        for arg_name, value in named:
            lines += _labelled(f"{arg_name} =", format_value(value), 6)
        return lines


# -- the registry and the record -------------------------------------------------------------


def _lesson_of(exercise: str) -> int:
    match = re.fullmatch(r"(\d+)\.(\d+)[a-z]?", exercise)
    if match is None:
        raise ValueError(f"exercise numbers look like '2.1' (lesson.number), got {exercise!r}")
    return int(match.group(1))


def _import_lesson_modules(lesson: int | None) -> None:
    import vae_from_scratch.checks as package

    for info in pkgutil.iter_modules(package.__path__):
        match = re.fullmatch(r"lesson(\d+)", info.name)
        if match and (lesson is None or int(match.group(1)) == lesson):
            importlib.import_module(f"{package.__name__}.{info.name}")


def checkers(lesson: int | None = None, *, examples: bool = False) -> list[Checker]:
    """Every registered checker (of one lesson if given), sorted by exercise number.

    Imports ``vae_from_scratch.checks.lessonNN`` first so that all of them are registered.
    Worked examples are left out unless ``examples=True``.
    """
    _import_lesson_modules(lesson)
    found = [
        c
        for c in _REGISTRY.values()
        if (lesson is None or c.lesson == lesson) and (examples or not c.example)
    ]
    return sorted(found, key=lambda c: (*_exercise_key(c.exercise), c.name))


def _exercise_key(exercise: str) -> tuple[int, int, str]:
    lesson, rest = exercise.split(".")
    number = re.match(r"\d+", rest).group(0)
    return int(lesson), int(number), rest[len(number) :]


def recorded() -> list[Result]:
    """The results of every check printed in this process so far, in order."""
    return list(_RECORDED)


def clear_recorded() -> None:
    """Forget the recorded results (tests use this)."""
    _RECORDED.clear()


def report_json(lesson: int) -> str:
    """JSON with the checks recorded in this process and the exercises lesson ``lesson``
    registers. The test suite asks a notebook's kernel for it after the last cell ran."""
    return json.dumps(
        {
            "recorded": [dataclasses.asdict(r) for r in _RECORDED],
            "expected": [[c.exercise, c.name] for c in checkers(lesson)],
        }
    )


# -- comparison ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """Where a result differs from the expected one (``path`` like ``[0]['mu']``) and why."""

    path: str
    reason: str

    def describe(self) -> str:
        return f"at {self.path}: {self.reason}" if self.path else self.reason


def _to_plain(value: Any) -> Any:
    """torch tensors (or anything with .detach().cpu().numpy()) become NumPy arrays."""
    if all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy")):
        return value.detach().cpu().numpy()
    return value


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (bool, int, float, complex, np.number, np.bool_, np.ndarray))


def compare_values(expected: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8,
                   path: str = "") -> Mismatch | None:
    """``None`` when ``got`` matches ``expected``, else the first :class:`Mismatch`.

    Numbers and arrays must have the same shape and agree within ``np.isclose(got, expected,
    rtol, atol)`` (NaN matches NaN); tuples, lists, dicts and dataclasses are compared item
    by item; anything else with ``==``.
    """
    expected, got = _to_plain(expected), _to_plain(got)
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        if not (dataclasses.is_dataclass(got) and not isinstance(got, type)):
            return Mismatch(path, f"expected a {_type_name(expected)}, got {_type_name(got)}")
        expected = {f.name: getattr(expected, f.name) for f in dataclasses.fields(expected)}
        got = {f.name: getattr(got, f.name) for f in dataclasses.fields(got)}
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return Mismatch(path, f"expected a dict, got {_type_name(got)}")
        if set(expected) != set(got):
            want, have = sorted(map(repr, expected)), sorted(map(repr, got))
            return Mismatch(path, f"expected keys {', '.join(want)}; got {', '.join(have)}")
        for key in sorted(expected, key=repr):
            found = compare_values(expected[key], got[key], rtol, atol, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return Mismatch(path, f"expected a {_type_name(expected)} of {len(expected)} "
                                  f"items, got {_type_name(got)}")
        if len(got) != len(expected):
            return Mismatch(path, f"expected {len(expected)} items, got {len(got)}")
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            found = compare_values(e, g, rtol, atol, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if _is_numeric(expected):
        return _compare_arrays(np.asarray(expected), got, rtol, atol, path)
    if expected is None:
        return None if got is None else Mismatch(path, f"expected None, got {_type_name(got)}")
    try:
        same = bool(expected == got)
    except Exception:  # noqa: BLE001 - an odd __eq__ is a mismatch, not a crash
        same = False
    return None if same else Mismatch(path, "values differ")


def _compare_arrays(expected: np.ndarray, got: Any, rtol: float, atol: float,
                    path: str) -> Mismatch | None:
    if not _is_numeric(got):
        if isinstance(got, (tuple, list)):
            return Mismatch(path, f"expected an array, got a {_type_name(got)}; "
                                  "wrap it in np.array(...)")
        return Mismatch(path, f"expected a number or array, got {_type_name(got)}")
    got = np.asarray(got)
    if got.shape != expected.shape:
        return Mismatch(path, f"expected shape {expected.shape}, got shape {got.shape}")
    if expected.dtype.kind not in "biufc" or got.dtype.kind not in "biufc":
        same = np.array_equal(expected, got)
        return None if same else Mismatch(path, "values differ")
    e = expected.astype(np.complex128 if "c" in (expected.dtype.kind + got.dtype.kind)
                        else np.float64)
    g = got.astype(e.dtype)
    with np.errstate(all="ignore"):
        close = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    bad = np.argwhere(~close)
    first = tuple(int(i) for i in bad[0])
    where = f" at index {list(first)}" if expected.ndim else ""
    if expected.ndim == 0:
        reason = f"off by {_fmt_scalar(abs(g - e).item())}"
    else:
        with np.errstate(all="ignore"):
            diff = np.abs(g - e)[~close]
        largest = _fmt_scalar(float(np.nanmax(diff))) if not np.isnan(diff).all() else "nan"
        reason = (f"{len(bad)} of {expected.size} entries differ (largest difference "
                  f"{largest}); first{where}: expected {_fmt_scalar(e[first].item())}, "
                  f"got {_fmt_scalar(g[first].item())}")
    return Mismatch(path, f"{reason} (rtol={rtol:g}, atol={atol:g})")


# -- formatting ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    return type(value).__name__


def _fmt_scalar(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, complex):
        return f"{x:.7g}"
    return f"{float(x):.7g}"


def _scrub(text: str) -> str:
    """Drop memory addresses so messages are the same on every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def format_value(value: Any, small: int = SMALL) -> str:
    """Deterministic text for a value: small arrays in full, larger ones by shape and dtype."""
    value = _to_plain(value)
    if isinstance(value, np.ndarray):
        if value.size <= small and value.dtype.kind in "biufc":
            with np.printoptions(**_PRINT):
                return np.array2string(value, separator=", ")
        return f"<array of shape {value.shape}, {value.dtype}>"
    if isinstance(value, (bool, int, float, complex, np.number, np.bool_)):
        return _fmt_scalar(value)
    if isinstance(value, (tuple, list)):
        inner = ", ".join(format_value(v, small) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {format_value(v, small)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{f.name}={format_value(getattr(value, f.name), small)}"
            for f in dataclasses.fields(value)
        )
        return f"{type(value).__name__}({fields})"
    if isinstance(value, np.random.Generator):
        return "np.random.Generator"
    text = _scrub(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _labelled(label: str, text: str, indent: int) -> list[str]:
    """``label text`` with continuation lines of a multi-line ``text`` aligned under it."""
    lines = text.splitlines() or [""]
    pad = " " * (indent + len(label) + 1)
    return [" " * indent + f"{label} {lines[0]}"] + [pad + line for line in lines[1:]]
