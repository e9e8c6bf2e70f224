"""Lesson 12's measurements: where the ELBO loses nats, and what flows and a second latent
layer do about it. Every figure comes from the NumPy package (one BLAS thread).

Parts (``--part``, several allowed):

* ``baseline``: lesson 05's model (MLP 784-400-20, Bernoulli decoder on the grey embedded
  digits, Adam 1e-3, batch 128, 50 epochs: the CLI's defaults) for each seed; on the 1,000
  test digits: log p(x) by IWAE (K = ``--k``, from the per-example optimized q; the bound
  from the encoder's q too), the amortized ELBO, the per-example optimized ELBO
  (``--opt-steps`` Adam steps at ``--opt-lr``), the two gaps.
* ``train-digits``: the baseline's gaps on 1,000 training digits beside the test digits.
* ``flows``: VAEs with a flow bottleneck (``--flows``, e.g. ``iaf:2 iaf:8 planar:8``) trained
  with the same budget, the same figures, and the test ELBO and IWAE of the encoder's q.
* ``two-level``: the two_level bottleneck, (L1, L2) = (20, 10), top networks of 100 units,
  plain, with KL
  warm-up (``--warmup-epochs``) and with free bits (``--free-bits`` nats per dimension):
  test -log p(x) (IWAE, K = ``--k``), ELBO, KL per layer, active units per layer.
* ``one-level``: lesson 05's model trained with the same three variants, for comparison.
* ``convergence``: for one seed of the baseline, on ``--subset`` test digits: the optimized
  ELBO after 125 ... 2000 steps and at several rates, and the IWAE estimate for K = 100 ...
  ``--k-max`` from each proposal: whether the defaults have converged.
* ``timing``: seconds per epoch of the Gaussian VAE, the ``--flows`` models and the
  two-level model, the models taking turns epoch by epoch.
* ``lesson``: what fits a lesson that runs in about a minute: a shorter training, the gaps
  on a subset, their time.

Each model's figures are printed and appended to ``--out`` (JSON lines) as soon as they
exist, with the wall and CPU seconds of its training (per epoch) and of its measurements,
and the load average before and after.

    python benchmarks/lesson12_gaps.py --part baseline --seeds 0 1 2 --out l12.jsonl
    python benchmarks/lesson12_gaps.py --part flows --flows iaf:2 iaf:8 --seeds 0 1 2
    python benchmarks/lesson12_gaps.py --part two-level --seeds 0 1 2
    python benchmarks/lesson12_gaps.py --part convergence --part lesson
"""

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from vae_from_scratch import VAE, gaps  # noqa: E402
from vae_from_scratch.data import load_mnist  # noqa: E402
from vae_from_scratch.evaluate import (  # noqa: E402
    active_units,
    active_units_per_layer,
    iwae_nll,
    layer_kls,
    negative_elbo,
)
from vae_from_scratch.train import LoopState, NumpyBackend, fit  # noqa: E402

STEPS_PER_EPOCH = 32  # 4,000 training digits in batches of 128


class Clock:
    """Wall and CPU seconds of a block, and the load average around it."""

    def __enter__(self):
        self.load_before = os.getloadavg()[0]
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.load_after = os.getloadavg()[0]

    def as_dict(self, prefix):
        return {f"{prefix}_wall_s": round(self.wall, 2), f"{prefix}_cpu_s": round(self.cpu, 2),
                f"{prefix}_load": [round(self.load_before, 2), round(self.load_after, 2)]}


def emit(out, record):
    print(json.dumps(record), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


def train(model, ds, seed, epochs, warmup_epochs=0):
    with Clock() as clock:
        backend = NumpyBackend(model, ds.x_train, seed=seed,
                               kl_warmup=warmup_epochs * STEPS_PER_EPOCH)
        history = fit(backend, ds.x_test, epochs=epochs, progress=False)
    record = clock.as_dict("train")
    record["epoch_wall_s_median"] = round(float(np.median(history.seconds)), 3)
    record["epoch_cpu_s_mean"] = round(clock.cpu / max(epochs, 1), 3)
    record["test_nelbo_fixed_noise"] = history.test_nelbo[-1]
    return record


def gap_figures(model, x, args, seed):
    with Clock() as clock:
        est = gaps.estimate_gaps(model, x, steps=args.opt_steps, lr=args.opt_lr,
                                 elbo_samples=args.elbo_samples, k=args.k, seed=seed)
    record = {k: [round(m, 3), round(se, 3)] for k, (m, se) in est.summary().items()}
    record.update(clock.as_dict("gaps"))
    return record


def flow_model(spec, seed):
    """kind:steps, e.g. iaf:8: the VAE with that flow bottleneck."""
    kind, steps = spec.split(":")
    return VAE(784, (400,), 20, bottleneck=kind, flow_steps=int(steps), seed=seed)


def two_level_model(seed, **options):
    return VAE(784, (400,), 20, bottleneck="two_level", top_latent_dim=10, seed=seed, **options)


def part_baseline(ds, args):
    for seed in args.seeds:
        vae = VAE(784, (400,), 20, seed=seed)
        record = {"part": "baseline", "model": "gaussian", "seed": seed}
        record.update(train(vae, ds, seed, args.epochs))
        record["active_units"] = active_units(vae, ds.x_test)
        record.update(gap_figures(vae, ds.x_test, args, seed))
        emit(args.out, record)


def part_train_digits(ds, args):
    """The baseline's gaps on 1,000 training digits (100 per class) as well as on the test
    digits: does the encoder find the best q less well on digits it was not trained on?"""
    picks = np.argsort(ds.y_train, kind="stable").reshape(10, -1)[:, :100].ravel()
    for seed in args.seeds:
        vae = VAE(784, (400,), 20, seed=seed)
        train(vae, ds, seed, args.epochs)
        model = vae
        for name, x in (("train", ds.x_train[picks]), ("test", ds.x_test)):
            record = {"part": "train-digits", "digits": name, "seed": seed}
            record.update(gap_figures(model, x, args, seed))
            emit(args.out, record)


def part_flows(ds, args):
    for spec in args.flows:
        for seed in args.seeds:
            model = flow_model(spec, seed)
            record = {"part": "flows", "model": spec, "seed": seed}
            record.update(train(model, ds, seed, args.epochs))
            record.update(gap_figures(model, ds.x_test, args, seed))
            emit(args.out, record)


def _variants(args):
    """(name, model options, warm-up epochs): plain, KL warm-up, free bits (``--variants``)."""
    every = [("plain", {}, 0), ("warm-up", {}, args.warmup_epochs),
             ("free bits", {"free_bits": args.free_bits}, 0)]
    return [v for v in every if v[0].replace(" ", "-") in args.variants]


def part_two_level(ds, args):
    for name, options, warmup in _variants(args):
        for seed in args.seeds:
            model = two_level_model(seed, **options)
            record = {"part": "two-level", "model": name, "seed": seed}
            record.update(train(model, ds, seed, args.epochs, warmup))
            with Clock() as clock:
                x = ds.x_test
                eps = np.random.default_rng([seed, 7]).standard_normal(
                    model.bottleneck.noise_shape(len(x))).astype(np.float32)
                recon, _ = model.elbo_terms(x, eps)
                kl1, kl2 = layer_kls(model, x, eps)
                record["test_nelbo"] = round(float(np.mean(recon + kl1 + kl2)), 3)
                record["test_kl1"] = round(float(np.mean(kl1)), 3)
                record["test_kl2"] = round(float(np.mean(kl2)), 3)
                record["test_iwae_nll"] = round(iwae_nll(model, x, k=args.k, seed=seed), 3)
                record["active_units"] = list(active_units_per_layer(model, x))
            record.update(clock.as_dict("eval"))
            emit(args.out, record)


def part_one_level(ds, args):
    """The one-level model with the two-level part's variants, for comparison."""
    for name, options, warmup in _variants(args):
        for seed in args.seeds:
            vae = VAE(784, (400,), 20, seed=seed, **options)
            record = {"part": "one-level", "model": name, "seed": seed}
            record.update(train(vae, ds, seed, args.epochs, warmup))
            with Clock() as clock:
                record["test_nelbo"] = round(negative_elbo(vae, ds.x_test, seed=seed)[0], 3)
                record["test_iwae_nll"] = round(iwae_nll(vae, ds.x_test, k=args.k, seed=seed),
                                                3)
                record["active_units"] = active_units(vae, ds.x_test)
            record.update(clock.as_dict("eval"))
            emit(args.out, record)


def part_convergence(ds, args):
    seed = args.seeds[0]
    vae = VAE(784, (400,), 20, seed=seed)
    train(vae, ds, seed, args.epochs)
    model = vae
    x = ds.x_test[np.random.default_rng(0).choice(len(ds.x_test), args.subset, replace=False)]
    amortized = gaps.encode_local(model, x)
    base = gaps.elbo_estimate(model, x, amortized, 1000, seed=1)
    emit(args.out, {"part": "convergence", "what": "amortized elbo",
                    "value": round(float(base.mean()), 3)})
    best = None
    for lr in (1e-2, 3e-2, 1e-1):
        for steps in (125, 250, 500, 1000, 2000):
            with Clock() as clock:
                local, _ = gaps.optimize_local(model, x, amortized, steps=steps, lr=lr, seed=2)
            elbo = gaps.elbo_estimate(model, x, local, 1000, seed=1)
            if best is None or elbo.mean() > best[0].mean():
                best = (elbo, local)
            emit(args.out, {"part": "convergence", "what": "optimized elbo", "lr": lr,
                            "steps": steps, "value": round(float(elbo.mean()), 3),
                            "gain_over_amortized": round(float((elbo - base).mean()), 3),
                            **clock.as_dict("opt")})
    for k in (100, 1000, args.k_max):
        for name, local in (("optimized", best[1]), ("amortized", amortized)):
            values = [gaps.iwae_log_px(model, x, local, k, seed=s).mean() for s in (3, 4)]
            emit(args.out, {"part": "convergence", "what": f"iwae from the {name} q", "k": k,
                            "value": [round(float(v), 3) for v in values]})


def part_lesson(ds, args):
    """Budgets for the notebook: train, then the gaps on a subset."""
    for epochs, subset, steps, k in ((10, 200, 200, 200), (15, 200, 300, 500),
                                     (20, 300, 300, 500)):
        with Clock() as clock:
            vae = VAE(784, (400,), 20, seed=0)
            fit(NumpyBackend(vae, ds.x_train, seed=0), None, epochs=epochs, progress=False)
        record = {"part": "lesson", "epochs": epochs, "subset": subset, "opt_steps": steps,
                  "k": k, **clock.as_dict("train")}
        x = ds.x_test[np.argsort(ds.y_test, kind="stable").reshape(10, -1)[:, :subset // 10]
                      .ravel()]
        with Clock() as clock:
            est = gaps.estimate_gaps(vae, x, steps=steps, lr=args.opt_lr,
                                     elbo_samples=100, k=k, seed=0)
        record.update({key: [round(m, 3), round(se, 3)] for key, (m, se) in
                       est.summary().items()})
        record.update(clock.as_dict("gaps"))
        emit(args.out, record)


def part_timing(ds, args):
    """Seconds per epoch of each model, paired: the models take turns epoch by epoch
    (``--rounds`` rounds after one warm-up epoch each), so that a change in the machine's
    load touches them all alike; medians of wall and CPU seconds, and each model's ratio to
    the Gaussian VAE's epoch in the same round."""
    models = {"gaussian": VAE(784, (400,), 20, seed=0)}
    for spec in args.flows:
        models[spec] = flow_model(spec, 0)
    models["two-level"] = two_level_model(0)
    backends = {name: NumpyBackend(m, ds.x_train, seed=0) for name, m in models.items()}
    loops = {name: LoopState() for name in models}  # fit continues each where it stopped
    times = {name: [] for name in models}
    for r in range(args.rounds + 1):
        for name, backend in backends.items():
            with Clock() as clock:
                fit(backend, None, epochs=r + 1, progress=False, loop=loops[name])
            if r:
                times[name].append((clock.wall, clock.cpu))
    for name, t in times.items():
        t = np.array(t)
        ratio = t[:, 1] / np.array(times["gaussian"])[:, 1]
        emit(args.out, {"part": "timing", "model": name, "rounds": args.rounds,
                        "epoch_wall_s_median": round(float(np.median(t[:, 0])), 3),
                        "epoch_cpu_s_median": round(float(np.median(t[:, 1])), 3),
                        "cpu_ratio_to_gaussian_median": round(float(np.median(ratio)), 3),
                        "load": round(os.getloadavg()[0], 2)})


PARTS = {"baseline": part_baseline, "train-digits": part_train_digits, "flows": part_flows,
         "two-level": part_two_level, "one-level": part_one_level,
         "convergence": part_convergence, "lesson": part_lesson, "timing": part_timing}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=list(PARTS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--flows", nargs="+", default=["iaf:2", "iaf:8"],
                        help="kind:steps, kind planar or iaf, e.g. iaf:8")
    parser.add_argument("--k", type=int, default=1000, help="IWAE samples per digit")
    parser.add_argument("--k-max", type=int, default=5000, help="largest K of convergence")
    parser.add_argument("--subset", type=int, default=200, help="digits for convergence")
    parser.add_argument("--opt-steps", type=int, default=500)
    parser.add_argument("--opt-lr", type=float, default=3e-2)
    parser.add_argument("--elbo-samples", type=int, default=100)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--free-bits", type=float, default=0.5)
    parser.add_argument("--variants", nargs="+", choices=("plain", "warm-up", "free-bits"),
                        default=["plain", "warm-up", "free-bits"],
                        help="the two-level and one-level parts' variants")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the timing part")
    parser.add_argument("--out", help="append each record to this JSON-lines file")
    args = parser.parse_args()
    ds = load_mnist()
    emit(args.out, {"start": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": vars(args),
                    "load": os.getloadavg(), "cpus": os.cpu_count(),
                    "numpy": np.__version__})
    for part in args.part:
        PARTS[part](ds, args)
    emit(args.out, {"end": time.strftime("%Y-%m-%d %H:%M:%S"), "load": os.getloadavg()})


if __name__ == "__main__":
    main()
