"""A clinical acquisition of a subject: thick axial slices, part of the head left out, contrast agent.

What most hospital archives hold is not a 1 mm 3D research T1 but a 2D axial acquisition: fine
in-plane voxels, 5-7 mm slices, the vertex and the skull base often outside the slab, and, for
tumour work, a gadolinium-enhanced T1 in which the dura, the venous sinuses and the cortical veins
light up. :func:`enhance` paints that enhancement into a 1 mm subject (before the lesion's truth
is final, so vessels are normal anatomy, not truth); :func:`cut_coverage` leaves the vertex and
the skull base out of a native-space case. Both are seeded and deterministic.

Why a benchmark needs them: the registration used to land such a scan 20 mm off without a warning
(the README's registration section), a model trained on non-contrast T1 sees the enhancing
vessels inside the brain mask as anomalies, and template voxels outside the slab must not count as
brain. Cases made this way measure all three.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import SimpleITK as sitk

#: Voxel size of the clinical acquisition (mm along the native i, j, k axes; k is the slice axis).
CLINICAL_SPACING: Tuple[float, float, float] = (0.8, 0.8, 6.5)

#: Voxel order of the clinical acquisition: axial slices, the slice axis inferior to superior.
CLINICAL_ORIENTATION = "LPS"

#: Millimetres of the brain left out above (vertex) and below (skull base, cerebellum) the slab.
CUT_MM: Tuple[float, float] = (15.0, 10.0)

#: Smoothness of the random fields whose zero sets cross along the vessels (Gaussian sigma, mm).
VESSEL_FIELD_SIGMA_MM = 6.0

#: Half width of a vessel in units of the fields' standard deviation (about 1 mm at the sigma above).
VESSEL_HALF_WIDTH = 0.17

#: Depth below the brain's surface (mm) within which cortical veins run.
VESSEL_DEPTH_MM = 3.0

#: The dura: a shell this far outside the brain mask (mm).
DURA_SHELL_MM: Tuple[float, float] = (1.0, 2.5)


def enhance(image: sitk.Image, brain: sitk.Image, seed: int) -> sitk.Image:
    """``image`` (1 mm, float32) with gadolinium enhancement of the dura and of the cortical veins.

    Veins are where the zero sets of two smooth random fields cross (a random network of curves),
    kept within :data:`VESSEL_DEPTH_MM` below the brain surface and just outside it; the dura is a
    thin shell outside the brain. Both are brighter than white matter, by an amount drawn per
    subject, and blurred by half a millimetre so they have no aliased edge.
    """
    rng = np.random.default_rng([int(seed), 0x6AD0])
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    inside = sitk.GetArrayViewFromImage(brain) > 0
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        sitk.Cast(brain > 0, sitk.sitkUInt8), insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    bright = float(np.percentile(array[inside], 99.5))

    fields = []
    for _ in range(2):
        noise = sitk.GetImageFromArray(rng.standard_normal(array.shape).astype(np.float32))
        noise.CopyInformation(image)
        smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(noise, VESSEL_FIELD_SIGMA_MM))
        fields.append(smooth / max(float(smooth.std()), 1e-12))
    vessels = (np.abs(fields[0]) < VESSEL_HALF_WIDTH) & (np.abs(fields[1]) < VESSEL_HALF_WIDTH)
    vessels &= (distance > -VESSEL_DEPTH_MM) & (distance < DURA_SHELL_MM[1])
    dura = (distance > DURA_SHELL_MM[0]) & (distance <= DURA_SHELL_MM[1])

    target = np.zeros_like(array)
    target[dura] = bright * rng.uniform(0.8, 1.0)
    target[vessels] = bright * rng.uniform(1.0, 1.3)
    weight = (dura | vessels).astype(np.float32)
    soft = []
    blur = sitk.DiscreteGaussianImageFilter()  # sampled: the recursive one is poor below a voxel
    blur.SetVariance(0.25)
    blur.SetUseImageSpacing(True)
    for values in (target * weight, weight):
        volume = sitk.GetImageFromArray(values)
        volume.CopyInformation(image)
        soft.append(sitk.GetArrayFromImage(blur.Execute(volume)))
    level, share = soft
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(share > 1e-3, level / share, 0.0)
    share = np.clip(share, 0.0, 1.0)
    out = np.where(level > array, array + share * (level - array), array).astype(np.float32)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def cut_coverage(
    image: sitk.Image, brain: sitk.Image, truth: sitk.Image, cut_mm: Tuple[float, float] = CUT_MM
) -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """The three native images with slices left out: ``cut_mm`` (top, bottom) of the brain beyond the slab.

    The images must be in :data:`CLINICAL_ORIENTATION` (the last voxel axis inferior to superior).
    A lesion is never cut away: the slab grows to hold every slice its truth touches.
    """
    if sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) != CLINICAL_ORIENTATION:
        raise ValueError(f"cut_coverage needs {CLINICAL_ORIENTATION} images (axial slices last)")
    spacing = image.GetSpacing()[2]
    slices = np.nonzero(sitk.GetArrayViewFromImage(brain).any(axis=(1, 2)))[0]
    if slices.size == 0:
        raise ValueError("the brain mask is empty")
    first = int(slices[0] + int(np.ceil(cut_mm[1] / spacing)))
    last = int(slices[-1] - int(np.ceil(cut_mm[0] / spacing)))
    lesion = np.nonzero(sitk.GetArrayViewFromImage(truth).any(axis=(1, 2)))[0]
    if lesion.size:
        first, last = min(first, int(lesion[0])), max(last, int(lesion[-1]))
    if last < first:
        raise ValueError("the cut leaves no slice of the brain")
    return tuple(volume[:, :, first:last + 1] for volume in (image, brain, truth))  # type: ignore[return-value]
