"""``vae-course``: train, compare, download data, and build the lessons.

vae-course train                      # the NumPy VAE on the embedded MNIST digits
vae-course train --latent-dim 2 --backend torch --device cuda
vae-course train --resume runs/train  # continue a run that was stopped (Ctrl-C)
vae-course compare                    # NumPy and PyTorch side by side
vae-course download mnist             # full MNIST, checked against pinned SHA-256
vae-course start [DIR]                # copy the lessons into your own folder, my-lessons/
vae-course lessons build | check      # lessons/ from solutions/

A user's mistake (a bad flag, an output folder that cannot take the run, a device this
machine lacks, missing data) ends in one line on stderr and exit status 2, before any
training; a diverged run ends with status 1, a run stopped by Ctrl-C with status 130.
This module holds the flags and the small commands; ``train`` is in
:mod:`vae_from_scratch.train_command`.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from vae_from_scratch import __version__
from vae_from_scratch.data import DEFAULT_DEADLINE, DEFAULT_TIMEOUT
from vae_from_scratch.threads import parse_threads
from vae_from_scratch.vae import (
    ACTIVATIONS,
    ARCHITECTURES,
    DTYPES,
    KL_MODES,
    LIKELIHOODS,
    PRIORS,
)

DESCRIPTION = "vae-course: train, compare, download data, and build the lessons."

# --- argument types: each says what was wrong and what was expected -----------------------


def _integer(low, high=None, what="an integer"):
    """An argparse type: an integer in [low, high]."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {what}")
        return value

    return parse


_positive_int = _integer(1, what="a positive integer")
_count = _integer(0, what="an integer >= 0")
_seed = _integer(0, 2**63 - 1, what="an integer from 0 to 2**63 - 1 (9223372036854775807)")


def _real(low, inclusive, what):
    """An argparse type: a finite number above ``low`` (or equal, if ``inclusive``)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value >= low if inclusive else value > low)):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {what}")
        return value

    return parse


_positive_float = _real(0.0, False, "a finite number > 0")
_nonneg_float = _real(0.0, True, "a finite number >= 0")
_seconds = _real(0.0, False, "a number of seconds > 0")


def _sizes(what, example):
    """An argparse type: positive integers separated by commas."""

    def parse(text):
        try:
            dims = tuple(int(t) for t in text.replace(",", " ").split())
        except ValueError:
            dims = ()
        if not dims or any(d < 1 for d in dims):
            raise argparse.ArgumentTypeError(
                f"{what} are positive integers separated by commas, e.g. {example}; "
                f"got {text!r}"
            )
        return dims

    return parse


_hidden_dims = _sizes("hidden sizes", "512,256")
_channels = _sizes("channel counts", "32,64")


def _obs_var(text):
    if text == "learned":
        return text
    return _real(0.0, False, "a variance > 0, or 'learned'")(text)


# --- the flags of train, in one place ------------------------------------------------------

#: The model's flags, one per VAEConfig field set from the command line (flag: the field's
#: name with '-' for '_'), and --conditional, which sets n_classes from the data's labels.
#: A new configuration field needs one line here, nothing else.
MODEL_FLAGS = {
    "architecture": dict(choices=ARCHITECTURES, default="mlp",
                         help="the networks: fully connected, or convolutional (lesson 08)"),
    "latent_dim": dict(type=_positive_int, default=20, metavar="N", help="size of the code z"),
    "hidden_dims": dict(type=_hidden_dims, default=None, metavar="SIZES",
                        help="hidden layer sizes of the mlp architecture, e.g. 400 or 512,256 "
                        "(default: 400)"),
    "channels": dict(type=_channels, default=None, metavar="SIZES",
                     help="channels of the conv architecture's convolutions, e.g. 32,64 "
                     "(default: 32,64)"),
    "conditional": dict(action="store_true",
                        help="a conditional VAE: encoder and decoder also see the digit's "
                        "label (lesson 09)"),
    "activation": dict(choices=ACTIVATIONS, default="relu", help="hidden-layer nonlinearity"),
    "likelihood": dict(choices=LIKELIHOODS, default="bernoulli",
                       help="the decoder's distribution p(x|z)"),
    "obs_var": dict(type=_obs_var, default=None, metavar="VAR",
                    help="the Gaussian decoder's variance, or 'learned' for one per pixel "
                    "(default: 1.0)"),
    "beta": dict(type=_nonneg_float, default=1.0, metavar="B", help="weight on the KL term"),
    "kl": dict(choices=KL_MODES, default="auto",
               help="KL estimator; auto: analytic for the standard prior, else Monte Carlo"),
    "prior": dict(choices=PRIORS, default="standard", help="the prior p(z)"),
    "n_components": dict(type=_positive_int, default=10, metavar="K",
                         help="components of the mixture prior"),
    "free_bits": dict(type=_nonneg_float, default=0.0, metavar="NATS",
                      help="KL charged at least per latent dimension while training"),
    "dtype": dict(choices=tuple(DTYPES), default="float32", help="floating-point precision"),
}

#: How the model is trained; with MODEL_FLAGS, what a run saves and --resume restores.
TRAINING_FLAGS = {
    "epochs": dict(type=_count, default=50, metavar="N", help="passes over the training set"),
    "batch_size": dict(type=_positive_int, default=128, metavar="N", help="examples per step"),
    "lr": dict(type=_positive_float, default=1e-3, metavar="LR", help="Adam's learning rate"),
    "kl_warmup": dict(type=_count, default=0, metavar="STEPS",
                      help="steps over which the KL weight ramps up from 0 to beta"),
    "binarize": dict(action="store_true",
                     help="draw each pixel as 0 or 1 anew at every step (dynamic binarization)"),
    "seed": dict(type=_seed, default=0, metavar="S",
                 help="seeds the initial weights, the shuffling and the noise"),
    "data": dict(choices=("embedded", "mnist"), default="embedded",
                 help="the 5,000 digits shipped with the course, or full MNIST"),
    "data_dir": dict(type=Path, default=None, metavar="DIR",
                     help="folder of the MNIST IDX files (default: where download puts them)"),
    "limit": dict(type=_positive_int, default=None, metavar="N",
                  help="use N training and at most N test examples, a fixed sample (quick trials)"),
    "backend": dict(choices=("numpy", "torch"), default="numpy",
                    help="the hand-written NumPy model or its PyTorch mirror"),
    "device": dict(default=None, metavar="DEVICE",
                   help="torch device: cpu, cuda, cuda:N or mps (default: the fastest present)"),
    "iwae_k": dict(type=_count, default=100, metavar="K",
                   help="samples for the final importance-weighted -log p(x); 0 skips it"),
}
RUN_FLAGS = {**MODEL_FLAGS, **TRAINING_FLAGS}
#: The model flags vae-course compare takes.
COMPARE_MODEL_FLAGS = ("architecture", "hidden_dims", "channels", "likelihood", "conditional")
#: Flags a resumed run may change: a new total of epochs.
RESUME_MAY_CHANGE = ("epochs",)


def _option(dest):
    return "--" + dest.replace("_", "-")


def _flag_text(value):
    """A flag's value as typed on the command line (the inverse of its type)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


def _add_flags(parser, table):
    for dest, spec in table.items():
        spec = dict(spec)
        help_text = spec.pop("help")
        default = spec.get("default")
        if default is not None and spec.get("action") != "store_true":
            help_text += f" (default: {_flag_text(default)})"
        parser.add_argument(_option(dest), dest=dest, help=help_text.replace("%", "%%"), **spec)


def _train_parser(sub):
    t = sub.add_parser(
        "train",
        help="train a VAE and write checkpoint, metrics and figures",
        description="Train a VAE. Writes --out DIR as it goes (state and checkpoint after "
        "every epoch); Ctrl-C stops at the next step and saves, and --resume DIR continues.",
    )
    _add_flags(t.add_argument_group("model"), MODEL_FLAGS)
    _add_flags(t.add_argument_group("training"), TRAINING_FLAGS)
    out = t.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder: new or empty, or a previous run's with --overwrite "
                     "(default: runs/train)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace the run in --out (removes only the files that run wrote)")
    out.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue the run in DIR with its saved flags (--epochs may raise "
                     "the total)")
    out.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return t


def _threads(text):
    try:
        return parse_threads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_THREADS_HELP = ("threads for NumPy's BLAS and PyTorch (default: $VAE_COURSE_THREADS, else "
                 "1; 0 leaves the libraries' defaults)")


def build_parser():
    parser = argparse.ArgumentParser(prog="vae-course", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--threads", type=_threads, default=None, help=_THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _train_parser(sub)

    c = sub.add_parser("compare", help="NumPy and PyTorch VAEs side by side")
    c.add_argument("--seed", type=_seed, default=0, help="(default: 0)")
    c.add_argument("--steps", type=_positive_int, default=200,
                   help="Adam steps of the trajectory comparison (default: 200)")
    c.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:N or mps (default: the fastest present)")
    _add_flags(c.add_argument_group("model (the course's 784 -> ... -> 20 VAE by default)"),
               {k: MODEL_FLAGS[k] for k in COMPARE_MODEL_FLAGS})

    d = sub.add_parser("download", help="download a dataset")
    d.add_argument("dataset", choices=("mnist",))
    d.add_argument("--dest", type=Path, default=None, metavar="DIR",
                   help="folder (default: the data cache, $VAE_COURSE_DATA or "
                   "~/.cache/vae-from-scratch/mnist)")
    d.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="a base URL to fetch from instead of the built-in mirrors (repeat to "
                   "try several in order)")
    d.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds before a silent connection is given up "
                   f"(default: {DEFAULT_TIMEOUT:g})")
    d.add_argument("--deadline", type=_seconds, default=DEFAULT_DEADLINE, metavar="S",
                   help=f"seconds the whole download may take (default: {DEFAULT_DEADLINE:g})")

    st = sub.add_parser("start", help="copy the lessons into your own folder to work in "
                                      "(never overwrites a file there)")
    st.add_argument("folder", nargs="?", type=Path, default=None,
                    help="where to copy them (default: my-lessons/ at the repository root)")
    st.add_argument("--no-lab", action="store_true",
                    help="only copy; do not open JupyterLab (it opens by default when run "
                    "from a terminal)")

    les = sub.add_parser("lessons", help="generate lessons/ from solutions/, or check them")
    les.add_argument("action", choices=("build", "check"))
    les.add_argument("--solutions", type=Path, default=Path("solutions"))
    les.add_argument("--lessons", type=Path, default=Path("lessons"))
    les.add_argument("--force", action="store_true",
                     help="build: also rewrite lessons you edited (a backup of each is kept)")

    for command in sub.choices.values():
        command.set_defaults(_parser=command)  # an unknown flag gets this command's usage
        # --threads also after the command (vae-course train --threads 2); SUPPRESS keeps
        # one given before the command
        command.add_argument("--threads", type=_threads, default=argparse.SUPPRESS,
                             help=_THREADS_HELP)
    return parser


# --- the other commands -------------------------------------------------------------------


def cmd_compare(args):
    try:
        from vae_from_scratch.compare import run_compare
        from vae_from_scratch.torch_vae import resolve_device
    except ImportError as err:
        raise ValueError(f"compare needs PyTorch ({err}); pip install -e '.[torch]'") from None
    device = resolve_device(args.device)  # before any work: one line naming those present
    options = {k: getattr(args, k) for k in COMPARE_MODEL_FLAGS if k != "conditional"}
    run_compare(seed=args.seed, steps=args.steps, device=device, conditional=args.conditional,
                **options)
    return 0


def cmd_download(args):
    from vae_from_scratch import data

    try:
        path = data.download_mnist(
            dest=args.dest,
            mirrors=tuple(args.mirror) if args.mirror else data.MNIST_MIRRORS,
            timeout=args.timeout,
            deadline=args.deadline,
        )
    except data.DownloadError as err:
        print(f"download failed:\n{err}", file=sys.stderr)
        return 1
    print(
        f"MNIST is in {path}; train on it with: vae-course train --data mnist"
        + (f" --data-dir {shlex.quote(str(path))}" if args.dest else "")
    )
    return 0


def cmd_start(args):
    import os
    import shutil

    from vae_from_scratch.start import open_argv, open_command, start_course

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
    folder, lab = open_argv(report)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.no_lab or not interactive or shutil.which(lab[0]) is None:
        print(f"Open the course (the file browser then reaches {where.name}/, lessons/ and "
              f"solutions/):\n  {open_command(report)}")
        return 0
    print(f"opening JupyterLab: {' '.join(lab)} (in {folder}; Ctrl-C twice stops it)",
          flush=True)
    os.chdir(folder)
    os.execvp(lab[0], lab)  # JupyterLab takes over this process


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


def _train(args, argv):
    from vae_from_scratch.train_command import cmd_train  # it builds on this module's flags

    return cmd_train(args, argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # with the usage of the command that was given, not the top level's
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    del args._parser
    from vae_from_scratch.threads import limit_threads

    try:
        args.threads = limit_threads(args.threads)  # before any work
    except ValueError as err:
        print(f"vae-course {args.command}: error: {err}", file=sys.stderr)
        return 2
    handler = {
        "train": lambda a: _train(a, argv),
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
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print(f"vae-course {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        message = " ".join(str(err).split())  # one line
        print(f"vae-course {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
