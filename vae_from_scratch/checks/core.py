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
"not done"; any other exception, a wrong shape or a wrong value counts as "wrong", and so
does a function that changes its arguments in place.

A "wrong" message names what is wrong and, where it recognises the mistake, says so:

* the output that is wrong (``dlog_var is wrong``, ``grads['dec.0.W'] is wrong``), from the
  checker's ``outputs`` names and the keys of dicts, and which others are wrong too;
* the common slips by their signature: a result off by a constant factor (-1, 2, 1/2, or a
  size of the case such as the batch size N: a sum where a mean belongs), off by log K, a
  transposed matrix, a missing sum or mean over an axis;
* an exception with the line of the learner's code that raised it;
* a floating-point overflow, a square root of a negative number, a log of 0 and the like, in
  cases marked :meth:`Case.strict`, which run the learner's code with NumPy's floating-point
  errors raised: a safeguard the lesson asks for is then exercised even where the unsafe
  formula happens to give the right number;
* the argument a function modified in place.

The text is deterministic (no timings, addresses or varying random numbers), so solution notebooks
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
* ``outputs=("dmu", "dlog_var")`` names the items of a tuple the function returns, so that a
  message says ``dlog_var is wrong`` (the reference's docstring names them). Give it for
  every exercise that returns a tuple; dict keys name themselves.
* ``key_order=[...]`` (with ``key_order_note``) says in which order dict keys are compared,
  e.g. gradients in backpropagation order, so the first one reported is the one to fix.
* ``sizes={"N": "x.shape[0]"}`` names sizes of a case (an argument's axis, or a number), so
  that a result N times too large is reported as "a sum where a mean belongs".
* ``Case(...).strict("why")`` runs the learner's code on that case with floating-point
  errors raised; use it for cases that test a numerical safeguard the lesson asks for.

Every checker registers itself; :func:`checkers` lists them (tests run each one against its
reference, a stub and a deliberately wrong answer), and every outcome printed in a kernel is
also recorded (:func:`recorded`), which is how the test suite confirms that the solution
notebooks pass every check and the generated lessons report every exercise "not done".
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np

from vae_from_scratch.checks import slips

__all__ = [
    "PASSED",
    "NOT_DONE",
    "WRONG",
    "Case",
    "Checker",
    "Mismatch",
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
#: A case with more numbers than this is described by its shapes, in one line.
CASE_BUDGET = 64
#: How many other wrong outputs a message names.
_OTHERS_SHOWN = 4

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

#: NumPy's floating-point error handling in a strict case (underflow to 0 stays silent: it is
#: what a safe formula does too, and its consequence, a log of 0, does raise).
_STRICT = dict(over="raise", invalid="raise", divide="raise", under="ignore")

_SIZE_SPEC = re.compile(r"^(?P<arg>\w+)\.shape\[(?P<axis>-?\d+)\]$")


class Case:
    """One set of arguments to call both the learner's function and the reference with.

    ``Case(x, y, n_classes=3)`` calls ``fn(x, y, n_classes=3)``. The arguments are
    deep-copied before every call. ``Case(...).strict("why")`` marks a case that tests a
    numerical safeguard (see :meth:`strict`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        #: Why this case runs with floating-point errors raised; None for an ordinary case.
        self.numerics: str | None = None

    def strict(self, why: str) -> Case:
        """Run the learner's code on this case with NumPy's floating-point errors raised
        (overflow, an invalid value such as the square root of a negative number or 0/0,
        division by zero such as log 0), so code that lacks a safeguard the lesson asks for
        fails here even when its value happens to come out right. ``why`` says what the
        case is for (it is quoted when the case fails). Returns the case itself."""
        if not why:
            raise ValueError("Case.strict: say what the case is for")
        self.numerics = why
        return self

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
            ``lessons/`` name their exercise there); for ``WRONG``, the one-line reason
            (starting with the wrong output's name, where it has one).
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
        outputs: names of the items of the tuple the function returns, in order, so that a
            message names the wrong one (``"dlog_var is wrong"``).
        key_order: dict keys in the order to compare them (keys not listed follow in the
            expected dict's order); the first wrong one is the one reported.
        key_order_note: why that order, said next to the wrong output's name.
        sizes: ``{"N": "x.shape[0]"}``: sizes of each case (an argument's axis, or an int)
            that a result off by that factor is recognised by.

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
        outputs: Sequence[str] | None = None,
        key_order: Sequence[Any] | None = None,
        key_order_note: str = "",
        sizes: Mapping[str, str | int] | None = None,
    ) -> None:
        _lesson_of(exercise)  # validates the format
        if not cases:
            raise ValueError(f"Checker for exercise {exercise}: give at least one Case")
        for case in cases:
            if not isinstance(case, Case):
                raise TypeError(f"Checker for exercise {exercise}: cases must be Case objects")
        size_axes: dict[str, int | tuple[str, int]] = {}  # an int, or (argument, axis)
        for symbol, spec in (sizes or {}).items():
            match = _SIZE_SPEC.match(spec) if isinstance(spec, str) else None
            if not (isinstance(spec, int) or match):
                raise ValueError(f"Checker for exercise {exercise}: size {symbol!r} must be an "
                                 f"int or look like 'x.shape[0]', got {spec!r}")
            size_axes[symbol] = (match.group("arg"), int(match.group("axis"))) if match else spec
        self.exercise = exercise
        self.reference = reference
        self.cases = list(cases)
        self.name = name or getattr(reference, "__name__", "function").lstrip("_")
        self.rtol = rtol
        self.atol = atol
        self.call = call
        self.compare = compare
        self.example = example
        self.outputs = tuple(outputs) if outputs is not None else None
        self.key_order = list(key_order) if key_order is not None else None
        self.key_order_note = key_order_note
        self.sizes = dict(sizes or {})
        self._size_axes = size_axes
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
        print(wrap_message(result.message))
        _RECORDED.append(result)
        return fn if result.status == PASSED else self.reference

    # -- the check itself -------------------------------------------------------------------

    def _run_on(self, obj: Any, case: Case, strict: bool = False) -> tuple[Any, tuple, dict]:
        """Call ``obj`` on fresh copies of the case's arguments; return the result and the
        arguments it was given (to see whether it changed them)."""
        args, kwargs = case.fresh()
        with np.errstate(**_STRICT) if strict else contextlib.nullcontext():
            if self.call is not None:
                result = self.call(obj, *args, **kwargs)
            else:
                result = obj(*args, **kwargs)
        return result, args, kwargs

    def run(self, fn: Any) -> Result:
        """Try ``fn`` on every case and return the :class:`Result` (prints nothing)."""
        if fn is None or not (callable(fn) or self.call is not None):
            reason = f"expected a function, got {_type_name(fn)}"
            return self._result(WRONG, self._wrong_header() + f"\n    {reason}", reason)
        for case in self.cases:
            expected = self._run_on(self.reference, case)[0]
            try:
                got, args, kwargs = self._run_on(fn, case, strict=case.numerics is not None)
            except NotImplementedError as exc:
                message = (
                    f"{_SYMBOLS[NOT_DONE]} {self.label}: not done yet. "
                    "Using the reference implementation for now, so the rest of the "
                    "notebook runs."
                )
                return self._result(NOT_DONE, message, str(exc))
            except Exception as exc:  # noqa: BLE001 - any error in learner code is "wrong"
                return self._raised(case, exc)
            wrong = self._judge(case, expected, got, args, kwargs)
            if wrong is not None:
                return wrong
        return self._result(PASSED, f"{_SYMBOLS[PASSED]} {self.label}: correct.", "")

    def _raised(self, case: Case, exc: Exception) -> Result:
        """The result for an exception in the learner's code: what, and on which line."""
        if isinstance(exc, FloatingPointError):
            reason = slips.floating_point_advice(str(exc))
        else:
            reason = f"raised {type(exc).__name__}: {_scrub(str(exc))}"
        named = self._named_arguments(case.args, case.kwargs)
        lines = [self._wrong_header(), *self._case_lines(named), f"    {reason}"]
        lines += slips.learner_line(exc)
        if isinstance(exc, FloatingPointError) and case.numerics:
            lines.append(f"    (This case: {case.numerics}.)")
        return self._result(WRONG, "\n".join(lines), reason)

    def _judge(self, case: Case, expected: Any, got: Any, args: tuple,
               kwargs: dict) -> Result | None:
        """None when ``got`` is right and the arguments are unchanged, else the Result."""
        named = self._named_arguments(case.args, case.kwargs)
        if self.compare is not None:
            reason = self.compare(expected, got)
            mismatches = [] if reason is None else [Mismatch("", reason)]
        else:
            sizes = self._sizes(case, named)
            found = _mismatches(expected, got, self.rtol, self.atol, (), self.key_order, sizes)
            mismatches = list(islice(found, 1 + 20))
        changed = self._changed_argument(named, args, kwargs)
        if not mismatches and changed is None:
            return None
        lines = [self._wrong_header(), *self._case_lines(named)]
        detail = ""
        if mismatches:
            first = mismatches[0]
            name = self._output_name(first.keys)
            shown_expected, shown_got = expected, got
            if name:
                in_order = self.key_order_note and first.keys[-1] in (self.key_order or ())
                note = f" ({self.key_order_note})" if in_order else ""
                lines.append(f"    {name} is wrong{note}:")
                others = []
                for m in mismatches[1:]:
                    other = self._output_name(m.keys)
                    if other and other != name and other not in others:
                        others.append(other)
                if others:
                    more = len(others) - _OTHERS_SHOWN
                    text = ", ".join(others[:_OTHERS_SHOWN]) + (f" and {more} more" if more > 0
                                                                 else "")
                    after = " (perhaps because of it)" if self.key_order_note else ""
                    lines.append(f"    also wrong{after}: {text}")
                shown_expected, shown_got = first.expected, first.got
            if not (isinstance(shown_expected, Mapping) and isinstance(shown_got, Mapping)):
                # (two dicts differ in their keys, and the reason names them)
                lines += _labelled("expected", format_value(shown_expected), 4)
                lines += _labelled("got     ", format_value(shown_got), 4)
            lines.append(f"    {first.reason}")
            if first.hint:
                lines.append(f"    {first.hint}")
            detail = f"{name}: {first.reason}" if name else first.reason
        if changed is not None:
            lines.append(f"    {changed}")
            detail = detail or changed
        return self._result(WRONG, "\n".join(lines), detail)

    def _wrong_header(self) -> str:
        return f"{_SYMBOLS[WRONG]} {self.label}: wrong answer."

    def _result(self, status: str, message: str, detail: str) -> Result:
        if status == WRONG:
            message = f"{message}\n  {_FALLBACK}"
        return Result(self.exercise, self.name, status, message, detail, self.example)

    def _named_arguments(self, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
        """The case's arguments with the names the reference gives them."""
        try:
            bound = inspect.signature(self.reference).bind(*args, **kwargs)
            return list(bound.arguments.items())
        except (TypeError, ValueError):
            named = [(f"argument {i + 1}", a) for i, a in enumerate(args)]
            return named + list(kwargs.items())

    def _case_lines(self, named: list[tuple[str, Any]]) -> list[str]:
        """The lines that show a case, given its arguments by name (``_named_arguments``)."""
        lines = [f"    for {self.name}({', '.join(n for n, _ in named)}) with"]
        if sum(_count_numbers(v) for _, v in named) > CASE_BUDGET:
            # A big case: its numbers would not help, its shapes do.
            shapes = ", ".join(f"{n}: {_shape_text(v)}" for n, v in named)
            return lines + [f"      {shapes}"]
        for arg_name, value in named:
            lines += _labelled(f"{arg_name} =", format_value(value), 6)
        return lines

    def _sizes(self, case: Case, named: list[tuple[str, Any]] | None = None,
               ) -> dict[str, tuple[int, str]]:
        """The named sizes of this case: symbol -> (value, where it comes from). ``named``:
        the case's arguments by name, where ``_named_arguments`` already gave them."""
        if not self._size_axes:
            return {}
        if named is None:
            named = self._named_arguments(case.args, case.kwargs)
        arguments = dict(named)
        found = {}
        for symbol, spec in self._size_axes.items():
            if isinstance(spec, int):
                found[symbol] = (spec, "")
                continue
            arg, axis = spec
            value = arguments.get(arg)
            shape = np.shape(value) if value is not None else ()
            if -len(shape) <= axis < len(shape):
                found[symbol] = (int(shape[axis]), self.sizes[symbol])
        return found

    def _output_name(self, keys: tuple) -> str:
        """``dlog_var``, ``grads['dec.0.W']`` or ``loss`` for the path to a wrong output."""
        if not keys:
            return ""
        first, rest = keys[0], keys[1:]
        if self.outputs is not None and isinstance(first, int) and first < len(self.outputs):
            head = self.outputs[first]
        elif isinstance(first, str):
            head = first
        else:
            head = f"[{first!r}]"
        return head + "".join(f"[{k!r}]" for k in rest)

    def _changed_argument(self, before: list[tuple[str, Any]], args: tuple,
                          kwargs: dict) -> str | None:
        """A sentence naming the first argument the learner's function changed, or None.

        ``before``: the case's own arguments by name (``_named_arguments``), as they still are
        (code is only ever handed copies); ``args``, ``kwargs``: the copies it was given."""
        after = self._named_arguments(args, kwargs)
        for (name, old), (_, new) in zip(before, after, strict=False):
            where = slips.changed_part(old, new, name)
            if where is not None:
                var = name if name.isidentifier() else "x"
                return (f"Your function changed its argument {where} in place, so the caller's "
                        f"array changed too: compute new arrays instead ({var} = {var} * 2, "
                        f"not {var} *= 2) or work on a copy.")
        return None


def _count_numbers(value: Any) -> int:
    value = _to_plain(value)
    if isinstance(value, np.ndarray):
        return value.size
    if isinstance(value, (tuple, list)):
        return sum(_count_numbers(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_count_numbers(v) for v in value.values())
    return 1


def _shape_text(value: Any) -> str:
    """A few words for an argument of a big case: its shape, not its numbers."""
    value = _to_plain(value)
    if isinstance(value, np.ndarray):
        return f"shape {value.shape}" if value.size > 1 else format_value(value)
    if isinstance(value, Mapping):
        return f"a dict of {len(value)} arrays"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shape_text(v) for v in value) + ")"
    return format_value(value)


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
    """Where a result differs from the expected one and why.

    ``path`` is like ``[0]['mu']`` (``keys`` the same as a tuple: ``(0, 'mu')``); ``hint``
    names the slip when its signature is recognised (``"It has the opposite sign ..."``);
    ``expected`` and ``got`` are the two values that differ there.
    """

    path: str
    reason: str
    keys: tuple = ()
    hint: str = ""
    expected: Any = dataclasses.field(default=None, compare=False, repr=False)
    got: Any = dataclasses.field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return f"at {self.path}: {self.reason}" if self.path else self.reason


def _to_plain(value: Any) -> Any:
    """torch tensors (or anything with .detach().cpu().numpy()) become NumPy arrays."""
    if all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy")):
        return value.detach().cpu().numpy()
    return value


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (bool, int, float, complex, np.number, np.bool_, np.ndarray))


def _path_text(keys: tuple) -> str:
    return "".join(f"[{k!r}]" if isinstance(k, str) else f"[{k}]" for k in keys)


def compare_values(expected: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8,
                   path: str = "", *, key_order: Sequence[Any] | None = None,
                   sizes: Mapping[str, tuple[int, str]] | None = None) -> Mismatch | None:
    """``None`` when ``got`` matches ``expected``, else the first :class:`Mismatch`.

    Numbers and arrays must have the same shape and agree within ``np.isclose(got, expected,
    rtol, atol)`` (NaN matches NaN); tuples, lists, dicts and dataclasses are compared item
    by item (dict keys in ``key_order`` first, then in the expected dict's order); anything
    else with ``==``. ``path`` is put in front of the mismatch's path. ``sizes`` (symbol ->
    (size, where it comes from)) lets a result off by such a factor be recognised.
    """
    found = next(_mismatches(expected, got, rtol, atol, (), key_order, sizes or {}), None)
    if found is None or not path:
        return found
    return dataclasses.replace(found, path=path + found.path)


def _ordered_keys(expected: Mapping, key_order: Sequence[Any] | None) -> list:
    first = [k for k in (key_order or ()) if k in expected]
    return first + [k for k in expected if k not in first]


def _mismatches(expected: Any, got: Any, rtol: float, atol: float, keys: tuple,
                key_order: Sequence[Any] | None, sizes: Mapping[str, tuple[int, str]]):
    """Every place where ``got`` differs from ``expected``, as Mismatch objects, in order."""
    path = _path_text(keys)
    expected, got = _to_plain(expected), _to_plain(got)
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        if not (dataclasses.is_dataclass(got) and not isinstance(got, type)):
            yield Mismatch(path, f"expected a {_type_name(expected)}, got {_type_name(got)}",
                           keys, "", expected, got)
            return
        expected = {f.name: getattr(expected, f.name) for f in dataclasses.fields(expected)}
        got = {f.name: getattr(got, f.name) for f in dataclasses.fields(got)}
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            yield Mismatch(path, f"expected a dict, got {_type_name(got)}", keys, "",
                           expected, got)
            return
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {_plural('key', missing)} {_keys_text(missing)}")
            if extra:
                parts.append(f"unexpected {_plural('key', extra)} {_keys_text(extra)}")
            yield Mismatch(path, "; ".join(parts), keys, "", expected, got)
            return
        for key in _ordered_keys(expected, key_order):
            yield from _mismatches(expected[key], got[key], rtol, atol, keys + (key,),
                                   key_order, sizes)
        return
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            yield Mismatch(path, f"expected a {_type_name(expected)} of {len(expected)} items, "
                                 f"got {_type_name(got)}", keys, "", expected, got)
            return
        if len(got) != len(expected):
            yield Mismatch(path, f"expected {len(expected)} items, got {len(got)}", keys, "",
                           expected, got)
            return
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            yield from _mismatches(e, g, rtol, atol, keys + (i,), key_order, sizes)
        return
    if _is_numeric(expected):
        found = _compare_arrays(np.asarray(expected), got, rtol, atol, sizes)
        if found is not None:
            reason, hint = found
            yield Mismatch(path, reason, keys, hint, expected, got)
        return
    if expected is None:
        if got is not None:
            yield Mismatch(path, f"expected None, got {_type_name(got)}", keys, "", None, got)
        return
    try:
        same = bool(expected == got)
    except Exception:  # noqa: BLE001 - an odd __eq__ is a mismatch, not a crash
        same = False
    if not same:
        yield Mismatch(path, "values differ", keys, "", expected, got)


def _plural(word: str, items: Sequence) -> str:
    return word if len(items) == 1 else word + "s"


def _keys_text(keys: Sequence) -> str:
    return ", ".join(map(repr, keys))


def _compare_arrays(expected: np.ndarray, got: Any, rtol: float, atol: float,
                    sizes: Mapping[str, tuple[int, str]]) -> tuple[str, str] | None:
    """None if they agree, else (the reason, a hint naming the slip or "")."""
    if not _is_numeric(got):
        if isinstance(got, (tuple, list)):
            return (f"expected an array, got a {_type_name(got)}; wrap it in np.array(...)", "")
        return f"expected a number or array, got {_type_name(got)}", ""
    got = np.asarray(got)
    numeric = expected.dtype.kind in "biufc" and got.dtype.kind in "biufc"
    if got.shape != expected.shape:
        reason = f"expected shape {expected.shape}, got shape {got.shape}"
        return reason, slips.shape_slip(expected, got) if numeric else ""
    if not numeric:
        same = np.array_equal(expected, got)
        return None if same else ("values differ", "")
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
    reason = f"{reason} (rtol={rtol:g}, atol={atol:g})"
    # Factors and offsets name slips in real-valued results, not in counts.
    hint = slips.value_slip(e, g, rtol, atol, sizes) if expected.dtype.kind == "f" else ""
    return reason, hint


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
        if _count_numbers(value) > small:  # many arrays: their names and shapes, not numbers
            items = [f"{k!r}: {_shape_text(v)}" for k, v in value.items()]
            lines = [""]
            for i, item in enumerate(items):
                item = ("{" if i == 0 else "") + item + ("}" if i == len(items) - 1 else ",")
                if lines[-1] and len(lines[-1]) + len(item) > 80:
                    lines.append("")
                lines[-1] += (" " if lines[-1] else "") + item
            return "\n".join(lines)
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


#: Prose lines of a printed message are wrapped to this width, at spaces.
WRAP_WIDTH = 80
# A line that shows an array ("expected [[...", "  x = [0.1, ...", "         [2, 3]]"): its
# layout is NumPy's, so it is left as it is.
_ARRAY_LINE = re.compile(r"^\s*(?:(?:expected|got)\s+|[\w ]+ =\s)?\[")


def wrap_message(message: str, width: int = WRAP_WIDTH) -> str:
    """``message`` with each prose line longer than ``width`` broken at spaces, never inside
    a word (a narrow notebook output area would otherwise break it anywhere, "ru ns.").
    Continuation lines are indented two spaces deeper than their line; lines that show an
    array keep NumPy's layout, and a word longer than ``width`` stays whole."""
    out = []
    for line in message.splitlines():
        if len(line) <= width or _ARRAY_LINE.match(line):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(line.strip(), width=width, initial_indent=indent,
                             subsequent_indent=indent + "  ", break_long_words=False,
                             break_on_hyphens=False)
    return "\n".join(out)


def _labelled(label: str, text: str, indent: int) -> list[str]:
    """``label text`` with continuation lines of a multi-line ``text`` aligned under it."""
    lines = text.splitlines() or [""]
    pad = " " * (indent + len(label) + 1)
    return [" " * indent + f"{label} {lines[0]}"] + [pad + line for line in lines[1:]]
