"""``vae-course train``: a run's whole life, from its flags to the files it leaves.

Everything is checked before the first step (the output folder, the flags, the device, the
data, the model); the run folder (:mod:`vae_from_scratch.run`) then gets the model and what
resuming needs after every epoch. Ctrl-C stops at the next step boundary and saves; ``--resume
DIR`` reopens the folder, restores the backend's state and the loop's, and continues where it
stopped. The flags themselves live in :mod:`vae_from_scratch.cli`, which calls
:func:`cmd_train`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from vae_from_scratch.cli import (
    MODEL_FLAGS,
    RESUME_MAY_CHANGE,
    RUN_FLAGS,
    _add_flags,
    _flag_text,
    _option,
    build_parser,
)

# --- the flags a run was started with -----------------------------------------------------


class _Unset:
    """Marks a flag the user did not type."""

    def __repr__(self):
        return "<unset>"


def _typed_flags(argv):
    """The run flags typed on the command line (dest -> value), found by parsing ``argv``
    again with every default replaced by a marker."""
    unset = _Unset()
    parser = argparse.ArgumentParser(add_help=False)
    _add_flags(parser, {k: {**v, "default": unset} for k, v in RUN_FLAGS.items()})
    args, _ = parser.parse_known_args(argv)
    return {k: v for k, v in vars(args).items() if v is not unset}


def _run_argv(args):
    """The run flags of ``args`` as a command line: parsing it gives the same values."""
    argv = []
    for dest, spec in RUN_FLAGS.items():
        value = getattr(args, dest)
        if spec.get("action") == "store_true":
            argv += [_option(dest)] if value else []
        elif value is not None:
            argv += [_option(dest), _flag_text(value)]
    return argv


def _run_flags(args):
    """The run flags as JSON values, for metrics.json."""
    return {
        dest: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
        for dest in RUN_FLAGS
        for v in [getattr(args, dest)]
    }


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _resume_args(args, argv, saved_argv):
    """The namespace of a resumed run: its saved flags, with a new --epochs if given.
    ValueError for a typed flag that contradicts the saved ones."""
    saved = build_parser().parse_args(["train", *saved_argv])
    typed = _typed_flags(argv)
    conflicts = [
        f"{_option(dest)} {_flag_text(value)} (the run has {_flag_text(getattr(saved, dest))})"
        for dest, value in typed.items()
        if dest not in RESUME_MAY_CHANGE and value != getattr(saved, dest)
        and not (dest == "data_dir" and Path(value).resolve() == saved.data_dir)
    ]
    if conflicts:
        raise ValueError(
            f"--resume continues a run with the flags it started with; {'; '.join(conflicts)}. "
            "Start a new run (another --out) to change them"
        )
    if "epochs" in typed:
        saved.epochs = typed["epochs"]
    saved.out = saved.resume = args.resume
    saved.quiet, saved.overwrite = args.quiet, False
    saved.threads = getattr(args, "threads", None)  # what this process runs with, not a flag
    return saved


# --- checked before the first step --------------------------------------------------------


def _load_data(args):
    from vae_from_scratch.data import Dataset, MissingDataError, load_mnist

    try:
        ds = load_mnist(source=args.data, root=args.data_dir, dtype=args.dtype)
    except MissingDataError as err:
        raise FileNotFoundError(err.explain("--data-dir FOLDER")) from None
    if args.limit is None:
        return ds
    if args.limit > len(ds.x_train):
        raise ValueError(
            f"--limit {args.limit}: the {ds.name} data have only {len(ds.x_train)} training "
            "examples"
        )
    pick = np.random.default_rng(0)  # a fixed sample, whatever --seed is: all digits appear
    train = np.sort(pick.permutation(len(ds.x_train))[: args.limit])
    test = np.sort(pick.permutation(len(ds.x_test))[: args.limit])
    return Dataset(ds.x_train[train], ds.y_train[train], ds.x_test[test], ds.y_test[test],
                   name=f"{ds.name}, sample of {args.limit}")


def _check_device(args):
    """The device as a name this machine has (so that a resumed run uses the same one);
    ValueError, before any data is read, for one it lacks."""
    if args.backend == "numpy":
        if args.device not in (None, "cpu"):
            raise ValueError(
                f"the numpy backend runs on the CPU only, not on --device {args.device}; "
                "use --backend torch for a GPU"
            )
        return "cpu"
    try:
        from vae_from_scratch.torch_vae import resolve_device
    except ImportError as err:
        raise ValueError(
            f"the torch backend needs PyTorch ({err}); install it with: pip install -e '.[torch]'"
        ) from None
    return str(resolve_device(args.device))


def _make_backend(args, vae, ds):
    """The backend of --backend, holding the training set (and its labels for a
    conditional model)."""
    from vae_from_scratch.train import NumpyBackend

    data = (ds.x_train, ds.y_train if vae.config.n_classes else None)
    common = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        binarize=args.binarize,
        kl_warmup=args.kl_warmup,
    )
    if args.backend == "numpy":
        return NumpyBackend(vae, *data, **common)
    from vae_from_scratch.torch_vae import TorchBackend

    return TorchBackend(vae, *data, device=args.device, **common)


def _model_kwargs(args, n_classes):
    """VAE keyword arguments from the model flags; --conditional takes the data's classes."""
    kwargs = {dest: getattr(args, dest) for dest in MODEL_FLAGS if dest != "conditional"}
    kwargs["n_classes"] = n_classes if args.conditional else None
    return kwargs


def _open_resumed(args, argv):
    """Reopen the run of --resume: (run, namespace, params, config, saved state, loop,
    info). RunFolderError / ValueError if it cannot continue."""
    from vae_from_scratch import run as runs
    from vae_from_scratch.train import LoopState

    if args.overwrite:
        raise ValueError("--overwrite and --resume do not go together")
    if args.out is not None and args.out.resolve() != args.resume.resolve():
        raise ValueError(f"--out {args.out} and --resume {args.resume} name different folders")
    run = runs.Run.reopen(args.resume)
    try:
        if run.status == "diverged":
            raise runs.RunFolderError(
                f"--resume {args.resume}: that run diverged, and with the same flags it would "
                "again; start a new run (e.g. with a lower --lr)"
            )
        params, config, saved, info = run.load()
        missing = [k for k in ("argv", "data_sha256") if k not in info]
        missing += [k for k in ("backend", "loop") if k not in saved]
        try:
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            loop = LoopState.from_dict(saved["loop"])
        except ValueError as err:
            raise runs.RunFolderError(
                f"--resume {args.resume}: its saved state is incomplete ({err})"
            ) from None
        args = _resume_args(args, argv, info["argv"])
    except BaseException:
        run.close()
        raise
    return run, args, params, config, saved, loop, info


def cmd_train(args, argv=()):
    from vae_from_scratch import run as runs
    from vae_from_scratch.train import LoopState
    from vae_from_scratch.vae import VAE

    # Everything is checked before the first step: folder, flags, device, data, model.
    resume = args.resume is not None
    if resume:
        run, args, params, config, saved, loop, info = _open_resumed(args, argv)
        if loop.epochs_done >= args.epochs and run.status == "finished":
            run.close()
            print(f"{args.out} already finished its {_plural(loop.epochs_done, 'epoch')}; "
                  "nothing to do (pass --epochs N with a larger N to train further)")
            return 0
        if args.epochs < loop.epochs_done:
            run.close()
            raise ValueError(
                f"--epochs {args.epochs}: {args.out} has done {loop.epochs_done} already"
            )
    else:
        args.out = args.out if args.out is not None else Path("runs/train")
        runs.check_new(args.out, overwrite=args.overwrite)
        if args.data_dir is not None:
            args.data_dir = args.data_dir.resolve()  # a resumed run may start elsewhere
    try:
        args.device = _check_device(args)
        ds = _load_data(args)
        fingerprint = runs.data_fingerprint(ds.x_train, ds.x_test)
        if resume:
            if fingerprint != info["data_sha256"]:
                raise ValueError(f"the training data differ from those {args.out} started with")
            vae = VAE(config=config, params=params)
        else:
            n_classes = int(ds.y_train.max()) + 1
            vae = VAE(input_dim=ds.x_train.shape[1], seed=args.seed,
                      **_model_kwargs(args, n_classes))
            loop = LoopState()
        backend = _make_backend(args, vae, ds)
        if resume:
            backend.load_state_dict(saved["backend"])
            _note_versions(info.get("versions", {}), _environment(args))
        x_test = backend.check_x(ds.x_test, "x_test")
        y_test = ds.y_test if backend.config.n_classes else None
        elapsed = info.get("seconds", 0.0) if resume else 0.0
        if not resume:
            run = runs.Run.create(args.out, overwrite=args.overwrite)
    except BaseException:
        if resume:
            run.close()
        raise
    with run:
        return _train_in(run, args, ds, (x_test, y_test), backend, loop, fingerprint, elapsed)


# --- training, saving as it goes ----------------------------------------------------------


def _environment(args):
    """What the last digits of a run depend on besides its flags: library versions and the
    number of threads."""
    from vae_from_scratch import run as runs

    return {**runs.versions(), "threads": getattr(args, "threads", None)}


def _note_versions(saved, now):
    """Say so when a resumed run continues with other versions (or threads) than it
    started with."""
    changed = [k for k, v in now.items() if saved.get(k) not in (None, v)]
    if changed:
        print(
            "note: this run started with "
            + ", ".join(f"{k} {saved[k]}" for k in changed)
            + "; it continues with "
            + ", ".join(f"{k} {now[k]}" for k in changed)
            + ": its last digits may differ from an uninterrupted run"
        )


def _train_in(run, args, ds, test, backend, loop, fingerprint, elapsed):
    """Train in the open run folder, saving after every epoch; then the final outputs.
    ``test``: (x_test, y_test), the labels None for an unconditional model."""
    from vae_from_scratch import run as runs
    from vae_from_scratch.train import TrainingDiverged, fit

    out = args.out
    started = time.perf_counter()
    argv = _run_argv(args)

    def seconds():
        return elapsed + time.perf_counter() - started

    def save(loop):
        """Save the resume point and the model; returns the model saved (a NumPy VAE)."""
        vae = backend.to_vae()
        history = loop.history
        run.save(
            vae,
            {"backend": backend.state_dict(), "loop": loop.to_dict()},
            {"argv": argv, "data_sha256": fingerprint, "backend": backend.name,
             "device": args.device, "seconds": seconds(), "versions": _environment(args)},
            {"epochs": loop.epochs_done, "backend": backend.name,
             "test_nelbo": history.test_nelbo[-1] if history.test_nelbo else None},
        )
        return vae

    def metrics(status, extra=None):
        history = loop.history
        done = bool(history.epoch)
        return {
            "status": status,
            "interrupted": status == "interrupted",
            "backend": backend.name,
            "device": args.device,
            "data": ds.name,
            "epochs": args.epochs,
            "epochs_done": loop.epochs_done,
            "train_nelbo": history.train_nelbo[-1] if done else None,
            "test_nelbo": history.test_nelbo[-1] if done else None,
            "seconds_per_epoch": float(np.mean(history.seconds)) if done else None,
            "seconds_total": seconds(),
            "kl_estimator": backend.config.kl_mode,
            "threads": getattr(args, "threads", None),  # the last digits depend on it
            "model": backend.config.to_dict(),
            "training": {**_run_flags(args), "out": str(out)},
            "history": history.as_dict(),
            **(extra or {}),
        }

    run.set_status("running")
    if args.resume is None:
        vae = save(loop)  # the starting point: even a run stopped in its first epoch can resume
        print(
            f"training {vae} on {ds.name} ({len(ds.x_train)} train, "
            f"{len(ds.x_test)} test) with the {backend.name} backend for "
            f"{_plural(args.epochs, 'epoch')}; writing {out}/"
        )
    else:
        where = f"epoch {loop.epochs_done + 1}, step {loop.step}" if loop.step else (
            f"the end of epoch {loop.epochs_done}")
        print(f"resuming {out} at {where} of {args.epochs} with the {backend.name} backend")
    stop = runs.StopRequest()
    with stop:
        try:
            fit(
                backend,
                test[0],
                epochs=args.epochs,
                y_test=test[1],
                log=None if args.quiet else print,
                lr_hint=f"try --lr {args.lr / 3:.1e}",
                loop=loop,
                on_epoch_end=save,
                stop=stop,
            )
        except TrainingDiverged as err:
            run.set_status("diverged")
            run.write_json(runs.METRICS, metrics("diverged", {"error": str(err)}))
            raise TrainingDiverged(
                f"{err} The last good state (after {_plural(loop.epochs_done, 'epoch')}) is "
                f"in {out}/."
            ) from None
        if not loop.stopped:  # every epoch done: a Ctrl-C from here on no longer stops it
            summary, files = _final_outputs(run, args, ds, test[1], backend, loop, metrics)
    if loop.stopped:
        if loop.step:  # stopped inside an epoch; at an epoch's start that state is saved
            save(loop)
        run.write_json(runs.METRICS, metrics("interrupted"))
        run.set_status("interrupted")
        where = f"in epoch {loop.epochs_done + 1} (step {loop.step})" if loop.step else (
            f"after {_plural(loop.epochs_done, 'epoch')} of {args.epochs}")
        print(f"interrupted {where}; saved {out}/. Continue with: vae-course train --resume "
              f"{shlex.quote(str(out))}", file=sys.stderr)
        return 130
    run.set_status("finished")
    took = time.perf_counter() - started
    print(f"done in {took:.1f} s: {summary}. Wrote {out}/ ({', '.join(files)})")
    return 0


def _final_outputs(run, args, ds, y_test, backend, loop, metrics):
    """metrics.json (with the IWAE estimate) and the figures, once training is done.
    ``y_test``: the test labels a conditional model is given (None otherwise)."""
    from vae_from_scratch import plots
    from vae_from_scratch import run as runs
    from vae_from_scratch.evaluate import iwae_nll

    vae = backend.to_vae()
    history = loop.history
    extra = {}
    if args.iwae_k > 0:
        extra[f"test_nll_iwae_k{args.iwae_k}"] = iwae_nll(vae, ds.x_test, k=args.iwae_k,
                                                          y=y_test)
    figures = {}
    if history.epoch:
        figures["loss_curves"] = plots.loss_curves(history)
    picks = plots.one_per_class(ds.y_test)  # one test digit of each class, as lesson 05
    y_picks = None if y_test is None else y_test[picks]
    figures["reconstructions"] = plots.reconstructions(ds.x_test[picks],
                                                       vae.reconstruct(ds.x_test[picks], y_picks))
    if y_test is None:
        figures["samples"] = plots.samples(vae.sample(50, seed=args.seed))
    else:  # one row per digit
        labels = np.repeat(np.arange(vae.config.n_classes), 10)
        figures["samples"] = plots.samples(vae.sample(len(labels), y=labels, seed=args.seed),
                                           title="Samples from the prior, one row per label")
    if vae.latent_dim == 2:
        mu, _ = vae.encode(ds.x_test, y_test)
        grid = plots.gaussian_quantile_grid(15)
        figures["latent_scatter"] = plots.latent_scatter(mu, ds.y_test, grid=grid)
        # A conditional model's map depends on the label too: one panel per label, each a
        # coarser grid over the same square of z (the one the scatter marks).
        figures["latent_manifold"] = plots.latent_manifold(vae, n=15 if y_test is None else 8)
    run.expect(*(f"{name}.png" for name in figures))
    plots.save_figures(figures, run.folder)
    run.write_json(runs.METRICS, metrics("finished", extra))
    summary = f"test -ELBO {history.test_nelbo[-1]:.2f} nats" if history.epoch else "no epochs"
    if args.iwae_k > 0:
        summary += f", IWAE(k={args.iwae_k}) -log p(x) {extra[f'test_nll_iwae_k{args.iwae_k}']:.2f}"
    files = [runs.CHECKPOINT, runs.METRICS, *(f + ".png" for f in figures)]
    return summary, files
