"""``vae-course train``: a run's whole life, from its flags to the files it leaves.

Everything is checked before the first step (the output folder, the flags, the device, the
data, the model); then a :class:`TrainingRun` holds the run in progress -- its folder, its
flags, its data, its backend and its place in the loop -- and :meth:`TrainingRun.save`
writes the model and what resuming needs after every epoch. Ctrl-C stops at the next step
boundary and saves; ``--resume DIR`` reopens the folder (:func:`reopen`), restores the
backend's state and the loop's, and continues where it stopped. The flags themselves are in
:mod:`vae_from_scratch.course.flags`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from vae_from_scratch.config import VAEConfig
from vae_from_scratch.course import flags
from vae_from_scratch.course import run as runs
from vae_from_scratch.data import Dataset, MissingDataError, load_mnist
from vae_from_scratch.train import LoopState, NumpyBackend, TrainingDiverged, fit
from vae_from_scratch.vae import VAE


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def require_torch(what: str) -> ModuleType:
    """The torch mirror's package, or ValueError saying ``what`` needs PyTorch and how to
    install it."""
    try:
        from vae_from_scratch import torch_vae
    except ImportError as err:
        raise ValueError(f"{what} ({err}); install it with: pip install -e '.[torch]'") from None
    return torch_vae


# --- checked before the first step --------------------------------------------------------


def load_data(args: argparse.Namespace) -> Dataset:
    """The data of --data (and --data-dir); with --limit N, a fixed sample of N training and
    N test digits, whatever the seed."""
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


def check_device(args: argparse.Namespace) -> str:
    """The device as a name this machine has (so that a resumed run uses the same one);
    ValueError, before any data is read, for one it lacks."""
    if args.backend == "numpy":
        if args.device not in (None, "cpu"):
            raise ValueError(
                f"the numpy backend runs on the CPU only, not on --device {args.device}; "
                "use --backend torch for a GPU"
            )
        return "cpu"
    return str(require_torch("the torch backend needs PyTorch").resolve_device(args.device))


def make_backend(args: argparse.Namespace, vae: VAE, ds: Dataset) -> Any:
    """The backend of --backend, holding the training set (and its labels for a
    conditional model), with the training options of the flags."""
    data = (ds.x_train, ds.y_train if vae.config.n_classes else None)
    options = flags.training_options(args)
    if args.backend == "numpy":
        return NumpyBackend(vae, *data, options=options)
    return require_torch("the torch backend needs PyTorch").TorchBackend(
        vae, *data, options=options, device=args.device)


def resume_args(args: argparse.Namespace, argv: Sequence[str],
                saved_argv: list[str]) -> argparse.Namespace:

    """The namespace of a resumed run: its saved flags, with a new --epochs if given.
    ValueError for a typed flag that contradicts the saved ones."""
    saved = flags.train_parser().parse_args(saved_argv)
    typed = flags.typed_flags(argv)
    conflicts = [
        f"{flags.option_name(dest)} {flags.flag_text(value)} (the run has "
        f"{flags.flag_text(getattr(saved, dest))})"
        for dest, value in typed.items()
        if dest not in flags.RESUME_MAY_CHANGE and value != getattr(saved, dest)
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


@dataclass
class Resumed:
    """What ``--resume`` reads back from a run's folder (:func:`reopen`)."""

    run: runs.Run
    args: argparse.Namespace
    params: dict
    config: VAEConfig
    backend_state: dict
    loop: LoopState
    info: dict


def reopen(args: argparse.Namespace, argv: Sequence[str]) -> Resumed:
    """Reopen the run of --resume; RunFolderError / ValueError if it cannot continue."""
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
        args = resume_args(args, argv, info["argv"])
    except BaseException:
        run.close()
        raise
    return Resumed(run, args, params, config, saved["backend"], loop, info)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """What the last digits of a run depend on besides its flags: library versions and the
    number of threads."""
    return {**runs.versions(), "threads": getattr(args, "threads", None)}


def note_versions(saved: dict[str, Any], now: dict[str, Any]) -> None:
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


def cmd_train(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``vae-course train``: check everything, then train in the run folder; returns the
    exit status (0 done, 130 interrupted)."""
    resumed = None
    if args.resume is not None:
        resumed = reopen(args, argv)
        args, run, loop = resumed.args, resumed.run, resumed.loop
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
        training = TrainingRun.prepare(args, resumed)
    except BaseException:
        if resumed is not None:
            resumed.run.close()
        raise
    with training.run:
        return training.train()


# --- the run in progress ----------------------------------------------------------------------


class TrainingRun:
    """A run in progress: its folder, flags, data, backend and place in the loop.

    :meth:`save` writes the resume point and the model (after every epoch), :meth:`metrics`
    the figures metrics.json holds, :meth:`train` the whole run to its end or its stop.
    """

    def __init__(self, run: runs.Run, args: argparse.Namespace, ds: Dataset, backend: Any,
                 loop: LoopState, fingerprint: str, elapsed: float = 0.0) -> None:
        self.run, self.args, self.ds, self.backend, self.loop = run, args, ds, backend, loop
        self.fingerprint, self.elapsed = fingerprint, elapsed
        self.x_test = backend.check_x(ds.x_test, "x_test")  # checked in prepare already
        self.y_test = ds.y_test if backend.config.n_classes else None
        self.argv = flags.run_argv(args)
        self.started = time.perf_counter()

    @classmethod
    def prepare(cls, args: argparse.Namespace, resumed: Resumed | None) -> TrainingRun:
        """Check the device, load the data, build the model and the backend (restored for
        a resumed run), and open the folder of a new one."""
        args.device = check_device(args)
        ds = load_data(args)
        fingerprint = runs.data_fingerprint(ds.x_train, ds.x_test)
        if resumed is not None:
            if fingerprint != resumed.info["data_sha256"]:
                raise ValueError(f"the training data differ from those {args.out} started with")
            vae = VAE(config=resumed.config, params=resumed.params)
        else:
            config = flags.model_config(args, ds.x_train.shape[1], int(ds.y_train.max()) + 1)
            vae = VAE(config=config, seed=args.seed)
        backend = make_backend(args, vae, ds)
        if resumed is not None:
            backend.load_state_dict(resumed.backend_state)
            note_versions(resumed.info.get("versions", {}), environment(args))
        backend.check_x(ds.x_test, "x_test")  # before a new run's folder is touched
        if resumed is not None:
            return cls(resumed.run, args, ds, backend, resumed.loop, fingerprint,
                       resumed.info.get("seconds", 0.0))
        return cls(runs.Run.create(args.out, overwrite=args.overwrite), args, ds, backend,
                   LoopState(), fingerprint)

    def seconds(self) -> float:
        """The run's training time so far, across its resumptions."""
        return self.elapsed + time.perf_counter() - self.started

    def save(self, loop: LoopState | None = None) -> VAE:
        """Save the resume point and the model; returns the model saved (a NumPy VAE).
        ``loop``: what fit hands to ``on_epoch_end``, this run's own ``self.loop``."""
        vae = self.backend.to_vae()
        history = self.loop.history
        self.run.save(
            vae,
            {"backend": self.backend.state_dict(), "loop": self.loop.to_dict()},
            {"argv": self.argv, "data_sha256": self.fingerprint, "backend": self.backend.name,
             "device": self.args.device, "seconds": self.seconds(),
             "versions": environment(self.args)},
            {"epochs": self.loop.epochs_done, "backend": self.backend.name,
             "test_nelbo": history.test_nelbo[-1] if history.test_nelbo else None},
        )
        return vae

    def metrics(self, status: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What metrics.json holds for the run in ``status``."""
        history = self.loop.history
        done = bool(history.epoch)
        config = self.backend.config
        return {
            "status": status,
            "interrupted": status == "interrupted",
            "backend": self.backend.name,
            "device": self.args.device,
            "data": self.ds.name,
            "epochs": self.args.epochs,
            "epochs_done": self.loop.epochs_done,
            "train_nelbo": history.train_nelbo[-1] if done else None,
            "test_nelbo": history.test_nelbo[-1] if done else None,
            "seconds_per_epoch": float(np.mean(history.seconds)) if done else None,
            "seconds_total": self.seconds(),
            "kl_estimator": config.kl_mode,
            "threads": getattr(self.args, "threads", None),  # the last digits depend on it
            "model": config.to_dict(),
            "training": {**flags.run_flags(self.args), "out": str(self.args.out)},
            "history": history.as_dict(),
            **(extra or {}),
        }

    def train(self) -> int:
        """Train in the open run folder, saving after every epoch; then the final outputs.
        Returns the exit status: 0 when every epoch is done, 130 when stopped."""
        args, out, loop = self.args, self.args.out, self.loop
        self.run.set_status("running")
        self._announce()
        stop = runs.StopRequest()
        with stop:
            try:
                fit(self.backend, self.x_test, epochs=args.epochs, y_test=self.y_test,
                    log=None if args.quiet else print, lr_hint=f"try --lr {args.lr / 3:.1e}",
                    loop=loop, on_epoch_end=self.save, stop=stop)
            except TrainingDiverged as err:
                self.run.set_status("diverged")
                self.run.write_json(runs.METRICS, self.metrics("diverged", {"error": str(err)}))
                raise TrainingDiverged(
                    f"{err} The last good state (after {_plural(loop.epochs_done, 'epoch')}) "
                    f"is in {out}/."
                ) from None
            if not loop.stopped:  # every epoch done: a Ctrl-C from here on no longer stops it
                summary, files = self.final_outputs()
        if loop.stopped:
            return self._interrupted()
        self.run.set_status("finished")
        took = time.perf_counter() - self.started
        print(f"done in {took:.1f} s: {summary}. Wrote {out}/ ({', '.join(files)})")
        return 0

    def _announce(self) -> None:
        args, ds, loop, name = self.args, self.ds, self.loop, self.backend.name
        if args.resume is None:
            vae = self.save()  # the starting point: even a run stopped in its first epoch resumes
            print(
                f"training {vae} on {ds.name} ({len(ds.x_train)} train, "
                f"{len(ds.x_test)} test) with the {name} backend for "
                f"{_plural(args.epochs, 'epoch')}; writing {args.out}/"
            )
        else:
            where = f"epoch {loop.epochs_done + 1}, step {loop.step}" if loop.step else (
                f"the end of epoch {loop.epochs_done}")
            print(f"resuming {args.out} at {where} of {args.epochs} with the {name} backend")

    def _interrupted(self) -> int:
        loop, out = self.loop, self.args.out
        if loop.step:  # stopped inside an epoch; at an epoch's start that state is saved
            self.save()
        self.run.write_json(runs.METRICS, self.metrics("interrupted"))
        self.run.set_status("interrupted")
        where = f"in epoch {loop.epochs_done + 1} (step {loop.step})" if loop.step else (
            f"after {_plural(loop.epochs_done, 'epoch')} of {self.args.epochs}")
        print(f"interrupted {where}; saved {out}/. Continue with: vae-course train --resume "
              f"{shlex.quote(str(out))}", file=sys.stderr)
        return 130

    def final_outputs(self) -> tuple[str, list[str]]:
        """metrics.json (with the IWAE estimate) and the figures, once training is done;
        returns the summary line and the files written."""
        from vae_from_scratch import plots
        from vae_from_scratch.evaluate import iwae_nll

        args, ds, y_test = self.args, self.ds, self.y_test
        vae = self.backend.to_vae()
        history = self.loop.history
        extra = {}
        if args.iwae_k > 0:
            extra[f"test_nll_iwae_k{args.iwae_k}"] = iwae_nll(vae, ds.x_test, k=args.iwae_k,
                                                              y=y_test)
        figures = {}
        if history.epoch:
            figures["loss_curves"] = plots.loss_curves(history)
        picks = plots.one_per_class(ds.y_test)  # one test digit of each class, as lesson 05
        y_picks = None if y_test is None else y_test[picks]
        figures["reconstructions"] = plots.reconstructions(
            ds.x_test[picks], vae.reconstruct(ds.x_test[picks], y_picks))
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
            figures["latent_manifold"] = plots.latent_manifold(
                vae, n=15 if y_test is None else 8)
        self.run.write_figures(figures)
        self.run.write_json(runs.METRICS, self.metrics("finished", extra))
        summary = f"test -ELBO {history.test_nelbo[-1]:.2f} nats" if history.epoch else "no epochs"
        if args.iwae_k > 0:
            key = f"test_nll_iwae_k{args.iwae_k}"
            summary += f", IWAE(k={args.iwae_k}) -log p(x) {extra[key]:.2f}"
        return summary, [runs.CHECKPOINT, runs.METRICS, *(f + ".png" for f in figures)]
