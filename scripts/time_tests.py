"""Time the README's two test commands: the fast loop and the full run.

    python scripts/time_tests.py               # both
    python scripts/time_tests.py --only fast   # the fast loop alone
    python scripts/time_tests.py --out times.json

Prints each command's wall-clock time and pytest's summary line, with the machine's load
average before and after (figures taken on a busy machine are not the course's speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "fast": ["-m", "not notebook and not slow"],  # unit tests only
    "full": [],  # unit tests + every notebook under nbval
}


def run(name: str) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *COMMANDS[name]]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    return {
        "command": "pytest " + " ".join(repr(a) if " " in a else a for a in COMMANDS[name]),
        "seconds": round(seconds, 1),
        "returncode": proc.returncode,
        "summary": lines[-1] if lines else proc.stderr.strip()[-300:],
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(COMMANDS), help="time one command")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version()}
    for name in [args.only] if args.only else list(COMMANDS):
        r = results[name] = run(name)
        print(f"{name}: {r['command']}\n  {r['seconds']:.0f} s, {r['summary']} "
              f"(load {r['load_before']} -> {r['load_after']})", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return max(results[n]["returncode"] for n in COMMANDS if n in results)


if __name__ == "__main__":
    sys.exit(main())
