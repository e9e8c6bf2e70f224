"""Does ``vae-course train --conditional`` draw the digit it is asked for, at its defaults?

For each latent size (2 and 20) and seed (0, 1, 2) this script runs the command itself,

    vae-course train --conditional --latent-dim L --seed S --iwae-k 0 --out DIR

(every other flag at its default: MLP 784-400-L, Bernoulli decoder on grey pixels, Adam 1e-3,
batch 128, 50 epochs, the embedded digits; the prior is the command's default for a
conditional model, ``class_gaussian``), loads the checkpoint, draws 1,000 samples (100 per
digit) with ``vae.sample(1000, y=..., seed=S)`` and counts the share that lesson 09's
classifier (``vae_from_scratch.classifier.train_classifier``: 784-256-10, Adam 1e-3, 20
epochs, seed 0) reads as the digit asked for: the *agreement*. The target is 90 % or more
everywhere. The classifier's own test accuracy is printed with it: part of the shortfall
from 100 % is the judge's error, not the model's.

``--priors standard class_gaussian`` runs the same command with ``--prior`` for each (the
standard normal prior was the command's default before; lesson 09 shows both), and
``--epochs``, ``--limit`` shorten the runs for a quick look (the figures then do not answer
the question). One BLAS thread, as ``vae-course`` uses by default.

    python benchmarks/conditional_agreement.py
    python benchmarks/conditional_agreement.py --priors standard class_gaussian --latent 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch.classifier import train_classifier  # noqa: E402
from vae_from_scratch.course.checkpoint import load_vae  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402

TARGET = 0.90


def say(text: str = "") -> None:
    print(text, flush=True)


def train(out: Path, latent: int, seed: int, prior: str | None, extra: list[str]) -> float:
    """Run vae-course train --conditional with these flags; returns its wall seconds."""
    argv = [sys.executable, "-m", "vae_from_scratch.course.cli", "train", "--conditional",
            "--latent-dim", str(latent), "--seed", str(seed), "--iwae-k", "0", "--quiet",
            "--out", str(out), *extra]
    if prior is not None:
        argv += ["--prior", prior]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def agreement(checkpoint: Path, judge, seed: int) -> float:
    """The share of 1,000 samples, 100 per digit, that ``judge`` reads as the digit asked for."""
    vae = load_vae(checkpoint)
    asked = np.repeat(np.arange(10), 100)
    return float(np.mean(judge.predict(vae.sample(1000, y=asked, seed=seed)) == asked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent", type=int, nargs="+", default=[2, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--priors", nargs="+", default=[None],
                        help="--prior values to run (default: the command's own default)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the command's (50)")
    parser.add_argument("--limit", type=int, default=None, help="train on a sample (quick look)")
    args = parser.parse_args()
    extra = []
    if args.epochs is not None:
        extra += ["--epochs", str(args.epochs)]
    if args.limit is not None:
        extra += ["--limit", str(args.limit)]

    ds = load_mnist()
    judge = train_classifier(ds.x_train, ds.y_train)
    accuracy = float(np.mean(judge.predict(ds.x_test) == ds.y_test))
    say(f"classifier (784-256-10, 20 epochs, seed 0): {accuracy:.1%} of the real test digits")
    say(f"load average at the start: {os.getloadavg()[0]:.1f}")
    say(f"{'prior':>16s} {'L':>3s} {'seed':>4s} {'agreement':>9s} {'train s':>8s}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prior in args.priors:
            for latent in args.latent:
                for seed in args.seeds:
                    out = Path(tmp) / f"{prior}-{latent}-{seed}"
                    seconds = train(out, latent, seed, prior, extra)
                    value = agreement(out / "checkpoint.safetensors", judge, seed)
                    results[prior, latent, seed] = value
                    say(f"{prior or 'default':>16s} {latent:3d} {seed:4d} {value:9.1%} "
                        f"{seconds:8.1f}")
    say(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for prior in args.priors:
        for latent in args.latent:
            values = [results[prior, latent, s] for s in args.seeds]
            verdict = "meets" if min(values) >= TARGET else "misses"
            say(f"{prior or 'default'}, L = {latent}: {min(values):.1%} to {max(values):.1%} "
                f"({verdict} the {TARGET:.0%} target)")


if __name__ == "__main__":
    main()
