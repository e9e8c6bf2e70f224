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
This module holds the parser and the small commands; the flags of ``train`` are in
:mod:`vae_from_scratch.course.flags`, the command itself in
:mod:`vae_from_scratch.course.train_command`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from vae_from_scratch import __version__
from vae_from_scratch.config import read_real
from vae_from_scratch.course import flags, threads
from vae_from_scratch.course.download import DEFAULT_DEADLINE, DEFAULT_TIMEOUT
from vae_from_scratch.course.train_command import cmd_train, require_torch
from vae_from_scratch.train import TrainingDiverged

DESCRIPTION = "vae-course: train, compare, download data, and build the lessons."

SECONDS_TYPE = flags.argument_type(read_real(0.0, False, "a number of seconds > 0"))
THREADS_TYPE = flags.argument_type(threads.parse_threads)
THREADS_HELP = ("threads for NumPy's BLAS and PyTorch (default: $VAE_COURSE_THREADS, else "
                "1; 0 leaves the libraries' defaults)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``vae-course`` and its commands."""
    parser = argparse.ArgumentParser(prog="vae-course", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--threads", type=THREADS_TYPE, default=None, help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    flags.add_train_flags(sub.add_parser(
        "train",
        help="train a VAE and write checkpoint, metrics and figures",
        description=flags.TRAIN_DESCRIPTION,
    ))

    c = sub.add_parser("compare", help="NumPy and PyTorch VAEs side by side")
    c.add_argument("--seed", type=flags.SEED_TYPE, default=0, help="(default: 0)")
    c.add_argument("--steps", type=flags.POSITIVE_INT_TYPE, default=200,
                   help="Adam steps of the trajectory comparison (default: 200)")
    c.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:N or mps (default: the fastest present)")
    flags.add_flags(c.add_argument_group("model (the course's 784 -> ... -> 20 VAE by default)"),
                    flags.MODEL_FLAGS, only=flags.COMPARE_MODEL_FLAGS)

    d = sub.add_parser("download", help="download a dataset")
    d.add_argument("dataset", choices=("mnist",))
    d.add_argument("--dest", type=Path, default=None, metavar="DIR",
                   help="folder (default: the data cache, $VAE_COURSE_DATA or "
                   "~/.cache/vae-from-scratch/mnist)")
    d.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="a base URL to fetch from instead of the built-in mirrors (repeat to "
                   "try several in order)")
    d.add_argument("--timeout", type=SECONDS_TYPE, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds before a silent connection is given up "
                   f"(default: {DEFAULT_TIMEOUT:g})")
    d.add_argument("--deadline", type=SECONDS_TYPE, default=DEFAULT_DEADLINE, metavar="S",
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
        command.add_argument("--threads", type=THREADS_TYPE, default=argparse.SUPPRESS,
                             help=THREADS_HELP)
    return parser


# --- the other commands -------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    from vae_from_scratch.course.compare import run_compare

    torch_vae = require_torch("compare needs PyTorch")
    device = torch_vae.resolve_device(args.device)  # before any work: one line naming those
    options = {k: getattr(args, k) for k in flags.COMPARE_MODEL_FLAGS if k != "conditional"}
    run_compare(seed=args.seed, steps=args.steps, device=device, conditional=args.conditional,
                **options)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from vae_from_scratch.course import download

    try:
        path = download.download_mnist(
            dest=args.dest,
            mirrors=tuple(args.mirror) if args.mirror else download.MNIST_MIRRORS,
            timeout=args.timeout,
            deadline=args.deadline,
        )
    except download.DownloadError as err:
        print(f"download failed:\n{err}", file=sys.stderr)
        return 1
    print(
        f"MNIST is in {path}; train on it with: vae-course train --data mnist"
        + (f" --data-dir {shlex.quote(str(path))}" if args.dest else "")
    )
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    import os
    import shutil

    from vae_from_scratch.course.start import open_argv, open_command, start_course

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


def cmd_lessons(args: argparse.Namespace) -> int:
    from vae_from_scratch.course.lessons import (
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


def main(argv: list[str] | None = None) -> int:
    """Run ``vae-course`` with ``argv`` (default: the process's); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # with the usage of the command that was given, not the top level's
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    del args._parser
    try:
        args.threads = threads.limit_threads(args.threads)  # before any work
    except ValueError as err:
        print(f"vae-course {args.command}: error: {err}", file=sys.stderr)
        return 2
    handler = {
        "train": lambda a: cmd_train(a, argv),
        "compare": cmd_compare,
        "download": cmd_download,
        "start": cmd_start,
        "lessons": cmd_lessons,
    }[args.command]
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
