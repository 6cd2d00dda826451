"""Denoising training: corrupt normal slices with coarse noise and learn to return the clean slice.

Kascenas et al. (MIDL 2022) found that an auto-encoder trained to remove *coarse*, spatially
correlated noise from normal brain slices beat VAEs and other reconstruction methods on BraTS:
noise drawn on a low-resolution grid and upsampled looks like blob-shaped intensity changes, the
same scale as lesions, so the network learns to replace a blob that does not belong with the
normal anatomy around it, which is exactly what a reconstruction-error map needs. Plain pixel
noise would only teach it to smooth. The corruption touches the brain only (the slice's non-zero
voxels): outside it a scan is zero at test time as well.

Settings (``card["training"]["denoising"]``):
- ``std``: standard deviation of the noise, in units of the normalised intensity (0.2 in the paper);
- ``grid_px``: side of the square grid the noise is drawn on (16 px for their 128-px slices).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from .augmentation import merged_settings

DEFAULT_DENOISING: Dict[str, Any] = {"std": 0.2, "grid_px": 16}


def denoising_settings(overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The denoising settings with ``overrides`` applied; refuses unknown keys and meaningless values."""
    settings = merged_settings(DEFAULT_DENOISING, overrides, "denoising")
    settings["std"], settings["grid_px"] = float(settings["std"]), int(settings["grid_px"])
    if settings["std"] <= 0 or settings["grid_px"] < 1:
        raise ValueError(f"denoising needs a positive noise std and grid, not {settings}")
    return settings


def coarse_noise(x: torch.Tensor, std: float, grid_px: int, generator: Optional[torch.Generator] = None
                 ) -> torch.Tensor:
    """``x`` plus Gaussian noise drawn on a ``grid_px`` square grid, upsampled bilinearly, inside x > 0.

    ``x`` is a ``(batch, c, H, W)`` batch; the noise is drawn on the CPU from ``generator`` (so a
    seeded run is the same on any device) and moved to ``x``'s device. A slice's context channels
    get the same noise as the slice: a blob that spans neighbouring slices, as a lesion does.
    """
    grid = torch.randn((x.shape[0], 1, grid_px, grid_px), generator=generator, dtype=torch.float32)
    noise = F.interpolate(grid.to(x.device), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return x + float(std) * noise * (x > 0)
