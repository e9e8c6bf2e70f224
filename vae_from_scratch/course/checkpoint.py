"""Checkpoints: one safe file format shared by the NumPy and PyTorch backends.

A checkpoint is a safetensors file: an 8-byte little-endian header length, a JSON header,
then the raw little-endian bytes of every tensor. Nothing in it can run code when loaded
(unlike pickle). The header's ``__metadata__`` holds the model configuration, so a
checkpoint rebuilds its model by itself, and two SHA-256 checksums:

* ``data_sha256`` of the tensor bytes, in file order;
* ``header_sha256`` of the rest of the header: the tensor table (names, dtypes, shapes,
  offsets), the configuration, the metadata and ``data_sha256``.

Both are verified on load, and the header must be byte for byte the one this module
writes, so a flipped byte anywhere, a truncated file, or an edited field (a beta, an
activation, a dtype tag) is a :class:`CheckpointError`, never a different model. The
file is written here, not by the safetensors library, so that the same model always gives
the same bytes (sorted keys, tensors in a fixed order); it is read back with the
safetensors library, an independent reader of the same format. Files are written
atomically (:mod:`vae_from_scratch.course.files`).

The same format, with ``format`` set to ``vae-from-scratch-state``, holds the state a run
needs to resume (:func:`save_state`, :func:`read_state`): the parameters plus a tree of
JSON values and arrays (optimizer moments, random-generator states, the loop's position).

Format 1 files (before the checksums) are still read, without verification.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from vae_from_scratch.config import VAEConfig
from vae_from_scratch.course.files import atomic_write_bytes
from vae_from_scratch.vae import VAE, check_params

FORMAT = "vae-from-scratch"
STATE_FORMAT = "vae-from-scratch-state"
FORMAT_VERSION = "2"
LEGACY_VERSION = "1"  # written by safetensors itself, without checksums; still read
_LEGACY_KEYS = {"format", "format_version", "config", "metadata"}

#: The safetensors library refuses headers above 100 MB; so does this module.
MAX_HEADER_BYTES = 100_000_000
#: The largest tensor a configuration may ask for (elements). The course's largest is
#: 784 x 4096; a configuration beyond this is damage, not a model (latent_dim = 10**12).
MAX_TENSOR_ELEMENTS = 2**28

# safetensors' dtype tags for the NumPy dtypes the package stores
_TAGS = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("u", 8): "U64",
    ("u", 4): "U32",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}
_TENSOR_KEY = "$tensor"  # placeholder for an array inside a state tree


class CheckpointError(ValueError):
    """The file is not a readable checkpoint of this project, or does not fit its model."""


# --- writing ------------------------------------------------------------------------------


def _json(obj, default=None):
    """The one JSON spelling used in headers: sorted keys, no spaces, ASCII only.
    ``default``: json.dumps' (None: only JSON's own types)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=default)


def json_default(value: Any) -> bool | int | float:
    """json.dumps' ``default``: NumPy scalars as Python numbers (also for run.py's JSON)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _metadata_json(obj, what):
    try:
        return _json(obj, default=json_default)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be JSON-serializable: {err}") from None


def _tag(dtype):
    tag = _TAGS.get((dtype.kind, dtype.itemsize))
    if tag is None:
        raise ValueError(f"cannot store arrays of dtype {dtype} in a checkpoint")
    return tag


def _header_bytes(header):
    text = _json(header).encode("ascii")
    return text + b" " * (-len(text) % 8)  # pad to 8 bytes, as safetensors does


def _header_digest(table, meta):
    rest = {k: v for k, v in meta.items() if k != "header_sha256"}
    return hashlib.sha256(_json({"metadata": rest, "tensors": table}).encode("ascii")).hexdigest()


def encode_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The bytes of a checksummed safetensors file: ``tensors`` name -> array, ``metadata``
    name -> str. Deterministic: the same arrays and metadata give the same bytes."""
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        a = np.asarray(value)
        _tag(a.dtype)
        arrays[name] = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
    # widest dtypes first, so that every tensor starts aligned to its item size
    order = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))
    table, chunks, offset = {}, [], 0
    data_hash = hashlib.sha256()
    for name in order:
        a = arrays[name]  # C-contiguous: its buffer is its bytes, used without a copy
        table[name] = {
            "dtype": _tag(a.dtype),
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        chunks.append(a)
        data_hash.update(a)
        offset += a.nbytes
    meta = {**metadata, "format_version": FORMAT_VERSION, "data_sha256": data_hash.hexdigest()}
    if not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("safetensors metadata values must be strings")
    meta["header_sha256"] = _header_digest(table, meta)
    header = _header_bytes({"__metadata__": meta, **table})
    return b"".join([struct.pack("<Q", len(header)), header, *chunks])


def _write(path, blob):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, blob)


def save_checkpoint(path: str | os.PathLike, model: Any,
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (params and config) to ``path`` atomically; returns the path.

    ``model``: a NumPy :class:`~vae_from_scratch.vae.VAE`, or a
    :class:`~vae_from_scratch.torch_vae.TorchVAE` (its parameters are copied to the host;
    the metadata then says ``backend: "torch"`` unless it says otherwise). Either backend
    reads the file back. ``metadata``: extra JSON-serializable facts (epoch, backend,
    metrics) stored in the header."""
    if hasattr(model, "to_numpy"):  # a TorchVAE
        vae, metadata = model.to_numpy(), {"backend": "torch", **(metadata or {})}
    else:
        vae = model
    header = {
        "format": FORMAT,
        "config": _json(vae.config.to_dict()),
        "metadata": _metadata_json(metadata or {}, "metadata"),
    }
    return _write(path, encode_safetensors(vae.params, header))


# --- reading ------------------------------------------------------------------------------


def _folder_hint(path):
    inside = path / "checkpoint.safetensors"
    return f" (did you mean {inside}?)" if inside.is_file() else ""


def _read_header(path):
    """(raw header bytes, parsed header) read by hand, with every size bounded first."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", prefix)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"its header length ({n} bytes) does not fit the file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"its header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError("its header is not a JSON object")
    return raw, header


def _read_verified(path, fmt):
    """Read and verify a file of format ``fmt`` -> (metadata dict of str, tensors dict)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{_folder_hint(path)}")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    corrupt = f"{path} is not a readable safetensors checkpoint (corrupt or truncated?)"
    try:
        raw, header = _read_header(path)
    except CheckpointError as err:
        raise CheckpointError(f"{corrupt}: {err}") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{corrupt}: its metadata is not a table of strings")
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    if meta.get("format") != fmt:
        raise CheckpointError(
            f"{path} is a safetensors file but not a {fmt} checkpoint "
            f"(its header has format={meta.get('format')!r})"
        )
    version = meta.get("format_version")
    verified = version == FORMAT_VERSION
    if verified:
        if raw != _header_bytes(header):
            raise CheckpointError(f"{corrupt}: its header is not the one this format writes")
        if meta.get("header_sha256") != _header_digest(table, meta):
            raise CheckpointError(
                f"{path} is damaged or was edited: the checksum of its header (configuration, "
                "metadata, tensor names, dtypes and shapes) does not match"
            )
    elif version == LEGACY_VERSION and fmt == FORMAT:
        if set(meta) - _LEGACY_KEYS:
            raise CheckpointError(
                f"{corrupt}: it claims format version 1 but carries fields of a later version"
            )
    else:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this version reads "
            f"{FORMAT_VERSION!r} (and {LEGACY_VERSION!r})"
        )
    try:
        with safe_open(str(path), framework="np") as f:
            if (f.metadata() or {}) != meta or set(f.keys()) != set(table):
                raise CheckpointError(f"{corrupt}: two readings of its header disagree")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError, KeyError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{corrupt}: {err}") from err
    if verified:
        digest = hashlib.sha256()
        for name in sorted(table, key=lambda n: table[n]["data_offsets"]):
            a = tensors[name]
            digest.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")))
        if digest.hexdigest() != meta.get("data_sha256"):
            raise CheckpointError(
                f"{path} is damaged: the checksum of its tensor data does not match"
            )
    return meta, tensors


def _largest_sizes(value, out):
    """Collect every integer in a configuration (nested lists and dicts included)."""
    if isinstance(value, dict):
        for v in value.values():
            _largest_sizes(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _largest_sizes(v, out)
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(value)
    return out


def _config(meta, path):
    """The configuration in a verified header, refused if two of its sizes make a tensor
    larger than MAX_TENSOR_ELEMENTS. The file's tensors are read by then (the file's size
    bounds them); all that the configuration sizes comes after it: checking the parameters
    against it (:func:`_params`) and any model built from it."""
    try:
        config = VAEConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an unreadable model configuration: {err}") from err
    sizes = sorted(_largest_sizes(config.to_dict(), []))[-2:]
    product = sizes[0] * sizes[-1] if sizes else 0  # Python ints: no overflow
    if product > MAX_TENSOR_ELEMENTS:
        raise CheckpointError(
            f"{path} has a configuration with sizes {sizes[0]} and {sizes[-1]}: one tensor of "
            f"{product:.3g} numbers, beyond the {MAX_TENSOR_ELEMENTS:,} any course model needs; "
            "the file is damaged or not a course checkpoint"
        )
    return config


def _params(tensors, config, path):
    try:
        return check_params(tensors, config)
    except ValueError as err:
        raise CheckpointError(f"{path} does not match its own configuration: {err}") from err
    except MemoryError:
        raise CheckpointError(
            f"{path} has a configuration too large for this machine's memory"
        ) from None


def _loads(meta, key, path):
    try:
        return json.loads(meta.get(key, "{}"))
    except ValueError as err:
        raise CheckpointError(f"{path} has unreadable {key}: {err}") from err


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], VAEConfig, dict]:
    """Read ``path`` -> (params dict, VAEConfig, metadata dict), checking every piece."""
    meta, tensors = _read_verified(path, FORMAT)
    config = _config(meta, path)
    metadata = _loads(meta, "metadata", path)
    return _params(tensors, config, path), config, metadata


def load_vae(path: str | os.PathLike) -> VAE:
    """Rebuild the NumPy :class:`VAE` stored in ``path``."""
    params, config, _ = read_checkpoint(path)
    return VAE(config=config, params=params)


def load_torch_vae(path: str | os.PathLike, device: Any = None, dtype: Any = None) -> Any:
    """Rebuild a :class:`~vae_from_scratch.torch_vae.TorchVAE` from a checkpoint written by
    either backend. The device is checked (``resolve_device``) before the file is read."""
    from vae_from_scratch.torch_vae import TorchVAE, resolve_device

    device = resolve_device(device)
    params, config, _ = read_checkpoint(path)
    return TorchVAE(config=config, params=params, device=device, dtype=dtype)


# --- the state of a run -------------------------------------------------------------------


def _flatten(tree, prefix, tensors):
    """Arrays in ``tree`` -> entries of ``tensors`` named by their path; returns the tree
    with each array replaced by {"$tensor": name}."""
    if isinstance(tree, np.ndarray):
        tensors[prefix] = tree
        return {_TENSOR_KEY: prefix}
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            if not isinstance(key, str) or "/" in key or key == _TENSOR_KEY:
                raise ValueError(f"state keys must be strings without '/', got {key!r}")
            out[key] = _flatten(value, f"{prefix}/{key}", tensors)
        return out
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(tree)]
    return tree


def _unflatten(tree, tensors):
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR_KEY}:
            return tensors[tree[_TENSOR_KEY]]
        return {k: _unflatten(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, tensors) for v in tree]
    return tree


def save_state(path: str | os.PathLike, vae: VAE, state: dict[str, Any],
               metadata: dict[str, Any] | None = None) -> Path:
    """Write what a run needs to resume, atomically: ``vae``'s params and config, ``state``
    (a tree of str-keyed dicts, lists, JSON values and NumPy arrays) and ``metadata``."""
    tensors = {f"param/{name}": value for name, value in vae.params.items()}
    tree = _flatten(state, "state", tensors)
    header = {
        "format": STATE_FORMAT,
        "config": _json(vae.config.to_dict()),
        "state": _metadata_json(tree, "state"),
        "metadata": _metadata_json(metadata or {}, "metadata"),
    }
    return _write(path, encode_safetensors(tensors, header))


def read_state(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], VAEConfig, Any, dict]:

    """Read a file of :func:`save_state` -> (params, VAEConfig, state tree, metadata)."""
    meta, tensors = _read_verified(path, STATE_FORMAT)
    config = _config(meta, path)
    params = {k[len("param/") :]: v for k, v in tensors.items() if k.startswith("param/")}
    try:
        state = _unflatten(_loads(meta, "state", path), tensors)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} has an unreadable state: {err}") from err
    return _params(params, config, path), config, state, _loads(meta, "metadata", path)
