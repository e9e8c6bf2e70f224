"""``vae-course download mnist``: the four MNIST IDX files, fetched and verified.

:func:`download_mnist` tries several mirrors in turn, streams each file to a temporary file
beside its final name (:mod:`vae_from_scratch.course.files`), checks its size against a cap
and its SHA-256 against a pinned value, and only then renames it into place: a final-named
file is always complete and verified. A silent connection times out, the whole download has
a deadline, and files finished before a failure are kept, so a retry continues.
``vae_from_scratch.data.load_mnist(source="mnist")`` reads what it leaves.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.client import HTTPException
from pathlib import Path

from vae_from_scratch.course.files import atomic_writer, remove_stale_temporaries
from vae_from_scratch.data import default_data_dir

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "DownloadError",
    "MAX_DOWNLOAD_BYTES",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SIZES",
    "download_mnist",
]

#: The four gzipped MNIST IDX files and the SHA-256 of each, as served by the mirrors below.
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}

#: The size in bytes of each of those files: a download that announces or sends more is cut
#: off there (and the SHA-256 above catches one that is shorter or different).
MNIST_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte.gz": 9_912_422,
    "train-labels-idx1-ubyte.gz": 28_881,
    "t10k-images-idx3-ubyte.gz": 1_648_877,
    "t10k-labels-idx1-ubyte.gz": 4_542,
}

#: The cap for a file whose size is not pinned.
MAX_DOWNLOAD_BYTES = 64 << 20

#: Seconds ``download_mnist`` waits on a silent connection before it gives that one up.
DEFAULT_TIMEOUT = 30.0

#: Seconds a whole ``download_mnist`` may take before it gives up (finished files are kept).
DEFAULT_DEADLINE = 600.0

#: Base URLs tried in order; each serves the four files of ``MNIST_FILES`` by name.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A file could not be fetched from any mirror; the message lists each mirror's failure."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _DeadlinePassed(Exception):
    """The whole download ran out of time (not a mirror's fault: no other mirror is tried)."""


def _fetch_to(url, out, timeout, progress, label, cap, deadline):
    """Stream ``url`` into the binary file ``out``; returns the SHA-256 of what was written.

    ``cap``: the most bytes accepted (a larger Content-Length or body is refused);
    ``deadline``: a ``time.monotonic()`` value after which the download stops.
    Raises OSError / HTTPException on network trouble, ValueError for a truncated or
    oversized body, and _DeadlinePassed.
    """
    from tqdm.auto import tqdm

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _DeadlinePassed()
    digest = hashlib.sha256()
    received = 0
    # each blocking connect or read waits at most this long
    with urllib.request.urlopen(url, timeout=min(timeout, remaining)) as response:
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if length is not None and length > cap:
            raise ValueError(f"too large: the server announces {length} bytes, expected {cap}")
        show = progress and sys.stderr is not None and sys.stderr.isatty()
        with tqdm(
            total=length, unit="B", unit_scale=True, desc=label, disable=not show, leave=False
        ) as bar:
            # read1: what one receive brings, so the deadline is checked while bytes trickle
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if received > cap:
                    raise ValueError(f"too large: more than the {cap} bytes expected")
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise _DeadlinePassed()
    if length is not None and received != length:
        raise ValueError(f"truncated body: expected {length} bytes, got {received}")
    return digest.hexdigest()


def _prepare_dest(dest: Path) -> None:
    """Create ``dest`` or raise ValueError saying why it cannot be the download folder."""
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"the download folder {dest} is a file, not a folder")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the download folder {dest}: {err.strerror}") from None


def download_mnist(
    dest: str | os.PathLike | None = None,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    files: Mapping[str, str] = MNIST_FILES,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    sizes: Mapping[str, int] | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> Path:
    """Download the MNIST IDX files into ``dest`` and verify each one's SHA-256.

    For each file (name -> expected SHA-256 in ``files``): if it is already in ``dest`` with
    the right hash it is kept; otherwise the mirrors are tried in order. A body is streamed
    to a temporary file in ``dest``, checked, and only then renamed to its final name, so a
    final-named file is always complete and verified (mode 0644 under the usual umask).
    An HTTP error, a connection failure, a truncated or oversized body or a wrong checksum
    moves on to the next mirror. Temporary ``.part`` files that a killed download left
    behind are removed first.

    Args:
        dest: target folder, created if needed; default ``default_data_dir() / "mnist"``.
        mirrors: base URLs; the file name is appended to each.
        files: file name -> lowercase hex SHA-256.
        timeout: seconds before a silent connection is given up.
        progress: show a progress bar (only when stderr is a terminal).
        sizes: file name -> the most bytes accepted (default :data:`MNIST_SIZES`; files
            not named there may have up to :data:`MAX_DOWNLOAD_BYTES`).
        deadline: seconds the whole download may take; then it stops (files finished so
            far are kept, so a retry continues).

    Returns:
        The destination folder, ready for ``load_mnist(source="mnist", root=dest)``.

    Raises:
        DownloadError: a file failed on every mirror (the message says why for each), or
            the deadline passed.
        ValueError: bad arguments, or ``dest`` cannot be a folder (it is a file, ...).
    """
    dest = Path(dest) if dest is not None else default_data_dir() / "mnist"
    if isinstance(mirrors, str) or not mirrors:
        raise ValueError("mirrors must name at least one base URL (a list of them)")
    for name, value in (("timeout", timeout), ("deadline", deadline)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    sizes = MNIST_SIZES if sizes is None else sizes
    _prepare_dest(dest)
    remove_stale_temporaries(dest, names=set(files), suffix=".part")
    end = time.monotonic() + deadline
    for name, expected in files.items():
        expected = expected.lower()
        final = dest / name
        if final.is_file() and _sha256_file(final) == expected:
            continue
        cap = sizes.get(name, MAX_DOWNLOAD_BYTES)
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                with atomic_writer(final, suffix=".part") as out:
                    digest = _fetch_to(url, out, timeout, progress, name, cap, end)
                    if digest != expected:  # raised inside: the final name is not touched
                        raise ValueError(f"checksum mismatch: got SHA-256 {digest}")
                break
            except _DeadlinePassed:
                raise DownloadError(
                    f"gave up on {name}: the download took longer than its deadline of "
                    f"{deadline:g} s (files finished so far are kept; run it again, or allow "
                    "more time with --deadline)"
                ) from None
            except (OSError, HTTPException, ValueError) as err:
                failures.append(f"  {url}: {_describe(err)}")
        else:
            raise DownloadError(
                f"could not download {name} (expected SHA-256 {expected}) from any mirror:\n"
                + "\n".join(failures)
            )
    return dest


def _describe(err: BaseException) -> str:
    """A one-line reason for a failed mirror."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP error {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"connection failed ({err.reason})"
    return f"{type(err).__name__}: {err}"
