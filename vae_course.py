"""The ``vae-course`` command's entry point, kept apart from the package on purpose.

Importing the package takes a moment (NumPy, matplotlib); a Ctrl-C in that moment would
otherwise end in a KeyboardInterrupt traceback printed by Python itself. This module imports
nothing of the course until :func:`main` runs, so that such a Ctrl-C ends quietly with exit
status 130, as one during any command does; a SIGTERM in that moment ends with 143 (the
command's own handlers take over once it is imported). The command itself is
:func:`vae_from_scratch.course.cli.main`.
"""

import signal
import sys


def _terminated(signum, frame):
    raise SystemExit(143)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from vae_from_scratch.course.cli import main as run

        return run()
    except KeyboardInterrupt:  # during the imports, or before the command's own handlers
        return 130


if __name__ == "__main__":
    sys.exit(main())
