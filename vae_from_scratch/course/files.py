"""Writing files so that a crash at any moment leaves the old file or the new one, whole.

Every file the package writes for a user (checkpoints, a run's state and metrics, figures,
downloads) goes through :func:`atomic_writer`: the bytes go to a temporary file beside the
target, which is flushed to disk and then renamed over the target in one step. A rename
replaces a symbolic link at the target instead of writing through it, so a write never
lands outside the target's folder. A process killed between creating the temporary file
and the rename leaves that temporary behind; :func:`remove_stale_temporaries` clears such
leftovers (their names follow one pattern, ``.<name>.<8 characters><suffix>``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Container, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def temporary_name(path: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Path:
    """A fresh name for a temporary file beside ``path``: ``.<name>.<8 hex><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")


def _stale_pattern(suffix):
    # 8 hex digits here; 8 of [a-z0-9_] from tempfile.mkstemp in earlier versions
    return re.compile(r"^\.(?P<name>.+)\.[0-9a-z_]{8}" + re.escape(suffix) + "$")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as f: f.write(...)``: a binary file that becomes ``path``
    only when the block ends without an error; on an error the target is untouched and the
    temporary file is removed. The new file gets an ordinary mode (0666 less the umask)."""
    path = Path(path)
    while True:
        tmp = temporary_name(path, suffix)
        try:
            fd = os.open(tmp, _FLAGS, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:  # pragma: no cover - 2**32 names; try another
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` (bytes) to ``path`` atomically; returns the path."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def stale_temporaries(folder: str | os.PathLike, names: Container[str] | None = None,
                      suffix: str = TMP_SUFFIX) -> list[Path]:
    """Temporary files of :func:`atomic_writer` left in ``folder`` by a killed process:
    those of the target names in ``names`` (any name when None)."""
    pattern = _stale_pattern(suffix)
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            match = pattern.match(entry.name)
            if match and (names is None or match.group("name") in names):
                if entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike, names: Container[str] | None = None,
                             suffix: str = TMP_SUFFIX) -> list[Path]:

    """Delete :func:`stale_temporaries`; returns the paths removed."""
    removed = []
    for path in stale_temporaries(folder, names, suffix):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def save_figures(figures: dict, folder: str | os.PathLike) -> list[Path]:
    """Write {name: matplotlib Figure} as ``folder/name.png``, each atomically, and close
    them; returns the paths."""
    import io

    import matplotlib.pyplot as plt

    folder = Path(folder)
    paths = []
    for name, fig in figures.items():
        buffer = io.BytesIO()
        # tight: no blank strip where a grid of images is wider than the figure is tall
        fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
        plt.close(fig)
        paths.append(atomic_write_bytes(folder / f"{name}.png", buffer.getvalue()))
    return paths
