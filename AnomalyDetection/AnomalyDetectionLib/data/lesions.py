"""Seeded synthetic subjects and lesions with exact ground truth.

Real annotated lesion data cannot ship with the project, so tests and benchmarks build their own:
a template is turned into plausible "normal subjects" (random affine + smooth deformation, bias
field, contrast, noise) and lesions are painted into them as smooth blobs whose truth mask is
known voxel by voxel. Everything is driven by a seed so that a failing test can be replayed.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from monai.transforms import RandAdjustContrast, RandBiasField, RandGaussianNoise
from scipy.spatial.transform import Rotation
from scipy.special import erfc

from ..errors import InputError

SeedLike = Union[int, np.random.Generator]

#: A voxel belongs to the truth mask where the change is at least this fraction of the peak change.
MASK_FRACTION = 0.5

#: Lesion radius over the Gaussian sigma of its border: soft enough to have no artificial edge.
SHARPNESS = 4.0


def _foreground(image: sitk.Image, brain_mask: Optional[sitk.Image]) -> sitk.Image:
    """Brain mask on the image's grid, or the Otsu foreground (holes filled) when none is given."""
    if brain_mask is None:
        return sitk.BinaryFillhole(sitk.OtsuThreshold(image, 0, 1))
    return sitk.Resample(
        sitk.Cast(brain_mask > 0, sitk.sitkUInt8), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


def _draw_center(foreground: sitk.Image, radius_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Physical point at least ``radius_mm`` inside the foreground (the deepest points if none is)."""
    depth = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(foreground, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    )
    if depth.max() <= 0:
        raise InputError("the brain mask / foreground is empty; cannot place a lesion")
    candidates = np.argwhere(depth >= min(radius_mm, float(depth.max())))
    k, j, i = candidates[rng.integers(len(candidates))]
    return np.asarray(foreground.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))


def _bounding_box(image: sitk.Image, point: np.ndarray, half_mm: float) -> Optional[Tuple[List[int], List[int]]]:
    """Index range ``[lo, hi)`` (i, j, k) covering the cube of half side ``half_mm`` about ``point``."""
    corners = [point + half_mm * (2 * np.asarray(c) - 1) for c in np.ndindex(2, 2, 2)]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(c.tolist()) for c in corners])
    size = np.asarray(image.GetSize())
    lo = np.clip(np.floor(index.min(axis=0)).astype(int), 0, size)
    hi = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, size)
    if np.any(hi <= lo):
        return None
    return lo.tolist(), hi.tolist()


def insert_blob(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image] = None,
    radius_mm: Union[float, Tuple[float, float]] = (3.0, 20.0),
    contrast: float = 0.6,
    center: Optional[Sequence[float]] = None,
) -> Tuple[sitk.Image, sitk.Image]:
    """Paint one smooth hyper- (``contrast > 0``) or hypo-intense (``< 0``) ellipsoid into a copy of ``image``.

    The blob is a randomly oriented ellipsoid (semi-axes 0.75-1.25 x the radius) whose border is
    an ellipsoid step smoothed by a Gaussian of sigma = radius / :data:`SHARPNESS`, so there is no artificial
    edge for a detector to find. Its peak change is ``contrast`` times the robust intensity range
    (1st-99th percentile) of the foreground, which makes the contrast mean the same on any
    scanner scale. ``radius_mm`` is a value or a ``(low, high)`` range to draw from; ``center`` a
    physical point (mm) or ``None`` to draw one at least a radius deep inside ``brain_mask`` (or
    the Otsu foreground). Intensities never drop below the input's minimum (background).

    Returns ``(image, truth)``: float32 with the input's geometry, and a uint8 mask of the voxels
    whose change is at least :data:`MASK_FRACTION` of the peak change. The input is not modified.
    """
    rng = np.random.default_rng(rng_or_seed)
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # a copy: the input stays untouched
    foreground = _foreground(image, brain_mask)
    inside = array[sitk.GetArrayViewFromImage(foreground) > 0]
    if inside.size == 0:
        raise InputError("the brain mask / foreground is empty; cannot place a lesion")
    low, high = np.percentile(inside, [1.0, 99.0])
    radius = float(rng.uniform(*radius_mm)) if isinstance(radius_mm, (tuple, list)) else float(radius_mm)
    if radius <= 0:
        raise InputError(f"lesion radius must be positive, got {radius} mm")
    semi_axes = radius * rng.uniform(0.75, 1.25, size=3)
    rotation = Rotation.random(random_state=rng).as_matrix()
    point = np.asarray(center, dtype=float) if center is not None else _draw_center(foreground, radius, rng)

    profile = np.zeros(array.shape, dtype=np.float32)
    box = _bounding_box(image, point, float(semi_axes.max()) * (1.0 + 4.0 / SHARPNESS))
    if box is not None:
        # Physical coordinates of the box's voxels in the blob frame: R^T (origin + D diag(s) idx - point).
        lo, hi = box
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")).reshape(3, -1)
        direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
        local = rotation.T @ (direction @ grid + (np.asarray(image.GetOrigin()) - point)[:, None])
        rho = np.sqrt(((local / semi_axes[:, None]) ** 2).sum(axis=0))  # 1 on the ellipsoid surface
        # Radial profile of a Gaussian-smoothed step, 1 at the centre, 0.5 on the surface.
        values = erfc((rho - 1.0) * SHARPNESS / np.sqrt(2.0)) / erfc(-SHARPNESS / np.sqrt(2.0))
        # meshgrid is in (i, j, k) order; the array is (k, j, i).
        profile[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = values.reshape([b - a for a, b in zip(lo, hi)]).T
    if profile.max() < MASK_FRACTION:
        raise InputError(f"lesion centre {tuple(np.round(point, 1))} mm is outside the image")

    changed = np.maximum(array + float(contrast) * float(high - low) * profile, array.min()).astype(np.float32)
    out = sitk.GetImageFromArray(changed)
    out.CopyInformation(image)
    truth = sitk.GetImageFromArray((profile >= MASK_FRACTION).astype(np.uint8))
    truth.CopyInformation(image)
    return out, truth


def random_normal_subject(
    image: sitk.Image,
    seed: int,
    mask: Optional[sitk.Image] = None,
    max_rotation_deg: float = 8.0,
    max_scale: float = 0.06,
    max_translation_mm: float = 4.0,
    elastic_mm: float = 2.0,
    bias: bool = True,
    gamma: bool = True,
    noise: float = 0.02,
) -> Tuple[sitk.Image, Optional[sitk.Image]]:
    """A plausible new normal subject made from template ``image``, reproducible from ``seed``.

    Geometry: a random affine about the volume centre (rotations up to ``max_rotation_deg`` per
    axis, per-axis scaling up to ``max_scale``, shifts up to ``max_translation_mm``) composed
    with a smooth B-spline deformation (4x4x4 mesh, coefficients ~ N(0, ``elastic_mm``)), which
    models head position and brain shape variation. Intensity (MONAI, seeded): a smooth
    multiplicative bias field, a gamma contrast change in [0.8, 1.25] and Gaussian noise of up to
    ``noise`` times the 99th percentile. ``mask`` (e.g. a brain mask) is moved by the same
    transform with nearest neighbour interpolation.

    Returns ``(image, mask)``: float32 on the input's grid, and the uint8 moved mask or ``None``.
    """
    rng = np.random.default_rng(seed)
    size = np.asarray(image.GetSize())
    centre = image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (size - 1) / 2.0])

    affine = sitk.AffineTransform(3)
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, size=3))
    matrix = Rotation.from_euler("xyz", angles).as_matrix() @ np.diag(1.0 + rng.uniform(-max_scale, max_scale, 3))
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetCenter(centre)
    affine.SetTranslation(rng.uniform(-max_translation_mm, max_translation_mm, size=3).tolist())

    bspline = sitk.BSplineTransformInitializer(image, [4, 4, 4])
    coefficients = rng.normal(0.0, elastic_mm, size=len(bspline.GetParameters()))
    bspline.SetParameters(coefficients.tolist())
    # One dense displacement field for both images: evaluating the B-spline once per voxel is
    # the expensive part, and resampling through a field is fast.
    composite = sitk.CompositeTransform([affine, bspline])
    field = sitk.TransformToDisplacementField(
        composite, sitk.sitkVectorFloat64, image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection()
    )
    transform = sitk.DisplacementFieldTransform(field)

    source = sitk.Cast(image, sitk.sitkFloat32)
    background = float(sitk.GetArrayViewFromImage(source).min())
    moved = sitk.Resample(source, image, transform, sitk.sitkLinear, background, sitk.sitkFloat32)

    array = sitk.GetArrayFromImage(moved)[None]  # MONAI wants channel first
    scale = float(np.percentile(array, 99.0)) or 1.0
    array = (array - background) / scale
    transforms = []
    if bias:
        transforms.append(RandBiasField(prob=1.0, coeff_range=(0.0, 0.15), degree=3))
    if gamma:
        transforms.append(RandAdjustContrast(prob=1.0, gamma=(0.8, 1.25)))
    if noise > 0:
        transforms.append(RandGaussianNoise(prob=1.0, std=float(noise)))
    for transform_ in transforms:
        transform_.set_random_state(seed=int(rng.integers(2**31)))
        array = np.asarray(transform_(array), dtype=np.float32)
    array = np.maximum(array[0] * scale + background, background).astype(np.float32)

    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    moved_mask = None
    if mask is not None:
        moved_mask = sitk.Resample(
            sitk.Cast(mask, sitk.sitkUInt8), image, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    return out, moved_mask
