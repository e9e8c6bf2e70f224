"""Comparing a learner's result with the reference's: the first place they differ, and why.

:func:`compare_values` walks numbers, arrays, tuples, lists, dicts and dataclasses in step
and reports the first :class:`Mismatch`: its path (``[0]['mu']``), the reason, and, where a
slip's signature is recognised (:mod:`vae_from_scratch.checks.slips`), a hint that names it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from vae_from_scratch.checks import slips
from vae_from_scratch.checks.messages import fmt_scalar, to_plain, type_name


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


def is_numeric(value: Any) -> bool:
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
    found = next(iter_mismatches(expected, got, rtol, atol, (), key_order, sizes or {}), None)
    if found is None or not path:
        return found
    return dataclasses.replace(found, path=path + found.path)


def _ordered_keys(expected: Mapping, key_order: Sequence[Any] | None) -> list:
    first = [k for k in (key_order or ()) if k in expected]
    return first + [k for k in expected if k not in first]


def iter_mismatches(expected: Any, got: Any, rtol: float, atol: float, keys: tuple,
                    key_order: Sequence[Any] | None,
                    sizes: Mapping[str, tuple[int, str]]) -> Iterator[Mismatch]:

    """Every place where ``got`` differs from ``expected``, as Mismatch objects, in order."""
    path = _path_text(keys)
    expected, got = to_plain(expected), to_plain(got)
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        if not (dataclasses.is_dataclass(got) and not isinstance(got, type)):
            yield Mismatch(path, f"expected a {type_name(expected)}, got {type_name(got)}",
                           keys, "", expected, got)
            return
        expected = {f.name: getattr(expected, f.name) for f in dataclasses.fields(expected)}
        got = {f.name: getattr(got, f.name) for f in dataclasses.fields(got)}
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            yield Mismatch(path, f"expected a dict, got {type_name(got)}", keys, "",
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
            yield from iter_mismatches(expected[key], got[key], rtol, atol, keys + (key,),
                                   key_order, sizes)
        return
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            yield Mismatch(path, f"expected a {type_name(expected)} of {len(expected)} items, "
                                 f"got {type_name(got)}", keys, "", expected, got)
            return
        if len(got) != len(expected):
            yield Mismatch(path, f"expected {len(expected)} items, got {len(got)}", keys, "",
                           expected, got)
            return
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            yield from iter_mismatches(e, g, rtol, atol, keys + (i,), key_order, sizes)
        return
    if is_numeric(expected):
        found = _compare_arrays(np.asarray(expected), got, rtol, atol, sizes)
        if found is not None:
            reason, hint = found
            yield Mismatch(path, reason, keys, hint, expected, got)
        return
    if expected is None:
        if got is not None:
            yield Mismatch(path, f"expected None, got {type_name(got)}", keys, "", None, got)
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
    if not is_numeric(got):
        if isinstance(got, (tuple, list)):
            return (f"expected an array, got a {type_name(got)}; wrap it in np.array(...)", "")
        return f"expected a number or array, got {type_name(got)}", ""
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
        reason = f"off by {fmt_scalar(abs(g - e).item())}"
    else:
        with np.errstate(all="ignore"):
            diff = np.abs(g - e)[~close]
        largest = fmt_scalar(float(np.nanmax(diff))) if not np.isnan(diff).all() else "nan"
        reason = (f"{len(bad)} of {expected.size} entries differ (largest difference "
                  f"{largest}); first{where}: expected {fmt_scalar(e[first].item())}, "
                  f"got {fmt_scalar(g[first].item())}")
    reason = f"{reason} (rtol={rtol:g}, atol={atol:g})"
    # Factors and offsets name slips in real-valued results, not in counts.
    hint = slips.value_slip(e, g, rtol, atol, sizes) if expected.dtype.kind == "f" else ""
    return reason, hint
