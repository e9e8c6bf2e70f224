"""One epoch of lesson 06's model with each backend the lesson times, each in its own process.

Lesson 06 times an epoch of ``NumpyBackend`` and of ``TorchBackend`` on the CPU (784-400-20,
the 4,000 embedded digits, batch 128, float32, ``guard_every=50`` for torch) with both
libraries in one kernel. This measures the same two epochs the fair way: each backend in a
process of its own (so one library's thread pool never competes with the other's, and the
NumPy process never imports torch), the two taking turns round after round (so a change in
the machine's load hits both alike), one warm-up epoch per process, then ``--repeats`` timed
epochs. It prints, per round, each side's median epoch (wall clock and the process's CPU
time) and the ratio NumPy / torch, then the range of those ratios over the rounds.

    python benchmarks/backend_epoch.py                  # 5 rounds, 3 timed epochs each
    python benchmarks/backend_epoch.py --rounds 7 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def worker(side: str, repeats: int) -> dict:
    from vae_from_scratch import VAE
    from vae_from_scratch.course.threads import limit_threads
    from vae_from_scratch.data import load_mnist
    from vae_from_scratch.train import NumpyBackend, fit

    limit_threads()
    ds = load_mnist()
    if side == "numpy":
        backend = NumpyBackend(VAE(784, (400,), 20, seed=0), ds.x_train, seed=0)
        guard = 1
    else:
        from vae_from_scratch.torch_vae import TorchBackend

        backend = TorchBackend(VAE(784, (400,), 20, seed=0), ds.x_train, seed=0, device="cpu")
        guard = 50
    cpu_at_end = []
    history = fit(backend, epochs=repeats + 1, progress=False, guard_every=guard,
                  on_epoch_end=lambda loop: cpu_at_end.append(time.process_time()))
    # the first epoch warms up caches and thread pools: not counted
    wall = history.seconds[1:]
    cpu = [b - a for a, b in zip(cpu_at_end, cpu_at_end[1:], strict=False)]
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return 0
    env = {**os.environ, "VAE_COURSE_THREADS": str(args.threads)}
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f} at the start")
    ratios_wall, ratios_cpu = [], []
    for r in range(args.rounds):
        res = {}
        for side in ("numpy", "torch"):
            out = subprocess.run([sys.executable, __file__, "--worker", side, "--repeats",
                                  str(args.repeats)], env=env, capture_output=True, text=True,
                                 check=True).stdout
            res[side] = json.loads(out.strip().splitlines()[-1])
        ratios_wall.append(res["numpy"]["wall"] / res["torch"]["wall"])
        ratios_cpu.append(res["numpy"]["cpu"] / res["torch"]["cpu"])
        print(f"round {r + 1}: NumPy {res['numpy']['wall']:.3f} s ({res['numpy']['cpu']:.3f} s "
              f"CPU), TorchBackend {res['torch']['wall']:.3f} s ({res['torch']['cpu']:.3f} s "
              f"CPU); NumPy / torch {ratios_wall[-1]:.2f} wall, {ratios_cpu[-1]:.2f} CPU",
              flush=True)
    print(f"NumPy / TorchBackend per epoch over {args.rounds} rounds: wall "
          f"{min(ratios_wall):.2f} to {max(ratios_wall):.2f} (median "
          f"{statistics.median(ratios_wall):.2f}), CPU {min(ratios_cpu):.2f} to "
          f"{max(ratios_cpu):.2f}; load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
