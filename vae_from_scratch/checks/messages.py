"""How a check's message lays out values: deterministic text for numbers, arrays, dicts.

A check's message shows the case it ran, what was expected and what came back. The text is
the same on every run and every machine (no memory addresses, fixed print options), so the
solution notebooks can commit it and nbval can compare it.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Arrays with at most this many entries are printed in full in a "wrong" message.
SMALL = 24
#: A case with more numbers than this is described by its shapes, in one line.
CASE_BUDGET = 64

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

#: Prose lines of a printed message are wrapped to this width, at spaces.
WRAP_WIDTH = 80
# A line that shows an array ("expected [[...", "  x = [0.1, ...", "         [2, 3]]"): its
# layout is NumPy's, so it is left as it is.
_ARRAY_LINE = re.compile(r"^\s*(?:(?:expected|got)\s+|[\w ]+ =\s)?\[")


def to_plain(value: Any) -> Any:
    """torch tensors (or anything with .detach().cpu().numpy()) become NumPy arrays."""
    if all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy")):
        return value.detach().cpu().numpy()
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    return type(value).__name__


def fmt_scalar(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, complex):
        return f"{x:.7g}"
    return f"{float(x):.7g}"


def scrub(text: str) -> str:
    """Drop memory addresses so messages are the same on every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _hidden_by_suppress(a: np.ndarray) -> bool:
    """Whether ``a`` holds a non-zero number that fixed-point printing would show as 0."""
    if a.dtype.kind not in "fc":
        return False
    with np.errstate(all="ignore"):
        tiny = (a != 0) & (np.abs(a) < 0.5 * 10.0 ** -_PRINT["precision"])
    return bool(np.any(tiny))


def format_value(value: Any, small: int = SMALL) -> str:
    """Deterministic text for a value: small arrays in full, larger ones by shape and dtype."""
    value = to_plain(value)
    if isinstance(value, np.ndarray):
        if value.size <= small and value.dtype.kind in "biufc":
            options = dict(_PRINT)
            if _hidden_by_suppress(value):  # 1e-8 would print as 0.: show it as 1.e-08
                options["suppress"] = False
            with np.printoptions(**options):
                return np.array2string(value, separator=", ")
        return f"<array of shape {value.shape}, {value.dtype}>"
    if isinstance(value, (bool, int, float, complex, np.number, np.bool_)):
        return fmt_scalar(value)
    if isinstance(value, (tuple, list)):
        inner = ", ".join(format_value(v, small) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, Mapping):
        if count_numbers(value) > small:  # many arrays: their names and shapes, not numbers
            items = [f"{k!r}: {shape_text(v)}" for k, v in value.items()]
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
    text = scrub(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def labelled(label: str, text: str, indent: int) -> list[str]:
    """``label text`` with continuation lines of a multi-line ``text`` aligned under it."""
    lines = text.splitlines() or [""]
    pad = " " * (indent + len(label) + 1)
    return [" " * indent + f"{label} {lines[0]}"] + [pad + line for line in lines[1:]]


def count_numbers(value: Any) -> int:
    value = to_plain(value)
    if isinstance(value, np.ndarray):
        return value.size
    if isinstance(value, (tuple, list)):
        return sum(count_numbers(v) for v in value)
    if isinstance(value, Mapping):
        return sum(count_numbers(v) for v in value.values())
    return 1


def shape_text(value: Any) -> str:
    """A few words for an argument of a big case: its shape, not its numbers."""
    value = to_plain(value)
    if isinstance(value, np.ndarray):
        return f"shape {value.shape}" if value.size > 1 else format_value(value)
    if isinstance(value, Mapping):
        return f"a dict of {len(value)} arrays"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(shape_text(v) for v in value) + ")"
    return format_value(value)


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
