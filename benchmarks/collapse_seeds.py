"""Posterior collapse across seeds: lesson 05's small models with a large beta, trained
plainly, with KL warm-up and with free bits.

Lesson 05 trains one seed of each; whether a difference between them is real or the luck
of that seed needs more. This script trains the lesson's small model (784-128-20, ReLU,
Bernoulli decoder, Adam 1e-3, batch 128, 12 epochs, 5 epochs of warm-up where used) for
each seed and variant and prints the test negative ELBO (at beta = 1), the test KL and the
active units, then the mean, standard deviation and range over the seeds. One BLAS thread.

    python benchmarks/collapse_seeds.py --betas 1 16 --seeds 0 1 2 3 4 5 6 7
    python benchmarks/collapse_seeds.py --betas 16 --free-bits 0.1 0.25 0.5 --out fb.json
"""

import argparse
import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch import VAE  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.evaluate import active_units  # noqa: E402
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402

EPOCHS = 12
WARMUP_EPOCHS = 5


def train(ds, seed, beta, warmup=False, free_bits=0.0):
    """Lesson 05's train_small, with the seed of the model and of the training."""
    vae = VAE(784, (128,), 20, seed=seed, beta=beta, free_bits=free_bits)
    steps_per_epoch = -(-len(ds.x_train) // 128)
    backend = NumpyBackend(vae, ds.x_train, seed=seed,
                           kl_warmup=WARMUP_EPOCHS * steps_per_epoch if warmup else 0)
    hist = fit(backend, ds.x_test, epochs=EPOCHS, progress=False)
    return {"test_nelbo": hist.test_nelbo[-1], "test_recon": hist.test_recon[-1],
            "test_kl": hist.test_kl[-1], "active_units": active_units(vae, ds.x_test)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 16.0])
    parser.add_argument("--free-bits", type=float, nargs="*", default=[0.5],
                        help="free-bits floors (nats per latent dimension) to try")
    parser.add_argument("--no-warmup", action="store_true", help="leave out warm-up")
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args()
    ds = load_mnist()
    variants = [("none", {})]
    if not args.no_warmup:
        variants.append(("warm-up", {"warmup": True}))
    variants += [(f"free bits {fb:g}", {"free_bits": fb}) for fb in args.free_bits]
    results = []
    for beta in args.betas:
        for name, options in variants:
            rows = []
            for seed in args.seeds:
                r = train(ds, seed, beta, **options)
                rows.append(r)
                results.append({"beta": beta, "variant": name, "seed": seed, **r})
                print(f"beta {beta:g}  {name:15s} seed {seed}: test -ELBO {r['test_nelbo']:6.1f}"
                      f"  KL {r['test_kl']:6.2f}  active units {r['active_units']:2d}", flush=True)
            for key in ("test_nelbo", "test_kl", "active_units"):
                v = np.array([row[key] for row in rows], dtype=float)
                print(f"beta {beta:g}  {name:15s} {key:12s} mean {v.mean():7.2f}  sd "
                      f"{v.std(ddof=1) if len(v) > 1 else 0.0:6.2f}  range {v.min():g} to "
                      f"{v.max():g}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
