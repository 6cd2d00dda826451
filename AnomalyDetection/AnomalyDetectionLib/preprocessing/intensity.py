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
    array: np.ndarray,
    foreground: np.ndarray,
    percentiles: Sequence[float] = (1.0, 99.0),
    name: str = "input",
    upper_value: float = 1.0,
) -> np.ndarray:
    """Map the ``percentiles`` of the foreground to 0 and ``upper_value``, clip to [0, 1], zero the background.

    Why ``upper_value`` below 1: in T1 the brightest normal tissue (white matter) sits at the upper
    percentile, and clipping there would make a hyper-intense lesion exactly as bright as white
    matter, so the models could only find it by its shape. With headroom above the normal range
    (0.8: up to 25 % brighter than the upper percentile) it stays brighter than any normal tissue.
    """
    inside = array[foreground]
    if inside.size == 0:
        raise InputError(f"{name}: no foreground voxels found; is the volume empty?")
    low, high = np.percentile(inside, percentiles)
    if high <= low:
        raise InputError(f"{name}: foreground intensities have no spread ({low} to {high})")
    normalised = np.clip((array.astype(np.float32) - low) / (high - low) * upper_value, 0.0, 1.0)
    normalised[~foreground] = 0.0
    return normalised
