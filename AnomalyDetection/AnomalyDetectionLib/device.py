"""Choosing the compute device: ``auto`` takes CUDA when present, ``cuda`` without CUDA is an error."""

from __future__ import annotations

import torch

from .catalog import DEVICES
from .errors import DeviceError


def resolve_device(device: str = "auto") -> torch.device:
    """A ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device '{device}': CUDA is not available (torch {torch.__version__}: {build}); "
                              "use --device cpu or auto")
        try:
            resolved = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"device '{device}' is not a valid CUDA device name") from None
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) present")
        return resolved
    raise DeviceError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)} (or cuda:N)")
