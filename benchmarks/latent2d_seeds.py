"""Lesson 05's 2-D latent space for several seeds: where each digit's codes land.

Lesson 05 trains a 784-256-2 VAE (Bernoulli decoder, Adam 3e-3, batch 128, 20 epochs) with seed
0 and describes its latent space. Which digit lands where changes with the seed; this script
trains the same model with other seeds, prints each digit's centre and spread (posterior means
of the test set) and writes the scatter plot and the decoded 15 x 15 grid of each run to
``--out``, so the description can be checked against them. One BLAS thread.

    python benchmarks/latent2d_seeds.py --seeds 0 1 2 3 --out runs/latent2d_seeds
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from vae_from_scratch import VAE, plots  # noqa: E402
from vae_from_scratch.course.files import save_figures  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="runs/latent2d_seeds", help="folder for the figures")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_mnist()
    for seed in args.seeds:
        vae = VAE(784, (256,), 2, seed=seed)
        hist = fit(NumpyBackend(vae, ds.x_train, lr=3e-3, seed=seed), ds.x_test, epochs=20,
                   progress=False)
        mu, _ = vae.encode(ds.x_test)
        print(f"seed {seed}: test -ELBO {hist.test_nelbo[-1]:.1f}", flush=True)
        for k in range(10):
            m = mu[ds.y_test == k]
            print(f"  digit {k}: centre ({m[:, 0].mean():5.2f}, {m[:, 1].mean():5.2f}), "
                  f"spread ({m[:, 0].std():.2f}, {m[:, 1].std():.2f})")
        save_figures({f"scatter_seed{seed}": plots.latent_scatter(mu, ds.y_test),
                            f"manifold_seed{seed}": plots.latent_manifold(vae, n=15)}, out)
    print(f"figures in {out}/")


if __name__ == "__main__":
    main()
