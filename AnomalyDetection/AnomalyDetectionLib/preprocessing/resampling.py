"""Resampling through a registration's transform: an input onto the template grid, and back.

The transform maps template (fixed) points to input (moving) points, the direction
``sitk.Resample`` needs to pull the input onto the template grid; :func:`resample_to_input` uses
its inverse to bring an anomaly map back onto the input grid exactly.
"""

from __future__ import annotations

import SimpleITK as sitk

from ..errors import InputError

#: Interpolators that keep label values, and so the labels' pixel type (sitkLabelLinear: SimpleITK >= 2.3).
_LABEL_INTERPOLATORS = tuple(
    getattr(sitk, name)
    for name in ("sitkNearestNeighbor", "sitkLabelGaussian", "sitkLabelLinear")
    if hasattr(sitk, name)
)


def _output_type(image: sitk.Image, interpolator: int) -> int:
    """Keep labels' pixel type with label-preserving interpolators; otherwise float32, so linear
    interpolation of an integer scan is not rounded."""
    if interpolator in _LABEL_INTERPOLATORS:
        return image.GetPixelID()
    if image.GetPixelID() == sitk.sitkFloat64:
        return sitk.sitkFloat64
    return sitk.sitkFloat32


def resample_to_template(
    image: sitk.Image,
    template: sitk.Image,
    transform: sitk.Transform,
    interpolator: int = sitk.sitkLinear,
    default: float = 0.0,
) -> sitk.Image:
    """``image`` (input space) resampled onto ``template``'s grid through ``transform``
    (template -> input points, as found by :func:`~.registration.register_to_template`)."""
    return sitk.Resample(image, template, transform, interpolator, float(default), _output_type(image, interpolator))


def field_of_view_on_template(image: sitk.Image, template: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """uint8 mask on ``template``'s grid of the points that ``transform`` maps inside ``image``'s grid.

    A clinical scan that leaves out the vertex or the skull base has no data there; the template
    voxels outside its field of view are filled, not imaged, and must not count as brain.
    """
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    return sitk.Resample(ones, template, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def resample_to_input(
    template_space_image: sitk.Image,
    reference_input: sitk.Image,
    transform: sitk.Transform,
    interpolator: int = sitk.sitkLinear,
    default: float = 0.0,
) -> sitk.Image:
    """A template-space image (anomaly map, mask) brought back onto ``reference_input``'s grid.

    Uses the inverse of ``transform``; the result has exactly the reference's size, spacing,
    origin and direction, so it overlays the input in any viewer. :class:`InputError` if the
    transform cannot be inverted (singular matrix, or a kind without an inverse).
    """
    try:
        inverse = transform.GetInverse()
    except RuntimeError:
        raise InputError(f"registration transform ({transform.GetName()}) cannot be inverted; "
                         "the map cannot be brought back onto the input grid") from None
    out = sitk.Resample(template_space_image, reference_input, inverse, interpolator, float(default),
                        _output_type(template_space_image, interpolator))
    out.CopyInformation(reference_input)
    return out
