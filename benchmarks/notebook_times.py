"""How long each course notebook takes to run, as the tests and a learner run it.

Each notebook runs top to bottom in a fresh kernel (nbclient, kernel start included) with one
BLAS/OpenMP thread, the course's setting. Two figures per notebook: the wall-clock time, which a
busy machine inflates, and the CPU time of the kernel process (user + system), which other jobs
barely affect and which is close to the wall time on an idle machine. The load average at the
start and the end says how busy the machine was.

    python benchmarks/notebook_times.py                       # solutions/*.ipynb
    python benchmarks/notebook_times.py solutions/05_training_mnist.ipynb --inplace
    python benchmarks/notebook_times.py lessons/*.ipynb --out times.json

``--inplace`` writes each executed notebook back (outputs and execution counts 1, 2, 3, ...),
which is how a solution is committed.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # the kernels inherit this environment

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(path, inplace=False, timeout=600):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    cpu0, t0 = children_cpu(), time.perf_counter()
    client.execute()  # starts the kernel, runs every cell, shuts the kernel down and reaps it
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if inplace:
        nbformat.write(nb, path)
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--inplace", action="store_true", help="write the executed notebooks")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args()
    paths = args.notebooks or sorted(Path("solutions").glob("[0-9][0-9]_*.ipynb"))
    load_start = os.getloadavg()
    rows = []
    print(f"{'notebook':42s} {'wall (s)':>9s} {'CPU (s)':>8s}   load average {load_start[0]:.1f}",
          flush=True)
    for path in paths:
        wall, cpu = run(path, inplace=args.inplace)
        rows.append({"notebook": str(path), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                     "load_average": round(os.getloadavg()[0], 2)})
        print(f"{str(path):42s} {wall:9.1f} {cpu:8.1f}   load average {os.getloadavg()[0]:.1f}",
              flush=True)
    meta = {"cpus": os.cpu_count(), "load_average_start": load_start,
            "load_average_end": os.getloadavg(), "python": sys.version.split()[0],
            "threads": 1}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "notebooks": rows}, f, indent=1)


if __name__ == "__main__":
    main()
