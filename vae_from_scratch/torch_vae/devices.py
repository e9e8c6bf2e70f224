"""Devices and dtypes for the PyTorch mirror: which devices this machine has, and one-line
errors that name them when a device is asked for that it lacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_version() -> str:
    """The version of the PyTorch in use."""
    return torch.__version__


def default_device() -> torch.device:
    """The fastest device present: CUDA, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices() -> list[str]:
    """The devices torch can use here, as names: ['cpu'], then 'cuda:0'..., 'mps'."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` (a name such as 'cpu', 'cuda', 'cuda:1', 'mps', or a torch.device) as a
    torch.device this machine has; None means :func:`default_device`.

    Raises ValueError with one line that says why and names the devices this machine
    has, for a typo ('foo'), a GPU that is not there, or a device type the course does
    not run on.
    """
    if device is None:
        return default_device()
    have = f"this machine has: {', '.join(available_devices())}"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}; {have}") from None
    else:
        raise ValueError(f"device must be a name such as 'cpu' or 'cuda', got {device!r}")
    name = str(device)
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this PyTorch build has no CUDA support"
                if torch.version.cuda is None
                else "PyTorch finds no CUDA GPU"
            )
            raise ValueError(f"device {name!r} is not available: {why}; {have}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} is not available; {have}")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {name!r} is not available: Apple's MPS needs Apple silicon and a "
                f"macOS build of PyTorch; {have}"
            )
        return dev
    raise ValueError(f"device {name!r} is not one the course runs on; {have}")


def dtype_name(dtype: Any) -> str:
    """'float32' or 'float64' from a torch dtype, NumPy dtype or name."""
    if isinstance(dtype, torch.dtype):
        for name, value in TORCH_DTYPES.items():
            if value == dtype:
                return name
        raise ValueError(f"unsupported dtype {dtype}; expected float32 or float64")
    name = np.dtype(dtype).name
    if name not in TORCH_DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; expected float32 or float64")
    return name


def check_device_dtype(device: torch.device, dtype: torch.dtype) -> None:
    """ValueError for a dtype the device lacks (float64 on Apple's MPS)."""
    if device.type == "mps" and dtype == torch.float64:
        raise ValueError("Apple's MPS device has no float64; use dtype=torch.float32 or the CPU")
