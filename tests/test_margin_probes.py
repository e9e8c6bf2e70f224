"""The margin audit (scripts/margin_audit.py) covers every compared cell, and its arithmetic
says where a printed number or decision would change. The audit itself runs the notebooks
under other BLAS kernels (tens of minutes); docs/portability.md records its last run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.every_lesson

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    path = ROOT / "scripts" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(name, module)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


probes = _load("margin_probes")
audit = _load("margin_audit")
portability = _load("portability")

SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_every_compared_cell_is_audited_and_every_entry_names_a_cell(path):
    cells = {c.id: c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"}
    compared = {i for i, c in cells.items() if "NBVAL_CHECK_OUTPUT" in c.source}
    entries = probes.PROBES.get(path.stem, {})
    assert compared - set(entries) == set(), "compared cells the audit does not measure"
    assert set(entries) - set(cells) == set(), "entries for cells the notebook lacks"
    for cell_id, entry in entries.items():
        is_compared = cell_id in compared
        if isinstance(entry, probes.Cell):
            assert entry.compared == is_compared, cell_id
            assert entry.probes, cell_id
            for p in entry.probes:
                compile(p.expr, f"{cell_id} / {p.name}", "eval")
                assert p.kind in ("round", "sig", "below", "above", "side", "value")
                assert (p.param is None) == (p.kind == "value"), p.name
                assert is_compared or p.kind == "value", "uncompared cells only quote values"
            compile(entry.setup, cell_id, "exec")
        else:
            assert is_compared, f"{cell_id}: Exact and Check entries are for compared cells"
            if isinstance(entry, probes.Check):
                assert "check." in cells[cell_id].source, cell_id


@pytest.mark.parametrize("value, decimals, expected", [
    (0.99631, 4, 4e-5),         # "0.9963": the boundary 0.99635 is 4e-5 away, 0.99625 6e-5
    (2.5, 2, 0.005),            # printed "2.50": 2.495 and 2.505 are equally far
    (33.9049, 1, 0.0451),       # "33.9": 33.95 is 0.0451 away
    (12.0, 0, 0.5),
])
def test_rounding_distance(value, decimals, expected):
    # the distance to the nearest x.5 of the last printed digit
    assert audit.distance("round", decimals, value) == pytest.approx(expected, abs=1e-12)


def test_a_value_that_rounds_to_zero_is_as_close_to_printing_minus_zero_as_it_is_to_zero():
    assert audit.distance("round", 2, 1e-9) == pytest.approx(1e-9)
    assert audit.distance("round", 2, 1e-9, signed=False) == pytest.approx(0.005 - 1e-9)
    assert audit.distance("round", 2, 0.0) == math.inf  # exactly 0 prints "0.00" everywhere
    assert audit.distance("round", 2, -0.0) == 0.0


def test_significant_digits_and_thresholds():
    assert audit.distance("sig", 3, 32.62) == pytest.approx(0.03)   # "32.6"; 32.65 is 0.03 away
    assert audit.distance("sig", 3, 0.0012345) == pytest.approx(0.0000005)
    assert audit.distance("below", 1e-5, 9.61e-6) == pytest.approx(3.9e-7)
    assert audit.distance("below", 1e-5, 2e-5) < 0
    assert audit.distance("above", 0.0, 0.25) == 0.25
    assert audit.distance("side", 1.0, 3.0) == 2.0


def test_judge_calls_a_margin_under_100_spreads_fragile():
    spread_small = {"a": [9.0e-6], "b": [9.1e-6]}           # 1e-7 spread, 9e-7 from the line
    assert audit.judge("below", 1e-5, True, spread_small)[2] == "fragile"
    far = {"a": [1.0e-8], "b": [1.1e-8]}
    spread, dist, verdict = audit.judge("below", 1e-5, True, far)
    assert verdict == "ok" and spread == pytest.approx(1e-9) and dist == pytest.approx(9.989e-6)
    # no spread at all: still fragile within a thousandth of the printed unit
    assert audit.judge("round", 2, True, {"a": [0.125001], "b": [0.125001]})[2] == "fragile"
    assert audit.judge("round", 2, True, {"a": [0.1221], "b": [0.1221]})[2] == "ok"
    assert audit.judge("side", 1.0, True, {"a": [0.9], "b": [1.1]})[2] == "CHANGES"
    assert audit.judge("below", 1e-5, True, {"a": [2e-5], "b": [2e-5]})[2] == "WRONG SIDE"
    assert audit.judge("value", None, True, {"a": [1.0], "b": [3.0]})[:1] == (2.0,)


def test_a_configuration_sets_its_variables_and_clears_the_others():
    config = portability.BY_NAME["nehalem-2"]
    env = config.environ({"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
                          "PATH": "/bin"})
    assert env["OPENBLAS_CORETYPE"] == "Nehalem" and env["VAE_COURSE_THREADS"] == "2"
    assert "ATEN_CPU_CAPABILITY" not in env and env["PATH"] == "/bin"
    names = [c.name for c in portability.CONFIGS]
    assert len(names) == len(set(names))
    for kernel in ("native", "sandybridge", "nehalem"):
        assert {f"{kernel}-1", f"{kernel}-2"} <= set(names)


def test_the_native_configuration_runs_here():
    found = portability.probe(portability.BY_NAME["native-1"])
    assert "error" not in found and found["threads"] == [1]


def test_every_decision_names_an_audited_cell():
    for notebook, cells in probes.DECISIONS.items():
        assert set(cells) <= set(probes.PROBES[notebook]), notebook
