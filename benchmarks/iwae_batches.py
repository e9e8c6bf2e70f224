"""Time and memory of the IWAE estimate (k = 100 on the 1,000 test digits) against the rows
per batch, for each architecture: the measurement behind ``evaluate.IWAE_ROWS``.

    python benchmarks/iwae_batches.py                              # both, 10,000 and 1,000 rows
    python benchmarks/iwae_batches.py --architecture conv --rows 10000 4000 2000 1000 500

``iwae_nll`` evaluates k noise draws for each example, k rows per example, in batches of
about ``rows`` rows. Each setting runs in a fresh process (one BLAS thread, the course's
default; ``--threads N``), so that its peak resident set size (VmHWM, read as
``benchmark.py`` reads it) is its own; the process also reports the wall and CPU seconds of
the estimate and its value. The model is
a fresh one (seed 0): memory and time do not depend on the weights, and the value shows
that the batching does not change the estimate (the noise is drawn in the same order).
A second, untimed call under ``tracemalloc`` gives the peak of NumPy's own allocations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MODELS = {
    "mlp": dict(input_dim=784, hidden_dims=(400,), latent_dim=20),
    "conv": dict(input_dim=784, latent_dim=20, architecture="conv", channels=(32, 64)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", choices=(*MODELS, "both"), default="both")
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000],
                        help="rows (examples x k) per batch to try (default 10000 1000)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args):
    """One setting: args.architecture, args.rows[0]. Prints JSON."""
    import time
    import tracemalloc

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from benchmark import max_rss_bytes

    from vae_from_scratch import conv
    from vae_from_scratch.course.threads import limit_threads
    from vae_from_scratch.data import load_mnist
    from vae_from_scratch.evaluate import iwae_nll
    from vae_from_scratch.vae import VAE

    limit_threads(args.threads)
    x_test = load_mnist().x_test
    vae = VAE(**MODELS[args.architecture], seed=0)
    batch = max(1, args.rows[0] // args.k)
    rss_before = max_rss_bytes()
    start, start_cpu = time.perf_counter(), time.process_time()
    value = iwae_nll(vae, x_test, k=args.k, batch_size=batch)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    rss = max_rss_bytes()
    conv._BUFFERS.arrays.clear()
    tracemalloc.start()
    iwae_nll(vae, x_test[: 2 * batch], k=args.k, batch_size=batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"architecture": args.architecture, "rows": batch * args.k, "examples_per_batch":
            batch, "value": value, "wall_s": wall, "cpu_s": cpu, "max_rss_bytes": rss,
            "max_rss_before_bytes": rss_before, "traced_peak_bytes": peak}


def main():
    args = parse_args()
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    archs = list(MODELS) if args.architecture == "both" else [args.architecture]
    print(f"IWAE k={args.k} on 1,000 test digits, {args.threads or 'default'} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':6} {'rows':>7} {'wall s':>8} {'CPU s':>8} {'traced MiB':>11} "
          f"{'max RSS MiB':>12} {'(before)':>9}  value")
    for arch in archs:
        for rows in args.rows:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--architecture",
                   arch, "--rows", str(rows), "--k", str(args.k), "--threads",
                   str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{arch}, {rows} rows failed:\n{proc.stderr.strip()}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{arch:6} {r['rows']:7d} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} "
                  f"{r['traced_peak_bytes'] / 2**20:11.1f} {r['max_rss_bytes'] / 2**20:12.0f} "
                  f"{r['max_rss_before_bytes'] / 2**20:9.0f}  {r['value']:.6f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
