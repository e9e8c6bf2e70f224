"""The margin audit: how far each output that nbval compares sits from changing, against how
much it moves between BLAS kernels, SIMD paths and thread counts.

A compared cell prints rounded numbers and threshold decisions ("ok (< 1e-6)", "14 of 14
within 1e-5"). Each is safe only if the raw value sits far from the nearest point where the
printed text would change: a rounding boundary or a threshold. This script runs every solution
notebook under each configuration of ``portability.py`` this machine can run, and after every
compared cell reads the raw numbers behind what it prints (``margin_probes.py`` says which)
and, for check cells, how close the answer came to the checker's tolerance. For each number
it reports

* the spread: the largest minus the smallest value over the configurations;
* the distance: from the value to the nearest boundary of what is printed (half a unit of the
  last printed decimal, a threshold, "-0" for a value that rounds to 0), the smallest over the
  configurations;
* the verdict: ``fragile`` when the distance is below 100 times the spread, or, where the
  spread is 0, below a thousandth of the printed unit (of the threshold), or, for round-off
  measured against a tolerance (a gradient check, a parity test, a check cell's closeness),
  when the tolerance is not at least ten times the largest value; else ``ok``.

It also says whether each compared cell printed the committed text in every configuration.

    python scripts/margin_audit.py --out audit.json             # run it (tens of minutes)
    python scripts/margin_audit.py --configs native-1 nehalem-1 --notebooks 08
    python scripts/margin_audit.py --report audit.json          # the table again, as Markdown
    python scripts/margin_audit.py --report audit.json --doc docs/portability.md

``--doc`` writes the table into that file between the lines ``<!-- audit:start -->`` and
``<!-- audit:end -->``. ``--jobs 2`` runs two notebooks at a time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from margin_probes import DECISIONS, PROBES, Cell, Check, Exact  # noqa: E402
from portability import BY_NAME, CONFIGS, probe  # noqa: E402

MARKER = "__MARGIN_AUDIT__"
SAFETY = 100.0  # the distance must exceed this many spreads
FLOOR = 1e-3  # ... and, where the spread is 0, this fraction of the printed unit or threshold
DEFAULT_CONFIGS = [c.name for c in CONFIGS]

# -- inside the notebook's kernel ------------------------------------------------------------

_SETUP = r'''
import json as _audit_json, sys as _audit_sys
import numpy as _audit_np
_AUDIT = {"checks": {}, "probes": {}, "errors": {}}
_AUDIT_RATIOS = []
def _audit_wrap(fn):
    def wrapper(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
        result = fn(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
        caller = _audit_sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("vae_from_scratch.checks") and not caller.endswith("slips"):
            if _audit_np.all(result):  # a comparison that passed: how close it came
                with _audit_np.errstate(all="ignore"):
                    a_, b_ = _audit_np.asarray(a), _audit_np.asarray(b)
                    diff = _audit_np.abs(a_ - b_)
                    tol = atol + rtol * _audit_np.abs(b_)
                    ratio = _audit_np.where(diff == 0, 0.0, diff / tol)
                ratio = ratio[_audit_np.isfinite(ratio)]
                _AUDIT_RATIOS.append(float(ratio.max()) if ratio.size else 0.0)
        return result
    return wrapper
_audit_np.isclose = _audit_wrap(_audit_np.isclose)
_audit_np.allclose = _audit_wrap(_audit_np.allclose)
def _audit_cell(cell, probes, setup, record):
    ratios = list(_AUDIT_RATIOS)
    _AUDIT_RATIOS.clear()
    if not record:
        return
    _AUDIT["checks"][cell] = max(ratios) if ratios else None
    space = dict(globals())
    try:
        exec(setup, space)
    except Exception as err:  # noqa: BLE001
        _AUDIT["errors"][cell] = f"setup: {type(err).__name__}: {err}"
        return
    for name, expr in probes:
        try:
            value = eval(expr, space)
            _AUDIT["probes"][f"{cell} / {name}"] = [
                float(v) for v in _audit_np.ravel(_audit_np.asarray(value, dtype=float))]
        except Exception as err:  # noqa: BLE001
            _AUDIT["errors"][f"{cell} / {name}"] = f"{type(err).__name__}: {err}"
'''

_FINISH = r'''
from threadpoolctl import threadpool_info as _audit_info
_AUDIT["blas"] = sorted({i.get("architecture") or "?" for i in _audit_info()
                         if i.get("internal_api") == "openblas"})
_AUDIT["threads"] = sorted({i["num_threads"] for i in _audit_info()
                            if i.get("internal_api") == "openblas"})
_torch = _audit_sys.modules.get("torch")
_AUDIT["torch"] = _torch.backends.cpu.get_cpu_capability() if _torch else None
print("''' + MARKER + r'''" + _audit_json.dumps(_AUDIT))
'''


def _compared(cell) -> bool:
    return cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in cell.source


def _text(cell) -> str:
    """The text a cell printed (stream and plain-text results), as nbval compares it."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", "") + "\n")
        elif out.get("output_type") == "error":
            parts.append(f"ERROR {out.get('ename')}: {out.get('evalue')}\n")
    return "".join(parts).replace("\r\n", "\n").rstrip()


def run_notebook(path: Path) -> dict:
    """Run one notebook with the probes (in this process's environment): the probes' values,
    the checks' closeness, and whether each compared cell printed its committed text."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    entries = PROBES.get(path.stem, {})
    committed = {c.id: _text(c) for c in nb.cells if _compared(c)}
    cells = [nbformat.v4.new_code_cell(_SETUP)]
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        entry = entries.get(cell.id)
        record = _compared(cell) or isinstance(entry, Cell)
        probes = [(p.name, p.expr) for p in entry.probes] if isinstance(entry, Cell) else []
        setup = entry.setup if isinstance(entry, Cell) else ""
        cells.append(nbformat.v4.new_code_cell(
            f"_audit_cell({cell.id!r}, {probes!r}, {setup!r}, {record!r})"))
    cells.append(nbformat.v4.new_code_cell(_FINISH))
    nb.cells = cells
    start = time.monotonic()
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.monotonic() - start
    result = json.loads(_text(nb.cells[-1]).split(MARKER, 1)[1])
    result["same_text"] = {c.id: _text(c) == committed[c.id] for c in nb.cells
                           if c.get("id") in committed and _compared(c)}
    result["seconds"] = round(seconds, 1)
    return result


def _worker(config: str, notebook: Path) -> dict:
    """Run one notebook under one configuration, in a fresh process."""
    env = BY_NAME[config].environ()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(notebook), str(out)],
                              env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"failed": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


# -- margins -----------------------------------------------------------------------------------


def distance(kind: str, param, value: float, signed: bool = True) -> float:
    """How far ``value`` is from changing what is printed: a rounding boundary (``round``:
    ``param`` decimals; ``sig``: ``param`` significant digits) or a threshold (``below``,
    ``above``, ``side``). Negative where a decision already went the wrong way."""
    if kind == "value":
        return math.inf
    if kind in ("round", "sig"):
        if value == 0:
            return math.inf if not signed else 0.0 if math.copysign(1, value) < 0 else math.inf
        decimals = param if kind == "round" else param - 1 - math.floor(math.log10(abs(value)))
        unit = 10.0 ** -decimals
        t = value / unit
        d = abs(t - math.floor(t) - 0.5) * unit
        if signed and round(value, int(decimals)) == 0:
            d = min(d, abs(value))  # "-0.00" against "0.00"
        return d
    if kind == "below":
        return param - value
    if kind == "above":
        return value - param
    if kind == "side":
        return abs(value - param)
    raise ValueError(f"unknown probe kind {kind!r}")


def unit_of(kind: str, param, value: float) -> float:
    """The size the FLOOR is a fraction of: the printed unit, or the threshold's size."""
    if kind == "round":
        return 10.0 ** -param
    if kind == "sig":
        return 10.0 ** (math.floor(math.log10(abs(value))) - param + 1) if value else 1.0
    return abs(param) if param else 1.0


@dataclasses.dataclass
class Row:
    notebook: str
    cell: str
    what: str
    values: str  # the reference configuration's values, shortened
    spread: float
    distance: float
    verdict: str


def _short(values) -> str:
    text = ", ".join(f"{v:.4g}" for v in values[:4])
    return text + (f", ... ({len(values)})" if len(values) > 4 else "")


NOISE_FACTOR = 10.0  # round-off against a tolerance: the tolerance at least this many times it


def _orders_apart(values, bound) -> bool:
    """Whether every value is NOISE_FACTOR times below ``bound`` or above it."""
    return all(v * NOISE_FACTOR <= bound or v >= bound * NOISE_FACTOR for v in values)


def judge(kind, param, signed, runs: dict[str, list[float]],
          noise: bool = False) -> tuple[float, float, str]:
    """(spread, distance, verdict) of one probe from its values in each configuration.
    ``noise``: the value is round-off measured against the threshold ``param``, which must
    then also be NOISE_FACTOR times the largest value seen."""
    arrays = [v for v in runs.values() if v]
    if not arrays or len({len(v) for v in arrays}) != 1:
        return math.nan, math.nan, "missing"
    columns = list(zip(*arrays, strict=True))
    spread = max(max(c) - min(c) for c in columns)
    if kind == "value":
        return spread, math.inf, "quoted"
    # One computation's round-off: the spread of its most variable number stands for all
    # of them (a number that happened not to move here is no safer than its neighbours).
    worst, verdict = math.inf, "ok"
    for column in columns:
        d = min(distance(kind, param, v, signed) for v in column)
        worst = min(worst, d)
        if kind == "side" and len({v > param for v in column}) > 1:
            verdict = "CHANGES"
        elif d <= 0 and kind in ("below", "above"):
            verdict = "WRONG SIDE"
        elif verdict == "ok" and ((spread > 0 and d < SAFETY * spread)
                                  or (spread == 0
                                      and d < FLOOR * unit_of(kind, param, column[0]))
                                  or (noise and not _orders_apart(column, param))):
            verdict = "fragile"
    return spread, worst, verdict


def rows_from(results: dict) -> list[Row]:
    rows = []
    for nb_name, per_config in results["notebooks"].items():
        entries = PROBES.get(nb_name, {})
        ok_runs = {c: per_config[c] for c in results["configs"]
                   if c in per_config and "failed" not in per_config[c]}
        ref = next(iter(ok_runs.values()), {})
        for cell_id, entry in entries.items():
            same = [r.get("same_text", {}).get(cell_id) for r in ok_runs.values()]
            if isinstance(entry, Exact):
                rows.append(Row(nb_name, cell_id, f"exact: {entry.why}", "", 0.0, math.inf,
                                "exact" if all(same) else "TEXT DIFFERS"))
                continue
            if isinstance(entry, Check):
                ratios = {c: r["checks"].get(cell_id) for c, r in ok_runs.items()}
                vals = [v for v in ratios.values() if v is not None]
                if not vals:
                    rows.append(Row(nb_name, cell_id, "check: no numeric comparison", "", 0.0,
                                    math.inf, "exact" if all(same) else "TEXT DIFFERS"))
                    continue
                runs = {c: [v] for c, v in ratios.items() if v is not None}
                spread, dist, verdict = judge("below", 1.0, True, runs, noise=True)
                rows.append(Row(nb_name, cell_id, "check: largest |got - expected| / tolerance",
                                _short([max(vals)]), spread, dist, verdict))
                continue
            for p in entry.probes:
                key = f"{cell_id} / {p.name}"
                runs = {c: r["probes"].get(key) for c, r in ok_runs.items()}
                spread, dist, verdict = judge(p.kind, p.param, p.signed, runs,
                                              noise=getattr(p, "noise", False))
                if entry.compared and not all(same):
                    verdict += ", TEXT DIFFERS"
                what = p.name + (f" ({p.kind} {p.param:g})" if p.param is not None else "")
                if not entry.compared:
                    what += " [text, not compared]"
                rows.append(Row(nb_name, cell_id, what, _short(ref.get("probes", {}).get(key)
                                                               or []),
                                spread, dist, verdict))
    return rows


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "-"
    if math.isnan(x):
        return "?"
    return "0" if x == 0 else f"{x:.1e}"


def markdown(results: dict) -> str:
    configs = results["configs"]
    lines = [
        f"Configurations ({len(configs)}): "
        + "; ".join(f"`{name}` ({info.get('blas') or info.get('error')})"
                    for name, info in configs.items()) + ".",
        "",
        "| notebook | cell | what is printed | values (first config) | spread | distance "
        "| verdict | decision |",
        "| --- | --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    said = set()
    for row in rows_from(results):
        decision = DECISIONS.get(row.notebook, {}).get(row.cell) or (
            "kept" if row.verdict in ("ok", "exact", "quoted") else "")
        if (row.notebook, row.cell) in said and decision != "kept":
            decision = "(as above)"  # a cell's decision, once
        said.add((row.notebook, row.cell))
        lines.append(f"| {row.notebook[:2]} | `{row.cell}` | {row.what} | {row.values} | "
                     f"{_fmt(row.spread)} | {_fmt(row.distance)} | {row.verdict} | {decision} |")
    failed = [(nb, c, r["failed"]) for nb, per in results["notebooks"].items()
              for c, r in per.items() if "failed" in r]
    for nb, c, why in failed:
        lines.append(f"\n{nb} did not run under {c}: {why}")
    return "\n".join(lines)


def merge(runs: list[dict]) -> dict:
    """Results of several audit runs (other configurations, or notebooks run again) as one;
    a later run's notebook results replace an earlier one's for the same configuration."""
    merged = {"configs": {}, "notebooks": {}, "meta": [r.get("meta") for r in runs]}
    for run in runs:
        merged["configs"].update(run["configs"])
        for nb, per_config in run["notebooks"].items():
            merged["notebooks"].setdefault(nb, {}).update(per_config)
    return merged


def write_doc(doc: Path, text: str) -> None:
    start, end = "<!-- audit:start -->", "<!-- audit:end -->"
    content = doc.read_text()
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def run_audit(args) -> dict:
    """Run the notebooks under the configurations; with ``--out``, the results are written
    after every notebook, and a run started again with the same ``--out`` skips what that
    file already holds (a stopped audit loses at most the notebooks it was running)."""
    notebooks = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        notebooks = [n for n in notebooks if n.name[:2] in args.notebooks]
    if args.out and args.out.exists():
        results = json.loads(args.out.read_text())
    else:
        results = {"configs": {}, "notebooks": {}, "meta": {}}
    results["meta"].setdefault("load_average_start", os.getloadavg()[0])
    results["meta"]["cpus"] = os.cpu_count()
    jobs = []
    for name in args.configs:
        info = probe(BY_NAME[name])
        results["configs"][name] = {"blas": ", ".join(info.get("blas", [])),
                                    "threads": info.get("threads"), "error": info.get("error")}
        if "error" in info:
            print(f"{name}: cannot run here ({info['error']})", flush=True)
            continue
        jobs += [(name, n) for n in notebooks
                 if name not in results["notebooks"].get(n.stem, {})]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(_worker, c, n): (c, n) for c, n in jobs}
        for future in concurrent.futures.as_completed(futures):
            config, notebook = futures[future]
            res = future.result()
            results["notebooks"].setdefault(notebook.stem, {})[config] = res
            status = res.get("failed") or (
                f"{res['seconds']:.0f} s, blas {res['blas']}, threads {res['threads']}, "
                f"torch {res['torch']}, text differs in "
                f"{[k for k, v in res['same_text'].items() if not v]}, errors {res['errors']}")
            print(f"{config:16s} {notebook.stem:32s} {status}", flush=True)
            results["meta"]["load_average_end"] = os.getloadavg()[0]
            if args.out:
                args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(BY_NAME))
    parser.add_argument("--notebooks", nargs="+", help="prefixes, e.g. 02 08 (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at a time")
    parser.add_argument("--out", type=Path, help="write the raw results (JSON) here")
    parser.add_argument("--report", type=Path, nargs="+",
                        help="only print the table of results files (several are merged)")
    parser.add_argument("--doc", type=Path, help="write the table into this Markdown file")
    parser.add_argument("--worker", nargs=2, metavar=("NOTEBOOK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.worker[1]).write_text(json.dumps(run_notebook(Path(args.worker[0]))))
        return 0
    if args.report:
        results = merge([json.loads(path.read_text()) for path in args.report])
    else:
        results = run_audit(args)
    table = markdown(results)
    if args.doc:
        write_doc(args.doc, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
