"""Tests for vae_from_scratch.checkpoint: safe, exact, atomic save and load."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from vae_from_scratch import VAE
from vae_from_scratch import checkpoint as ckpt
from vae_from_scratch.checkpoint import CheckpointError, load_vae, read_checkpoint, save_checkpoint

pytestmark = pytest.mark.lesson05

D = 6

CONFIGS = {
    "bernoulli-f32": dict(),
    "bernoulli-f64-tanh": dict(activation="tanh", dtype=np.float64, hidden_dims=(7, 5)),
    "gaussian-fixed": dict(likelihood="gaussian", obs_var=0.3, beta=0.5),
    "gaussian-learned": dict(likelihood="gaussian", obs_var="learned", dtype=np.float64),
    "mixture": dict(prior="mixture", n_components=3, kl="monte_carlo"),
    "no-hidden": dict(hidden_dims=()),
}


def _vae(name="bernoulli-f32", seed=0):
    kwargs = dict(input_dim=D, hidden_dims=(5,), latent_dim=2, seed=seed)
    kwargs.update(CONFIGS[name])
    vae = VAE(**kwargs)
    rng = np.random.default_rng(seed + 1)
    for value in vae.params.values():  # not the init values: anything a run could reach
        value += rng.standard_normal(value.shape).astype(value.dtype)
    return vae


def _header(path):
    """Parse a safetensors file by hand: 8-byte little-endian length, then a JSON header."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    return raw, n, header


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_is_exact(tmp_path, name):
    vae = _vae(name)
    path = save_checkpoint(tmp_path / "model.safetensors", vae, metadata={"epoch": 7})
    assert path == tmp_path / "model.safetensors"
    loaded = load_vae(path)
    assert loaded.config == vae.config
    assert list(loaded.params) == list(vae.params)
    for key, value in vae.params.items():
        assert loaded.params[key].dtype == value.dtype, key
        assert loaded.params[key].tobytes() == value.tobytes(), key
    # the same model: the same loss on the same batch and noise
    x = np.random.default_rng(0).random((3, D)).astype(vae.dtype)
    eps = np.random.default_rng(1).standard_normal((3, 2)).astype(vae.dtype)
    assert loaded.loss(x, eps) == vae.loss(x, eps)
    params, config, metadata = read_checkpoint(path)
    assert metadata == {"epoch": 7}
    assert config == vae.config


def test_loaded_params_are_independent_of_the_saved_model(tmp_path):
    vae = _vae()
    path = save_checkpoint(tmp_path / "m.safetensors", vae)
    loaded = load_vae(path)
    loaded.params["enc.0.W"][0, 0] += 1.0
    assert loaded.params["enc.0.W"][0, 0] != vae.params["enc.0.W"][0, 0]
    assert load_vae(path).params["enc.0.W"][0, 0] == vae.params["enc.0.W"][0, 0]


def test_file_is_safetensors_with_the_config_in_its_header(tmp_path):
    vae = _vae("mixture")
    path = save_checkpoint(tmp_path / "m.safetensors", vae, metadata={"backend": "numpy"})
    raw, n, header = _header(path)
    meta = header.pop("__metadata__")
    assert meta["format"] == "vae-from-scratch"
    assert json.loads(meta["config"]) == vae.config.to_dict()
    assert json.loads(meta["metadata"]) == {"backend": "numpy"}
    assert set(header) == set(vae.params)
    # every tensor's bytes sit where the header says, in little-endian order
    for key, entry in header.items():
        assert entry["dtype"] == "F32"
        assert entry["shape"] == list(vae.params[key].shape)
        start, end = entry["data_offsets"]
        blob = raw[8 + n + start : 8 + n + end]
        np.testing.assert_array_equal(
            np.frombuffer(blob, dtype="<f4").reshape(entry["shape"]), vae.params[key]
        )
    assert len(raw) == 8 + n + max(e["data_offsets"][1] for e in header.values())


def test_file_is_not_a_pickle_and_loading_never_unpickles(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", _vae())
    raw = path.read_bytes()
    assert raw[:1] != b"\x80"  # every pickle protocol >= 2 starts with PROTO
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    load_vae(path)


def test_a_pickle_file_is_rejected(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"enc.0.W": np.zeros((D, 5))}))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_vae(path)


def test_truncated_file_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _vae())
    raw = path.read_bytes()
    for cut in (len(raw) - 4, len(raw) // 2, 12, 3):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
            load_vae(bad)
        assert str(bad) in str(info.value)


def test_random_bytes_are_rejected(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_vae(path)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_vae(path)


def test_safetensors_file_from_elsewhere_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": np.zeros((2, 3), dtype=np.float32)}, str(path))
    with pytest.raises(CheckpointError, match="not a vae-from-scratch checkpoint"):
        load_vae(path)
    save_file({"weight": np.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="format='pt'"):
        load_vae(path)


def _write_raw(path, tensors, config, version="1"):
    save_file(
        tensors,
        str(path),
        metadata={"format": "vae-from-scratch", "format_version": version,
                  "config": config, "metadata": "{}"},
    )


def test_config_that_does_not_match_the_tensors_is_rejected(tmp_path):
    vae = _vae()
    other = VAE(D, (5,), 3)  # a latent size the tensors do not have
    path = tmp_path / "mismatch.safetensors"
    _write_raw(path, vae.params, json.dumps(other.config.to_dict()))
    with pytest.raises(CheckpointError, match="does not match its own configuration"):
        load_vae(path)
    learned = VAE(D, (5,), 2, likelihood="gaussian", obs_var="learned")
    _write_raw(path, vae.params, json.dumps(learned.config.to_dict()))
    with pytest.raises(CheckpointError, match=r"missing \['dec.log_var'\]"):
        load_vae(path)


def test_non_finite_tensor_is_rejected(tmp_path):
    vae = _vae()
    params = dict(vae.params)
    params["dec.out.b"] = params["dec.out.b"].copy()
    params["dec.out.b"][0] = np.nan
    path = tmp_path / "nan.safetensors"
    _write_raw(path, params, json.dumps(vae.config.to_dict()))
    with pytest.raises(CheckpointError, match="NaN"):
        load_vae(path)


@pytest.mark.parametrize(
    "config, message",
    [
        ("not json", "unreadable model configuration"),
        (json.dumps({"latent_dim": 0}), "unreadable model configuration"),
        (json.dumps({"colour": "blue"}), "unreadable model configuration"),
    ],
    ids=["not-json", "invalid-value", "unknown-key"],
)
def test_unreadable_config_is_rejected(tmp_path, config, message):
    path = tmp_path / "cfg.safetensors"
    _write_raw(path, _vae().params, config)
    with pytest.raises(CheckpointError, match=message):
        load_vae(path)


def test_other_format_version_is_rejected(tmp_path):
    vae = _vae()
    path = tmp_path / "v2.safetensors"
    _write_raw(path, vae.params, json.dumps(vae.config.to_dict()), version="2")
    with pytest.raises(CheckpointError, match="format version '2'"):
        load_vae(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_vae(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError):
        load_vae(tmp_path)  # a folder is not a checkpoint either


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path):
    first, second = _vae(seed=0), _vae(seed=1)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, first)
    save_checkpoint(path, second)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert load_vae(path).params["enc.0.W"].tobytes() == second.params["enc.0.W"].tobytes()


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _vae(seed=0))
    before = path.read_bytes()

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x10\x00")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _vae(seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_creates_nested_folders(tmp_path):
    path = tmp_path / "runs" / "a" / "b" / "model.safetensors"
    save_checkpoint(path, _vae("gaussian-learned"))
    assert path.is_file()
    assert load_vae(str(path)).config.obs_var == "learned"  # a str path works too


def test_format_constants():
    assert ckpt.FORMAT == "vae-from-scratch" and ckpt.FORMAT_VERSION == "1"
