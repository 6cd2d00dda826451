"""From an input volume to the model's slices and back: the one path every call goes through.

``prepare_volume`` orients, masks, normalises and slices a volume as the model card says;
``to_input_grid_image`` puts a stack of slice maps back on the input's exact grid. Training,
calibration and detection all use these two, so a model sees the same kind of slice at every stage.

Two kinds of model space:

* the input's own space (no ``template`` in the card): a lossless reorientation, a foreground
  from the card's rule (Otsu or non-zero), and the way back is the exact inverse permutation;
* a template space (the card's ``template``): the input is affinely registered to the template
  (any orientation, voxel size, field of view, skull or not), resampled onto the template grid,
  and the template's brain mask within the input's field of view is the foreground; maps and
  masks go back through the inverse transform onto the input grid. The registration's quality
  measures and warnings travel with the prepared volume into the detection report.

The geometry (registration and resampling both ways) runs in SimpleITK on the CPU, or in torch on a
``device`` (:mod:`.torch_registration`, :mod:`.torch_resampling`; the detector passes its CUDA
device): the same method and the same grids, so only where it runs changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..progress import Progress
from .intensity import foreground_mask, normalise_intensity
from .io import validate_volume
from .orientation import to_canonical, to_input_grid
from .registration import register_to_template
from .registration_method import RegistrationResult
from .resampling import field_of_view_on_template, resample_to_input, resample_to_template
from .slicing import SliceLayout, plan_layout, slices_to_volume, volume_to_slices, with_context
from .template import card_template

if TYPE_CHECKING:  # torch is imported where a device is used: the MRML layer loads this module without torch
    import torch

#: The card entries that define a model space: two cards that agree on these see the same slices.
SPACE_KEYS = ("orientation", "foreground", "template", "intensity", "slice_axis", "size")


def model_space(card: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a card that fixes how a volume is prepared (see :data:`SPACE_KEYS`)."""
    return {key: card.get(key) for key in SPACE_KEYS}


def registration_space(card: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """What a registration is done against: the card's template entry (None: no registration).

    Two cards with the same template entry can share a scan's registration even where the rest
    of their model space (slice size, intensity rule) differs.
    """
    template = card.get("template")
    return dict(template) if template is not None else None


@dataclass
class PreparedVolume:
    """A volume in model space, with what is needed to go back to the input grid.

    ``canonical`` is the model-space image (the reoriented input, or the input resampled onto
    the template grid when ``registration`` is set); ``foreground`` its mask as an array;
    ``device`` where the way back is resampled (None: SimpleITK on the CPU).
    """

    image: sitk.Image
    canonical: sitk.Image
    foreground: np.ndarray
    slices: np.ndarray
    slice_foreground: np.ndarray
    layout: SliceLayout
    registration: Optional[RegistrationResult] = None
    space: Optional[Dict[str, Any]] = None
    name: str = "input"
    device: Optional[torch.device] = None

    def network_input(self, chosen: Optional[np.ndarray] = None, context: int = 0) -> np.ndarray:
        """The ``chosen`` slices (default: all) as a network takes them, with ``context`` neighbours
        on either side as channels (:func:`~.slicing.with_context`)."""
        return with_context(self.slices, context, chosen)

    def fits(self, card: Mapping[str, Any]) -> bool:
        """Whether this volume was prepared for the model space of ``card`` (so it can be reused as is)."""
        return self.space == model_space(card)

    def registration_for(self, card: Mapping[str, Any]) -> Optional[RegistrationResult]:
        """This volume's registration if a model of ``card`` can reuse it (same template), else None."""
        if self.registration is None or self.space is None:
            return None
        mine = self.space.get("template")
        return self.registration if mine is not None and dict(mine) == registration_space(card) else None

    def same_input(self, image: sitk.Image) -> bool:
        """Whether ``image`` is the volume this was prepared from (same object, or same grid and voxels)."""
        if image is self.image:
            return True
        if (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()) != (
                self.image.GetSize(), self.image.GetSpacing(), self.image.GetOrigin(), self.image.GetDirection()):
            return False
        return bool(np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(self.image)))

    def to_input_grid(self, model_space_image: sitk.Image, label: bool = False) -> sitk.Image:
        """An image on ``canonical``'s grid brought onto the input's exact grid (nearest neighbour if ``label``)."""
        if self.registration is None:
            return to_input_grid(model_space_image, self.image)
        if self.device is not None:
            from .torch_resampling import affine_matrix, resample_image

            back = np.linalg.inv(affine_matrix(self.registration.transform))
            pixel_type = model_space_image.GetPixelID() if label else sitk.sitkFloat32
            return resample_image(model_space_image, self.image, back, self.device, nearest=label,
                                  pixel_type=pixel_type)
        interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
        return resample_to_input(model_space_image, self.image, self.registration.transform, interpolator, 0.0)

    def foreground_fraction(self) -> np.ndarray:
        """Fraction of each slice that is foreground, shape ``(n,)``."""
        return self.slice_foreground.reshape(len(self.slice_foreground), -1).mean(1)


def prepare_volume(
    image: sitk.Image,
    card: Mapping[str, Any],
    name: str = "input",
    progress: Optional[Progress] = None,
    registration: Optional[RegistrationResult] = None,
    device: Optional[torch.device] = None,
) -> PreparedVolume:
    """Validate ``image`` and bring it into the space of the model ``card`` describes.

    For a template model the input is registered first (``progress`` follows and may cancel
    it); a ``registration`` from an earlier call on the same image and template is reused
    instead, which is how a benchmark scores several models of one template without
    registering twice. ``device``: run the registration and the resampling there in torch
    (None: SimpleITK on the CPU); a registration found on either is reused on either.
    """
    validate_volume(image, name)
    progress = progress or Progress()
    template = card_template(card)
    if template is None:
        canonical = to_canonical(sitk.Cast(image, sitk.sitkFloat32), card["orientation"])
        foreground = sitk.GetArrayFromImage(foreground_mask(canonical, card["foreground"])).astype(bool)
    else:
        if registration is None:
            registration = register_to_template(image, template.image, template.brain, device=device,
                                                progress=progress.as_callback(), cancel=progress.cancel)
        low = float(np.min(sitk.GetArrayViewFromImage(image)))
        # The template's brain where the input has data: a scan with part of the head cut off is
        # judged on what it shows, not on the fill value where it shows nothing (which would set the
        # intensity normalisation, the per-scan map normalisation and the sample score).
        if device is None:
            canonical = resample_to_template(sitk.Cast(image, sitk.sitkFloat32), template.image,
                                             registration.transform, sitk.sitkLinear, low)
            in_view = sitk.GetArrayFromImage(  # a copy: the mask image is temporary
                field_of_view_on_template(image, template.image, registration.transform)) > 0
        else:
            from .torch_resampling import affine_matrix, field_of_view_on_device, resample_image

            to_input = affine_matrix(registration.transform)
            canonical = resample_image(image, template.image, to_input, device, default=low)
            in_view = field_of_view_on_device(image, template.image, to_input, device)
        foreground = sitk.GetArrayFromImage(template.brain).astype(bool) & in_view
        if not foreground.any():
            raise InputError(f"{name}: none of the template's brain lies inside the scan's field of view after "
                             "registration; is it a brain scan with a valid geometry?")
    intensity = card["intensity"]
    normalised = normalise_intensity(
        sitk.GetArrayViewFromImage(canonical), foreground, (intensity["lower"], intensity["upper"]), name,
        float(intensity.get("upper_value", 1.0))
    )
    layout = plan_layout(normalised.shape, canonical.GetSpacing()[::-1], card["slice_axis"], card["size"])
    slices = volume_to_slices(normalised, layout)
    slice_foreground = volume_to_slices(foreground.astype(np.float32), layout) > 0.5
    return PreparedVolume(image, canonical, foreground, slices, slice_foreground, layout, registration,
                          model_space(card), name, device if template is not None else None)


def to_input_grid_image(slice_maps: np.ndarray, prepared: PreparedVolume, restrict: bool = True) -> sitk.Image:
    """A float32 image of slice maps on the input's exact grid, zero outside the foreground if ``restrict``."""
    volume = slices_to_volume(slice_maps, prepared.layout)
    if restrict:
        volume = np.where(prepared.foreground, volume, 0.0).astype(np.float32)
    canonical_map = sitk.GetImageFromArray(volume)
    canonical_map.CopyInformation(prepared.canonical)
    mapped = prepared.to_input_grid(canonical_map)
    if restrict and prepared.registration is not None:
        # Linear interpolation spreads the map half a voxel past the mask's nearest-neighbour border.
        mapped = sitk.Mask(mapped, foreground_image(prepared))
    return mapped


def foreground_image(prepared: PreparedVolume) -> sitk.Image:
    """The foreground mask (uint8) on the input's exact grid."""
    mask = sitk.GetImageFromArray(prepared.foreground.astype(np.uint8))
    mask.CopyInformation(prepared.canonical)
    return prepared.to_input_grid(mask, label=True)
