"""Lesson 11's measurements, in NumPy: the VQ-VAE against the conv VAE at matched rates,
codebook collapse and its fixes over seeds, FSQ at the same rates, and the priors over codes.

The VQ-VAE is composed here from the package's layers (``networks.Layer``, ``conv.py``) and
``quantize.py``, as it was measured before the package composed it inside ``VAE``
(``VAE(architecture="conv", bottleneck="vq")``, ``vae_from_scratch/discrete.py``: the same
networks and losses; its restarts draw from the training backend's generator, so runs differ
seed for seed). The script keeps its own composition so that the figures of
``benchmarks/README.md`` that it made can be reproduced. On MNIST's 28 x 28 digits:

    encoder  x -> conv 4x4/2 (1 -> C1) -> ReLU -> conv 4x4/2 (C1 -> C2) -> ReLU
               -> conv 1x1 (C2 -> D) = z_e (N, D, 7, 7)
    quantize z_e -> z_q: the nearest of K codebook vectors (VQ) or FSQ's levels
    decoder  z_q -> conv 1x1 (D -> C2) -> ReLU -> convT 4x4/2 (C2 -> C1) -> ReLU
               -> convT 4x4/2 (C1 -> 1) = logits (N, 784)

(C1, C2) = (32, 64) by default, the conv VAE of lesson 08; the decoder's 1x1 convolution
plays the part of the conv VAE's dense layer, position by position. The loss per image is
lesson 08's Bernoulli reconstruction (nats, summed over pixels, on grey pixels) plus the
codebook loss and 0.25 times the commitment loss, each summed over the 7 x 7 positions and D,
averaged over the batch; Adam 1e-3, batch 128, one BLAS thread, float32.

Parts (``--part``):

* ``collapse``: codebook usage perplexity on the 1,000 test digits, for each seed, with the
  codebook trained by its gradient and nothing else, with dead-code restarts, by EMA, and
  by EMA with restarts.
* ``rate``: test reconstruction (nats per digit) against the rate in bits: the VQ-VAE and
  FSQ at several codebook sizes, the conv VAE of lesson 08 (L = 20) at several KL weights
  beta (its rate is its test KL, in bits).
* ``lesson``: the lesson's whole pipeline at a small budget, each stage timed.
* ``seeds``: the package's VQ-VAE as lesson 11 trains it, on each seed: usage perplexity
  with restarts of unused codes only and with the share rule (``restart_below``); the two
  priors and the judge at each sampling temperature, and the share of the gap closed.
* ``prior``: a VQ-VAE, then the independent and the autoregressive priors fitted to its
  training codes; lesson 09's classifier (784-256-10, Adam 1e-3, 20 epochs) reads samples
  from each, the maximum class probability against the same on real test digits.

    python benchmarks/vq_vae.py --part collapse --seeds 0 1 2 --out collapse.json
    python benchmarks/vq_vae.py --part rate --codebook-sizes 16 64 256 --betas 1 0.3 0.1
    python benchmarks/vq_vae.py --part prior --epochs 5 --prior-epochs 20
    python benchmarks/vq_vae.py --part seeds --seeds 0 1 2 --epochs 4 --prior-hidden 1024 \
        --prior-epochs 20 --temperatures 1 0.7 0.5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch import VAE  # noqa: E402
from vae_from_scratch import distributions as dist  # noqa: E402
from vae_from_scratch import quantize as vq  # noqa: E402
from vae_from_scratch.classifier import train_classifier  # noqa: E402
from vae_from_scratch.code_prior import (  # noqa: E402
    AutoregressivePrior,
    IndependentPrior,
    train_prior,
)
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.layers import sigmoid  # noqa: E402
from vae_from_scratch.networks import Layer, Network  # noqa: E402
from vae_from_scratch.optim import Adam  # noqa: E402
from vae_from_scratch.train import NumpyBackend, fit  # noqa: E402

GRID = (7, 7)
POSITIONS = math.prod(GRID)
CONV = dict(stride=2, padding=1)


def load():
    return os.getloadavg()[0]


# -- the VQ-VAE, composed ------------------------------------------------------------------------


def networks(code_dim, channels=(32, 64)):
    """(encoder, decoder): x (N, 784) -> z_e (N, D, 7, 7) and z_q (N, D, 7, 7) -> logits."""
    c1, c2 = channels
    encoder = Network([
        Layer("reshape", shape=(1, 28, 28)),
        Layer("conv", "enc.0", (c1, 1, 4, 4), **CONV), Layer("relu"),
        Layer("conv", "enc.1", (c2, c1, 4, 4), **CONV), Layer("relu"),
        Layer("conv", "enc.out", (code_dim, c2, 1, 1)),
    ], 784, None)
    decoder = Network([
        Layer("conv", "dec.0", (c2, code_dim, 1, 1)), Layer("relu"),
        Layer("conv_transpose", "dec.1", (c2, c1, 4, 4), **CONV), Layer("relu"),
        Layer("conv_transpose", "dec.out", (c1, 1, 4, 4), **CONV),
        Layer("reshape", shape=(784,)),
    ], None, 784)
    return encoder, decoder


class VQVAE:
    """The composed model. bottleneck "vq" (codebook_size K, code_dim D, codebook_update
    "grad" or "ema") or "fsq" (levels; D = len(levels))."""

    def __init__(self, bottleneck="vq", codebook_size=16, code_dim=16, levels=(4, 4),
                 codebook_update="grad", channels=(32, 64), beta=vq.COMMITMENT_BETA, seed=0):
        self.bottleneck, self.levels, self.beta = bottleneck, tuple(levels), beta
        self.codebook_update = codebook_update
        code_dim = len(self.levels) if bottleneck == "fsq" else code_dim
        self.n_codes = math.prod(self.levels) if bottleneck == "fsq" else codebook_size
        self.encoder, self.decoder = networks(code_dim, channels)
        rng = np.random.default_rng(seed)
        params = {}
        self.encoder.init_params(rng, params)
        self.decoder.init_params(rng, params)
        if bottleneck == "vq":
            k = codebook_size  # the common initialisation, U(-1/K, 1/K)
            params["codebook"] = rng.uniform(-1.0 / k, 1.0 / k, (k, code_dim))
        self.params = {k: v.astype(np.float32) for k, v in params.items()}
        self.ema = vq.ema_init(self.params["codebook"]) if codebook_update == "ema" else None

    def quantize(self, z_e):
        """z_e -> (z_q, codes (N, 7, 7), cache)."""
        if self.bottleneck == "fsq":
            z_q, cache = vq.FSQ.forward(z_e, self.levels)
            return z_q, vq.fsq_codes(cache), cache
        z_q, cache = vq.VectorQuantizer.forward(z_e, self.params["codebook"])
        return z_q, cache.codes, cache

    def loss_and_grads(self, x):
        """Per-batch means (recon, codebook, commitment), grads, z_e and the codes."""
        p = self.params
        z_e, enc_caches = self.encoder.forward(p, x)
        z_q, codes, cache = self.quantize(z_e)
        logits, dec_caches = self.decoder.forward(p, z_q)
        recon = -dist.bernoulli_log_likelihood(x, logits)
        n = len(x)
        d = np.full(n, 1.0 / n, dtype=np.float32)
        grads = {}
        dz_q = self.decoder.backward(dist.bernoulli_log_likelihood_backward(-d, x, logits),
                                     dec_caches, grads)
        if self.bottleneck == "fsq":
            dz_e, cb, commit = vq.FSQ.backward(dz_q, cache), 0.0, 0.0
        else:
            cb = float(vq.codebook_loss(z_e, p["codebook"], codes).mean())
            commit = cb
            dz_e = vq.VectorQuantizer.backward(dz_q, cache) + vq.commitment_loss_backward(
                self.beta * d, z_e, p["codebook"], codes)
            if self.codebook_update == "grad":
                grads["codebook"] = vq.codebook_loss_backward(d, z_e, p["codebook"], codes)
            else:
                grads["codebook"] = np.zeros_like(p["codebook"])  # moved by the EMA instead
        self.encoder.backward(dz_e, enc_caches, grads, need_dx=False)
        grads = {k: grads[k].astype(np.float32, copy=False) for k in p}
        return (float(recon.mean()), cb, commit), grads, z_e, codes

    def codes(self, x, batch=500):
        """The code grids of x: (N, 7, 7)."""
        return np.concatenate([self._codes(x[i:i + batch])
                               for i in range(0, len(x), batch)])

    def _codes(self, x):
        return self.quantize(self.encoder.forward(self.params, x)[0])[1]

    def logits_of_codes(self, codes):
        if self.bottleneck == "fsq":
            z_q = vq.fsq_values(codes, self.levels, np.float32)
        else:
            z_q = vq.lookup(codes, self.params["codebook"])
        return self.decoder.forward(self.params, z_q)[0]

    def recon_nats(self, x, batch=500):
        """Mean over x of -log p(x | z_q(x)), nats per digit."""
        total = 0.0
        for i in range(0, len(x), batch):
            logits = self.logits_of_codes(self.codes(x[i:i + batch]))
            total += float(np.sum(-dist.bernoulli_log_likelihood(x[i:i + batch], logits),
                                  dtype=np.float64))
        return total / len(x)


def train_vq(model, x, epochs, restart_every=0, lr=1e-3, batch_size=128, seed=0, log=None):
    """Adam on the model's loss; the EMA codebook step after each optimizer step; dead codes
    (unused since the last restart) re-seeded from the batch's encoder outputs every
    ``restart_every`` steps. Returns the history: per epoch, train recon, perplexity of the
    epoch's codes, restarted codes, seconds."""
    rng = np.random.default_rng([seed, 1])
    opt = Adam(model.params, lr=lr)
    counts = np.zeros(model.n_codes)
    history, step = [], 0
    for epoch in range(epochs):
        t0, order = time.perf_counter(), rng.permutation(len(x))
        recon_sum, epoch_counts, restarted = 0.0, np.zeros(model.n_codes), 0
        for start in range(0, len(x), batch_size):
            xb = x[order[start:start + batch_size]]
            (recon, _, _), grads, z_e, codes = model.loss_and_grads(xb)
            opt.step(grads)
            step += 1
            recon_sum += recon * len(xb)
            c = vq.code_counts(codes, model.n_codes)
            counts += c
            epoch_counts += c
            if model.ema is not None:
                codebook, *model.ema = vq.ema_update(*model.ema, z_e, codes)
                model.params["codebook"][...] = codebook
            if restart_every and step % restart_every == 0:
                codebook, dead = vq.restart_dead_codes(model.params["codebook"], counts, z_e, rng)
                model.params["codebook"][...] = codebook
                if model.ema is not None and dead.size:  # the restarted codes start afresh
                    model.ema[0][dead] = 1.0
                    model.ema[1][dead] = codebook[dead]
                restarted += dead.size
                counts[:] = 0
        p = epoch_counts / epoch_counts.sum()
        p = p[p > 0]
        history.append({"epoch": epoch + 1, "train_recon": recon_sum / len(x),
                        "train_perplexity": float(np.exp(-np.sum(p * np.log(p)))),
                        "restarted": restarted, "seconds": time.perf_counter() - t0})
        if log:
            log(history[-1])
    return history


# -- the parts ------------------------------------------------------------------------------------


def fixes(args):
    """name -> (codebook_update, restart_every) of the variants the collapse part compares."""
    every = args.restart_every
    return {"gradient only": ("grad", 0), "gradient + restarts": ("grad", every),
            "EMA": ("ema", 0), "EMA + restarts": ("ema", every)}


def part_collapse(ds, args):
    rows = []
    variants = {k: v for k, v in fixes(args).items() if not args.variants or k in args.variants}
    for seed in args.seeds:
        for name, (update, every) in variants.items():
            t0 = time.perf_counter()
            model = VQVAE("vq", args.codebook_size, args.code_dim, codebook_update=update,
                          channels=args.channels, seed=seed)
            hist = train_vq(model, ds.x_train, args.epochs, every, seed=seed)
            test_codes = model.codes(ds.x_test)
            row = {"seed": seed, "variant": name, "K": args.codebook_size, "D": args.code_dim,
                   "test_perplexity": vq.perplexity(test_codes, args.codebook_size),
                   "test_recon": model.recon_nats(ds.x_test),
                   "largest_code_share": float(np.bincount(test_codes.ravel()).max()
                                               / test_codes.size),
                   "train_perplexity_by_epoch": [h["train_perplexity"] for h in hist],
                   "seconds": time.perf_counter() - t0, "load": load()}
            rows.append(row)
            print(f"seed {seed}  {name:22s} perplexity {row['test_perplexity']:6.1f} of "
                  f"{args.codebook_size}  recon {row['test_recon']:6.1f}  largest code "
                  f"{row['largest_code_share']:.0%}  {row['seconds']:5.1f} s  "
                  f"load {row['load']:.1f}",
                  flush=True)
    return rows


def part_rate(ds, args):
    rows = []
    for k in args.codebook_sizes:
        t0 = time.perf_counter()
        model = VQVAE("vq", k, args.code_dim, codebook_update=args.codebook_update,
                      channels=args.channels, seed=args.seeds[0])
        train_vq(model, ds.x_train, args.epochs, args.restart_every, seed=args.seeds[0])
        rows.append({"model": "VQ-VAE", "K": k, "rate_bits": vq.rate_bits(k),
                     "test_recon": model.recon_nats(ds.x_test),
                     "test_perplexity": vq.perplexity(model.codes(ds.x_test), k),
                     "seconds": time.perf_counter() - t0, "load": load()})
        print(rows[-1], flush=True)
    for levels in args.fsq_levels:
        levels = tuple(int(v) for v in levels.split(","))
        t0 = time.perf_counter()
        model = VQVAE("fsq", levels=levels, channels=args.channels, seed=args.seeds[0])
        train_vq(model, ds.x_train, args.epochs, seed=args.seeds[0])
        k = math.prod(levels)
        rows.append({"model": "FSQ", "levels": levels, "K": k, "rate_bits": vq.rate_bits(k),
                     "test_recon": model.recon_nats(ds.x_test),
                     "test_perplexity": vq.perplexity(model.codes(ds.x_test), k),
                     "seconds": time.perf_counter() - t0, "load": load()})
        print(rows[-1], flush=True)
    for beta in args.betas:
        t0 = time.perf_counter()
        vae = VAE(784, latent_dim=20, architecture="conv", channels=args.channels, beta=beta,
                  seed=args.seeds[0])
        hist = fit(NumpyBackend(vae, ds.x_train, lr=1e-3, seed=args.seeds[0]), ds.x_test,
                   epochs=args.epochs, progress=False)
        rows.append({"model": "conv VAE", "beta": beta,
                     "rate_bits": hist.test_kl[-1] / math.log(2),
                     "test_recon": hist.test_recon[-1], "test_kl_nats": hist.test_kl[-1],
                     "seconds": time.perf_counter() - t0, "load": load()})
        print(rows[-1], flush=True)
    return rows


def max_probability(probs):
    best = probs.max(axis=1)
    return {"mean": float(best.mean()), "share_above_0.9": float(np.mean(best > 0.9))}


def part_prior(ds, args):
    k = args.codebook_size
    times = {}
    t0 = time.perf_counter()
    model = VQVAE(args.bottleneck, k, args.code_dim, levels=args.levels,
                  codebook_update=args.codebook_update, channels=args.channels,
                  seed=args.seeds[0])
    k = model.n_codes
    every = args.restart_every if args.bottleneck == "vq" else 0
    train_vq(model, ds.x_train, args.epochs, every, seed=args.seeds[0])
    times["vq-vae"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_codes, test_codes = model.codes(ds.x_train), model.codes(ds.x_test)
    independent = IndependentPrior.fit(train_codes, k)
    times["independent prior"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prior = AutoregressivePrior(GRID, k, tuple(args.prior_hidden), seed=args.seeds[0])
    history = train_prior(prior, train_codes, epochs=args.prior_epochs, lr=args.prior_lr,
                          seed=args.seeds[0], test_codes=test_codes)
    times["autoregressive prior"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    classify = train_classifier(ds.x_train, ds.y_train).probs
    times["classifier"] = time.perf_counter() - t0
    rng = np.random.default_rng(args.seeds[0] + 10)
    t0 = time.perf_counter()
    samples = {
        "uniform prior": rng.integers(0, k, (args.n_samples, *GRID)),
        "independent prior": independent.sample(args.n_samples, rng),
    }
    for t in args.temperatures:
        name = "autoregressive prior" + ("" if t == 1 else f", temperature {t:g}")
        samples[name] = prior.sample(args.n_samples, rng, temperature=t)
    times["sampling"] = time.perf_counter() - t0
    ln2 = math.log(2)
    result = {
        "bottleneck": args.bottleneck, "K": k, "D": args.code_dim,
        "test_recon": model.recon_nats(ds.x_test),
        "test_perplexity": vq.perplexity(test_codes, k),
        "accuracy_on_test": float(np.mean(classify(ds.x_test).argmax(axis=1) == ds.y_test)),
        "max_prob": {"real test digits": max_probability(classify(ds.x_test)),
                     "VQ-VAE reconstructions": max_probability(
                         classify(sigmoid(model.logits_of_codes(test_codes))))},
        "test_bits_per_image": {
            "uniform prior": vq.rate_bits(k),
            "independent prior": float(-independent.log_prob(test_codes).mean() / ln2),
            "autoregressive prior": float(-prior.log_prob(test_codes).mean() / ln2)},
        "prior_train_history_nats": history, "seconds": times, "load": load()}
    for name, codes in samples.items():
        images = sigmoid(model.logits_of_codes(codes))
        result["max_prob"][f"samples, {name}"] = max_probability(classify(images))
    print(json.dumps(result, indent=1), flush=True)
    return result


def part_lesson(ds, args):
    """Lesson 11's pipeline at the budget given (--epochs, --channels, --prior-epochs): the
    collapsed codebook, the fixed one, FSQ at the same rate, the two priors and the judge,
    each stage timed."""
    k, seed, times, cpu, out = args.codebook_size, args.seeds[0], {}, {}, {}
    runs = {"gradient only": ("vq", "grad", 0),
            f"{'gradient' if args.codebook_update == 'grad' else 'EMA'} + restarts":
                ("vq", args.codebook_update, args.restart_every),
            "FSQ": ("fsq", "grad", 0)}
    models = {}
    for name, (bottleneck, update, every) in runs.items():
        t0, c0 = time.perf_counter(), time.process_time()
        model = VQVAE(bottleneck, k, args.code_dim, levels=args.levels,
                      codebook_update=update, channels=args.channels, seed=seed)
        hist = train_vq(model, ds.x_train, args.epochs, every, seed=seed)
        times[f"train {name}"] = time.perf_counter() - t0
        cpu[f"train {name}"] = time.process_time() - c0
        codes = model.codes(ds.x_test)
        out[name] = {"test_recon": model.recon_nats(ds.x_test),
                     "test_perplexity": vq.perplexity(codes, model.n_codes),
                     "K": model.n_codes,
                     "train_perplexity_by_epoch": [h["train_perplexity"] for h in hist]}
        models[name] = model
        print(name, out[name], f"{times[f'train {name}']:.1f} s", flush=True)
    model = models[list(runs)[1]]
    t0, c0 = time.perf_counter(), time.process_time()
    train_codes = model.codes(ds.x_train)
    independent = IndependentPrior.fit(train_codes, k)
    prior = AutoregressivePrior(GRID, k, tuple(args.prior_hidden), seed=seed)
    train_prior(prior, train_codes, epochs=args.prior_epochs, lr=args.prior_lr, seed=seed)
    times["priors"] = time.perf_counter() - t0
    cpu["priors"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    classify = train_classifier(ds.x_train, ds.y_train).probs
    times["classifier"] = time.perf_counter() - t0
    cpu["classifier"] = time.process_time() - c0
    rng = np.random.default_rng(seed + 10)
    t0, c0 = time.perf_counter(), time.process_time()
    samples = {"independent prior": independent.sample(args.n_samples, rng)}
    for t in args.temperatures:
        name = "autoregressive prior" + ("" if t == 1 else f", temperature {t:g}")
        samples[name] = prior.sample(args.n_samples, rng, temperature=t)
    times["sampling"] = time.perf_counter() - t0
    cpu["sampling"] = time.process_time() - c0
    out["max_prob"] = {"real test digits": max_probability(classify(ds.x_test))}
    for name, codes in samples.items():
        out["max_prob"][f"samples, {name}"] = max_probability(
            classify(sigmoid(model.logits_of_codes(codes))))
    out["seconds"], out["seconds_total"], out["load"] = times, sum(times.values()), load()
    out["cpu_seconds"], out["cpu_seconds_total"] = cpu, sum(cpu.values())
    print(json.dumps(out, indent=1), flush=True)
    return out


def gap_closed(max_prob, name, independent="samples, independent prior"):
    """The share of the independent prior's gap to the real digits (mean largest class
    probability) that the samples ``name`` close."""
    real, base = max_prob["real test digits"]["mean"], max_prob[independent]["mean"]
    return (max_prob[name]["mean"] - base) / (real - base)


def part_seeds(ds, args):
    """The package's own VQ-VAE (``VAE(architecture="conv", bottleneck="vq")``, trained by
    ``fit`` as in lesson 11), on each seed: the test codes' usage perplexity after each epoch
    with restarts of unused codes only (``restart_below=0``) and with the default share
    rule; then, for the latter, the two priors, and lesson 09's judge on their samples at
    each temperature, with the share of the gap closed."""
    k, rows = args.codebook_size, []
    classify = train_classifier(ds.x_train, ds.y_train, epochs=20, seed=0).probs
    real = max_probability(classify(ds.x_test))
    for seed in args.seeds:
        row = {"seed": seed, "perplexity_by_epoch": {}, "test_recon": {}, "seconds": {}}
        for rule, below in (("unused codes only", 0.0), ("share rule", args.restart_below)):
            t0 = time.perf_counter()
            model = VAE(784, architecture="conv", channels=tuple(args.channels), seed=seed,
                        bottleneck="vq", codebook_size=k, code_dim=args.code_dim,
                        restart_every=args.restart_every, restart_below=below)
            usage = []
            hist = fit(NumpyBackend(model, ds.x_train, seed=seed), ds.x_test,
                       epochs=args.epochs, progress=False,
                       on_epoch_end=lambda loop, m=model, u=usage: u.append(
                           vq.perplexity(m.encode(ds.x_test)[1], k)))
            row["perplexity_by_epoch"][rule] = usage
            row["test_recon"][rule] = hist.test_recon[-1]
            row["seconds"][f"train, {rule}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_codes, test_codes = model.encode(ds.x_train)[1], model.encode(ds.x_test)[1]
        independent = IndependentPrior.fit(train_codes, k)
        prior = AutoregressivePrior(GRID, k, tuple(args.prior_hidden), seed=seed)
        train_prior(prior, train_codes, epochs=args.prior_epochs, lr=args.prior_lr, seed=seed)
        row["seconds"]["priors"] = time.perf_counter() - t0

        def judged(codes, m=model):
            z = m.bottleneck.values(m.params, codes).reshape(len(codes), -1)
            return max_probability(classify(m.decode_mean(z)))

        rng = np.random.default_rng(seed + 10)
        max_prob = {"real test digits": real,
                    "reconstructions": max_probability(classify(model.reconstruct(ds.x_test))),
                    "samples, independent prior": judged(independent.sample(args.n_samples,
                                                                            rng))}
        for t in args.temperatures:
            max_prob[f"samples, autoregressive prior, T = {t:g}"] = judged(
                prior.sample(args.n_samples, rng, temperature=t))
        row["max_prob"] = max_prob
        row["gap_closed"] = {name: gap_closed(max_prob, name) for name in max_prob
                             if name.startswith("samples, autoregressive")}
        row["test_bits_per_image"] = {
            "independent prior": float(-independent.log_prob(test_codes).mean() / math.log(2)),
            "autoregressive prior": float(-prior.log_prob(test_codes).mean() / math.log(2))}
        row["load"] = load()
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        ppl = {rule: f"{u[-1]:.1f}" for rule, u in row["perplexity_by_epoch"].items()}
        print(f"seed {row['seed']}: perplexity after {args.epochs} epochs {ppl} of {k}; gap "
              "closed " + ", ".join(f"{name.split(', ')[-1]} {v:.0%}"
                                    for name, v in row["gap_closed"].items()))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("collapse", "rate", "prior", "lesson", "seeds"),
                        required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--channels", type=int, nargs=2, default=(32, 64))
    parser.add_argument("--codebook-size", type=int, default=16)
    parser.add_argument("--code-dim", type=int, default=16)
    parser.add_argument("--codebook-update", choices=("grad", "ema"), default="grad")
    parser.add_argument("--restart-every", type=int, default=8,
                        help="steps between dead-code restarts (32 is once an epoch); 0: never")
    parser.add_argument("--restart-below", type=float, default=0.01,
                        help="the seeds part: a code below this share of the positions since "
                             "the last restart is restarted")
    parser.add_argument("--variants", nargs="*", default=[],
                        help="the collapse part's variants to run (default: all four), e.g. "
                             "'gradient + restarts'")
    parser.add_argument("--codebook-sizes", type=int, nargs="*", default=[16, 64, 256])
    parser.add_argument("--fsq-levels", nargs="*", default=["4,4", "4,4,4", "4,4,4,4"])
    parser.add_argument("--betas", type=float, nargs="*", default=[1.0, 0.3, 0.1])
    parser.add_argument("--prior-hidden", type=int, nargs="+", default=[512])
    parser.add_argument("--prior-epochs", type=int, default=20)
    parser.add_argument("--prior-lr", type=float, default=1e-3)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                        help="sampling temperatures of the autoregressive prior")
    parser.add_argument("--bottleneck", choices=("vq", "fsq"), default="vq",
                        help="the quantizer of the prior part")
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 4],
                        help="FSQ levels of the prior and lesson parts (their product is the "
                             "number of codes)")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args()
    ds = load_mnist()
    start = {"load": load(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    rows = {"collapse": part_collapse, "rate": part_rate, "prior": part_prior,
            "lesson": part_lesson, "seeds": part_seeds}[args.part](ds, args)
    meta = {"args": vars(args), "start": start, "load_end": load(), "cpus": os.cpu_count(),
            "seconds": time.perf_counter() - t0}
    print(f"load average {start['load']:.1f} at the start, {meta['load_end']:.1f} at the end; "
          f"{meta['seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
