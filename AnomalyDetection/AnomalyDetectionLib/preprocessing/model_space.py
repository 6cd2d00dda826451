"""From an input volume to the model's slices and back: the one path every call goes through.

``prepare_volume`` orients, masks, normalises and slices a volume as the model card says;
``to_input_grid_image`` puts a stack of slice maps back on the input's exact grid. Training,
calibration and detection all use these two, so a model sees the same kind of slice at every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from .intensity import foreground_mask, normalise_intensity
from .io import validate_volume
from .orientation import to_canonical, to_input_grid
from .slicing import SliceLayout, plan_layout, slices_to_volume, volume_to_slices


@dataclass
class PreparedVolume:
    """A volume in model space, with what is needed to go back to the input grid."""

    image: sitk.Image
    canonical: sitk.Image
    foreground: np.ndarray
    slices: np.ndarray
    slice_foreground: np.ndarray
    layout: SliceLayout

    def foreground_fraction(self) -> np.ndarray:
        """Fraction of each slice that is foreground, shape ``(n,)``."""
        return self.slice_foreground.reshape(len(self.slice_foreground), -1).mean(1)


def prepare_volume(image: sitk.Image, card: Mapping[str, Any], name: str = "input") -> PreparedVolume:
    """Validate ``image`` and bring it into the space of the model ``card`` describes."""
    validate_volume(image, name)
    canonical = to_canonical(sitk.Cast(image, sitk.sitkFloat32), card["orientation"])
    foreground = sitk.GetArrayFromImage(foreground_mask(canonical, card["foreground"])).astype(bool)
    intensity = card["intensity"]
    normalised = normalise_intensity(
        sitk.GetArrayViewFromImage(canonical), foreground, (intensity["lower"], intensity["upper"]), name
    )
    layout = plan_layout(normalised.shape, canonical.GetSpacing()[::-1], card["slice_axis"], card["size"])
    slices = volume_to_slices(normalised, layout)
    slice_foreground = volume_to_slices(foreground.astype(np.float32), layout) > 0.5
    return PreparedVolume(image, canonical, foreground, slices, slice_foreground, layout)


def to_input_grid_image(slice_maps: np.ndarray, prepared: PreparedVolume, restrict: bool = True) -> sitk.Image:
    """A float32 image of slice maps on the input's exact grid, zero outside the foreground if ``restrict``."""
    volume = slices_to_volume(slice_maps, prepared.layout)
    if restrict:
        volume = np.where(prepared.foreground, volume, 0.0).astype(np.float32)
    canonical_map = sitk.GetImageFromArray(volume)
    canonical_map.CopyInformation(prepared.canonical)
    return to_input_grid(canonical_map, prepared.image)


def foreground_image(prepared: PreparedVolume) -> sitk.Image:
    """The foreground mask (uint8) on the input's exact grid."""
    mask = sitk.GetImageFromArray(prepared.foreground.astype(np.uint8))
    mask.CopyInformation(prepared.canonical)
    return to_input_grid(mask, prepared.image)
