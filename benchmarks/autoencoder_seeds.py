"""Lesson 01's holes in an autoencoder's latent space, for other seeds.

Lesson 01 trains two nonlinear autoencoders (784-128-L, L = 2 and 16, ReLU, Bernoulli output,
Adam 2e-3, batches of 100; 8 and 15 epochs) with seed 0 and measures how far random points in
the bounding box of the training codes lie from the nearest training code, against the test
images' codes. This script repeats the measurement for other seeds (of the weights and of the
training alike; the random points are drawn as in the lesson). One BLAS thread.

    python benchmarks/autoencoder_seeds.py --seeds 1 2 3
"""

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch.autoencoder import Autoencoder, fit  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402


def nearest_distances(a, b):
    """Euclidean distance from each row of a to the nearest row of b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = np.sum(a * a, axis=1)[:, None] - 2.0 * a @ b.T + np.sum(b * b, axis=1)[None, :]
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    ds = load_mnist()
    for seed in args.seeds:
        ae2 = Autoencoder(784, (128,), 2, activation="relu", output="bernoulli", seed=seed)
        ae16 = Autoencoder(784, (128,), 16, activation="relu", output="bernoulli", seed=seed)
        fit(ae2, ds.x_train, epochs=8, lr=2e-3, batch_size=100, seed=seed)
        fit(ae16, ds.x_train, epochs=15, lr=2e-3, batch_size=100, seed=seed)
        rng = np.random.default_rng(2)
        for name, ae in (("L = 2", ae2), ("L = 16", ae16)):
            z_train, z_test = ae.encode(ds.x_train), ae.encode(ds.x_test)
            z_random = rng.uniform(z_train.min(axis=0), z_train.max(axis=0),
                                   size=(1000, ae.latent_dim))
            d_test = nearest_distances(z_test, z_train)
            d_random = nearest_distances(z_random, z_train)
            far = np.mean(d_random > np.quantile(d_test, 0.99))
            print(f"seed {seed}, {name:6s}: median distance to the nearest training code: test "
                  f"codes {np.median(d_test):.2f}, random points {np.median(d_random):.2f}; "
                  f"random points farther than 99% of test codes: {far:.0%}", flush=True)


if __name__ == "__main__":
    main()
