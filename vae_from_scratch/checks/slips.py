"""Naming a learner's mistake from its signature, for the checkers in ``core``.

A wrong answer is more use to a learner when the message says what kind of wrong it is. This
module recognises, from the expected and the returned values alone (no per-exercise hints):

* a result off by a constant factor: -1, 2, 1/2, or a named size of the case such as the
  batch size N (a sum where a mean belongs, or the reverse), or by log K; a transposed
  matrix; a missing sum or mean over an axis (:func:`value_slip`, :func:`shape_slip`);
* what a NumPy floating-point error means (overflow in exp, the square root of a negative
  number, the log of 0) and what to do about it (:func:`floating_point_advice`);
* the line of the learner's own code that raised an exception (:func:`learner_line`);
* the part of an argument a function changed in place (:func:`changed_part`).

Every sentence about a value starts with "It", the value the message has just named.
"""

from __future__ import annotations

import functools
import math
import re
import sysconfig
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["changed_part", "floating_point_advice", "learner_line", "shape_slip", "value_slip"]


# -- slips in a value ------------------------------------------------------------------------


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    with np.errstate(all="ignore"):
        return bool(np.allclose(a, b, rtol=rtol, atol=atol))


def value_slip(e: np.ndarray, g: np.ndarray, rtol: float, atol: float,
               sizes: Mapping[str, tuple[int, str]]) -> str:
    """A sentence naming the slip when ``g`` (same shape as ``e``) is ``e`` off by a
    recognisable factor, offset or transposition; "" otherwise."""
    if not (np.isfinite(e).all() and np.isfinite(g).all()):
        return ""
    if np.abs(e).max(initial=0.0) > 10 * atol:  # factors mean nothing against zeros
        if _close(g, -e, rtol, atol):
            return "It has the opposite sign of the expected value: a sign error?"
        for symbol, (size, where) in sizes.items():
            if size < 2:
                continue
            source = f" ({symbol} = {where})" if where else ""
            if _close(g, size * e, rtol, atol):
                return (f"It is {symbol} = {size} times the expected value{source}: a sum "
                        "where a mean belongs?")
            if _close(g, e / size, rtol, atol):
                return (f"It is the expected value divided by {symbol} = {size}{source}: a "
                        "mean where a sum belongs?")
        if _close(g, 2 * e, rtol, atol):
            return "It is exactly 2 times the expected value: a factor 2 too many (or a ½ lost)?"
        if _close(g, e / 2, rtol, atol):
            return "It is exactly half the expected value: a factor ½ too many (or a 2 lost)?"
    for symbol, (size, where) in sizes.items():
        if size < 2:
            continue
        log_size = math.log(size)
        source = f" ({symbol} = {where})" if where else ""
        if _close(g, e + log_size, rtol, atol) or _close(g, e - log_size, rtol, atol):
            side = "larger" if _close(g, e + log_size, rtol, atol) else "smaller"
            return (f"It is {side} than the expected value by exactly log {symbol} = "
                    f"log {size} = {log_size:.4g}{source}: check the 1/{symbol} (the "
                    f"- log {symbol}).")
    if e.ndim == 2 and e.shape[0] == e.shape[1] and not _close(e, e.T, rtol, atol) \
            and _close(g, e.T, rtol, atol):
        return "It is the transpose of the expected matrix: a swapped product or a missing .T?"
    if e.size > 1:
        nonzero = np.abs(e) > 10 * atol
        if nonzero.any():
            ratio = float(np.median(g[nonzero] / e[nonzero]))
            if ratio != 0 and _close(g, ratio * e, rtol, atol):
                return (f"It is {ratio:.4g} times the expected value, every entry: a constant "
                        "factor is wrong.")
        offset = float(np.median(g - e))
        if _close(g, e + offset, rtol, atol):
            return (f"It differs from the expected value by the same {offset:+.4g} in every "
                    "entry: a constant term is wrong or missing.")
    return ""


def shape_slip(expected: np.ndarray, got: np.ndarray) -> str:
    """A sentence naming the slip behind a wrong shape, where it is recognisable."""
    e, g = expected.astype(np.float64), got.astype(np.float64)
    if g.ndim == 2 and g.shape == e.shape[::-1] and _close(g.T, e, 1e-6, 1e-8):
        return "It is the transpose of the expected matrix: a swapped product or a missing .T?"
    for reduce, verb in ((np.sum, "sum"), (np.mean, "mean")):
        if g.ndim > e.ndim:
            for axis in range(g.ndim):
                reduced = reduce(g, axis=axis)
                if reduced.shape == e.shape and _close(reduced, e, 1e-6, 1e-8):
                    return (f"Its {verb} over axis {axis} is the expected value: a {verb} over "
                            f"axis {axis} is missing.")
            if e.ndim == 0 and _close(reduce(g), e, 1e-6, 1e-8):
                return f"Its {verb} is the expected value: a {verb} over it is missing."
    if g.ndim == 0 and e.ndim > 0:
        return (f"It is one number where shape {e.shape} belongs: a sum or mean over every "
                "axis, where one axis (axis=...) was meant?")
    return ""


# -- arguments changed in place --------------------------------------------------------------


def changed_part(before: Any, after: Any, label: str) -> str | None:
    """The label of the first part of an argument that differs after the call, or None.

    Arrays, numbers, tuples, lists and dicts are compared; anything else (random generators,
    functions, objects) is allowed to change.
    """
    if isinstance(before, np.ndarray):
        if not isinstance(after, np.ndarray) or after.shape != before.shape:
            return label
        if before.dtype.kind not in "biufc":
            return None
        same = np.array_equal(before, after, equal_nan=before.dtype.kind in "fc")
        return None if same else label
    if isinstance(before, (tuple, list)):
        if not isinstance(after, (tuple, list)) or len(after) != len(before):
            return label
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            found = changed_part(b, a, f"{label}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(before, dict):
        if not isinstance(after, dict) or set(after) != set(before):
            return label
        for key in before:
            found = changed_part(before[key], after[key], f"{label}[{key!r}]")
            if found is not None:
                return found
    return None


# -- exceptions in the learner's code --------------------------------------------------------

_FP_ERROR = re.compile(r"(overflow|underflow|invalid value|divide by zero) encountered in (\w+)")


def floating_point_advice(text: str) -> str:
    """What a NumPy floating-point error in the learner's code means, and what to do."""
    match = _FP_ERROR.search(text)
    if match is None:
        return f"floating-point error: {text}"
    kind, where = match.groups()
    if kind == "overflow":
        return f"Your code overflowed in {where}: use a form that cannot overflow."
    if kind == "divide by zero":
        if where.startswith("log"):
            return (f"Your code took the log of 0 (in {where}): a value that underflowed to 0? "
                    "Stay in log space (the log-sum-exp).")
        return f"Your code divided by zero (in {where}): use a form that cannot."
    if kind == "invalid value":
        if where == "sqrt":
            return ("Your code took the square root of a negative number: where round-off can "
                    "push a value below 0, clip it at 0 first.")
        if where in ("arccos", "arcsin"):
            return (f"Your code took the {where} of a number outside [-1, 1]: where round-off "
                    "can push a value past 1, clip it to [-1, 1] first.")
        if where.startswith("log"):
            return f"Your code took the log of a negative number (in {where})."
        return (f"Your code produced an undefined value (NaN) in {where}: 0/0, inf - inf or "
                "0 * inf? Use a form that stays finite.")
    return f"Your code underflowed in {where}."


@functools.cache  # the same for the whole process; asked once per traceback frame
def _library_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    dirs = {Path(__file__).resolve().parents[1]}  # the vae_from_scratch package
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if key in paths:
            dirs.add(Path(paths[key]).resolve())
    return tuple(dirs)


def _is_library(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    if filename.startswith("<"):
        return False  # code compiled from a string: the learner's
    try:
        path = Path(filename).resolve()
    except OSError:
        return False
    return any(path.is_relative_to(d) for d in _library_dirs())


def learner_line(exc: BaseException) -> list[str]:
    """Where in the learner's code (the innermost frame outside NumPy, Python and this
    package) the exception was raised, and that line's text."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if _is_library(frame.filename):
            continue
        where = f"line {frame.lineno}" if frame.name == "<module>" else \
            f"in {frame.name}, line {frame.lineno}"
        text = (frame.line or "").strip()
        return [f"    {where}:", f"        {text}"] if text else [f"    {where}"]
    return []
