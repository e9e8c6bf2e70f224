"""One BLAS/torch thread against the libraries' default (one per core), idle and busy.

    python benchmarks/threads.py                      # the full table (several minutes)
    python benchmarks/threads.py --quick              # the CLI only, two epochs
    python benchmarks/threads.py --out threads.json

Two workloads, each run as its own process so that the thread settings apply from the start:

* ``cli``: ``vae-course --threads N train --epochs E --iwae-k 0`` (the NumPy backend), wall
  time of the whole command;
* ``notebook``: ``solutions/05_training_mnist.ipynb`` executed with nbclient into a
  temporary copy (the committed notebook is not touched), wall time including the kernel.

Each is timed with ``N = 1`` and with ``N`` = the number of cores (the libraries' default),
on the machine as it is ("idle") and with one spinning background process per core started
by this script ("busy", the situation of a laptop running a browser and a build, or of a
shared CI runner). The thread count reaches the notebook's kernel through
``VAE_COURSE_THREADS`` (which ``limit_threads()`` in the notebook's first cell reads) and
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` (which the libraries read
when they load). The table gives seconds (best of ``--repeats``) and the ratio of the
default to one thread. The load average before each run is recorded: "idle" means only
that this script added no load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "solutions" / "05_training_mnist.ipynb"
SPIN = "while True:\n    pass\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the CLI run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting (best kept)")
    parser.add_argument("--quick", action="store_true", help="the CLI only, 2 epochs")
    parser.add_argument("--workloads", nargs="+", choices=("cli", "notebook"),
                        default=["cli", "notebook"])
    parser.add_argument("--loads", nargs="+", choices=("idle", "busy"), default=["idle", "busy"])
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.workloads = 2, ["cli"]
    return args


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["VAE_COURSE_THREADS"] = str(threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["MPLBACKEND"] = "Agg"
    return env


def run_cli(threads: int, epochs: int, timeout: float) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vae_from_scratch.course.cli", "--threads", str(threads),
                   "train", "--epochs", str(epochs), "--iwae-k", "0", "--quiet",
                   "--out", str(Path(out) / "run")]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=_env(threads), check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


_NOTEBOOK_RUNNER = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=int(sys.argv[3]), kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[4])
"""


def run_notebook(threads: int, timeout: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / NOTEBOOK.name
        command = [sys.executable, "-c", _NOTEBOOK_RUNNER, str(NOTEBOOK), str(NOTEBOOK.parent),
                   str(int(timeout)), str(copy)]
        env = _env(threads)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        start = time.perf_counter()
        subprocess.run(command, cwd=tmp, env=env, check=True, timeout=timeout)
        return time.perf_counter() - start


class Busy:
    """``n`` spinning Python processes for as long as the ``with`` block lasts."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(self.n)]
        time.sleep(1.0)  # let them take their cores
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        return False


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    cores = os.cpu_count() or 1
    settings = sorted({1, cores})
    results = []
    for workload in args.workloads:
        for load in args.loads:
            for threads in settings:
                times = []
                for _ in range(args.repeats):
                    before = _load()
                    with Busy(cores if load == "busy" else 0):
                        if workload == "cli":
                            seconds = run_cli(threads, args.epochs, args.timeout)
                        else:
                            seconds = run_notebook(threads, args.timeout)
                    times.append(seconds)
                    print(f"{workload:8s} {load:4s} threads={threads}: {seconds:7.1f} s "
                          f"(load average before: {before})", flush=True)
                results.append(dict(workload=workload, load=load, threads=threads,
                                    seconds=min(times), runs=times, load_before=before))
    print()
    print(f"{cores} cores; seconds, best of {args.repeats}; 'default' = {cores} threads")
    print("| workload | machine | 1 thread | default | default / 1 thread |")
    print("| --- | --- | ---: | ---: | ---: |")
    for workload in args.workloads:
        label = f"CLI, {args.epochs} epochs" if workload == "cli" else "lesson 05 (nbclient)"
        for load in args.loads:
            row = {r["threads"]: r["seconds"] for r in results
                   if r["workload"] == workload and r["load"] == load}
            one, default = row[1], row[cores]
            print(f"| {label} | {load} | {one:.1f} s | {default:.1f} s | {default / one:.2f} |")
    if args.out:
        meta = dict(cores=cores, python=platform.python_version(), machine=platform.machine(),
                    epochs=args.epochs, repeats=args.repeats)
        args.out.write_text(json.dumps(dict(meta=meta, results=results), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
