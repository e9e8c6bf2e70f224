"""A training run's output folder: checked before training, saved as it goes, resumable.

``vae-course train --out DIR`` writes into DIR:

=========================  ==================================================================
``run.json``               the manifest: format, status (running, interrupted, diverged,
                           finished) and the name of every file the run wrote
``state.safetensors``      what resuming needs: the parameters, optimizer and random-generator
                           states, the position in the epoch, the history, the run's flags
``checkpoint.safetensors`` the model after the last finished epoch (``load_vae`` reads it)
``metrics.json``           the run's figures; ``"interrupted": true`` after a Ctrl-C
``*.png``                  the figures, drawn when training ends
=========================  ==================================================================

A folder is a run's when it holds ``run.json`` (or, from versions before the manifest,
only the files such a run wrote). A new run goes into a new or empty folder; a folder
holding a run is refused unless ``--overwrite``, which first removes the files its manifest
lists and refuses if the folder holds anything else. Every file is written atomically
(:mod:`vae_from_scratch.course.files`), and its name is recorded in the manifest before it is
written, so the manifest never misses a file of the run. Leftover temporary files of a
killed process are removed when a run starts or resumes. While a run trains, its folder
is locked against a second process (where the system has ``fcntl``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vae_from_scratch.config import VAEConfig
from vae_from_scratch.course.checkpoint import (
    CheckpointError,
    json_default,
    read_state,
    save_checkpoint,
    save_state,
)
from vae_from_scratch.course.files import (
    atomic_write_text,
    remove_stale_temporaries,
    save_figures,
    stale_temporaries,
)
from vae_from_scratch.vae import VAE

MANIFEST = "run.json"
STATE = "state.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
RUN_FORMAT = "vae-from-scratch-run"
RUN_FORMAT_VERSION = 1
STATUSES = ("running", "interrupted", "diverged", "finished")
#: What ``vae-course train`` wrote before run folders had a manifest.
LEGACY_FILES = frozenset(
    {
        CHECKPOINT,
        METRICS,
        "loss_curves.png",
        "reconstructions.png",
        "samples.png",
        "latent_scatter.png",
        "latent_manifold.png",
    }
)


class RunFolderError(ValueError):
    """The folder cannot take (or does not hold) a run; the message is one line."""


def _plain_name(name):
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the run in ``folder`` (a dict), checked: RunFolderError if broken."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunFolderError(f"{path} is not a readable run manifest ({err})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != RUN_FORMAT
        or manifest.get("status") not in STATUSES
        or not isinstance(files, list)
        or not all(_plain_name(name) for name in files)
    ):
        raise RunFolderError(f"{path} is not a run manifest of this course")
    return manifest


def _first_existing(path):
    """``path`` or its nearest ancestor that exists (as seen without following a final
    dangling link)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _check_writable(folder, path):
    """Create and remove a probe folder in ``folder``: PermissionError, read-only file
    systems and the like show up now, before training, instead of after it."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vae-course-probe-", dir=folder))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RunFolderError(
            f"--out {path}: cannot write in {folder} ({reason.lower()}); choose another folder"
        ) from None


def _describe(manifest):
    if manifest is None:
        return "a run of an earlier version"
    return f"a {manifest['status']} run"


def check_new(folder: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Check ``folder`` as the output of a new run, writing nothing (but a probe).

    Returns the paths ``--overwrite`` must remove. RunFolderError (one line) when the path
    or one of its parents is a file, the place is not writable, the folder holds a run
    and ``overwrite`` is false (or holds other files besides it), or the folder is not
    empty and holds no run.
    """
    path = Path(folder)
    existing = _first_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise RunFolderError(f"--out {path} {where}, not a folder")
    _check_writable(existing, path)
    if existing != path:
        return []
    stale = set(p.name for p in stale_temporaries(path))
    entries = sorted(name for name in os.listdir(path) if name not in stale)
    if not entries:
        return []
    if MANIFEST in entries:
        manifest = read_manifest(path)
        owned = {MANIFEST, *manifest["files"]}
    elif CHECKPOINT in entries and set(entries) <= LEGACY_FILES:
        manifest, owned = None, set(LEGACY_FILES)
    else:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunFolderError(
            f"--out {path} is not empty and holds no run ({shown}); choose a new or empty folder"
        )
    what = _describe(manifest)
    if not overwrite:
        more = ""
        if manifest is not None and manifest["status"] != "finished" and STATE in entries:
            more = f", or --resume {path} to continue it"
        raise RunFolderError(
            f"--out {path} holds {what}; pass --overwrite to replace it{more}, "
            "or choose another folder"
        )
    foreign = [name for name in entries if name not in owned]
    folders = [name for name in entries if name in owned and (path / name).is_dir()
               and not (path / name).is_symlink()]
    if foreign or folders:
        shown = ", ".join((foreign + folders)[:3])
        raise RunFolderError(
            f"--out {path} holds {what} and also {shown}, which --overwrite does not remove "
            "(it removes only a run's own files); move them, or choose another folder"
        )
    # the manifest last: if removing stops half-way, what is left is still listed
    names = sorted(set(entries) & owned - {MANIFEST})
    return [path / name for name in names] + ([path / MANIFEST] if MANIFEST in entries else [])


def data_fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes: a resumed run checks it sees the same data."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)  # a copy only where ``a`` is not C-contiguous
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a)  # its buffer, hashed in place: the bytes tobytes() would give
    return digest.hexdigest()


class Run:
    """An output folder in use by this process: its manifest, its lock, its files.

    Create with :meth:`create` (a new run) or :meth:`reopen` (``--resume``); use as a
    context manager, or call :meth:`close`, to release the folder's lock.
    """

    def __init__(self, folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self._lock = None

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: str | os.PathLike, overwrite: bool = False) -> Run:
        """Start a new run in ``folder`` (checked again; with ``overwrite`` the previous
        run's files are removed first)."""
        removals = check_new(folder, overwrite)
        for path in removals:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        run = cls(folder, {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION,
                           "status": "running", "files": []})
        try:
            run.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"--out {folder}: cannot create it ({err.strerror})") from None
        run._open()
        run._write_manifest()
        return run

    @classmethod
    def reopen(cls, folder: str | os.PathLike) -> Run:
        """Open the run in ``folder`` to continue it: RunFolderError if there is none."""
        folder = Path(folder)
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a folder"
            raise RunFolderError(f"--resume {folder}: the folder {what}")
        if not (folder / MANIFEST).is_file():
            raise RunFolderError(f"--resume {folder}: no run there (no {MANIFEST})")
        manifest = read_manifest(folder)
        if not (folder / STATE).is_file():
            raise RunFolderError(
                f"--resume {folder}: the run saved no state to continue from (no {STATE})"
            )
        run = cls(folder, manifest)
        run._open()
        return run

    def _open(self):
        self._lock = _lock_folder(self.folder)
        remove_stale_temporaries(self.folder)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- files -----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.manifest["status"]

    def set_status(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.manifest["status"] = status
        self._write_manifest()

    def _write_manifest(self):
        text = json.dumps(self.manifest, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.folder / MANIFEST, text)

    def expect(self, *names: str) -> None:
        """Record ``names`` in the manifest before the files are written."""
        new = [name for name in names if name not in self.manifest["files"]]
        if new:
            self.manifest["files"] = sorted({*self.manifest["files"], *new})
            self._write_manifest()

    def write_json(self, name: str, obj: Any) -> Path:
        self.expect(name)
        text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
        return atomic_write_text(self.folder / name, text)

    def write_figures(self, figures: dict) -> list[Path]:
        """Write {name: Figure} as ``name.png`` (recorded in the manifest first) and close
        them; returns the paths."""
        self.expect(*(f"{name}.png" for name in figures))
        return save_figures(figures, self.folder)

    def save(self, vae: VAE, state: dict[str, Any], metadata: dict[str, Any],
             checkpoint_metadata: dict[str, Any]) -> None:
        """Save the resume point (``state.safetensors``: the params, ``state`` tree and
        ``metadata``), then the model (``checkpoint.safetensors``). Each write is atomic;
        resuming reads only the state, so a crash between the two costs nothing."""
        self.expect(STATE, CHECKPOINT)
        save_state(self.folder / STATE, vae, state, metadata)
        save_checkpoint(self.folder / CHECKPOINT, vae, checkpoint_metadata)

    def load(self) -> tuple[dict[str, np.ndarray], VAEConfig, Any, dict]:
        """(params, VAEConfig, state tree, metadata) of the saved resume point."""
        try:
            return read_state(self.folder / STATE)
        except (CheckpointError, FileNotFoundError) as err:
            raise RunFolderError(f"--resume {self.folder}: {err}") from None


def _json_default(value):
    """json.dumps' ``default`` for a run's JSON files: paths as strings, NumPy scalars as
    in checkpoint headers."""
    return str(value) if isinstance(value, Path) else json_default(value)


def _lock_folder(folder):
    """An exclusive lock on the folder (released when its descriptor closes), or None
    where locks are not available."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunFolderError(f"{folder} is in use by another vae-course process") from None
    return fd


class StopRequest:
    """Ctrl-C (SIGINT) asks training to stop at the next step boundary.

    Call the object to ask whether a stop was requested (``fit(..., stop=request)``). A
    second Ctrl-C raises KeyboardInterrupt at once. Used as a context manager, it installs
    its handler on entry and restores the previous one on exit (main thread only).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __call__(self):
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def versions() -> dict[str, str]:

    """The versions that decide the last bits of a run's numbers."""
    import numpy

    out = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out
