"""Checkpoints: one safe file format shared by the NumPy and PyTorch backends.

A checkpoint is a safetensors file: raw arrays plus a JSON header, nothing that can run
code when loaded (unlike pickle). The header's metadata holds the model configuration,
so a checkpoint rebuilds its model by itself. Files are written atomically: to a
temporary file in the same folder, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from vae_from_scratch.vae import VAE, VAEConfig, check_params

FORMAT = "vae-from-scratch"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """The file is not a readable checkpoint of this project, or does not fit its model."""


def save_checkpoint(path, vae, metadata=None):
    """Write ``vae`` (params and config) to ``path`` atomically. ``metadata``: extra
    JSON-serializable facts (epoch, backend, metrics) stored in the header."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(vae.config.to_dict()),
        "metadata": json.dumps(metadata or {}),
    }
    tensors = {name: np.ascontiguousarray(value) for name, value in vae.params.items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give it an ordinary file's mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint(path):
    """Read ``path`` -> (params dict, VAEConfig, metadata dict), checking every piece."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint (corrupt or truncated?): {err}"
        ) from err
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a {FORMAT} checkpoint "
            f"(its header has format={header.get('format')!r})"
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {header.get('format_version')!r}; "
            f"this version reads {FORMAT_VERSION!r}"
        )
    try:
        config = VAEConfig.from_dict(json.loads(header["config"]))
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an unreadable model configuration: {err}") from err
    try:
        params = check_params(tensors, config)
    except ValueError as err:
        raise CheckpointError(f"{path} does not match its own configuration: {err}") from err
    return params, config, metadata


def load_vae(path):
    """Rebuild the NumPy :class:`VAE` stored in ``path``."""
    params, config, _ = read_checkpoint(path)
    return VAE(config=config, params=params)
