"""How far the NumPy and PyTorch models drift apart in float32, for several sequences of batches.

Lesson 06 trains the 784-400-20 VAE side by side in NumPy (hand-written gradients, optim.Adam)
and PyTorch (autograd, torch.optim.Adam) from the same start, on the same batches and noise, and
shows one run (seed 0). This script repeats that run for several seeds (the seed of the model;
the batches and noise come from seed + 1, as in the lesson) and prints the largest relative
parameter difference, the parameter it is found in and both losses at a few steps. One BLAS and
one torch thread.

    python benchmarks/float32_drift.py --seeds 0 1 2 3 --steps 300
"""

import argparse
import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vae_from_scratch import VAE  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.gradcheck import rel_error  # noqa: E402
from vae_from_scratch.optim import Adam  # noqa: E402
from vae_from_scratch.torch_vae import TorchVAE  # noqa: E402

REPORT = (1, 10, 50, 100, 150, 200, 250, 300, 400, 500)


def drift(ds, seed, steps, dtype=np.float32):
    model = VAE(784, (400,), 20, seed=seed, dtype=dtype)
    tmodel = TorchVAE.from_numpy(model, device="cpu")
    opt = Adam(model.params, lr=1e-3)
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed + 1)
    for step in range(1, steps + 1):
        x = ds.x_train[rng.choice(len(ds.x_train), 128, replace=False)].astype(dtype)
        e = rng.standard_normal((len(x), 20)).astype(dtype)
        terms, grads = model.loss_and_grads(x, e)
        opt.step(grads)
        topt.zero_grad()
        t_terms = tmodel.loss(torch.from_numpy(x), torch.from_numpy(e))
        t_terms.loss.backward()
        topt.step()
        if step in REPORT or step == steps:
            diffs = {k: rel_error(model.params[k], p.detach().numpy())
                     for k, p in tmodel.params.items()}
            worst = max(diffs, key=diffs.get)
            yield step, diffs[worst], worst, terms.loss, t_terms.loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_mnist()
    for seed in args.seeds:
        for step, diff, name, loss, t_loss in drift(ds, seed, args.steps):
            print(f"seed {seed}  step {step:4d}  largest relative parameter difference {diff:.1e} "
                  f"({name})  loss NumPy {loss:.3f}, torch {t_loss:.3f}", flush=True)


if __name__ == "__main__":
    main()
