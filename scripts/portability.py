"""Run the course's notebooks (and optionally its unit tests) under other BLAS kernels, SIMD
paths and thread counts: does every compared output hold beyond this machine's own?

A cell that nbval compares must print the same text on every machine. The machines the course
meets differ in the kernels their numerical libraries pick at run time, and each kernel sums a
matrix product in its own order. This script lets one machine stand in for others: OpenBLAS
(NumPy's and SciPy's BLAS) takes another kernel from ``OPENBLAS_CORETYPE``, NumPy drops its
AVX2 loops with ``NPY_DISABLE_CPU_FEATURES``, PyTorch its vectorised CPU kernels with
``ATEN_CPU_CAPABILITY=default``, and ``VAE_COURSE_THREADS`` sets the thread count of the
notebooks (README, "Threads").

    python scripts/portability.py --list                # the configurations, and which run here
    python scripts/portability.py                       # the notebooks under every one of them
    python scripts/portability.py --configs sandybridge-2 nehalem-1
    python scripts/portability.py --configs mixed-1 --paths solutions   # what CI runs
    python scripts/portability.py --tests               # the unit tests too (the whole pytest)
    python scripts/portability.py --out results.json    # and write the table as JSON

Each configuration runs ``pytest lessons solutions`` (``pytest`` with ``--tests``) in a fresh
process with its environment (with as many pytest-xdist workers as the cores hold at its
thread count), and the script prints one line per configuration: the BLAS
kernel the libraries report, the threads, the items passed, failed and skipped, the
wall-clock time and the CPU time of pytest and its kernels.
A kernel this CPU cannot run (SkylakeX without AVX-512) is reported and skipped, not failed.
It exits 1 if any configuration failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


@dataclasses.dataclass(frozen=True)
class Config:
    """One way of running the course: environment variables and a thread count."""

    name: str
    threads: int
    env: dict
    what: str
    x86_only: bool = False

    def environ(self, base=None) -> dict:
        env = dict(os.environ if base is None else base)
        for var in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "ATEN_CPU_CAPABILITY"):
            env.pop(var, None)  # only what this configuration sets
        env.update(self.env)
        env["VAE_COURSE_THREADS"] = str(self.threads)
        env.setdefault("MPLBACKEND", "Agg")
        return env


def _configs() -> list[Config]:
    out = []
    kernels = [("native", {}, "this CPU's own BLAS kernel", False),
               ("sandybridge", {"OPENBLAS_CORETYPE": "SandyBridge"}, "OpenBLAS's AVX kernel",
                True),
               ("nehalem", {"OPENBLAS_CORETYPE": "Nehalem"}, "OpenBLAS's SSE4 kernel", True),
               ("skylakex", {"OPENBLAS_CORETYPE": "SkylakeX"},
                "OpenBLAS's AVX-512 kernel (only on a CPU with AVX-512)", True)]
    for name, env, what, x86 in kernels:
        for threads in (1, 2):
            out.append(Config(f"{name}-{threads}", threads, env, what, x86))
    out.append(Config("prescott-1", 1, {"OPENBLAS_CORETYPE": "Prescott"},
                      "OpenBLAS's oldest SSE kernel (OpenBLAS may call it Katmai)", True))
    out.append(Config("numpy-v2-1", 1, {"NPY_DISABLE_CPU_FEATURES": "X86_V3"},
                      "NumPy's loops without AVX2/FMA (its x86-64-v2 baseline)", True))
    out.append(Config("torch-default-1", 1, {"ATEN_CPU_CAPABILITY": "default"},
                      "PyTorch's CPU kernels without AVX2/AVX-512"))
    unlike = {"OPENBLAS_CORETYPE": "Nehalem", "NPY_DISABLE_CPU_FEATURES": "X86_V3",
              "ATEN_CPU_CAPABILITY": "default"}
    out.append(Config("mixed-1", 1, unlike,
                      "all at once, unlike this CPU in every way it can imitate: OpenBLAS's SSE "
                      "kernel, NumPy without AVX2, torch's generic kernels, one thread (CI)",
                      True))
    out.append(Config("mixed-2", 2, unlike, "the same with two threads", True))
    return out


CONFIGS = _configs()
BY_NAME = {c.name: c for c in CONFIGS}

_PROBE = r"""
import json
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
from vae_from_scratch.course.threads import limit_threads
limit_threads()
a = np.random.default_rng(0).standard_normal((64, 64))
float((a @ a).sum())                      # the kernel this configuration selects, exercised
blas = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
try:  # the SIMD paths NumPy dispatches to at run time (private, so guarded)
    from numpy._core._multiarray_umath import __cpu_features__ as features
except ImportError:
    features = {}
found = [k for k in ("X86_V2", "X86_V3", "X86_V4", "AVX512_SKX", "ASIMD", "SVE")
         if features.get(k)]
print(json.dumps({"blas": sorted({i.get("architecture") or "?" for i in blas}),
                  "threads": sorted({i["num_threads"] for i in blas}), "numpy_simd": found}))
"""


def probe(config: Config) -> dict:
    """What the configuration gives in a fresh interpreter: {"blas": [...], "threads": [...],
    "numpy_simd": [...]} or {"error": why it cannot run here}."""
    if config.x86_only and not _X86:
        return {"error": f"x86-64 only; this machine is {platform.machine()}"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=config.environ(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        if proc.returncode < 0:
            reason = [f"killed by signal {-proc.returncode} (an instruction this CPU lacks)"]
        return {"error": reason[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


NOTEBOOK_FOLDERS = ("lessons", "solutions")


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def run_pytest(config: Config, tests: bool, extra: list[str],
               paths: tuple[str, ...] = NOTEBOOK_FOLDERS) -> dict:
    """pytest over the notebooks in ``paths`` (with ``tests``, the whole pytest) under
    ``config``: counts, wall-clock time and the CPU time of pytest and its workers and kernels
    (which a busy machine inflates much less than the wall-clock time)."""
    paths = [] if tests else list(paths)
    # As many workers as the cores hold at this thread count: two workers of two threads each
    # on two cores would wait for each other (``extra`` may say otherwise: it comes last).
    workers = max(1, (os.cpu_count() or 2) // config.threads)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers),
           *paths, *extra]
    start, cpu_start = time.monotonic(), _children_cpu()
    proc = subprocess.run(cmd, env=config.environ(), cwd=ROOT, capture_output=True, text=True)
    seconds, cpu = time.monotonic() - start, _children_cpu() - cpu_start
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
              for n, kind in _SUMMARY.findall(last)}
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in proc.stdout.splitlines()
              if line.startswith(("FAILED ", "ERROR "))]
    return {"returncode": proc.returncode, "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1), "counts": counts,
            "failed": failed, "summary": last}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(BY_NAME), metavar="NAME",
                        help="the configurations to run (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list them, say which run here")
    parser.add_argument("--tests", action="store_true",
                        help="run the whole pytest (unit tests too), not only the notebooks")
    parser.add_argument("--out", type=Path, help="write the results to this JSON file")
    parser.add_argument("--paths", nargs="+", default=list(NOTEBOOK_FOLDERS), metavar="PATH",
                        help="the notebooks or folders to run (default: lessons solutions)")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    configs = [BY_NAME[n] for n in args.configs] if args.configs else CONFIGS
    if args.list:
        for config in configs:
            found = probe(config)
            where = (f"cannot run here: {found['error']}" if "error" in found else
                     f"BLAS kernel {', '.join(found['blas'])}, threads {found['threads']}")
            print(f"{config.name:16s} {config.what}; {where}")
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{'configuration':16s} {'BLAS kernel':12s} {'threads':>7s}  {'result':34s} "
          f"{'time':>7s} {'CPU':>7s}   (load average {load:.1f} at the start)", flush=True)
    results, ok = [], True
    for config in configs:
        found = probe(config)
        if "error" in found:
            print(f"{config.name:16s} {'-':12s} {config.threads:7d}  "
                  f"skipped: cannot run here ({found['error']})", flush=True)
            results.append({"config": config.name, "skipped": found["error"]})
            continue
        res = run_pytest(config, args.tests, args.pytest_args, tuple(args.paths))
        counts = res["counts"]
        passed = res["returncode"] == 0
        ok &= passed
        result = (f"{'pass' if passed else 'FAIL'}: {counts.get('passed', 0)} passed, "
                  f"{counts.get('failed', 0) + counts.get('error', 0)} failed, "
                  f"{counts.get('skipped', 0)} skipped")
        print(f"{config.name:16s} {','.join(found['blas']) or '-':12s} "
              f"{','.join(map(str, found['threads'])):>7s}  {result:34s} "
              f"{res['seconds']:6.0f}s {res['cpu_seconds']:6.0f}s", flush=True)
        for name in res["failed"]:
            print(f"    {name}", flush=True)
        results.append({"config": config.name, "env": config.env, "threads": config.threads,
                        "blas": found["blas"], "numpy_simd": found["numpy_simd"], **res})
    if args.out:
        meta = {"machine": platform.machine(), "python": platform.python_version(),
                "cpus": os.cpu_count(), "load_average_start": load,
                "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                "what": "unit tests and notebooks" if args.tests else "notebooks"}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
