"""The ``vae-course`` command's entry point, kept apart from the package on purpose.

Importing the package takes a moment (NumPy, matplotlib); a Ctrl-C in that moment would
otherwise end in a KeyboardInterrupt traceback printed by Python itself. This module imports
nothing of the course until :func:`main` runs, so that such a Ctrl-C ends quietly with exit
status 130, as one during any command does. The command itself is
:func:`vae_from_scratch.course.cli.main`.
"""

import sys


def main() -> int:
    try:
        from vae_from_scratch.course.cli import main as run

        return run()
    except KeyboardInterrupt:  # during the imports, or before the command's own handlers
        return 130


if __name__ == "__main__":
    sys.exit(main())
