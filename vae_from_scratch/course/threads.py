"""How many threads NumPy's BLAS and PyTorch may use: one setting for the CLI and notebooks.

The course's models are small (a 784-400-20 MLP, batches of 128), so a matrix product takes
well under a millisecond and extra BLAS threads gain little; on a machine that is busy with
anything else they lose a lot, because every product waits for the slowest thread to get a
core. ``python benchmarks/threads.py`` measures it; the default below is what never lost
badly there (see ``benchmarks/README.md``).

    from vae_from_scratch.course.threads import limit_threads
    limit_threads()      # the notebooks' first cell; vae-course does it before any work

``limit_threads(n)`` sets NumPy's BLAS (and any OpenMP pool, through threadpoolctl) to ``n``
threads, and PyTorch's too: with ``torch.set_num_threads`` if torch is already imported,
and through ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (which torch reads when it starts) if
it is not; this module never imports torch. ``n=None`` reads ``VAE_COURSE_THREADS`` from
the environment, else uses :data:`DEFAULT_THREADS`; ``0`` leaves the libraries' own
defaults (usually one thread per core).
"""

from __future__ import annotations

import os
import sys

__all__ = ["DEFAULT_THREADS", "ENV_VAR", "limit_threads", "parse_threads", "threads_from_env"]

#: The environment variable that overrides the default.
ENV_VAR = "VAE_COURSE_THREADS"
#: Threads when nothing says otherwise: one, which never lost badly. On an idle 2-core machine
#: one thread took 1.15-1.35x as long as two (the CLI and lesson 05); with the cores busy,
#: two threads took 2-3.7x as long as one (benchmarks/threads.py, benchmarks/README.md).
DEFAULT_THREADS = 1

# Read by OpenMP (and so by torch) when a library starts; set for a torch imported later.
_STARTUP_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def parse_threads(text: str) -> int:
    """``text`` as a number of threads: a whole number >= 0 (0: the libraries' defaults).
    Raises ValueError (its message to follow the option's name) for anything else."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(
            f"must be a whole number of threads (0: the libraries' defaults), got {text}")
    return n


def threads_from_env(default: int = DEFAULT_THREADS) -> int:
    """``VAE_COURSE_THREADS`` as a number of threads (0: the libraries' defaults), else
    ``default``. Raises ValueError for a value that is not a whole number >= 0."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return default
    try:
        return parse_threads(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a whole number of threads (0 for the libraries' "
                         f"defaults), got {text!r}") from None


def limit_threads(n: int | None = None) -> int:
    """Let NumPy's BLAS and PyTorch use ``n`` threads (see the module docstring); returns n.

    ``n=None``: ``$VAE_COURSE_THREADS``, else :data:`DEFAULT_THREADS`. ``n=0``: leave every
    library as it is.
    """
    if n is None:
        n = threads_from_env()
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of threads must be a whole number >= 0, got {n!r}")
    if n == 0:
        return 0
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)  # every BLAS and OpenMP library loaded so far
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    else:
        for var in _STARTUP_VARS:
            os.environ[var] = str(n)
    return n
