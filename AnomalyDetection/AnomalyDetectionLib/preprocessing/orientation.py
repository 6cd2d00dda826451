"""Canonical orientation: a lossless permutation/flip of the voxel axes, and its exact inverse.

Models see slices in one orientation (the card's, e.g. ``LPS``), whatever the scanner wrote.
``sitk.DICOMOrient`` only permutes and flips axes, so no voxel is interpolated, and applying it
again with the input's own orientation code gives back the original voxel order; the input's
geometry is then copied onto the result, so the output sits exactly on the input grid.
"""

from __future__ import annotations

import SimpleITK as sitk

from ..errors import InputError


def orientation_code(image: sitk.Image) -> str:
    """The closest three-letter orientation code (``LPS``, ``RAS``...) of ``image``'s direction."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def to_canonical(image: sitk.Image, orientation: str = "LPS") -> sitk.Image:
    """``image`` with its voxel axes permuted and flipped to the closest match of ``orientation``."""
    return sitk.DICOMOrient(image, orientation)


def to_input_grid(canonical_map: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Undo :func:`to_canonical` for a map computed on the canonical image of ``reference``."""
    restored = sitk.DICOMOrient(canonical_map, orientation_code(reference))
    if restored.GetSize() != reference.GetSize():
        raise InputError(f"internal error: map of size {restored.GetSize()} does not fit the input's "
                         f"{reference.GetSize()}")
    restored.CopyInformation(reference)
    return restored
