"""Cutting a volume into model-sized slices along one axis, and putting slice maps back.

Each slice is padded (centred) to a physically square field of view, so anatomy keeps its aspect
ratio whatever the in-plane spacing, then resized to ``size`` x ``size``. The inverse resizes back
and crops the same padding, so a map lands on exactly the voxels it was computed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

#: Slice axis name -> axis of a (z, y, x) array of a canonically oriented volume.
AXIS_INDEX = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass(frozen=True)
class SliceLayout:
    """How a volume was cut, to undo it: axis, the in-plane shape, padding and the padded shape."""

    axis: int
    shape: Tuple[int, int]
    padding: Tuple[Tuple[int, int], Tuple[int, int]]
    size: int

    @property
    def padded_shape(self) -> Tuple[int, int]:
        (top, bottom), (left, right) = self.padding
        return self.shape[0] + top + bottom, self.shape[1] + left + right


def plan_layout(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], axis: str, size: int) -> SliceLayout:
    """The layout that cuts a volume of ``shape_zyx`` along ``axis`` into ``size``-square slices."""
    index = AXIS_INDEX[axis]
    in_plane = [d for d in range(3) if d != index]
    height, width = (int(shape_zyx[d]) for d in in_plane)
    sy, sx = (float(spacing_zyx[d]) for d in in_plane)
    extent = max(height * sy, width * sx)
    padded = (max(height, int(round(extent / sy))), max(width, int(round(extent / sx))))
    padding = tuple(((p - n) // 2, p - n - (p - n) // 2) for p, n in zip(padded, (height, width)))
    return SliceLayout(axis=index, shape=(height, width), padding=padding, size=size)  # type: ignore[arg-type]


def _resize(stack: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    # torch's antialiased bilinear resize, imported on use: reading and writing volumes needs no torch.
    import torch
    from torch.nn import functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    if tuple(tensor.shape[-2:]) != tuple(shape):
        tensor = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return tensor[:, 0].numpy()


def volume_to_slices(volume_zyx: np.ndarray, layout: SliceLayout) -> np.ndarray:
    """``(n, 1, size, size)`` float32 slices of a volume, in the order of ``layout.axis``."""
    stack = np.moveaxis(volume_zyx, layout.axis, 0)
    padded = np.pad(stack.astype(np.float32, copy=False), ((0, 0), *layout.padding))
    return _resize(padded, (layout.size, layout.size))[:, None]


def slices_to_volume(slices: np.ndarray, layout: SliceLayout) -> np.ndarray:
    """Inverse of :func:`volume_to_slices`: a ``(z, y, x)`` float32 volume of the original shape."""
    padded = _resize(slices[:, 0], layout.padded_shape)
    (top, _), (left, _) = layout.padding
    height, width = layout.shape
    stack = padded[:, top:top + height, left:left + width]
    return np.ascontiguousarray(np.moveaxis(stack, 0, layout.axis))


def with_context(slices: np.ndarray, context: int, chosen: Optional[np.ndarray] = None) -> np.ndarray:
    """The network input for the ``chosen`` slices of one volume's ``(n, 1, h, w)`` stack (default: all).

    Each chosen slice comes with its ``context`` neighbours on either side as channels, in order,
    ``(m, 2 * context + 1, h, w)``; beyond the volume's first and last slice the edge slice repeats.
    With ``context`` 0 this is the plain stack (``slices[chosen]``), so slice-wise models see exactly
    what they always saw. Why one function: training, calibration and detection must build the
    context alike, and only from one volume (a cohort's shared batches never mix two scans' slices).
    """
    if context < 0:
        raise ValueError(f"context slices must be 0 or more, not {context}")
    if context == 0:
        return slices if chosen is None else slices[chosen]
    count = len(slices)
    if chosen is None:
        index = np.arange(count)
    else:
        chosen = np.asarray(chosen)
        index = np.flatnonzero(chosen) if chosen.dtype == bool else chosen.astype(int)
    neighbours = np.clip(index[:, None] + np.arange(-context, context + 1)[None, :], 0, count - 1)
    return np.ascontiguousarray(slices[neighbours, 0])
