"""A training run's output folder: checked before training, saved as it goes, resumable.

``vae-course train --out DIR`` writes into DIR:

=========================  ==================================================================
``run.json``               the manifest: format, the run's id, status (running, interrupted,
                           failed, diverged, finished) and the name of every file the run wrote
``state.safetensors``      what resuming needs: the parameters, optimizer and random-generator
                           states, the position in the epoch, the history, the run's flags
``checkpoint.safetensors`` the model after the last finished epoch (``load_vae`` reads it)
``metrics.json``           the run's figures; ``"interrupted": true`` after a Ctrl-C or SIGTERM
``*.png``                  the figures of :data:`FIGURES`, drawn when training ends
=========================  ==================================================================

The rules of the folder, in the order a run meets them:

1. **The lock first.** A process takes the folder's lock (``flock`` where the system has
   ``fcntl``) before it writes or removes anything in it, and holds it until it exits; it
   checks the folder again under the lock. (The check before training only reads, once it
   has found the lock free.) A folder whose lock is held belongs to a running run: a new
   run into it is refused, ``--overwrite`` included, and so is ``--resume``.
2. **The course deletes only files it wrote itself.** ``--overwrite`` removes the files the
   manifest lists, and the manifest may list only the course's own names (:data:`RUN_FILES`
   and the figures of :data:`FIGURES`), plain names inside the folder; a manifest naming
   anything else is refused, and so is a folder that also holds files it does not list.
   Temporary files of a run are named ``.<name>.vae-course-<run id>.tmp``, after a name the
   manifest lists and the run id the manifest records before any of them is created; only
   those are removed as leftovers of a killed process. (The manifest's own first temporary
   is recognised by its content: a manifest carrying the same run id.) Any other file,
   whatever its name, is the user's: never removed, and a folder holding one is not empty.
3. **A run's files carry one run id**: ``run.json``, ``state.safetensors``,
   ``checkpoint.safetensors`` and ``metrics.json``. The id is a digest of the run's flags
   (less ``--epochs``, which ``--resume`` may raise, and ``--data-dir``) and of its data
   (:func:`run_id_for`): runs with the same flags on the same data are one computation and
   still write byte-identical checkpoints. ``--resume`` refuses, in one line, a state or a
   checkpoint whose id is not the manifest's (a file copied from a run with another flag or
   other data).
4. **Every file is written atomically** (:mod:`vae_from_scratch.course.files`): a crash
   leaves the old file or the new one, whole. Its name is recorded in the manifest before
   it is written, so the manifest never misses a file of the run.
5. **Stops.** Ctrl-C (SIGINT) and SIGTERM stop training at the next step, save the state,
   mark the run ``interrupted`` and exit 130 (SIGTERM: 143); a second one stops at once,
   keeps the last state saved (the previous epoch's, or the first Ctrl-C's), marks the run
   and exits the same way. Once every epoch is done a first Ctrl-C says that the IWAE
   estimate and figures are being finished and lets them finish; a second skips them (the
   run stays ``finished``, its checkpoint saved). A SIGKILL leaves the last state saved and
   the status ``running``; ``--resume`` continues from that state.
6. **A failed write** (a full disk, a read-only folder, a name too long) ends in one line
   that says which file and why; the state saved before it is kept, the run is marked
   ``failed`` (with ``metrics.json`` where it can still be written), and ``--resume``
   continues it once the cause is gone.

A folder from before the manifest (version 0) is recognised as a run only if it holds
``checkpoint.safetensors`` and a ``metrics.json`` of a run; a manifest of format version 1
(before run ids) is read, and gets an id when the run is resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
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
    read_checkpoint,
    read_state,
    save_checkpoint,
    save_state,
)
from vae_from_scratch.course.files import atomic_write_text, remove_files, save_figures
from vae_from_scratch.vae import VAE

MANIFEST = "run.json"
STATE = "state.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
RUN_FORMAT = "vae-from-scratch-run"
RUN_FORMAT_VERSION = 2
STATUSES = ("running", "interrupted", "failed", "diverged", "finished")
#: The files of a run besides its figures.
RUN_FILES = frozenset({STATE, CHECKPOINT, METRICS})
#: The figures ``vae-course train`` may draw (``<name>.png``); a new figure is added here.
FIGURES = frozenset(
    {"loss_curves", "reconstructions", "samples", "latent_scatter", "latent_manifold"}
)
#: Every name a manifest may list.
OWN_NAMES = RUN_FILES | {f"{name}.png" for name in FIGURES}
#: What ``vae-course train`` wrote before run folders had a manifest.
LEGACY_FILES = frozenset({CHECKPOINT, METRICS} | {f"{name}.png" for name in FIGURES})
_TMP = re.compile(r"^\.(?P<name>.+)\.vae-course-(?P<id>[0-9a-f]{32})\.tmp$")


class RunFolderError(ValueError):
    """The folder cannot take (or does not hold) a run; the message is one line."""


class RunWriteFailed(RuntimeError):
    """A file of the run could not be written; the message (one line) says which, why, and
    what the folder still holds."""


def new_run_id() -> str:
    """A fresh run id: 32 hex digits (for a run whose flags are not known)."""
    return secrets.token_hex(16)


def run_id_for(flags: dict[str, str], data_sha256: str) -> str:
    """The id of a run: 32 hex digits of the SHA-256 of its flags (those that decide its
    numbers, less the ones ``--resume`` may change) and of its data. Two runs with the same
    flags on the same data are the same computation, get the same id, and stay byte for
    byte alike; a run with any other flag or data gets another id."""
    text = json.dumps({"flags": flags, "data_sha256": data_sha256}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def temporary_for(folder: str | os.PathLike, name: str, run_id: str) -> Path:
    """The temporary file of the run ``run_id`` for its file ``name``."""
    return Path(folder) / f".{name}.vae-course-{run_id}.tmp"


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the run in ``folder`` (a dict), checked: RunFolderError if broken,
    or if it lists a file that is not one of the course's own names (:data:`OWN_NAMES`)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunFolderError(f"{path} is not a readable run manifest ({err})") from None
    return _checked_manifest(manifest, path)


def _checked_manifest(manifest, path):
    files = manifest.get("files") if isinstance(manifest, dict) else None
    run_id = manifest.get("run_id") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != RUN_FORMAT
        or manifest.get("status") not in STATUSES
        or not isinstance(files, list)
        or not (run_id is None or (isinstance(run_id, str) and re.fullmatch("[0-9a-f]{32}",
                                                                            run_id)))
    ):
        raise RunFolderError(f"{path} is not a run manifest of this course")
    foreign = [repr(name) if not isinstance(name, str) else name
               for name in files if name not in OWN_NAMES]
    if foreign:
        raise RunFolderError(
            f"{path} lists {', '.join(foreign[:3])}, not a file the course writes; the course "
            "removes only its own files, so this folder is left as it is: move the run "
            "elsewhere or choose another folder"
        )
    return manifest


def _own_temporaries(folder, manifest):
    """The leftovers of killed writes of the run in ``folder`` (``manifest`` None: no
    manifest yet), as the rules of the module's docstring define them."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            match = _TMP.match(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            name, run_id = match.group("name"), match.group("id")
            if manifest is not None and manifest.get("run_id") == run_id and (
                    name == MANIFEST or name in manifest["files"]):
                found.append(Path(entry.path))
            elif name == MANIFEST and _is_first_manifest(Path(entry.path), run_id):
                found.append(Path(entry.path))
    return sorted(found)


def _is_first_manifest(path, run_id):
    try:
        manifest = _checked_manifest(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return manifest.get("run_id") == run_id


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


def _is_legacy_run(path, entries):
    """A folder of a version before the manifest: a checkpoint and a run's metrics.json,
    nothing but the files such a run wrote."""
    if not {CHECKPOINT, METRICS} <= set(entries) or not set(entries) <= LEGACY_FILES:
        return False
    try:
        metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(metrics, dict) and "history" in metrics and "epochs_done" in metrics


def check_new(folder: str | os.PathLike, overwrite: bool = False,
              locked: bool = False) -> list[Path]:
    """Check ``folder`` as the output of a new run, writing nothing (but a probe).

    Returns the paths ``--overwrite`` must remove. RunFolderError (one line) when the path
    or one of its parents is a file, the place is not writable, a running process holds
    the folder's lock (``locked``: this process holds it), the folder holds a run and
    ``overwrite`` is false (or holds other files besides it), or the folder is not empty
    and holds no run.
    """
    path = Path(folder)
    try:
        return _check_new(path, overwrite, locked)
    except OSError as err:  # a name too long, a folder that cannot be read, ...
        raise RunFolderError(f"--out {path}: {err.strerror or err}") from None


def _check_new(path, overwrite, locked):
    existing = _first_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise RunFolderError(f"--out {path} {where}, not a folder")
    _check_writable(existing, path)
    if existing != path:
        return []
    if not locked:  # only a probe; Run.create locks it for good
        probe = _lock_folder(path, "--out")
        if probe is not None:
            os.close(probe)
    manifest = read_manifest(path) if (path / MANIFEST).is_file() else None
    leftovers = {p.name for p in _own_temporaries(path, manifest)}
    entries = sorted(name for name in os.listdir(path) if name not in leftovers)
    if not entries:
        return sorted(path / name for name in leftovers)
    if manifest is not None:
        owned = {MANIFEST, *manifest["files"]}
    elif _is_legacy_run(path, entries):
        owned = set(LEGACY_FILES)
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
    names = sorted((set(entries) & owned - {MANIFEST}) | leftovers)
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
    def create(cls, folder: str | os.PathLike, overwrite: bool = False,
               run_id: str | None = None) -> Run:
        """Start a new run in ``folder``: lock it, check it again under the lock, and (with
        ``overwrite``) remove the previous run's files. ``run_id``: :func:`run_id_for` the
        run's flags (default: a fresh random id)."""
        check_new(folder, overwrite)  # nothing is created in a folder that cannot take it
        run = cls(folder, {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION,
                           "run_id": run_id or new_run_id(), "status": "running",
                           "files": []})
        try:
            run.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"--out {folder}: cannot create it ({err.strerror})") from None
        run._lock = _lock_folder(run.folder, "--out")
        try:
            remove_files(check_new(folder, overwrite, locked=True))
            run._write_manifest()
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def reopen(cls, folder: str | os.PathLike) -> Run:
        """Open the run in ``folder`` to continue it: RunFolderError if there is none."""
        folder = Path(folder)
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a folder"
            raise RunFolderError(f"--resume {folder}: the folder {what}")
        run = cls(folder, {})
        run._lock = _lock_folder(folder, "--resume")
        try:
            if not (folder / MANIFEST).is_file():
                raise RunFolderError(f"--resume {folder}: no run there (no {MANIFEST})")
            run.manifest = read_manifest(folder)
            remove_files(_own_temporaries(folder, run.manifest))
            if not (folder / STATE).is_file():
                raise RunFolderError(
                    f"--resume {folder}: the run saved no state to continue from (no {STATE})"
                )
        except BaseException:
            run.close()
            raise
        return run

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

    @property
    def run_id(self) -> str | None:
        return self.manifest.get("run_id")

    def set_status(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.manifest["status"] = status
        self._write_manifest()

    def adopt_id(self) -> None:
        """Give a run of manifest format 1 (before run ids) an id, from now on."""
        if self.run_id is None:
            self.manifest["run_id"] = new_run_id()
            self.manifest["format_version"] = RUN_FORMAT_VERSION
            self._write_manifest()

    def _tmp(self, name):
        return temporary_for(self.folder, name, self.run_id) if self.run_id else None

    def _write_manifest(self):
        text = json.dumps(self.manifest, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.folder / MANIFEST, text, tmp=self._tmp(MANIFEST))

    def expect(self, *names: str) -> None:
        """Record ``names`` in the manifest before the files are written (only the course's
        own names: ValueError for another)."""
        unknown = [name for name in names if name not in OWN_NAMES]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} is not a run file of the course; a new "
                             "figure's name goes into vae_from_scratch.course.run.FIGURES")
        new = [name for name in names if name not in self.manifest["files"]]
        if new:
            self.manifest["files"] = sorted({*self.manifest["files"], *new})
            self._write_manifest()

    def write_json(self, name: str, obj: Any) -> Path:
        self.expect(name)
        if isinstance(obj, dict) and self.run_id:
            obj = {**obj, "run_id": self.run_id}
        text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
        return atomic_write_text(self.folder / name, text, tmp=self._tmp(name))

    def write_figures(self, figures: dict) -> list[Path]:
        """Write {name: Figure} as ``name.png`` (recorded in the manifest first) and close
        them; returns the paths."""
        self.expect(*(f"{name}.png" for name in figures))
        return save_figures(figures, self.folder, tmp_for=self._tmp)

    def save(self, vae: VAE, state: dict[str, Any], metadata: dict[str, Any],
             checkpoint_metadata: dict[str, Any]) -> None:
        """Save the resume point (``state.safetensors``: the params, ``state`` tree and
        ``metadata``), then the model (``checkpoint.safetensors``), both with the run's
        id. Each write is atomic; resuming reads only the state, so a crash between the
        two costs nothing."""
        self.expect(STATE, CHECKPOINT)
        bound = {"run_id": self.run_id} if self.run_id else {}
        save_state(self.folder / STATE, vae, state, {**metadata, **bound},
                   tmp=self._tmp(STATE))
        save_checkpoint(self.folder / CHECKPOINT, vae, {**checkpoint_metadata, **bound},
                        tmp=self._tmp(CHECKPOINT))

    def load(self) -> tuple[dict[str, np.ndarray], VAEConfig, Any, dict]:
        """(params, VAEConfig, state tree, metadata) of the saved resume point, checked to
        belong to this run (its id, and the checkpoint's)."""
        where = f"--resume {self.folder}"
        try:
            params, config, state, info = read_state(self.folder / STATE)
        except (CheckpointError, FileNotFoundError) as err:
            raise RunFolderError(f"{where}: {err}") from None
        if self.run_id is not None:
            self._check_id(STATE, info.get("run_id"))
            if (self.folder / CHECKPOINT).exists():
                try:
                    checkpoint_id = read_checkpoint(self.folder / CHECKPOINT)[2].get("run_id")
                except (CheckpointError, FileNotFoundError) as err:
                    raise RunFolderError(f"{where}: {err}") from None
                self._check_id(CHECKPOINT, checkpoint_id)
        return params, config, state, info

    def _check_id(self, name, found):
        if found != self.run_id:
            origin = "carries no run id" if found is None else f"is from run {found[:8]}"
            raise RunFolderError(
                f"--resume {self.folder}: {name} {origin}, not from this folder's run "
                f"{self.run_id[:8]} ({MANIFEST}); a run's files must come from that run: "
                "put its own file back, or start a new run"
            )


def _json_default(value):
    """json.dumps' ``default`` for a run's JSON files: paths as strings, NumPy scalars as
    in checkpoint headers."""
    return str(value) if isinstance(value, Path) else json_default(value)


def _lock_folder(folder, flag):
    """An exclusive lock on the folder (released when its descriptor closes), or None
    where locks are not available. RunFolderError when another process holds it."""
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
        raise RunFolderError(
            f"{flag} {folder}: a run is training there now (the folder is in use by another "
            "vae-course process); wait for it to end, stop it (Ctrl-C), or choose another "
            "folder"
        ) from None
    return fd


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks training to stop at the next step boundary.

    Call the object to ask whether a stop was requested (``fit(..., stop=request)``);
    :attr:`signal` is the first signal's number. A second signal raises KeyboardInterrupt
    at once. Once :attr:`finishing` is set (every epoch done), the first signal only prints
    that the final outputs are being finished. Used as a context manager, it installs its
    handler for both signals on entry and restores the previous ones on exit (main thread
    only).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        self.finishing = False
        self._previous: dict[int, Any] = {}

    def __call__(self):
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        if self.finishing:
            note = ("vae-course train: training is done; finishing the IWAE estimate and the "
                    "figures (press Ctrl-C again to skip them)\n")
            try:
                sys.stderr.write(note)
                sys.stderr.flush()
            except (RuntimeError, OSError, AttributeError):  # stderr busy (reentrant) or gone
                with contextlib.suppress(OSError):
                    os.write(2, note.encode())

    def __enter__(self):
        for signum in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def exit_status(signum: int | None) -> int:
    """The exit status of a process stopped by ``signum``: 128 + its number (130 for
    SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum if signum is not None else signal.SIGINT)


def versions() -> dict[str, str]:

    """The versions that decide the last bits of a run's numbers."""
    import numpy

    out = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out
