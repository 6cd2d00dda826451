"""Foreground masks and intensity normalisation.

Scanners have arbitrary intensity units; models need a fixed range. Percentiles of the
foreground (not the whole field of view, which is mostly air) set it, so one bright vessel or a
large background does not shift the scale.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError


def foreground_mask(image: sitk.Image, method: str = "otsu") -> sitk.Image:
    """Binary (uint8) foreground of ``image`` on its grid.

    ``otsu``: Otsu threshold, holes filled, largest connected component (the head or brain of a
    scan with a dark background). ``nonzero``: every voxel above the minimum (skull-stripped data
    whose background is exactly zero).
    """
    if method == "nonzero":
        array = sitk.GetArrayViewFromImage(image)
        mask = sitk.GetImageFromArray((array > array.min()).astype(np.uint8))
        mask.CopyInformation(image)
        return mask
    if method != "otsu":
        raise ValueError(f"unknown foreground rule {method!r}")
    mask = sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1)
    mask = sitk.BinaryFillhole(mask)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(components == 1, sitk.sitkUInt8)


def normalise_intensity(
    array: np.ndarray, foreground: np.ndarray, percentiles: Sequence[float] = (1.0, 99.0), name: str = "input"
) -> np.ndarray:
    """Map the ``percentiles`` of the foreground to 0 and 1, clip to [0, 1], zero the background."""
    inside = array[foreground]
    if inside.size == 0:
        raise InputError(f"{name}: no foreground voxels found; is the volume empty?")
    low, high = np.percentile(inside, percentiles)
    if high <= low:
        raise InputError(f"{name}: foreground intensities have no spread ({low} to {high})")
    normalised = np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    normalised[~foreground] = 0.0
    return normalised
