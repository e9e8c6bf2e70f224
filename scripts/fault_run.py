"""Kill short training runs at random moments, resume them, and count what broke.

Each trial starts ``vae-course train`` (a tiny model on a fixed sample of the digits, a few
epochs, one thread), sends it SIGINT, SIGTERM or SIGKILL after a random delay (anywhere
from Python's imports to the final IWAE estimate and figures), then runs
``vae-course train --resume`` until the run is finished. A run killed before it saved
anything cannot be resumed: ``--resume`` must refuse it in one line, and the trial starts
the run again with ``--overwrite``. It counts:

* trials, and how many faults landed before the first save / during training / after it;
* byte-identical resumes: the final checkpoint equals an uninterrupted run's, byte for byte;
* files lost: a state saved before the fault that is gone or unreadable after it, or a file
  of the uninterrupted run missing at the end (must be 0);
* tracebacks on any stderr (must be 0), unexpected exit statuses, refusals that are not one
  line, temporaries left at the end.

    python scripts/fault_run.py --trials 100            # about 10 s a trial on a busy CPU
    python scripts/fault_run.py --trials 20 --seed 1 --json faults.json
    python scripts/fault_run.py --trials 10 --backend torch    # the mirror, on the CPU

Runs through the command's real entry point (``vae_course.main``), so a Ctrl-C during the
imports is tried too. Exit status 0 when nothing was lost and no traceback was printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_from_scratch.course import run as runs  # noqa: E402
from vae_from_scratch.course.checkpoint import read_state  # noqa: E402

FLAGS = ["--hidden-dims", "32", "--latent-dim", "2", "--limit", "256", "--batch-size", "8",
         "--epochs", "3", "--iwae-k", "5", "--seed", "1", "--quiet", "--threads", "1"]
COMMAND = [sys.executable, "-c", "import sys, vae_course; sys.exit(vae_course.main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
#: The exit status a signal may end the first process with (0: it had finished already).
EXPECTED = {"SIGINT": {0, 130}, "SIGTERM": {0, 143}, "SIGKILL": {0, -9}}


def train(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "train", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def state_ok(folder: Path) -> bool | None:
    """None: no state; True: a readable state; False: a state that does not read."""
    if not (folder / runs.STATE).exists():
        return None
    try:
        read_state(folder / runs.STATE)
    except (ValueError, OSError):
        return False
    return True


def phase(folder: Path) -> str:
    """Where a run stood when the fault came, judged from its folder."""
    if state_ok(folder) is None:
        return "before the first save"
    try:
        status = runs.read_manifest(folder)["status"]
    except runs.RunFolderError:
        return "before the first save"
    return "after training" if status == "finished" or (folder / "samples.png").exists() \
        else "during training"


def trial(folder: Path, signame: str, delay: float, reference: dict[str, bytes],
          counts: Counter, notes: list[str]) -> None:
    proc = subprocess.Popen([*COMMAND, "train", *FLAGS, "--out", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(delay)
    saved_before, where = state_ok(folder), phase(folder)  # just before the fault
    if proc.poll() is None:
        proc.send_signal(SIGNALS[signame])
        counts[f"fault {signame} {where}"] += 1
    else:
        counts["finished before the fault"] += 1
    _, err = proc.communicate(timeout=600)
    stderrs = [err]
    if proc.returncode not in EXPECTED[signame]:
        counts["unexpected exit status"] += 1
        notes.append(f"{folder.name}: {signame} -> exit {proc.returncode}: {err.strip()[-300:]}")
    if saved_before and state_ok(folder) is not True:
        counts["files lost"] += 1
        notes.append(f"{folder.name}: the state saved before {signame} is gone or unreadable")

    for _ in range(5):  # resume until finished (a fault lands at most once per trial)
        if (folder / runs.MANIFEST).exists() and state_ok(folder):
            result = train("--resume", str(folder))
        else:  # nothing saved: --resume refuses in one line, then a new run replaces it
            refused = train("--resume", str(folder))
            stderrs.append(refused.stderr)
            if refused.returncode != 2 or len(refused.stderr.strip().splitlines()) != 1:
                counts["refusal not one line"] += 1
                notes.append(f"{folder.name}: --resume of an unsaved run: {refused.stderr!r}")
            counts["restarted (nothing saved yet)"] += 1
            result = train(*FLAGS, "--out", str(folder), "--overwrite")
        stderrs.append(result.stderr)
        if result.returncode == 0:
            break
        notes.append(f"{folder.name}: exit {result.returncode}: {result.stderr.strip()[-300:]}")
    else:
        counts["never finished"] += 1

    counts["tracebacks"] += sum("Traceback" in text for text in stderrs)
    final = {p.name: p for p in folder.iterdir()}
    missing = sorted(set(reference) - set(final))
    if missing:
        counts["files lost"] += len(missing)
        notes.append(f"{folder.name}: missing at the end: {', '.join(missing)}")
    if [name for name in final if name.startswith(".")]:
        counts["temporaries left"] += 1
    checkpoint = final.get(runs.CHECKPOINT)
    if checkpoint is not None and checkpoint.read_bytes() == reference[runs.CHECKPOINT]:
        counts["byte-identical"] += 1
    else:
        notes.append(f"{folder.name}: the final checkpoint differs from the uninterrupted one")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="of the faults' times and kinds")
    parser.add_argument("--signals", default="SIGINT,SIGTERM,SIGKILL")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--json", type=Path, default=None, help="write the counts there")
    parser.add_argument("--window", type=float, default=0.8,
                        help="faults come at a random time up to this fraction of the "
                        "uninterrupted run's time (default: 0.8)")
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                        help="the torch backend runs on the CPU (default: numpy)")
    args = parser.parse_args(argv)
    if args.backend == "torch":
        FLAGS.extend(["--backend", "torch", "--device", "cpu"])
    kinds = args.signals.split(",")
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="fault-run-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.monotonic()
        straight = train(*FLAGS, "--out", str(work / "straight"))
        took = time.monotonic() - start
        if straight.returncode != 0:
            print(straight.stderr, file=sys.stderr)
            return 2
        reference = {p.name: p.read_bytes() for p in (work / "straight").iterdir()}
        window = args.window * took
        print(f"uninterrupted run: {took:.1f} s; {args.trials} trials, faults at a random "
              f"time in [0, {window:.1f}] s", flush=True)
        counts: Counter = Counter()
        notes: list[str] = []
        for i in range(args.trials):
            signame, delay = rng.choice(kinds), rng.uniform(0, window)
            folder = work / f"trial{i:04d}"
            trial(folder, signame, delay, reference, counts, notes)
            shutil.rmtree(folder, ignore_errors=True)
            if (i + 1) % 10 == 0:
                print(f"  {i + 1} trials: {counts['byte-identical']} byte-identical, "
                      f"{counts['files lost']} files lost, {counts['tracebacks']} tracebacks",
                      flush=True)
        counts["trials"] = args.trials
        print(json.dumps(dict(sorted(counts.items())), indent=1))
        for note in notes[:20]:
            print("  " + note)
        if args.json:
            args.json.write_text(json.dumps({"counts": dict(counts), "notes": notes,
                                             "seconds_straight": took}, indent=1) + "\n")
        return 0 if counts["files lost"] == 0 and counts["tracebacks"] == 0 else 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
