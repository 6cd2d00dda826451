"""Seeded synthetic subjects and lesions with exact ground truth.

Real annotated lesion data cannot ship with the project, so tests and benchmarks build their own:
a template is turned into plausible "normal subjects" (random affine + smooth deformation, bias
field, contrast, noise) and anomalies are painted into them with a truth mask that is known voxel
by voxel. Three families cover what a detector must find:

* smooth hyper- and hypo-intense blobs (:func:`insert_blob`), the simplest focal lesion;
* tumour-like lesions (:func:`insert_tumour`): necrotic core, enhancing rim, oedema and mass
  effect, which test whether a detector sees a whole lesion and not only its brightest part;
* MOOD-challenge style local corruptions (:func:`insert_noise_patch`,
  :func:`insert_copied_patch`, :func:`insert_intensity_shift`), which are not anatomical at all and
  test that a detector flags anything unlike a normal brain, including realistic-looking tissue
  in the wrong place.

:data:`LESION_TYPES` and :func:`insert_lesion` pick one by name. Every generator takes the same
conventions: the input is never modified, the output is float32 with the input's exact geometry,
contrasts are relative to the robust (1st-99th percentile) intensity range of the brain so they
mean the same on any scanner scale, and everything is driven by a seed (or a
:class:`numpy.random.Generator`) so that a failing test can be replayed.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from monai.transforms import RandAdjustContrast, RandBiasField, RandGaussianNoise
from scipy.spatial.transform import Rotation
from scipy.special import erfc

from AnomalyDetectionLib.errors import InputError

SeedLike = Union[int, np.random.Generator]
RangeLike = Union[float, Tuple[float, float]]
Region = Tuple[slice, slice, slice]

#: A voxel belongs to the truth mask where the change is at least this fraction of the peak change.
MASK_FRACTION = 0.5

#: Lesion radius over the Gaussian sigma of its border: soft enough to have no artificial edge.
SHARPNESS = 4.0

#: Sharper borders inside a tumour (radius / sigma): the core and the rim must stay distinct shells.
TUMOUR_SHARPNESS = 10.0

#: Oedema fades into the tissue around it more gradually than the solid tumour ends.
OEDEMA_SHARPNESS = 6.0

#: Mass effect fades out around this many tumour radii (ellipsoidal radius), over a quarter radius.
MASS_EFFECT_REACH = 2.5

#: A corrupted voxel belongs to the truth only if it changed by more than this fraction of the robust range.
CHANGE_TOLERANCE = 1e-3

#: Width of the soft edge inside a copied patch, as a fraction of the patch size (at least one voxel).
BLEND_FRACTION = 0.25


class _Setup(NamedTuple):
    """What every generator needs first: the random stream, a float32 copy, the brain and its range."""

    rng: np.random.Generator
    array: np.ndarray  # float32 copy of the input, (k, j, i)
    foreground: sitk.Image  # uint8 brain mask / Otsu foreground on the input's grid
    low: float  # 1st percentile of the foreground intensities
    high: float  # 99th percentile

    @property
    def span(self) -> float:
        return self.high - self.low


class _Ellipsoid(NamedTuple):
    """Voxels around a lesion centre, in the lesion's own (rotated) frame."""

    region: Region  # array (k, j, i) slices of the bounding box
    local: np.ndarray  # (3, nk, nj, ni) coordinates in mm along the ellipsoid's axes
    rho: np.ndarray  # (nk, nj, ni) normalised ellipsoidal radius: 0 at the centre, 1 on the surface


class _Box(NamedTuple):
    """An axis-aligned patch of voxels with its blend weight."""

    region: Region  # array (k, j, i) slices of the patch, clipped to the image
    weight: np.ndarray  # blend weight on region, in (0, 1]


def _foreground(image: sitk.Image, brain_mask: Optional[sitk.Image]) -> sitk.Image:
    """Brain mask on the image's grid, or the Otsu foreground (holes filled) when none is given."""
    if brain_mask is None:
        return sitk.BinaryFillhole(sitk.OtsuThreshold(image, 0, 1))
    return sitk.Resample(
        sitk.Cast(brain_mask > 0, sitk.sitkUInt8), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


def _prepare(image: sitk.Image, rng_or_seed: SeedLike, brain_mask: Optional[sitk.Image]) -> _Setup:
    """Random stream, a float32 copy of ``image`` (the input stays untouched) and the brain's robust range."""
    rng = np.random.default_rng(rng_or_seed)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    foreground = _foreground(image, brain_mask)
    inside = array[sitk.GetArrayViewFromImage(foreground) > 0]
    if inside.size == 0:
        raise InputError("the brain mask / foreground is empty; cannot place a lesion")
    low, high = np.percentile(inside, [1.0, 99.0])
    return _Setup(rng, array, foreground, float(low), float(high))


def _draw(value: RangeLike, rng: np.random.Generator, name: str, allow_zero: bool = False) -> float:
    """``value`` itself, or a uniform draw when it is a ``(low, high)`` range; positive (or zero if allowed)."""
    drawn = float(rng.uniform(*value)) if isinstance(value, (tuple, list)) else float(value)
    if not (drawn >= 0 if allow_zero else drawn > 0):
        raise InputError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {drawn:g}")
    return drawn


def _as_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """``array`` as an image with exactly the geometry of ``reference``."""
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def _index_to_physical(image: sitk.Image, index_kji: np.ndarray) -> np.ndarray:
    """Physical points (n, 3) of array indices (n, 3) in (k, j, i) order, vectorised."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return index_kji[:, ::-1] @ direction.T + np.asarray(image.GetOrigin())


def _draw_center(
    foreground: sitk.Image,
    radius_mm: float,
    rng: np.random.Generator,
    away_from: Optional[np.ndarray] = None,
    min_distance_mm: float = 0.0,
) -> np.ndarray:
    """Physical point at least ``radius_mm`` inside the foreground (the deepest points if none is).

    With ``away_from``, only points at least ``min_distance_mm`` from it are drawn (the farthest
    ones if none is that far), so that a copied patch really comes from elsewhere.
    """
    depth = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(foreground, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    )
    if depth.max() <= 0:
        raise InputError("the brain mask / foreground is empty; cannot place a lesion")
    candidates = np.argwhere(depth >= min(radius_mm, float(depth.max())))
    if away_from is not None:
        distance = np.linalg.norm(_index_to_physical(foreground, candidates) - away_from, axis=1)
        candidates = candidates[distance >= min(min_distance_mm, float(distance.max()))]
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


def _ellipsoid(
    image: sitk.Image, point: np.ndarray, semi_axes: np.ndarray, rotation: np.ndarray, half_mm: float
) -> Optional[_Ellipsoid]:
    """Coordinates of the voxels within ``half_mm`` of ``point`` in the frame of a rotated ellipsoid.

    Only a bounding box is evaluated, so that a small lesion in a 1 mm volume costs little.
    ``None`` when the box misses the image.
    """
    box = _bounding_box(image, point, half_mm)
    if box is None:
        return None
    lo, hi = box
    # local = R^T (origin + D diag(s) index - point), evaluated by broadcasting over the (k, j, i) box.
    matrix = rotation.T @ (np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing()))
    offset = rotation.T @ (np.asarray(image.GetOrigin()) - point)
    axes = [np.arange(lo[a], hi[a], dtype=float) for a in range(3)]
    shape = (hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0])
    local = np.empty((3,) + shape)
    for c in range(3):
        local[c] = (
            matrix[c, 0] * axes[0][None, None, :]
            + matrix[c, 1] * axes[1][None, :, None]
            + matrix[c, 2] * axes[2][:, None, None]
            + offset[c]
        )
    rho = np.sqrt(((local / semi_axes[:, None, None, None]) ** 2).sum(axis=0))
    region = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    return _Ellipsoid(region, local, rho)


def _smooth_step(rho: np.ndarray, edge: Union[float, np.ndarray], sharpness: float) -> np.ndarray:
    """Radial profile of a Gaussian-smoothed ball of radius ``edge``: 1 at the centre, 0.5 on the edge.

    The Gaussian's sigma is ``1 / sharpness`` in units of the ellipsoidal radius, so a lesion's
    border softens with its size and never becomes an artificial edge for a detector to find.
    """
    return erfc((rho - edge) * sharpness / np.sqrt(2.0)) / erfc(-edge * sharpness / np.sqrt(2.0))


def _random_ellipsoid(radius: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Semi-axes (0.75-1.25 x ``radius``) and a uniformly random rotation, so no two lesions look alike."""
    semi_axes = radius * rng.uniform(0.75, 1.25, size=3)
    rotation = Rotation.random(random_state=rng).as_matrix()
    return semi_axes, rotation


def insert_blob(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image] = None,
    radius_mm: RangeLike = (3.0, 20.0),
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
    setup = _prepare(image, rng_or_seed, brain_mask)
    rng, array = setup.rng, setup.array
    radius = _draw(radius_mm, rng, "lesion radius (mm)")
    semi_axes, rotation = _random_ellipsoid(radius, rng)
    point = np.asarray(center, dtype=float) if center is not None else _draw_center(setup.foreground, radius, rng)

    profile = np.zeros(array.shape, dtype=np.float32)
    ellipsoid = _ellipsoid(image, point, semi_axes, rotation, float(semi_axes.max()) * (1.0 + 4.0 / SHARPNESS))
    if ellipsoid is not None:
        profile[ellipsoid.region] = _smooth_step(ellipsoid.rho, 1.0, SHARPNESS)
    if profile.max() < MASK_FRACTION:
        raise InputError(f"lesion centre {tuple(np.round(point, 1))} mm is outside the image")

    changed = np.maximum(array + float(contrast) * setup.span * profile, array.min()).astype(np.float32)
    return _as_image(changed, image), _as_image((profile >= MASK_FRACTION).astype(np.uint8), image)


def _mass_effect(
    image: sitk.Image, point: np.ndarray, semi_axes: np.ndarray, rotation: np.ndarray, peak_mm: float
) -> Tuple[np.ndarray, np.ndarray]:
    """``image`` with its tissue pushed radially away from ``point``, as a growing tumour does.

    The displacement is radial from the centre, ``peak_mm`` on the ellipsoid's surface, linear
    inside (the tumour is painted over it anyway) and decaying as 1 / rho^2 outside (what an
    incompressible medium around an inflating ball does), faded out smoothly around
    :data:`MASS_EFFECT_REACH` radii so that the far brain is exactly untouched. The peak is capped
    at half the smallest semi-axis, which keeps the mapping one-to-one (no folding). Tissue moves
    outward: the output at ``p`` samples the input at ``p - u(p) (p - c) / |p - c|``. Resampling
    (SimpleITK, linear) only covers the affected box; everything else is copied bit for bit.

    Returns ``(array, displacement)``: the deformed float32 volume (k, j, i) and the displacement
    magnitude in mm per voxel, which marks the zone that mass effect changed.
    """
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    magnitude = np.zeros(array.shape, dtype=np.float32)
    peak = min(float(peak_mm), 0.5 * float(semi_axes.min()))
    reach = float(semi_axes.max()) * (MASS_EFFECT_REACH + 1.0)
    ellipsoid = _ellipsoid(image, point, semi_axes, rotation, reach) if peak > 0 else None
    if ellipsoid is None:
        return array, magnitude
    rho = ellipsoid.rho
    fade = 0.5 * erfc((rho - MASS_EFFECT_REACH) * 4.0 / np.sqrt(2.0))  # sigma: a quarter radius
    shift = peak * np.where(rho < 1.0, rho, 1.0 / np.maximum(rho, 1.0) ** 2) * fade  # mm, towards the centre
    offset = np.einsum("ca,a...->...c", rotation, ellipsoid.local)  # physical p - c, (nk, nj, ni, 3)
    distance = np.linalg.norm(offset, axis=-1, keepdims=True)
    displacement = -shift[..., None] * offset / np.maximum(distance, 1e-9)

    start = [ellipsoid.region[a].start for a in (2, 1, 0)]  # (i, j, k)
    size = [int(n) for n in rho.shape[::-1]]
    origin = image.TransformIndexToPhysicalPoint([int(s) for s in start])
    field = sitk.GetImageFromArray(displacement.astype(np.float64), isVector=True)
    field.SetOrigin(origin)
    field.SetSpacing(image.GetSpacing())
    field.SetDirection(image.GetDirection())
    background = float(array.min())
    moved = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32), size, sitk.DisplacementFieldTransform(field), sitk.sitkLinear,
        origin, image.GetSpacing(), image.GetDirection(), background, sitk.sitkFloat32,
    )
    array[ellipsoid.region] = sitk.GetArrayFromImage(moved)
    magnitude[ellipsoid.region] = shift
    return array, magnitude


def _low_frequency_noise(unit: np.ndarray, rng: np.random.Generator, waves: int = 4) -> np.ndarray:
    """Smooth random field of unit standard deviation, a few wavelengths across a lesion.

    ``unit`` are coordinates in units of the lesion radius (3, ...); a sum of randomly oriented
    plane waves depends on position only, so a lesion looks the same at any image resolution.
    """
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = directions * rng.uniform(1.5, 3.0, size=(waves, 1))  # radians per radius
    phases = rng.uniform(0.0, 2.0 * np.pi, size=waves)
    field = sum(np.sin(np.tensordot(frequencies[w], unit, axes=1) + phases[w]) for w in range(waves))
    return np.asarray(field) * math.sqrt(2.0 / waves)


def _tumour(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image],
    radius_mm: RangeLike,
    center: Optional[Sequence[float]],
    mass_effect_mm: RangeLike,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The work of :func:`insert_tumour` on arrays: ``(image, labels, displacement)``.

    ``labels`` is 1 core, 2 rim, 3 oedema; ``displacement`` the mass effect's magnitude in mm per
    voxel (see :func:`_mass_effect`), kept apart so that tests can tell displaced normal tissue
    from the lesion.
    """
    setup = _prepare(image, rng_or_seed, brain_mask)
    rng = setup.rng
    radius = _draw(radius_mm, rng, "tumour radius (mm)")
    semi_axes, rotation = _random_ellipsoid(radius, rng)
    point = np.asarray(center, dtype=float) if center is not None else _draw_center(setup.foreground, radius, rng)
    core_fraction = float(rng.uniform(0.35, 0.5))
    oedema_extent = float(rng.uniform(1.5, 2.0))
    core_level = setup.low + float(rng.uniform(-0.25, 0.05)) * setup.span  # necrosis: fluid-dark
    rim_level = setup.low + float(rng.uniform(1.0, 1.2)) * setup.span  # enhancement: brighter than any tissue
    oedema_drop = float(rng.uniform(0.15, 0.3)) * setup.span  # oedema: mildly hypo-intense on T1
    peak = _draw(mass_effect_mm, rng, "mass effect (mm)", allow_zero=True)

    # The oedema reaches the farthest: its box bounds everything painted.
    ellipsoid = _ellipsoid(image, point, semi_axes, rotation, float(semi_axes.max()) * (oedema_extent * 1.3 + 0.5))
    if ellipsoid is None:
        raise InputError(f"tumour centre {tuple(np.round(point, 1))} mm is outside the image")
    # Deform first, then paint: the tumour displaces the tissue and then replaces its centre.
    deformed, displacement = _mass_effect(image, point, semi_axes, rotation, peak)

    rho = ellipsoid.rho
    irregular = np.clip(_low_frequency_noise(ellipsoid.local / semi_axes[:, None, None, None], rng), -2.0, 2.0)
    brain = sitk.GetArrayViewFromImage(setup.foreground)[ellipsoid.region] > 0
    core = _smooth_step(rho, core_fraction, TUMOUR_SHARPNESS)
    solid = _smooth_step(rho, 1.0, TUMOUR_SHARPNESS)
    rim = np.clip(solid - core, 0.0, 1.0)
    # Oedema is a reaction of brain tissue: it follows the brain and stays out of background.
    oedema = _smooth_step(rho, oedema_extent * (1.0 + 0.1 * irregular), OEDEMA_SHARPNESS) * brain

    tissue = deformed[ellipsoid.region]
    swollen = np.maximum(tissue - oedema_drop * oedema, setup.array.min())
    out = deformed.copy()
    painted = swollen * (1.0 - solid) + core * core_level + rim * rim_level
    out[ellipsoid.region] = np.maximum(painted, setup.array.min())
    labels_box = np.where(
        core >= MASK_FRACTION, 1, np.where(solid >= MASK_FRACTION, 2, np.where(oedema >= MASK_FRACTION, 3, 0))
    ).astype(np.uint8)
    if not labels_box.any():
        raise InputError(f"tumour centre {tuple(np.round(point, 1))} mm is outside the image")
    labels = np.zeros(out.shape, dtype=np.uint8)
    labels[ellipsoid.region] = labels_box
    return out.astype(np.float32), labels, displacement


def insert_tumour(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image] = None,
    radius_mm: RangeLike = (8.0, 25.0),
    center: Optional[Sequence[float]] = None,
    mass_effect_mm: RangeLike = (1.0, 4.0),
    labels: bool = False,
) -> Union[Tuple[sitk.Image, sitk.Image], Tuple[sitk.Image, sitk.Image, sitk.Image]]:
    """Paint a glioblastoma-like lesion into a copy of ``image``: core, rim, oedema and mass effect.

    A tumour tests more than a blob does: a detector should flag the whole abnormal region, the
    dark necrosis and the faint oedema as well as the bright rim, and not be fooled by the
    displaced (but normal-looking) tissue around it. Concentric in a random ellipsoid of radius
    ``radius_mm`` (value or range, semi-axes 0.75-1.25 x):

    * necrotic core, 35-50 % of the radius, dark like fluid (25 % of the robust range below its low end
      to 5 % above, never below the input's minimum);
    * enhancing rim, the rest of the ellipsoid, brighter than any normal tissue (100-120 %);
    * oedema out to 1.5-2 x the radius, made irregular by smooth low-frequency noise, which
      lowers the tissue intensity by 15-30 % of the range (T1) and only inside the brain;
    * mass effect: before painting, the tissue is pushed radially outward by ``mass_effect_mm``
      (value or range; 0 for none) at the tumour border, decaying with distance (see
      :func:`_mass_effect`), applied with a SimpleITK displacement field.

    Borders are Gaussian-smoothed (sigma radius / :data:`TUMOUR_SHARPNESS`, oedema / :data:`OEDEMA_SHARPNESS`).
    ``center`` is a physical point (mm) or ``None`` to draw one a radius deep in the brain mask
    (or Otsu foreground). The input is not modified.

    Returns ``(image, truth)``: float32 with the input's geometry and the uint8 mask of core, rim
    and oedema (the whole abnormal region; the displaced tissue is normal and not in it). With
    ``labels=True`` also a uint8 label map: 1 core, 2 rim, 3 oedema.
    """
    out, label_map, _ = _tumour(image, rng_or_seed, brain_mask, radius_mm, center, mass_effect_mm)
    result = (_as_image(out, image), _as_image((label_map > 0).astype(np.uint8), image))
    return result + (_as_image(label_map, image),) if labels else result


def _patch(image: sitk.Image, point: np.ndarray, size_mm: np.ndarray, soft: bool) -> _Box:
    """The axis-aligned patch of ``size_mm`` (i, j, k) about ``point``, clipped to the image.

    The weight is 1 on the patch, or with ``soft`` the smallest of per-axis linear ramps that rise
    from 0 on the patch's faces to 1 at :data:`BLEND_FRACTION` of its size (at least a voxel)
    inside, so the blend softens the seam without changing anything outside the patch.
    """
    counts = np.maximum(1, np.round(size_mm / np.asarray(image.GetSpacing()))).astype(int)
    centre = np.round(image.TransformPhysicalPointToContinuousIndex([float(x) for x in point])).astype(int)
    lo = centre - counts // 2
    hi = lo + counts
    weights = []
    slices = []
    for a, n in enumerate(image.GetSize()):
        index = np.arange(max(lo[a], 0), min(hi[a], n))
        if index.size == 0:
            raise InputError(f"patch centre {tuple(np.round(point, 1))} mm is outside the image")
        inside = np.minimum(index - (lo[a] - 0.5), (hi[a] - 0.5) - index)  # voxels from the nearest face, >= 0.5
        ramp = max(1.0, BLEND_FRACTION * counts[a]) if soft else 0.5
        weights.append(np.clip(inside / ramp, 0.0, 1.0))
        slices.append(slice(int(index[0]), int(index[-1]) + 1))
    weight = np.minimum(np.minimum(weights[2][:, None, None], weights[1][None, :, None]), weights[0][None, None, :])
    return _Box((slices[2], slices[1], slices[0]), weight)


def _draw_patch(
    image: sitk.Image, setup: _Setup, size_mm: RangeLike, center: Optional[Sequence[float]], soft: bool
) -> Tuple[_Box, np.ndarray, np.ndarray]:
    """Draw a patch's size (per axis) and centre: ``(patch, centre mm, size mm)``."""
    sizes = np.array([_draw(size_mm, setup.rng, "patch size (mm)") for _ in range(3)])
    point = (
        np.asarray(center, dtype=float)
        if center is not None
        else _draw_center(setup.foreground, 0.5 * float(sizes.max()), setup.rng)
    )
    return _patch(image, point, sizes, soft), point, sizes


def _corrupted(image: sitk.Image, setup: _Setup, box: _Box, values: np.ndarray) -> Tuple[sitk.Image, sitk.Image]:
    """Blend ``values`` into the patch; truth = the patch voxels that really changed."""
    out = setup.array.copy()
    before = out[box.region].copy()
    after = (1.0 - box.weight) * before + box.weight * values
    out[box.region] = after
    truth = np.zeros(out.shape, dtype=np.uint8)
    truth[box.region] = np.abs(after - before) > CHANGE_TOLERANCE * setup.span
    return _as_image(out.astype(np.float32), image), _as_image(truth, image)


def insert_noise_patch(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image] = None,
    size_mm: RangeLike = (10.0, 30.0),
    center: Optional[Sequence[float]] = None,
) -> Tuple[sitk.Image, sitk.Image]:
    """Replace a box of a copy of ``image`` by noise, as in the MOOD challenge.

    Noise has no anatomy at all, the most basic thing a detector must flag. It is uniform over
    the robust (1st-99th percentile) range of the brain, or Gaussian about its middle with a
    quarter of the range as standard deviation (coin toss), never below the input's minimum. The
    box has a side of ``size_mm`` (value or range, drawn per axis) and a hard edge; ``center`` is a
    physical point (mm) or ``None`` to draw one half a box deep in the brain.

    Returns ``(image, truth)``: float32 with the input's geometry and the uint8 mask of the box
    voxels that changed by more than :data:`CHANGE_TOLERANCE` of the range. The input is not modified.
    """
    setup = _prepare(image, rng_or_seed, brain_mask)
    box, _, _ = _draw_patch(image, setup, size_mm, center, soft=False)
    shape = box.weight.shape
    if setup.rng.random() < 0.5:
        noise = setup.rng.uniform(setup.low, setup.high, size=shape)
    else:
        noise = setup.rng.normal(0.5 * (setup.low + setup.high), 0.25 * setup.span, size=shape)
    return _corrupted(image, setup, box, np.maximum(noise, setup.array.min()))


def insert_copied_patch(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image] = None,
    size_mm: RangeLike = (10.0, 30.0),
    center: Optional[Sequence[float]] = None,
) -> Tuple[sitk.Image, sitk.Image]:
    """Copy a box from elsewhere in the same brain over a box of a copy of ``image`` (MOOD style).

    The copied tissue is perfectly realistic locally; only its place is wrong, which a detector
    can only see from context. The source is drawn in the brain at least two box sizes (largest
    side) away from the target where the brain allows it (else as far as it allows), and is
    blended in with a soft edge inside the box (linear ramp over :data:`BLEND_FRACTION` of its size)
    so that the seam itself is not what gives it away; nothing outside the box changes.
    ``size_mm`` and ``center`` as for :func:`insert_noise_patch`.

    Returns ``(image, truth)``: float32 with the input's geometry and the uint8 mask of the box
    voxels that changed by more than :data:`CHANGE_TOLERANCE` of the range. The input is not modified.
    """
    setup = _prepare(image, rng_or_seed, brain_mask)
    box, point, sizes = _draw_patch(image, setup, size_mm, center, soft=True)
    source = _draw_center(
        setup.foreground, 0.5 * float(sizes.max()), setup.rng, away_from=point, min_distance_mm=2.0 * float(sizes.max())
    )
    target_index = np.round(image.TransformPhysicalPointToContinuousIndex(point.tolist()))[::-1]
    source_index = np.round(image.TransformPhysicalPointToContinuousIndex(source.tolist()))[::-1]
    region = []
    for a, (piece, n) in enumerate(zip(box.region, setup.array.shape)):
        # Same shape as the target; shifted back inside the image where it would stick out.
        shift = int(source_index[a] - target_index[a])
        shift = min(max(shift, -piece.start), n - piece.stop)
        region.append(slice(piece.start + shift, piece.stop + shift))
    return _corrupted(image, setup, box, setup.array[tuple(region)])


def insert_intensity_shift(
    image: sitk.Image,
    rng_or_seed: SeedLike,
    brain_mask: Optional[sitk.Image] = None,
    size_mm: RangeLike = (10.0, 30.0),
    center: Optional[Sequence[float]] = None,
) -> Tuple[sitk.Image, sitk.Image]:
    """Add or subtract a constant in a box of a copy of ``image`` (MOOD style).

    The anatomy stays intact and only the level changes, by 15-40 % of the robust (1st-99th
    percentile) range of the brain with a random sign, never below the input's minimum. A box with
    a hard edge; ``size_mm`` and ``center`` as for :func:`insert_noise_patch`.

    Returns ``(image, truth)``: float32 with the input's geometry and the uint8 mask of the box
    voxels that changed by more than :data:`CHANGE_TOLERANCE` of the range. The input is not modified.
    """
    setup = _prepare(image, rng_or_seed, brain_mask)
    box, _, _ = _draw_patch(image, setup, size_mm, center, soft=False)
    sign = 1.0 if setup.rng.random() < 0.5 else -1.0
    offset = sign * float(setup.rng.uniform(0.15, 0.40)) * setup.span
    return _corrupted(image, setup, box, np.maximum(setup.array[box.region] + offset, setup.array.min()))


def _signed_blob(sign: float) -> Callable[..., Tuple[sitk.Image, sitk.Image]]:
    """:func:`insert_blob` with a contrast of 0.3-0.8 of the robust range and the given sign."""

    def blob(
        image: sitk.Image, rng_or_seed: SeedLike, brain_mask: Optional[sitk.Image] = None
    ) -> Tuple[sitk.Image, sitk.Image]:
        rng = np.random.default_rng(rng_or_seed)
        contrast = sign * float(rng.uniform(0.3, 0.8))
        return insert_blob(image, rng, brain_mask=brain_mask, contrast=contrast)

    blob.__name__ = "hyper_blob" if sign > 0 else "hypo_blob"
    blob.__doc__ = _signed_blob.__doc__
    return blob


#: Every anomaly generator by name, each called as ``(image, rng_or_seed, brain_mask=None) -> (image, truth)``
#: with its default sizes and contrasts; benchmarks draw from it so that all kinds get tested alike.
LESION_TYPES: Dict[str, Callable[..., Tuple[sitk.Image, sitk.Image]]] = {
    "hyper_blob": _signed_blob(1.0),
    "hypo_blob": _signed_blob(-1.0),
    "tumour": insert_tumour,
    "noise_patch": insert_noise_patch,
    "copied_patch": insert_copied_patch,
    "intensity_shift": insert_intensity_shift,
}


def insert_lesion(
    image: sitk.Image, kind: str, rng_or_seed: SeedLike, brain_mask: Optional[sitk.Image] = None
) -> Tuple[sitk.Image, sitk.Image]:
    """Insert one anomaly of ``kind`` (a key of :data:`LESION_TYPES`) with default parameters.

    Returns ``(image, truth)`` as the generator does; an unknown ``kind`` is a :class:`ValueError`
    listing the known ones.
    """
    if kind not in LESION_TYPES:
        raise ValueError(f"unknown lesion kind {kind!r}; choose one of {', '.join(LESION_TYPES)}")
    return LESION_TYPES[kind](image, rng_or_seed, brain_mask=brain_mask)


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
