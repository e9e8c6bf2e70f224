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

How to write the checks for a lesson: :mod:`vae_from_scratch.checks` (the package).

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
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from vae_from_scratch.checks import slips
from vae_from_scratch.checks.messages import (
    CASE_BUDGET,
    count_numbers,
    format_value,
    labelled,
    scrub,
    shape_text,
    type_name,
    wrap_message,
)
from vae_from_scratch.checks.values import Mismatch, compare_values, iter_mismatches

__all__ = [
    "PASSED",
    "NOT_DONE",
    "WRONG",
    "Case",
    "Checker",
    "Result",
    "checkers",
    "recorded",
    "clear_recorded",
]

PASSED = "passed"
NOT_DONE = "not done"
WRONG = "wrong"

_SYMBOLS = {PASSED: "✓", NOT_DONE: "○", WRONG: "✗"}
_FALLBACK = "Using the reference implementation from here on, so the rest of the notebook runs."

#: How many other wrong outputs a message names.
_OTHERS_SHOWN = 4

#: NumPy's floating-point error handling in a strict case (underflow to 0 stays silent: it is
#: what a safe formula does too, and its consequence, a log of 0, does raise).
_STRICT = dict(over="raise", invalid="raise", divide="raise", under="ignore")

_SIZE_SPEC = re.compile(r"^(?P<arg>\w+)\.shape\[(?P<axis>-?\d+)\]$")


def _size_axes(spec: str | int) -> int | tuple[tuple[str, int], ...] | None:
    """A size's spec as an int, or the (argument, axis) pairs whose lengths multiply to it
    (``"dout.shape[2] * dout.shape[3]"``); None when it is neither."""
    if isinstance(spec, int):
        return spec
    if not isinstance(spec, str):
        return None
    parts = [_SIZE_SPEC.match(part.strip()) for part in spec.split("*")]
    if not all(parts):
        return None
    return tuple((m.group("arg"), int(m.group("axis"))) for m in parts)


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
            one-line reason otherwise; by default
            :func:`~vae_from_scratch.checks.values.compare_values`.
        example: a worked example, shown to the learner but never graded.
        outputs: names of the items of the tuple the function returns, in order, so that a
            message names the wrong one (``"dlog_var is wrong"``).
        key_order: dict keys in the order to compare them (keys not listed follow in the
            expected dict's order); the first wrong one is the one reported.
        key_order_note: why that order, said next to the wrong output's name.
        sizes: ``{"N": "x.shape[0]"}``: sizes of each case (an argument's axis, a product of
            axes such as ``"dout.shape[2] * dout.shape[3]"``, or an int) that a result off
            by that factor is recognised by.
        slips: ``[(why, fn), ...]``: the lesson's own slips, each written as a function of a
            case's arguments; when a wrong result equals what ``fn`` gives on that case, the
            message says ``why`` (in place of any slip recognised by its signature).

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
        slips: Sequence[tuple[str, Callable]] = (),
    ) -> None:
        _lesson_of(exercise)  # validates the format
        if not cases:
            raise ValueError(f"Checker for exercise {exercise}: give at least one Case")
        for case in cases:
            if not isinstance(case, Case):
                raise TypeError(f"Checker for exercise {exercise}: cases must be Case objects")
        size_axes: dict[str, int | tuple[tuple[str, int], ...]] = {}
        for symbol, spec in (sizes or {}).items():
            axes = _size_axes(spec)
            if axes is None:
                raise ValueError(f"Checker for exercise {exercise}: size {symbol!r} must be an "
                                 f"int or look like 'x.shape[0]' (or 'x.shape[2] * "
                                 f"x.shape[3]'), got {spec!r}")
            size_axes[symbol] = axes
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
        self.slips = list(slips)
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
            reason = f"expected a function, got {type_name(fn)}"
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
            reason = f"raised {type(exc).__name__}: {scrub(str(exc))}"
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
            found = iter_mismatches(expected, got, self.rtol, self.atol, (), self.key_order,
                                    sizes)
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
                lines += labelled("expected", format_value(shown_expected), 4)
                lines += labelled("got     ", format_value(shown_got), 4)
            lines.append(f"    {first.reason}")
            hint = self._named_slip(case, got) or first.hint
            if hint:
                lines.append(f"    {hint}")
            detail = f"{name}: {first.reason}" if name else first.reason
        if changed is not None:
            lines.append(f"    {changed}")
            detail = detail or changed
        return self._result(WRONG, "\n".join(lines), detail)

    def _named_slip(self, case: Case, got: Any) -> str:
        """``why`` of the first of the lesson's slips that gives ``got`` on ``case``, or ""."""
        for why, slip in self.slips:
            args, kwargs = case.fresh()
            try:
                with np.errstate(all="ignore"):
                    value = slip(*args, **kwargs)
            except Exception:  # noqa: BLE001 - a slip that cannot run on this case: not it
                continue
            if compare_values(value, got, self.rtol, self.atol) is None:
                return why
        return ""

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
        if sum(count_numbers(v) for _, v in named) > CASE_BUDGET:
            # A big case: its numbers would not help, its shapes do.
            shapes = ", ".join(f"{n}: {shape_text(v)}" for n, v in named)
            return lines + [f"      {shapes}"]
        for arg_name, value in named:
            lines += labelled(f"{arg_name} =", format_value(value), 6)
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
            size = 1
            for arg, axis in spec:
                value = arguments.get(arg)
                shape = np.shape(value) if value is not None else ()
                if not -len(shape) <= axis < len(shape):
                    break
                size *= int(shape[axis])
            else:
                found[symbol] = (size, self.sizes[symbol])
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


# -- the registry and the record -------------------------------------------------------------


def _lesson_of(exercise: str) -> int:
    match = re.fullmatch(r"(\d+)\.(\d+)[a-z]?", exercise)
    if match is None:
        raise ValueError(f"exercise numbers look like '2.1' (lesson.number), got {exercise!r}")
    return int(match.group(1))


def _import_lesson_modules(lesson: int | None) -> None:
    """Import this package's ``lessonNN`` modules (of one lesson, if given): they register
    their checkers when imported. Found by file name, beside this module."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        match = re.fullmatch(r"lesson(\d+)", info.name)
        if match and (lesson is None or int(match.group(1)) == lesson):
            importlib.import_module(f"{__package__}.{info.name}")



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
