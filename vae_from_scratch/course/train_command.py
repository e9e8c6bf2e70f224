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
import contextlib
import errno
import shlex
import signal
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
        run.adopt_id()  # a run of format 1 is bound to an id from now on
    except BaseException:
        run.close()
        raise
    return Resumed(run, args, params, config, saved["backend"], loop, info)


def check_gaps(vae: VAE) -> None:
    """--report-gaps needs a bottleneck with local parameters and an unconditional model:
    ValueError before training otherwise."""
    from vae_from_scratch.flow_bottleneck import local_bottleneck

    if vae.config.n_classes is not None:
        raise ValueError("--report-gaps measures an unconditional model: drop --conditional "
                         "or --report-gaps")
    try:
        local_bottleneck(vae)
    except ValueError:
        raise ValueError(f"--report-gaps optimizes the local parameters of a gaussian, planar "
                         f"or iaf bottleneck; the {vae.config.bottleneck} bottleneck has "
                         "none") from None


def report_gaps(vae: VAE, x: np.ndarray, seed: int) -> dict[str, Any]:
    """The gaps of ``vae`` on the digits x: each figure's mean over them and its standard
    error, in nats (gaps.py: 500 Adam steps per digit, K = 1000 for log p(x))."""
    from vae_from_scratch import gaps

    est = gaps.estimate_gaps(vae, x, steps=GAP_STEPS, k=GAP_K, seed=seed)
    return {name: {"mean": mean, "se": se} for name, (mean, se) in est.summary().items()}


#: The per-example optimisation's steps and the IWAE's samples of --report-gaps (the
#: defaults of ``gaps.estimate_gaps``; converged on lesson 05's model: benchmarks/README.md).
GAP_STEPS, GAP_K = 500, 1000


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
    exit status (0 done, 130 interrupted by Ctrl-C, 143 by SIGTERM)."""
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
        # where the state on disk stands: (epochs done, step); None before the first save
        self.saved_at = (loop.epochs_done, loop.step) if args.resume is not None else None

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
        if args.report_gaps:
            check_gaps(vae)
        if resumed is not None:
            return cls(resumed.run, args, ds, backend, resumed.loop, fingerprint,
                       resumed.info.get("seconds", 0.0))
        run_id = runs.run_id_for(
            {dest: flags.flag_text(getattr(args, dest)) for dest in flags.RUN_FLAGS
             if dest not in (*flags.RESUME_MAY_CHANGE, "data_dir")}, fingerprint)
        return cls(runs.Run.create(args.out, overwrite=args.overwrite, run_id=run_id), args,
                   ds, backend, LoopState(), fingerprint)

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
        self.saved_at = (self.loop.epochs_done, self.loop.step)
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
        Returns the exit status: 0 when every epoch is done, 130 (SIGINT) or 143 (SIGTERM)
        when stopped. RunWriteFailed when a file cannot be written (the run is marked)."""
        stop = runs.StopRequest()
        try:
            with stop:
                return self._train(stop)
        except KeyboardInterrupt:  # a second signal: stop at once
            return self._stopped_at_once(stop)
        except OSError as err:
            raise self._failed(err) from None

    def _train(self, stop: runs.StopRequest) -> int:
        args, out, loop = self.args, self.args.out, self.loop
        self.run.set_status("running")
        self._announce()
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
        if loop.stopped:
            return self._interrupted(stop.signal)
        # every epoch done and saved: a first Ctrl-C now lets the final outputs finish
        stop.finishing = True
        if stop.requested:  # it came as the last epoch ended: say what it does now
            print("vae-course train: training is done; finishing the IWAE estimate and the "
                  "figures (press Ctrl-C again to skip them)", file=sys.stderr)
        summary, files = self.final_outputs()
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

    def _where_saved(self) -> str:
        if self.saved_at is None:
            return "no state was saved yet"
        epochs, step = self.saved_at
        if step:
            return f"the state saved in epoch {epochs + 1} (step {step}) is kept"
        return f"the state saved after {_plural(epochs, 'epoch')} is kept"

    def _continue_hint(self) -> str:
        return f"vae-course train --resume {shlex.quote(str(self.args.out))}"

    def _interrupted(self, signum: int | None) -> int:
        loop, out = self.loop, self.args.out
        if loop.step:  # stopped inside an epoch; at an epoch's start that state is saved
            self.save()
        self.run.write_json(runs.METRICS, self.metrics("interrupted",
                                                       {"signal": _signal_name(signum)}))
        self.run.set_status("interrupted")
        where = f"in epoch {loop.epochs_done + 1} (step {loop.step})" if loop.step else (
            f"after {_plural(loop.epochs_done, 'epoch')} of {self.args.epochs}")
        by = "" if signum in (None, signal.SIGINT) else f" by {_signal_name(signum)}"
        print(f"interrupted{by} {where}; saved {out}/. Continue with: {self._continue_hint()}",
              file=sys.stderr)
        return runs.exit_status(signum)

    def _stopped_at_once(self, stop: runs.StopRequest) -> int:
        """A second Ctrl-C (or SIGTERM): nothing more is computed; the run is marked and
        the last state saved stays the resume point."""
        out = self.args.out
        with runs.StopRequest():  # a third signal must not cut the marking short
            if stop.finishing:  # training was done and saved: only the extras are skipped
                with contextlib.suppress(OSError):
                    self.run.write_json(runs.METRICS, self.metrics(
                        "finished", {"final_outputs": "skipped (interrupted)"}))
                    self.run.set_status("finished")
                print(f"interrupted: training is done and saved in {out}/; the IWAE estimate "
                      "and the figures were skipped", file=sys.stderr)
                return runs.exit_status(stop.signal)
            with contextlib.suppress(OSError):
                self.run.write_json(runs.METRICS, self.metrics(
                    "interrupted", {"signal": _signal_name(stop.signal), "stopped_at_once": True,
                                    "saved": self._where_saved()}))
                self.run.set_status("interrupted")
        print(f"interrupted at once: {self._where_saved()} in {out}/. Continue with: "
              f"{self._continue_hint()}", file=sys.stderr)
        return runs.exit_status(stop.signal)

    def _failed(self, err: OSError) -> runs.RunWriteFailed:
        """Mark the run ``failed`` (as far as the disk lets us) and say what is kept."""
        reason = err.strerror or str(err)
        what = f"could not write {err.filename}" if err.filename else "a write failed"
        marked = True
        try:
            self.run.set_status("failed")
        except OSError:
            marked = False
        with contextlib.suppress(OSError):
            self.run.write_json(runs.METRICS,
                                self.metrics("failed", {"error": f"{what}: {reason}"}))
        note = "" if marked else f" ({runs.MANIFEST} could not be updated)"
        if self.saved_at is None:
            return runs.RunWriteFailed(f"{what}: {reason}; no state was saved yet{note}")
        fix = "free some space" if err.errno == errno.ENOSPC else "fix that"
        kept = self._where_saved()
        return runs.RunWriteFailed(
            f"{what}: {reason}. {kept[0].upper()}{kept[1:]} in {self.args.out}/{note}; {fix}, "
            f"then continue with: {self._continue_hint()}"
        )

    def final_outputs(self) -> tuple[str, list[str]]:
        """metrics.json (with the IWAE estimate) and the figures, once training is done;
        returns the summary line and the files written."""
        from vae_from_scratch import plots
        from vae_from_scratch.evaluate import active_units_per_layer, iwae_nll

        args, ds, y_test = self.args, self.ds, self.y_test
        vae = self.backend.to_vae()
        history = self.loop.history
        extra = {}
        iwae = args.iwae_k > 0 and vae.bottleneck.stochastic  # one-hot codes: nothing to weigh
        if iwae:
            extra[f"test_nll_iwae_k{args.iwae_k}"] = iwae_nll(vae, ds.x_test, k=args.iwae_k,
                                                              y=y_test)
        code = vae.code_report(ds.x_test, y_test)  # a quantized code's rate and usage
        if code:
            extra["code"] = code
        if y_test is None and vae.bottleneck.stochastic:  # one figure per stochastic layer
            extra["active_units"] = list(active_units_per_layer(vae, ds.x_test))
        if args.report_gaps > 0:
            extra["gaps"] = report_gaps(vae, ds.x_test[: args.report_gaps], args.seed)
            extra["gaps"]["digits"] = min(args.report_gaps, len(ds.x_test))
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
        if code:
            summary += (f", rate {code['rate_bits']:.1f} bits per digit, codes' usage "
                        f"perplexity {code['usage_perplexity']:.1f} of {code['n_codes']} on "
                        "the test digits")
        if iwae:
            key = f"test_nll_iwae_k{args.iwae_k}"
            summary += f", IWAE(k={args.iwae_k}) -log p(x) {extra[key]:.2f}"
        if "gaps" in extra:
            g = extra["gaps"]
            summary += (f"; gaps on {g['digits']} test digits: approximation "
                        f"{g['approximation_gap']['mean']:.2f}, amortization "
                        f"{g['amortization_gap']['mean']:.2f} nats")
        return summary, [runs.CHECKPOINT, runs.METRICS, *(f + ".png" for f in figures)]


def _signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum is not None else "SIGINT"
