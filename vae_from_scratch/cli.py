"""``vae-course``: train, compare, download data, and build the lessons.

vae-course train                      # the NumPy VAE on the embedded MNIST digits
vae-course train --latent-dim 2 --backend torch --device cuda
vae-course compare                    # NumPy and PyTorch side by side
vae-course download mnist             # full MNIST, checked against pinned SHA-256
vae-course start [DIR]                # copy the lessons into your own folder, my-lessons/
vae-course lessons build | check      # lessons/ from solutions/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _hidden_dims(text):
    try:
        dims = tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden sizes are integers separated by commas, e.g. 512,256; got {text!r}"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive integers, got {text!r}")
    return dims


def _obs_var(text):
    if text == "learned":
        return text
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--obs-var must be > 0 or 'learned', got {text}")
    return value


def _threads(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of threads (0: the libraries' defaults), got {text}")
    return value


_THREADS_HELP = ("threads for NumPy's BLAS and PyTorch (default: $VAE_COURSE_THREADS, else "
                 "1; 0 leaves the libraries' defaults)")


def build_parser():
    parser = argparse.ArgumentParser(prog="vae-course", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=_threads, default=None, help=_THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE and write checkpoint, metrics and figures")
    t.add_argument("--latent-dim", type=_positive_int, default=20)
    t.add_argument("--hidden-dims", type=_hidden_dims, default=(400,), help="e.g. 400 or 512,256")
    t.add_argument("--activation", choices=("relu", "tanh"), default="relu")
    t.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli")
    t.add_argument(
        "--obs-var",
        type=_obs_var,
        default=1.0,
        help="Gaussian decoder variance, or 'learned' (default 1.0)",
    )
    t.add_argument("--beta", type=float, default=1.0, help="weight on the KL term")
    t.add_argument("--kl", choices=("auto", "analytic", "monte_carlo"), default="auto")
    t.add_argument("--prior", choices=("standard", "mixture"), default="standard")
    t.add_argument("--n-components", type=_positive_int, default=10)
    t.add_argument("--epochs", type=int, default=50)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--kl-warmup", type=int, default=0, help="steps to ramp the KL weight up")
    t.add_argument("--binarize", action="store_true", help="dynamic binarization of pixels")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--data", choices=("embedded", "mnist"), default="embedded")
    t.add_argument("--data-dir", type=Path, default=None, help="folder of the MNIST IDX files")
    t.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    t.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    t.add_argument(
        "--iwae-k",
        type=int,
        default=100,
        help="samples for the final importance-weighted -log p(x) (0 to skip)",
    )
    t.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    t.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    c = sub.add_parser("compare", help="NumPy and PyTorch VAEs side by side")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--steps", type=_positive_int, default=200)
    c.add_argument("--device", default=None)

    d = sub.add_parser("download", help="download a dataset")
    d.add_argument("dataset", choices=("mnist",))
    d.add_argument("--dest", type=Path, default=None, help="folder (default: the data cache)")

    st = sub.add_parser("start", help="copy the lessons into your own folder to work in "
                                      "(never overwrites a file there)")
    st.add_argument("folder", nargs="?", type=Path, default=None,
                    help="where to copy them (default: my-lessons/ at the repository root)")

    les = sub.add_parser("lessons", help="generate lessons/ from solutions/, or check them")
    les.add_argument("action", choices=("build", "check"))
    les.add_argument("--solutions", type=Path, default=Path("solutions"))
    les.add_argument("--lessons", type=Path, default=Path("lessons"))
    les.add_argument("--force", action="store_true",
                     help="build: also rewrite lessons you edited (a backup of each is kept)")

    # --threads also after the command (vae-course train --threads 2); SUPPRESS keeps one
    # given before the command.
    for command in sub.choices.values():
        command.add_argument("--threads", type=_threads, default=argparse.SUPPRESS,
                             help=_THREADS_HELP)
    return parser


def _load_data(args):
    from vae_from_scratch.data import load_mnist

    return load_mnist(source=args.data, root=args.data_dir)


def _make_backend(args, vae, x_train):
    from vae_from_scratch.train import NumpyBackend

    common = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        binarize=args.binarize,
        kl_warmup=args.kl_warmup,
    )
    if args.backend == "numpy":
        if args.device not in (None, "cpu"):
            raise SystemExit(f"the numpy backend runs on the CPU only; got --device {args.device}")
        return NumpyBackend(vae, x_train, **common)
    try:
        from vae_from_scratch.torch_vae import TorchBackend
    except ImportError as err:
        raise SystemExit(
            f"the torch backend needs PyTorch ({err}); install it with: pip install -e '.[torch]'"
        ) from None
    return TorchBackend(vae, x_train, device=args.device, **common)


def cmd_train(args):
    from vae_from_scratch import plots
    from vae_from_scratch.checkpoint import save_checkpoint
    from vae_from_scratch.evaluate import iwae_nll
    from vae_from_scratch.train import fit
    from vae_from_scratch.vae import VAE

    if args.epochs < 0:
        raise SystemExit(f"--epochs must be >= 0, got {args.epochs}")
    ds = _load_data(args)
    vae = VAE(
        input_dim=ds.x_train.shape[1],
        hidden_dims=args.hidden_dims,
        latent_dim=args.latent_dim,
        activation=args.activation,
        likelihood=args.likelihood,
        obs_var=args.obs_var,
        beta=args.beta,
        kl=args.kl,
        prior=args.prior,
        n_components=args.n_components,
        seed=args.seed,
        dtype=args.dtype,
    )
    backend = _make_backend(args, vae, ds.x_train)
    log = None if args.quiet else print
    print(
        f"training {vae} on {ds.name} ({len(ds.x_train)} train, {len(ds.x_test)} test) "
        f"with the {backend.name} backend for {args.epochs} epochs"
    )
    t0 = time.perf_counter()
    history = fit(
        backend,
        ds.x_test,
        epochs=args.epochs,
        log=log,
        lr_hint=f"try --lr {args.lr / 3:.1e}",
    )
    total = time.perf_counter() - t0
    vae = backend.to_vae()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "backend": backend.name,
        "device": str(getattr(backend, "device", "cpu")),
        "data": ds.name,
        "epochs": args.epochs,
        "train_nelbo": history.train_nelbo[-1] if history.epoch else None,
        "test_nelbo": history.test_nelbo[-1] if history.epoch else None,
        "seconds_per_epoch": float(np.mean(history.seconds)) if history.epoch else None,
        "seconds_total": total,
        "model": vae.config.to_dict(),
        "training": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("command",)
        },
        "history": history.as_dict(),
    }
    if args.iwae_k > 0:
        metrics[f"test_nll_iwae_k{args.iwae_k}"] = iwae_nll(vae, ds.x_test, k=args.iwae_k)
    save_checkpoint(
        out / "checkpoint.safetensors",
        vae,
        metadata={
            "epochs": args.epochs,
            "backend": backend.name,
            "test_nelbo": metrics["test_nelbo"],
        },
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")

    figures = {}
    if history.epoch:
        figures["loss_curves"] = plots.loss_curves(history)
    picks = plots.one_per_class(ds.y_test)  # one test digit of each class, as lesson 05
    figures["reconstructions"] = plots.reconstructions(ds.x_test[picks],
                                                       vae.reconstruct(ds.x_test[picks]))
    figures["samples"] = plots.samples(vae.sample(50, seed=args.seed))
    if vae.latent_dim == 2:
        mu, _ = vae.encode(ds.x_test)
        figures["latent_scatter"] = plots.latent_scatter(
            mu, ds.y_test, grid=plots.gaussian_quantile_grid(15))
        figures["latent_manifold"] = plots.latent_manifold(vae, n=15)
    plots.save_figures(figures, out)

    summary = f"test -ELBO {metrics['test_nelbo']:.2f} nats" if history.epoch else "no epochs"
    if args.iwae_k > 0:
        summary += (
            f", IWAE(k={args.iwae_k}) -log p(x) {metrics[f'test_nll_iwae_k{args.iwae_k}']:.2f}"
        )
    print(
        f"done in {total:.1f} s: {summary}. Wrote {out}/ (checkpoint.safetensors, "
        f"metrics.json, {', '.join(f + '.png' for f in figures)})"
    )
    return 0


def cmd_compare(args):
    try:
        from vae_from_scratch.compare import run_compare
    except ImportError as err:
        raise SystemExit(f"compare needs PyTorch ({err}); pip install -e '.[torch]'") from None
    run_compare(seed=args.seed, steps=args.steps, device=args.device)
    return 0


def cmd_download(args):
    from vae_from_scratch.data import DownloadError, download_mnist

    try:
        path = download_mnist(dest=args.dest)
    except DownloadError as err:
        print(f"download failed:\n{err}", file=sys.stderr)
        return 1
    print(
        f"MNIST is in {path}; train on it with: vae-course train --data mnist"
        + (f" --data-dir {path}" if args.dest else "")
    )
    return 0


def cmd_start(args):
    from vae_from_scratch.start import open_command, start_course

    report = start_course(args.folder)
    where = report.folder
    if report.copied:
        print(f"copied {len(report.copied)} lesson(s) into {where}/: "
              f"{', '.join(p.name for p in report.copied)}")
    if report.kept:
        print(f"kept {len(report.kept)} already there (your work is never overwritten): "
              f"{', '.join(p.name for p in report.kept)}")
    if not report.copied and not report.kept:
        print(f"no lessons to copy into {where}/")
    print(f"Open the course (the file browser then reaches {where.name}/, lessons/ and "
          f"solutions/):\n  {open_command(report)}")
    return 0


def cmd_lessons(args):
    from vae_from_scratch.lessons import (
        backup_dir_for,
        build_lessons,
        edited_lessons,
        stale_lessons,
    )

    if args.action == "build":
        kept = []
        for built in build_lessons(args.solutions, args.lessons, force=args.force):
            if built.action == "written":
                print(f"wrote {built.path}")
            elif built.action == "replaced":
                print(f"wrote {built.path} (your edited version is kept in {built.backup})")
            elif built.action == "kept":
                kept.append(built.path)
                print(f"kept {built.path}: it has your edits")
        if kept:
            print(f"{len(kept)} lesson(s) with your edits left as they are. To keep working on "
                  "them, work in your own copy (`vae-course start` copies the lessons into "
                  "my-lessons/, never overwriting); to rewrite them from solutions/ anyway: "
                  f"`vae-course lessons build --force` (it keeps a backup of each in "
                  f"{backup_dir_for(args.lessons)}/)", file=sys.stderr)
            return 1
        return 0
    stale = stale_lessons(args.solutions, args.lessons)
    for problem in stale:
        print(problem)
    for path in edited_lessons(args.solutions, args.lessons):
        print(f"note: {path} has your edits; judged by its committed version")
    if stale:
        print("lessons/ is out of step with solutions/: run `vae-course lessons build` "
              "(it rewrites only lessons nobody edited)")
        return 1
    print("lessons/ is in step with solutions/")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    from vae_from_scratch.threads import limit_threads

    try:
        limit_threads(args.threads)  # before any work
    except ValueError as err:
        print(f"vae-course {args.command}: error: {err}", file=sys.stderr)
        return 2
    handler = {
        "train": cmd_train,
        "compare": cmd_compare,
        "download": cmd_download,
        "start": cmd_start,
        "lessons": cmd_lessons,
    }[args.command]
    from vae_from_scratch.train import TrainingDiverged

    try:
        return handler(args)
    except TrainingDiverged as err:
        print(f"vae-course {args.command}: stopped: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:
        print(f"vae-course {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
