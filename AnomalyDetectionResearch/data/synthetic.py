"""Synthetic individuals: new folding patterns drawn from the MNI152 tissue maps (SynthSeg-style).

Why: every generated training subject is a smooth deformation of one of two templates, so the
models learn the cortex of an *average* brain and flag the sharp, individual folding of a real
one, sulcus by sulcus (issue 14). Billot et al. (SynthSeg, Medical Image Analysis 2023) train on
images synthesised from tissue maps under strong random deformation with random intensities per
tissue, so that nothing but the anatomy's layout is fixed. The same idea, kept to T1 contrast:

1. the MNI152 2009a grey-matter, white-matter and CSF maps (CSF: what the brain region holds
   besides the two) are warped by a *fine* random B-spline deformation (control points about
   10 mm apart, a few mm of displacement): gyri shift, thicken, thin and merge, which a coarse
   head-shape deformation cannot do;
2. the maps are sharpened (each probability raised to a random power and renormalised), so
   tissue boundaries are as crisp as in one person rather than blurred by averaging many;
3. each tissue gets its own random intensity (T1 order kept: white above grey above CSF, with
   random gaps) and its own smooth texture, then the image is blurred by a random partial-volume
   kernel.

The result stands in for a template: :func:`synthetic_individual` returns an image and a brain
mask on the MNI152 1 mm grid, which the population then moves, biases, noises and resamples like
any other subject (:mod:`.population`). Nothing here is ever evaluated on: the validation and
held-out heads are real templates and people.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from AnomalyDetectionLib.preprocessing.anatomy import brain_mask, load_anatomy

#: The population's anatomy name of a synthetic individual (its seed makes it unique).
SYNTHETIC_ANATOMY = "mni152_synthetic"

_STREAM = 0x5E7


@dataclass(frozen=True)
class SynthesisRanges:
    """The random draws of one synthetic individual, as ranges (uniform) or scales (Gaussian std).

    Intensities are relative to white matter (1.0); the MNI152 2009a template itself has grey
    at 0.75 and CSF at 0.30 of white, so the ranges straddle it.
    """

    #: B-spline control points per axis over the 1 mm template (about 10 mm apart on 197 x 233 x 189 mm).
    mesh: int = 20
    #: Standard deviation of the control points' displacements, mm.
    fold_mm: float = 2.5
    #: Power the tissue probabilities are raised to before renormalising (1: the template's softness).
    sharpen: Tuple[float, float] = (1.5, 4.0)
    grey: Tuple[float, float] = (0.62, 0.85)
    csf: Tuple[float, float] = (0.15, 0.45)
    #: Standard deviation of each tissue's smooth texture, relative to white matter.
    texture: Tuple[float, float] = (0.0, 0.04)
    #: Partial-volume blur of the synthesised image, sigma in mm.
    blur_mm: Tuple[float, float] = (0.0, 0.6)


DEFAULT_RANGES = SynthesisRanges()


@functools.lru_cache(maxsize=1)
def _tissue_maps() -> Tuple[sitk.Image, np.ndarray, np.ndarray]:
    """``(reference image, tissue probabilities [3, z, y, x] for grey/white/CSF, brain mask)`` at 1 mm.

    CSF is what the template's own (skull-stripped) support holds besides grey and white matter:
    sulci, ventricles and the rim outside the cortex. The brain mask is the population's usual
    hole-filled MNI152 mask, so a synthetic subject's metrics foreground means the same as a
    template subject's.
    """
    reference = load_anatomy("mni152_t1")
    support = sitk.GetArrayFromImage(reference) > 0
    grey = sitk.GetArrayFromImage(load_anatomy("mni152_gm")).astype(np.float32) / 255.0
    white = sitk.GetArrayFromImage(load_anatomy("mni152_wm")).astype(np.float32) / 255.0
    csf = np.clip(1.0 - grey - white, 0.0, 1.0) * support
    brain = sitk.GetArrayFromImage(sitk.BinaryFillhole(brain_mask("mni152_t1"))).astype(np.uint8)
    return reference, np.stack([grey, white, csf.astype(np.float32)]), brain


def _fine_warp(reference: sitk.Image, rng: np.random.Generator, ranges: SynthesisRanges) -> sitk.Transform:
    """A dense random B-spline deformation with control points ``ranges.mesh`` per axis."""
    bspline = sitk.BSplineTransformInitializer(reference, [ranges.mesh] * 3)
    bspline.SetParameters(rng.normal(0.0, ranges.fold_mm, size=len(bspline.GetParameters())).tolist())
    field = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, reference.GetSize(),
                                              reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def _warp(array: np.ndarray, reference: sitk.Image, transform: sitk.Transform, nearest: bool = False) -> np.ndarray:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, interpolator, 0.0))


def synthetic_individual(seed: int, ranges: SynthesisRanges = DEFAULT_RANGES) -> Tuple[sitk.Image, sitk.Image]:
    """A new normal T1 brain (skull-stripped) and its uint8 brain mask on the MNI152 1 mm grid, from ``seed``.

    Deterministic in ``seed``; two seeds give two different folding patterns and contrasts. The
    image is float32 on a 0-100 scale (white matter near 100), zero outside the template's support.
    """
    # Its own stream: the population draws the subject's pose and contrast from ``seed`` itself.
    rng = np.random.default_rng((seed, _STREAM))
    reference, tissues, brain = _tissue_maps()
    warp = _fine_warp(reference, rng, ranges)
    warped = np.stack([_warp(t, reference, warp) for t in tissues])
    power = rng.uniform(*ranges.sharpen)
    total = warped.sum(axis=0)
    sharpened = np.power(np.clip(warped, 0.0, 1.0), power)
    sharpened *= np.divide(total, sharpened.sum(axis=0), out=np.zeros_like(total), where=sharpened.sum(axis=0) > 0)

    means = np.array([rng.uniform(*ranges.grey), 1.0, rng.uniform(*ranges.csf)], dtype=np.float32)
    image = np.zeros(total.shape, dtype=np.float32)
    for probability, mean in zip(sharpened, means):
        texture = gaussian_filter(rng.standard_normal(total.shape).astype(np.float32), sigma=1.5)
        texture *= rng.uniform(*ranges.texture) / max(float(texture.std()), 1e-6)
        image += probability * (mean + texture)
    image = gaussian_filter(image, sigma=rng.uniform(*ranges.blur_mm)) * 100.0
    image = np.maximum(image, 0.0).astype(np.float32)

    out = sitk.GetImageFromArray(image)
    out.CopyInformation(reference)
    moved_brain = sitk.GetImageFromArray(_warp(brain, reference, warp, nearest=True).astype(np.uint8))
    moved_brain.CopyInformation(reference)
    return out, moved_brain
