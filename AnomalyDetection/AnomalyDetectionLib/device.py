"""Choosing the compute device (``auto`` takes CUDA when present, ``cuda`` without CUDA is an error),
and falling back to smaller batches, then the CPU, when CUDA runs out of memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple, TypeVar

import torch

from .catalog import DEVICES
from .errors import DeviceError

T = TypeVar("T")


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


#: The exception torch raises when a CUDA allocation fails (``torch.OutOfMemoryError`` from 2.5 on).
CUDA_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


@dataclass
class ComputeRun:
    """Where a computation ran in the end, and what the memory fallback said about it."""

    batch_size: int
    device: str
    warnings: List[str] = field(default_factory=list)


def with_memory_fallback(run: Callable[[int], T], batch_size: int, device: torch.device,
                         move_to: Callable[[torch.device], None], what: str = "scoring") -> Tuple[T, ComputeRun]:
    """``run(batch_size)``, retried at half the batch size on a CUDA out-of-memory error, then on the CPU.

    Why: how much GPU memory a batch needs depends on the scan, the score and what else runs on
    the card; a cohort run should not die at the hundredth scan because one needed more. Each
    retry is said in :attr:`ComputeRun.warnings` (the detection report carries them). ``move_to``
    moves the computation (the model) to another device; the caller moves it back afterwards.
    """
    size, where, warnings = batch_size, device, []
    while True:
        try:
            return run(size), ComputeRun(size, str(where), warnings)
        except CUDA_OUT_OF_MEMORY:
            if where.type == "cuda":
                torch.cuda.empty_cache()
            if size > 1:
                smaller = max(1, size // 2)
                warnings.append(f"{what}: out of memory on {where} at batch size {size}; retried at {smaller}")
                size = smaller
                continue
            if where.type != "cpu":
                warnings.append(f"{what}: out of memory on {where} even at batch size 1; ran on the CPU "
                                f"at batch size {batch_size} instead")
                where, size = torch.device("cpu"), batch_size
                move_to(where)
                continue
            raise DeviceError(f"{what}: out of memory even at batch size 1 on the CPU") from None
