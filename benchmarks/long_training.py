"""How the test negative ELBO of lesson 05's model moves with long training.

Lesson 05 trains the 784-400-20 VAE (ReLU, Bernoulli decoder, Adam 1e-3, batch 128) for 30
epochs on the embedded split (4,000 training digits). Does the test curve turn up if it is
trained much longer, as a model that memorises its training set would? This script trains
the same model for ``--epochs`` (default 120) and evaluates the test negative ELBO after
every epoch (fixed noise, as ``train.fit`` does), and the importance-weighted estimate of
-log p(x) (k = 100) every ``--iwae-every`` epochs. One BLAS thread, so that a run repeats bit
for bit and a busy machine does not distort it.

    python benchmarks/long_training.py --seeds 0 1 --epochs 120 --out long_training.json
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
from vae_from_scratch.evaluate import iwae_nll  # noqa: E402
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402


def run(seed, epochs, iwae_every, ds):
    vae = VAE(784, (400,), 20, likelihood="bernoulli", seed=seed)
    backend = NumpyBackend(vae, ds.x_train, lr=1e-3, batch_size=128, seed=seed)
    record = {"seed": seed, "epoch": [], "train_nelbo": [], "test_nelbo": [], "test_recon": [],
              "test_kl": [], "iwae_epoch": [], "test_iwae100": []}
    for epoch in range(1, epochs + 1):
        # one epoch at a time, so that the IWAE figure can be taken in between; the
        # backend keeps its shuffling and noise stream, so this equals one long fit
        h = fit(backend, ds.x_test, epochs=1, progress=False)
        record["epoch"].append(epoch)
        record["train_nelbo"].append(h.train_nelbo[-1])
        record["test_nelbo"].append(h.test_nelbo[-1])
        record["test_recon"].append(h.test_recon[-1])
        record["test_kl"].append(h.test_kl[-1])
        line = (f"seed {seed}  epoch {epoch:3d}  train -ELBO {h.train_nelbo[-1]:7.2f}  "
                f"test -ELBO {h.test_nelbo[-1]:7.2f} (recon {h.test_recon[-1]:6.2f}, "
                f"KL {h.test_kl[-1]:5.2f})")
        if epoch % iwae_every == 0 or epoch == epochs:
            iw = iwae_nll(vae, ds.x_test, k=100, seed=0)
            record["iwae_epoch"].append(epoch)
            record["test_iwae100"].append(iw)
            line += f"  IWAE k=100 {iw:7.2f}"
        print(line, flush=True)
    best = int(np.argmin(record["test_nelbo"]))
    print(f"seed {seed}: lowest test -ELBO {record['test_nelbo'][best]:.2f} at epoch "
          f"{record['epoch'][best]}; at the last epoch {record['test_nelbo'][-1]:.2f}", flush=True)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--iwae-every", type=int, default=30)
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args()
    ds = load_mnist()
    records = [run(seed, args.epochs, args.iwae_every, ds) for seed in args.seeds]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
