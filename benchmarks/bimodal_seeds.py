"""Lesson 07's bimodal experiment over seeds: how much a mixture prior cuts the gap fraction.

Lesson 07 trains one seed: the 1-D two-mode data, an MLP VAE (1-32-32-1, tanh, Gaussian
decoder with variance 0.01, Adam 1e-2, batch 128, 100 epochs) with the standard prior and
with a learnable mixture of K Gaussians, and compares the share of generated points that fall
in the gap (-1, 1). This script repeats sections 3 and 5 of the lesson for several seeds (the
seed of the model and of its training alike) and several K, and prints, for each, the gap
fractions and the factor by which the mixture cuts it. One BLAS thread.

    python benchmarks/bimodal_seeds.py --seeds 0 1 2 3 4 5 6 7 --components 2 8
"""

import argparse
import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch import VAE  # noqa: E402
from vae_from_scratch import diagnostics as diag  # noqa: E402
from vae_from_scratch.data import bimodal_1d  # noqa: E402
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402

GAP = (-1.0, 1.0)
N_GEN = 10_000


def gap_fraction(x_train, seed, **prior):
    model = dict(input_dim=1, hidden_dims=(32, 32), latent_dim=1, activation="tanh",
                 likelihood="gaussian", obs_var=0.01, seed=seed, dtype=np.float64)
    vae = VAE(**model, **prior)
    fit(NumpyBackend(vae, x_train, lr=1e-2, batch_size=128, seed=seed), epochs=100,
        progress=False)
    x_gen = diag.generate(vae, N_GEN, seed=1)
    return diag.gap_fraction(x_gen, *GAP), diag.prior_hole_mass(vae, x_train, n=5000, seed=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--components", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args()
    x_train = bimodal_1d(2000, seed=0, separation=4.0, std=0.4, dtype=np.float64)
    results = []
    for seed in args.seeds:
        gap_std, hole_std = gap_fraction(x_train, seed)
        row = {"seed": seed, "standard": gap_std, "holes_standard": hole_std}
        line = f"seed {seed}: gap fraction standard {gap_std:.4f} (holes {hole_std:.3f})"
        for k in args.components:
            gap_mix, hole_mix = gap_fraction(x_train, seed, prior="mixture", n_components=k)
            row[f"mixture_{k}"], row[f"holes_mixture_{k}"] = gap_mix, hole_mix
            line += (f"; K={k} {gap_mix:.4f} (holes {hole_mix:.3f}), "
                     f"cut {gap_std / gap_mix:.1f}-fold")
        print(line, flush=True)
        results.append(row)
    for k in args.components:
        cuts = np.array([r["standard"] / r[f"mixture_{k}"] for r in results])
        print(f"K={k}: cut {cuts.min():.1f}- to {cuts.max():.1f}-fold over seeds "
              f"{args.seeds[0]}..{args.seeds[-1]}; per seed " + ", ".join(f"{c:.1f}" for c in cuts))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
