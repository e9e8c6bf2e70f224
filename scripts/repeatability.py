"""Does a training run repeat bit for bit? Trains the same small run in fresh processes with
different BLAS thread counts (and twice with each) and prints the SHA-256 of the parameters.

    python scripts/repeatability.py [--threads 1 2] [--backend numpy torch] [--epochs 2]

Equal hashes for the same thread count: a run repeats. Equal hashes across thread counts:
the thread count does not matter for this model on this machine (not promised in general).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import hashlib, sys
import numpy as np
from vae_from_scratch import VAE, data
from vae_from_scratch.train import NumpyBackend, fit
backend_name, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ds = data.load_mnist()
vae = VAE(784, (400,), 20, seed=0)
if backend_name == "numpy":
    backend = NumpyBackend(vae, ds.x_train, seed=0)
else:
    import torch
    from vae_from_scratch.torch_vae import TorchBackend
    torch.set_num_threads(threads)
    backend = TorchBackend(vae, ds.x_train, seed=0, device="cpu")
fit(backend, None, epochs=epochs, progress=False)
digest = hashlib.sha256()
for name, value in sorted(backend.to_vae().params.items()):
    digest.update(value.tobytes())
print(digest.hexdigest()[:16])
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", nargs="+", default=["numpy"], choices=("numpy", "torch"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    for backend in args.backend:
        for threads in args.threads:
            env = {**os.environ, **{v: str(threads) for v in
                                    ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
            hashes = [
                subprocess.run([sys.executable, "-c", CHILD, backend, str(args.epochs),
                                str(threads)], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()
                for _ in range(2)
            ]
            print(f"{backend:6} {threads} thread(s): {hashes[0]} {hashes[1]}")


if __name__ == "__main__":
    main()
