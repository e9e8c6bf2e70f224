"""Lesson 09's measured figures over seeds: what the lesson says about them holds beyond seed 0.

Lesson 09 trains, with seed 0: a 784-256-10 classifier (softmax cross-entropy, Adam 1e-3, batch
128, 20 epochs); two conditional VAEs 784-256-L (L = 20 and 2; Adam 3e-3, 20 epochs) whose
samples it asks the classifier to read; and, on dequantised digits ((255 x + u) / 256, noise
fixed), a continuous Bernoulli VAE and a Gaussian VAE with one learned log-variance per pixel
(784-256-20, Adam 1e-3, 20 epochs), compared by -log p(x~) (IWAE, K = 100) on 200 test digits.
This script repeats the same code with other seeds (seed 0 reproduces the lesson's numbers on
the same machine) and prints:

* part 1, seeds 0-4: the classifier's test accuracy; each conditional VAE's agreement (the
  share of 1,000 samples, 100 per digit, that the classifier reads as the digit asked for);
  how often a test digit's code decoded with another label is read as that label; the share
  of the test digits' slant and ink that the 2-D code explains (R^2 of a linear fit);
* part 2, seeds 0-2: -log p(x~) in nats and bits per pixel of both decoders, and the
  raw-trained continuous Bernoulli on the raw and on the dequantised test digits.

Options: ``--long`` (seed 0) trains the L = 20 conditional VAE for 150 epochs (agreement and
test negative ELBO every 10 epochs) and the three part-2 models for 300 epochs (IWAE at 20, 50,
100, 200, 300); ``--gaussian-starts`` (seed 0) trains the Gaussian from five starts of its
log-variance and prints what each learned. One BLAS thread, as in the lesson.

    python benchmarks/conditional_seeds.py
    python benchmarks/conditional_seeds.py --long --gaussian-starts --skip-seeds
"""

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch import VAE  # noqa: E402
from vae_from_scratch.course.threads import limit_threads  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.evaluate import iwae_nll, negative_elbo  # noqa: E402
from vae_from_scratch.networks import Layer, Network, dense_layers  # noqa: E402
from vae_from_scratch.optim import Adam  # noqa: E402
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402

D = 784
EPOCHS = 20


def say(text=""):
    print(text, flush=True)


# --- the lesson's code, repeated ---------------------------------------------------------------


def softmax_cross_entropy(logits, y):
    n = len(y)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), y] -= 1.0
    return float(-log_p[np.arange(n), y].mean()), dlogits / n


def train_classifier(x, y, hidden=256, epochs=20, batch_size=128, seed=0):
    layers = dense_layers("clf", (x.shape[1], hidden), "relu")
    layers.append(Layer("linear", "clf.out", (hidden, 10)))
    net = Network(layers, x.shape[1], 10)
    rng = np.random.default_rng(seed)
    params = {}
    net.init_params(rng, params)
    params = {name: value.astype(np.float32) for name, value in params.items()}
    optimizer = Adam(params, lr=1e-3)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            logits, caches = net.forward(params, x[batch])
            _, dlogits = softmax_cross_entropy(logits, y[batch])
            grads = {}
            net.backward(dlogits.astype(np.float32), caches, grads, need_dx=False)
            optimizer.step(grads)
    return lambda images: net.forward(params, images)[0].argmax(axis=1)


def slant_and_ink(x):
    img = x.reshape(-1, 28, 28).astype(np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    mass = img.sum(axis=(1, 2))
    r_mean = (img * rows).sum(axis=(1, 2)) / mass
    c_mean = (img * cols).sum(axis=(1, 2)) / mass
    dr, dc = rows - r_mean[:, None, None], cols - c_mean[:, None, None]
    slant = -(img * dr * dc).sum(axis=(1, 2)) / (img * dr * dr).sum(axis=(1, 2))
    return slant, mass


def r_squared(target, features):
    design = np.column_stack([features, np.ones(len(features))])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return 1 - np.var(target - design @ coef) / np.var(target)


def dequantize(x, rng):
    k = np.round(255 * x.astype(np.float64))
    return ((k + rng.uniform(0, 1, x.shape)) / 256).astype(np.float32)


def bits(nll):
    return (nll + D * np.log(256)) / (D * np.log(2))


def agreement(model, classify, seed):
    y_asked = np.repeat(np.arange(10), 100)
    return np.mean(classify(model.sample(1000, y=y_asked, seed=seed)) == y_asked)


# --- part 1 -------------------------------------------------------------------------------------


def part1(ds, seeds):
    say("Part 1: classifier accuracy, conditional samples read as the digit asked for (agreement),")
    say("codes decoded with another label read as that label (transfer), and the share of slant")
    say("and ink that the 2-D code explains (R^2)")
    say(f"{'seed':>4s} {'classifier':>10s} {'agree L=20':>10s} {'agree L=2':>9s} "
        f"{'transfer L=20':>13s} {'transfer L=2':>12s} {'R2 slant':>8s} {'R2 ink':>6s}")
    slant, ink = slant_and_ink(ds.x_test)
    y_other = (ds.y_test[:, None] + np.arange(1, 10)).ravel() % 10
    rows = []
    for seed in seeds:
        classify = train_classifier(ds.x_train, ds.y_train, seed=seed)
        accuracy = np.mean(classify(ds.x_test) == ds.y_test)
        row = {"accuracy": accuracy}
        for L in (20, 2):
            model = VAE(784, (256,), L, n_classes=10, seed=seed)
            fit(NumpyBackend(model, ds.x_train, ds.y_train, lr=3e-3, seed=seed), None,
                epochs=EPOCHS, progress=False)
            row[f"agree{L}"] = agreement(model, classify, seed + 1)
            mu, _ = model.encode(ds.x_test, ds.y_test)
            verdict = classify(model.decode_mean(np.repeat(mu, 9, axis=0), y_other))
            row[f"transfer{L}"] = np.mean(verdict == y_other)
            if L == 2:
                row["r2_slant"], row["r2_ink"] = r_squared(slant, mu), r_squared(ink, mu)
        rows.append(row)
        say(f"{seed:4d} {accuracy:10.1%} {row['agree20']:10.1%} {row['agree2']:9.1%} "
            f"{row['transfer20']:13.0%} {row['transfer2']:12.0%} {row['r2_slant']:8.0%} "
            f"{row['r2_ink']:6.0%}")
    for key in rows[0]:
        values = [r[key] for r in rows]
        say(f"  {key:10s} from {min(values):.3f} to {max(values):.3f}")
    say()


# --- part 2 -------------------------------------------------------------------------------------


def part2_data(ds):
    x_train_dq = dequantize(ds.x_train, np.random.default_rng(1))
    subset = np.argsort(ds.y_test, kind="stable").reshape(10, 100)[:, :20].ravel()
    x_test_dq = dequantize(ds.x_test[subset], np.random.default_rng(2))
    return x_train_dq, ds.x_test[subset], x_test_dq


def gaussian_vae(x_train_dq, seed, floor=1e-3, start="data"):
    model = VAE(784, (256,), 20, seed=seed, likelihood="gaussian", obs_var="learned")
    if start == "data":
        variance = x_train_dq.var(axis=0, dtype=np.float64)
        model.params["dec.log_var"][...] = np.log(variance + floor)
    return model


def part2(ds, seeds):
    x_train_dq, x_test_raw, x_test_dq = part2_data(ds)
    say("Part 2: -log p(x~) on 200 dequantised test digits (IWAE, K = 100), nats and bits per")
    say("pixel; the continuous Bernoulli trained on raw digits, on the raw and dequantised ones")
    say(f"{'seed':>4s} {'continuous Bernoulli':>22s} {'Gaussian, learned var':>22s} "
        f"{'raw-trained CB on raw':>22s} {'on dequantised':>15s}")
    for seed in seeds:
        cb = VAE(784, (256,), 20, likelihood="continuous_bernoulli", seed=seed)
        fit(NumpyBackend(cb, x_train_dq, seed=seed), None, epochs=EPOCHS, progress=False)
        gauss = gaussian_vae(x_train_dq, seed)
        fit(NumpyBackend(gauss, x_train_dq, seed=seed), None, epochs=EPOCHS, progress=False)
        raw = VAE(784, (256,), 20, likelihood="continuous_bernoulli", seed=seed)
        fit(NumpyBackend(raw, ds.x_train, seed=seed), None, epochs=EPOCHS, progress=False)
        nll_cb = iwae_nll(cb, x_test_dq, k=100, seed=0)
        nll_g = iwae_nll(gauss, x_test_dq, k=100, seed=0)
        say(f"{seed:4d} {nll_cb:9.1f} ({bits(nll_cb):.2f} bpp) "
            f"{nll_g:9.1f} ({bits(nll_g):.2f} bpp) "
            f"{iwae_nll(raw, x_test_raw, k=100, seed=0):22.1f} "
            f"{iwae_nll(raw, x_test_dq, k=100, seed=0):15.1f}")
    say()


def gaussian_starts(ds):
    x_train_dq, _, x_test_dq = part2_data(ds)
    say("The Gaussian's log-variance start (seed 0, 20 epochs): -log p(x~), the test KL, q's")
    say("mean log-variance, how much q's means vary over the test digits (summed variance), and")
    say("how much the decoder's output at z = mu varies over them (mean over pixels of its std; "
        "data: "
        f"{x_test_dq.std(axis=0).mean():.3f})")
    starts = [("s = 0", dict(start="zero"), 1e-3), ("s = 0, Adam 3e-3", dict(start="zero"), 3e-3),
              ("data variance", dict(floor=0.0), 1e-3),
              ("data variance + 1e-3", dict(floor=1e-3), 1e-3),
              ("data variance + 1e-2", dict(floor=1e-2), 1e-3),
              ("data variance + 1e-1", dict(floor=1e-1), 1e-3)]
    for name, options, lr in starts:
        model = gaussian_vae(x_train_dq, 0, **options)
        fit(NumpyBackend(model, x_train_dq, seed=0, lr=lr), None, epochs=EPOCHS, progress=False)
        mu, log_var = model.encode(x_test_dq)
        _, _, kl = negative_elbo(model, x_test_dq)
        out = model.decode(mu)
        nll = iwae_nll(model, x_test_dq, k=100, seed=0)
        say(f"  {name:22s} {nll:8.1f} nats ({bits(nll):.2f} bpp)  KL {kl:6.1f}  log-var of q "
            f"{log_var.mean():6.1f}  var of mu {mu.var(axis=0).sum():6.2f}  output std "
            f"{out.std(axis=0).mean():.3f}")
    say()


def long_runs(ds):
    classify = train_classifier(ds.x_train, ds.y_train, seed=0)
    model = VAE(784, (256,), 20, n_classes=10, seed=0)
    line = []

    def every_10(loop):
        if loop.epochs_done % 10 == 0:
            nelbo, _, _ = negative_elbo(model, ds.x_test, y=ds.y_test)
            line.append(f"{loop.epochs_done}: {agreement(model, classify, 1):.0%} ({nelbo:.1f})")

    say("Long run, L = 20 conditional VAE (seed 0): epoch: agreement (test negative ELBO)")
    fit(NumpyBackend(model, ds.x_train, ds.y_train, lr=3e-3, seed=0), None, epochs=150,
        progress=False, on_epoch_end=every_10)
    for i in range(0, len(line), 5):
        say("  " + "   ".join(line[i : i + 5]))

    x_train_dq, x_test_raw, x_test_dq = part2_data(ds)
    say("Long runs (seed 0): -log p on the 200 test digits (IWAE, K = 100) at epochs "
        "20, 50, 100, 200, 300")
    runs = [("continuous Bernoulli, raw digits",
             VAE(784, (256,), 20, likelihood="continuous_bernoulli", seed=0), ds.x_train,
             x_test_raw),
            ("continuous Bernoulli, dequantised",
             VAE(784, (256,), 20, likelihood="continuous_bernoulli", seed=0), x_train_dq,
             x_test_dq),
            ("Gaussian, dequantised", gaussian_vae(x_train_dq, 0), x_train_dq, x_test_dq)]
    for name, vae, x_train, x_test in runs:
        marks = []

        def at_marks(loop, vae=vae, x_test=x_test, marks=marks):
            if loop.epochs_done in (20, 50, 100, 200, 300):
                marks.append(f"{iwae_nll(vae, x_test, k=100, seed=0):.0f}")

        fit(NumpyBackend(vae, x_train, seed=0), None, epochs=300, progress=False,
            on_epoch_end=at_marks)
        say(f"  {name:34s} {', '.join(marks)}")
    say()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds for part 1 (default 0-4)")
    parser.add_argument("--seeds2", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds for part 2 (default 0-2)")
    parser.add_argument("--long", action="store_true", help="the long runs (seed 0)")
    parser.add_argument("--gaussian-starts", action="store_true",
                        help="the Gaussian's log-variance starts (seed 0)")
    parser.add_argument("--skip-seeds", action="store_true", help="leave out parts 1 and 2")
    args = parser.parse_args()
    limit_threads(1)
    ds = load_mnist()
    t0 = time.perf_counter()
    if not args.skip_seeds:
        part1(ds, args.seeds)
        part2(ds, args.seeds2)
    if args.gaussian_starts:
        gaussian_starts(ds)
    if args.long:
        long_runs(ds)
    say(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
