"""Tests for vae_from_scratch.course.checkpoint: safe, exact, atomic save and load."""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from vae_from_scratch import VAE
from vae_from_scratch.course import checkpoint as ckpt
from vae_from_scratch.course.checkpoint import (
    CheckpointError,
    load_vae,
    read_checkpoint,
    read_state,
    save_checkpoint,
    save_state,
)

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
    path = tmp_path / "v3.safetensors"
    _write_raw(path, vae.params, json.dumps(vae.config.to_dict()), version="3")
    with pytest.raises(CheckpointError, match="format version '3'"):
        load_vae(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_vae(tmp_path / "nothing.safetensors")


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file$"):
        load_vae(tmp_path)
    save_checkpoint(tmp_path / "checkpoint.safetensors", _vae())
    with pytest.raises(CheckpointError, match="did you mean .*checkpoint.safetensors"):
        load_vae(tmp_path)  # a run folder: the message points at the file inside


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path):
    first, second = _vae(seed=0), _vae(seed=1)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, first)
    save_checkpoint(path, second)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert load_vae(path).params["enc.0.W"].tobytes() == second.params["enc.0.W"].tobytes()


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _vae(seed=0))
    before = path.read_bytes()

    def disk_full(fd):  # the bytes are written, then flushing them to disk fails
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _vae(seed=1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    run = tmp_path / "run"
    run.mkdir()
    (run / "m.safetensors").symlink_to(outside)
    save_checkpoint(run / "m.safetensors", _vae())
    assert outside.read_text() == "not yours"
    assert not (run / "m.safetensors").is_symlink()
    load_vae(run / "m.safetensors")


def test_saved_file_has_an_ordinary_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", _vae())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_creates_nested_folders(tmp_path):
    path = tmp_path / "runs" / "a" / "b" / "model.safetensors"
    save_checkpoint(path, _vae("gaussian-learned"))
    assert path.is_file()
    assert load_vae(str(path)).config.obs_var == "learned"  # a str path works too


def test_format_constants():
    assert ckpt.FORMAT == "vae-from-scratch" and ckpt.FORMAT_VERSION == "2"
    assert ckpt.LEGACY_VERSION == "1"


# --- format 2: deterministic bytes, checksums, and everything else refused ---------------


def _v2(path, tensors, config, metadata="{}"):
    """A well-formed, correctly checksummed file whose content the test chooses."""
    header = {"format": "vae-from-scratch", "config": config, "metadata": metadata}
    path.write_bytes(ckpt.encode_safetensors(tensors, header))
    return path


def test_format_1_checkpoints_still_load(tmp_path):
    vae = _vae("gaussian-learned")
    path = tmp_path / "old.safetensors"
    _write_raw(path, vae.params, json.dumps(vae.config.to_dict()))  # as format 1 wrote them
    loaded = load_vae(path)
    assert loaded.config == vae.config
    assert all(loaded.params[k].tobytes() == v.tobytes() for k, v in vae.params.items())


def test_identical_models_give_byte_identical_files(tmp_path):
    a = save_checkpoint(tmp_path / "a.safetensors", _vae("mixture"),
                        metadata={"epochs": 3, "backend": "numpy", "test_nelbo": 101.25})
    b = save_checkpoint(tmp_path / "b.safetensors", _vae("mixture"),
                        metadata={"test_nelbo": 101.25, "backend": "numpy", "epochs": 3})
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != save_checkpoint(tmp_path / "c.safetensors", _vae("mixture", 1)
                                             ).read_bytes()


def test_every_tensor_starts_aligned(tmp_path):
    path = save_state(tmp_path / "s.safetensors", _vae("bernoulli-f64-tanh"),
                      {"u8": np.zeros(3, np.uint8), "i64": np.arange(5), "f32": np.ones(3, "f4")})
    raw, n, header = _header(path)
    assert n % 8 == 0
    for entry in header.values():
        if isinstance(entry, dict) and "data_offsets" in entry:
            size = {"F64": 8, "I64": 8, "F32": 4, "U8": 1}[entry["dtype"]]
            assert entry["data_offsets"][0] % size == 0


def _flip(raw, position, mask):
    return raw[:position] + bytes([raw[position] ^ mask]) + raw[position + 1 :]


def test_fuzz_byte_flips_anywhere_are_rejected(tmp_path):
    """Flip one byte at a random place (header or data) by a random mask, many times."""
    path = save_checkpoint(tmp_path / "m.safetensors", _vae("gaussian-learned"),
                           metadata={"epochs": 2})
    raw = path.read_bytes()
    _, n, _ = _header(path)
    rng = np.random.default_rng(2024)
    bad = tmp_path / "bad.safetensors"
    regions = {"length": (0, 8), "header": (8, 8 + n), "data": (8 + n, len(raw))}
    for region, (lo, hi) in regions.items():
        for _ in range(8 if region == "length" else 150):
            position = int(rng.integers(lo, hi))
            mask = int(rng.integers(1, 256))
            bad.write_bytes(_flip(raw, position, mask))
            with pytest.raises(CheckpointError):
                load_vae(bad)
    # every single bit of the data section, one at a time, in a small tensor's bytes
    start = 8 + n
    for position in range(start, start + 64):
        for bit in range(8):
            bad.write_bytes(_flip(raw, position, 1 << bit))
            with pytest.raises(CheckpointError, match="checksum of its tensor data"):
                load_vae(bad)


def test_fuzz_whitespace_in_the_header_is_rejected(tmp_path):
    # A space of the padding turned into another whitespace character is still valid JSON
    # with the same content: only the byte-for-byte header check catches it.
    for k in range(8):  # a metadata length whose header needs padding
        path = save_checkpoint(tmp_path / "m.safetensors", _vae(), metadata={"pad": "x" * k})
        raw, n, _ = _header(path)
        padding = raw.rindex(b"}", 0, 8 + n) + 1
        if padding < 8 + n:
            break
    for char in b"\t\n\r":
        bad = tmp_path / "ws.safetensors"
        bad.write_bytes(raw[:padding] + bytes([char]) + raw[padding + 1 :])
        with pytest.raises(CheckpointError, match="not the one this format writes"):
            load_vae(bad)


def test_fuzz_truncations_and_extensions_are_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _vae("mixture"))
    raw = path.read_bytes()
    rng = np.random.default_rng(7)
    bad = tmp_path / "bad.safetensors"
    for cut in [*range(0, 16), *rng.integers(16, len(raw), 60), len(raw) - 1]:
        bad.write_bytes(raw[: int(cut)])
        with pytest.raises(CheckpointError):
            load_vae(bad)
    for extra in (b"\x00", b" ", b"\x00" * 8, raw[-16:]):
        bad.write_bytes(raw + extra)
        with pytest.raises(CheckpointError):
            load_vae(bad)


def _edit_header(raw, edit):
    """Parse the header, let ``edit`` change it, and write it back well-formed (fresh
    length, padding), keeping the stored checksums."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = ckpt._header_bytes(header)
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]


def _edit_config(key, value):
    def edit(header):
        config = json.loads(header["__metadata__"]["config"])
        config[key] = value
        header["__metadata__"]["config"] = ckpt._json(config)

    return edit


def _set_dtype(name, tag):
    def edit(header):
        header[name]["dtype"] = tag

    return edit


def _set_meta(key, value):
    def edit(header):
        header["__metadata__"][key] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _edit_config("beta", 0.5),
        _edit_config("activation", "tanh"),
        _edit_config("likelihood", "gaussian"),
        _edit_config("dtype", "float64"),
        _edit_config("kl", "monte_carlo"),
        _set_dtype("enc.0.W", "I32"),  # same item size: the offsets still fit
        _set_meta("metadata", '{"epochs":99}'),
        _set_meta("format_version", "1"),  # would switch the checks off, if allowed
        _set_meta("data_sha256", "0" * 64),
    ],
    ids=["beta", "activation", "likelihood", "dtype", "kl", "tensor-dtype", "metadata",
         "version-1", "data-sha"],
)
def test_fuzz_field_edits_are_rejected(tmp_path, edit):
    path = save_checkpoint(tmp_path / "m.safetensors", _vae(), metadata={"epochs": 2})
    bad = tmp_path / "edited.safetensors"
    bad.write_bytes(_edit_header(path.read_bytes(), edit))
    with pytest.raises(CheckpointError):
        load_vae(bad)


@pytest.mark.parametrize("key, value", [("latent_dim", 10**12), ("input_dim", 10**9),
                                        ("hidden_dims", [10**6, 10**6])])
def test_absurd_sizes_are_a_checkpoint_error_not_a_memory_error(tmp_path, key, value):
    vae = _vae()
    config = vae.config.to_dict()
    config[key] = value
    path = _v2(tmp_path / "huge.safetensors", vae.params, ckpt._json(config))
    with pytest.raises(CheckpointError, match="beyond the"):
        load_vae(path)


def test_a_checksummed_file_must_still_fit_its_configuration(tmp_path):
    vae = _vae()
    other = VAE(D, (5,), 3).config.to_dict()
    path = _v2(tmp_path / "m.safetensors", vae.params, ckpt._json(other))
    with pytest.raises(CheckpointError, match="does not match its own configuration"):
        load_vae(path)


def test_a_state_file_is_not_a_checkpoint_and_the_reverse(tmp_path):
    vae = _vae()
    state = save_state(tmp_path / "state.safetensors", vae, {"t": 1})
    model = save_checkpoint(tmp_path / "model.safetensors", vae)
    with pytest.raises(CheckpointError, match="format='vae-from-scratch-state'"):
        load_vae(state)
    with pytest.raises(CheckpointError, match="format='vae-from-scratch'"):
        read_state(model)


def test_state_round_trips_arrays_of_every_kind_and_json_values(tmp_path):
    vae = _vae("bernoulli-f64-tanh")
    state = {
        "optimizer": {"t": 7, "m": {"enc.0.W": np.arange(6.0).reshape(2, 3)}},
        "rng": {"bit_generator": "PCG64", "state": {"state": 2**127 + 3, "inc": 5}},
        "order": np.array([3, 0, 2, 1]),
        "generator": np.arange(16, dtype=np.uint8),
        "step": np.array(4.0, dtype=np.float32),  # 0-d
        "partial": np.zeros((0, 3)),
        "history": [1.5, 2.25],
        "empty": None,
    }
    path = save_state(tmp_path / "s.safetensors", vae, state, metadata={"epoch": 2})
    params, config, back, metadata = read_state(path)
    assert config == vae.config and metadata == {"epoch": 2}
    assert all(params[k].tobytes() == v.tobytes() for k, v in vae.params.items())
    assert back["rng"] == state["rng"] and back["history"] == state["history"]
    assert back["optimizer"]["t"] == 7 and back["empty"] is None
    for key in ("order", "generator", "step", "partial"):
        assert back[key].dtype == state[key].dtype and back[key].shape == state[key].shape
        assert back[key].tobytes() == state[key].tobytes()
    np.testing.assert_array_equal(back["optimizer"]["m"]["enc.0.W"],
                                  state["optimizer"]["m"]["enc.0.W"])
    assert save_state(tmp_path / "again.safetensors", vae, state,
                      metadata={"epoch": 2}).read_bytes() == path.read_bytes()


def test_state_files_are_verified_like_checkpoints(tmp_path):
    path = save_state(tmp_path / "s.safetensors", _vae(), {"order": np.arange(10)})
    raw = path.read_bytes()
    rng = np.random.default_rng(3)
    bad = tmp_path / "bad.safetensors"
    for _ in range(50):
        bad.write_bytes(_flip(raw, int(rng.integers(0, len(raw))), int(rng.integers(1, 256))))
        with pytest.raises(CheckpointError):
            read_state(bad)


def test_a_pickle_renamed_is_refused_without_unpickling(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(pickle.dumps({"enc.0.W": np.zeros((D, 5))}, protocol=2))
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    for read in (load_vae, read_state):
        with pytest.raises(CheckpointError, match="not a readable safetensors"):
            read(path)
