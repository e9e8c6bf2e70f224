"""Writing files so that a crash at any moment leaves the old file or the new one, whole.

Every file the course writes (a run's files and figures, checkpoints, downloads, lessons,
a learner's copies) goes through :func:`atomic_writer`: the bytes go to a temporary file
beside the target, which is flushed to disk and then renamed over the target in one step.
A rename replaces a symbolic link at the target instead of writing through it, so a write
never lands outside the target's folder.

Temporary names. By default a temporary is ``.<name>.<8 hex><suffix>``: a write that fails
removes its own temporary, but one killed between creating it and the rename leaves it
behind, and nothing removes it by its name alone (a user may have a file of that shape).
A caller that can prove a name is its own passes ``tmp=`` instead: the run folder
(:mod:`vae_from_scratch.course.run`) names its temporaries after the run's id, which its
manifest records before any of them is created, and removes exactly those
(:func:`remove_files`); a download names its ``.part`` files after the MNIST files it
fetches and removes those on its next start.

Errors. Any OSError of a write (a full disk, a read-only place, a name too long) leaves the
target as it was and is raised with the target's path as its file name, not the
temporary's. For tests, ``VAE_COURSE_FAIL_WRITE="NAME:N"`` makes the N-th write of a file
called NAME in this process fail with ENOSPC, as a full disk would, after its bytes went
to the temporary.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"
#: The variable of the fault-injection hook (see the module's docstring).
FAIL_WRITE_VARIABLE = "VAE_COURSE_FAIL_WRITE"

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_writes: dict[str, int] = {}  # writes per file name, for the fault-injection hook


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


def _injected_fault(path):
    """The OSError of the fault-injection hook for this write of ``path``, or None."""
    spec = os.environ.get(FAIL_WRITE_VARIABLE)
    if not spec:
        return None
    name, _, nth = spec.rpartition(":")
    if name != path.name:
        return None
    _writes[name] = _writes.get(name, 0) + 1
    if str(_writes[name]) != nth:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _about(err: OSError, path: Path) -> OSError:
    """``err`` (same class, same errno) naming ``path`` instead of a temporary."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, suffix: str = TMP_SUFFIX,
                  tmp: str | os.PathLike | None = None) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as f: f.write(...)``: a binary file that becomes ``path``
    only when the block ends without an error; on an error the target is untouched and the
    temporary file is removed. The new file gets an ordinary mode (0666 less the umask).

    ``tmp``: the temporary's path (beside ``path``), for a caller that owns that name; a
    file left there by a killed process of that caller is replaced. Default: a fresh
    random name. An OSError names ``path``."""
    path = Path(path)
    try:
        if tmp is not None:
            tmp = Path(tmp)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, _FLAGS, 0o666)  # the kernel applies the umask
        else:
            while True:
                tmp = temporary_name(path, suffix)
                try:
                    fd = os.open(tmp, _FLAGS, 0o666)
                    break
                except FileExistsError:  # pragma: no cover - 2**32 names; try another
                    continue
    except OSError as err:
        raise _about(err, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            fault = _injected_fault(path)
            if fault is not None:
                raise fault
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _about(err, path) from None
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes,
                       tmp: str | os.PathLike | None = None) -> Path:
    """Write ``data`` (bytes) to ``path`` atomically (``tmp``: see :func:`atomic_writer`);
    returns the path."""
    with atomic_writer(path, tmp=tmp) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str,
                      tmp: str | os.PathLike | None = None) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), tmp=tmp)


def stale_temporaries(folder: str | os.PathLike, names: Container[str],
                      suffix: str = TMP_SUFFIX) -> list[Path]:
    """Temporary files of :func:`atomic_writer` (random names) left in ``folder`` by a
    killed process, for the target names in ``names`` only: a caller names the files it
    writes there, so that a user's file of the same shape is never taken for one."""
    pattern = _stale_pattern(suffix)
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            match = pattern.match(entry.name)
            if match and match.group("name") in names:
                if entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike, names: Container[str],
                             suffix: str = TMP_SUFFIX) -> list[Path]:
    """Delete :func:`stale_temporaries`; returns the paths removed."""
    return remove_files(stale_temporaries(folder, names, suffix))


def remove_files(paths: Iterable[Path]) -> list[Path]:
    """Delete the plain files among ``paths`` (not folders, not what a link points to);
    returns those removed."""
    removed = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def save_figures(figures: dict, folder: str | os.PathLike,
                 tmp_for: Callable[[str], Path] | None = None) -> list[Path]:
    """Write {name: matplotlib Figure} as ``folder/name.png``, each atomically, and close
    them; returns the paths. ``tmp_for(file name)``: the temporary to use for each."""
    import io

    import matplotlib.pyplot as plt

    folder = Path(folder)
    paths = []
    for name, fig in figures.items():
        buffer = io.BytesIO()
        # tight: no blank strip where a grid of images is wider than the figure is tall
        fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
        plt.close(fig)
        target = folder / f"{name}.png"
        tmp = None if tmp_for is None else tmp_for(target.name)
        paths.append(atomic_write_bytes(target, buffer.getvalue(), tmp=tmp))
    return paths
