"""The template space a registered model works in: the template image, its brain mask and its grid.

A model whose card has a ``template`` entry is trained and applied in that template's space, so it
sees every brain at the same position and size whatever the scanner's field of view, head pose,
voxel size or orientation. The space is defined entirely by the card entry, so it is rebuilt the
same way on every machine from the offline template files:

``{"name": "mni152_t1", "spacing_mm": 1.5, "margin_mm": 6.0}``

* the template T1 (a key of :data:`AnomalyDetectionLib.preprocessing.anatomy.ANATOMY`) in the card's orientation;
* its brain mask, holes filled so that the ventricles count as brain (a lesion next to them must
  be scored, and the CSF inside the brain is normal anatomy the model learns);
* a grid cropped to the brain's bounding box plus ``margin_mm`` and resampled to isotropic
  ``spacing_mm``: no slices of empty air, and 128-pixel slices then cover the brain at about its
  own resolution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..catalog import DEFAULT_TEMPLATE_SPACING_MM, SUPPORTED_TEMPLATES
from ..errors import ModelError
from .anatomy import brain_mask, load_anatomy
from .orientation import to_canonical

#: Template entry defaults (the spacing: see the catalog).
DEFAULT_SPACING_MM = DEFAULT_TEMPLATE_SPACING_MM
DEFAULT_MARGIN_MM = 6.0


@dataclass(frozen=True)
class TemplateSpace:
    """A template image (float32) and brain mask (uint8) on the model's template grid."""

    name: str
    image: sitk.Image
    brain: sitk.Image

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "size": list(self.image.GetSize()), "spacing": list(self.image.GetSpacing()),
                "origin": list(self.image.GetOrigin()), "direction": list(self.image.GetDirection())}


def template_entry(name: str = "mni152_t1", spacing_mm: float = DEFAULT_SPACING_MM,
                   margin_mm: float = DEFAULT_MARGIN_MM) -> Dict[str, Any]:
    """A card's ``template`` entry, checked."""
    entry = {"name": name, "spacing_mm": float(spacing_mm), "margin_mm": float(margin_mm)}
    validate_template_entry(entry)
    return entry


def validate_template_entry(entry: Any, source: str = "model card") -> None:
    """:class:`ModelError` naming ``source`` if ``entry`` is not a template this engine can build."""
    if not isinstance(entry, dict):
        raise ModelError(f"{source}: the model card's 'template' is not a dictionary")
    if entry.get("name") not in SUPPORTED_TEMPLATES:
        raise ModelError(f"{source}: template {entry.get('name')!r} is not one of {', '.join(SUPPORTED_TEMPLATES)}")
    for key in ("spacing_mm", "margin_mm"):
        value = entry.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ModelError(f"{source}: the template's '{key}' must be a non-negative number, not {value!r}")
    if entry["spacing_mm"] <= 0:
        raise ModelError(f"{source}: the template's spacing must be positive")


def load_template(entry: Mapping[str, Any], orientation: str = "LPS") -> TemplateSpace:
    """The template space a card's ``template`` entry describes (cached: building it takes a second)."""
    validate_template_entry(dict(entry))
    return _build(str(entry["name"]), float(entry["spacing_mm"]), float(entry["margin_mm"]), orientation)


@functools.lru_cache(maxsize=4)
def _build(name: str, spacing_mm: float, margin_mm: float, orientation: str) -> TemplateSpace:
    image = to_canonical(load_anatomy(name), orientation)
    brain = sitk.BinaryFillhole(to_canonical(brain_mask(name), orientation))
    grid = _cropped_grid(brain, spacing_mm, margin_mm)
    image = _resample(image, grid, sitk.sitkLinear, spacing_mm)
    # The mask is resampled as a fraction and cut at one half, so its border follows the brain's at
    # the new spacing rather than nearest-neighbour staircase.
    fraction = _resample(sitk.Cast(brain, sitk.sitkFloat32), grid, sitk.sitkLinear, spacing_mm)
    brain = sitk.BinaryFillhole(sitk.Cast(fraction > 0.5, sitk.sitkUInt8))
    return TemplateSpace(name=name, image=image, brain=brain)


def _cropped_grid(brain: sitk.Image, spacing_mm: float, margin_mm: float) -> sitk.Image:
    """An empty image whose grid covers the brain's bounding box plus the margin at ``spacing_mm``."""
    array = sitk.GetArrayViewFromImage(brain)
    nonzero = np.nonzero(array)
    if not nonzero[0].size:
        raise ModelError("the template's brain mask is empty")
    low_kji = np.array([n.min() for n in nonzero], dtype=float)
    high_kji = np.array([n.max() for n in nonzero], dtype=float)
    spacing = np.array(brain.GetSpacing())
    low_ijk, high_ijk = low_kji[::-1] - margin_mm / spacing, high_kji[::-1] + margin_mm / spacing
    extent_mm = (high_ijk - low_ijk) * spacing
    size = [int(np.ceil(e / spacing_mm)) + 1 for e in extent_mm]
    origin = brain.TransformContinuousIndexToPhysicalPoint(low_ijk.tolist())
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetOrigin(origin)
    grid.SetDirection(brain.GetDirection())
    return grid


def _resample(image: sitk.Image, grid: sitk.Image, interpolator: int, spacing_mm: float) -> sitk.Image:
    """``image`` on ``grid``, Gaussian-smoothed first when the grid is coarser (no aliasing)."""
    sigmas = [float(np.sqrt(max(spacing_mm**2 - s**2, 0.0)) / 2.3548) for s in image.GetSpacing()]
    source = sitk.Cast(image, sitk.sitkFloat32)
    if max(sigmas) > 0:
        source = sitk.SmoothingRecursiveGaussian(source, sigmas)
    return sitk.Resample(source, grid, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)


def card_template(card: Mapping[str, Any]) -> Optional[TemplateSpace]:
    """The template space of a card, or ``None`` for a model that works in the input's own space."""
    entry = card.get("template")
    return None if entry is None else load_template(entry, str(card["orientation"]))
