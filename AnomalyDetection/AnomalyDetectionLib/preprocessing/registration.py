"""Affine registration of an input volume to a model's template, and resampling both ways.

A model trained in a canonical template space (MNI152) only sees what it was trained on when the
input is brought into that space first: its head position, size and field of view are arbitrary.
:func:`register_to_template` finds an affine transform with SimpleITK alone, built for robustness
rather than the last tenth of a millimetre:

* registration happens in physical space, so any orientation and spacing works without
  reorientation, and on smoothed copies at about 2 mm (:data:`WORKING_SPACING_MM`): a transform
  between physical spaces stays valid for the full-resolution images, and 2 mm keeps a
  registration to a few seconds on two CPU cores;
* initialisation by moments and by the image centres, each with a few head tilts, keeping the
  one with the best metric, so a scan with a neck or an unusual position still starts close;
* two stages, rigid then affine initialised from it, each multi-resolution: a rigid transform
  cannot shear or shrink the brain to fit a bad start, and the affine stage then only adds size;
* Mattes mutual information, which tolerates any monotone or even non-monotone contrast change
  (another scanner, another T1 sequence), with random sampling from a fixed seed (reproducible);
* the template's brain mask, slightly dilated, as the fixed-image metric mask: the template is
  skull-stripped, so without the mask the input's skull and scalp would pull on the metric.

The transform maps template (fixed) points to input (moving) points, the direction
``sitk.Resample`` needs to pull the input onto the template grid; :func:`~.resampling.resample_to_input`
uses its inverse to bring an anomaly map back onto the input grid exactly.

A registration that obviously failed must not give a silently wrong anomaly map, so
:func:`~.registration_method.check_registration` compares the final metric, the share of the mapped template brain
that lies inside the input's foreground, and the transform's scaling with what normal scans
give, and the result carries its warnings into the report.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import Cancelled, InputError
from ..progress import CancelCheck, Progress, ProgressCallback
from .intensity import foreground_mask
from .io import validate_volume
from .registration_method import (
    AFFINE_START_SCALES,
    HISTOGRAM_BINS,
    INITIAL_ROTATIONS,
    MASK_MARGIN_MM,
    START_MARGIN,
    RegistrationResult,
    check_registration,
    template_brain_overlap,
)

if TYPE_CHECKING:  # torch only where a device is given: the MRML layer loads this module without it
    import torch

#: Isotropic spacing (mm) of the copies that are registered; axes already coarser are kept.
WORKING_SPACING_MM = 2.0

#: ITK's thread count is process-wide: registrations in threads of one process take turns (see _one_itk_thread).
_ITK_THREADS_LOCK = threading.Lock()


#: Iterations per resolution level of each stage.
MAX_ITERATIONS = 100


def _working_copy(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Float32 copy with every axis finer than ``spacing_mm`` smoothed and resampled to it.

    Same origin and direction, so physical positions are untouched; a Gaussian of FWHM equal to
    the new spacing first averages thin structures instead of aliasing them. Intensities are
    clipped to the 99.9th percentile so a few hot voxels do not squeeze the MI histogram.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    old = np.asarray(image.GetSpacing(), dtype=float)
    new = np.maximum(old, spacing_mm)
    sigmas = np.sqrt(np.maximum(new**2 - old**2, 0.0)) / 2.3548
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:  # axis by axis: the recursive Gaussian refuses a zero sigma on any axis
            smoother = sitk.RecursiveGaussianImageFilter()
            smoother.SetDirection(axis)
            smoother.SetSigma(float(sigma))
            image = smoother.Execute(image)
    size = [max(2, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), old, new)]
    image = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), new.tolist(), image.GetDirection(),
        0.0, sitk.sitkFloat32,
    )
    array = sitk.GetArrayViewFromImage(image)
    high = float(np.percentile(array, 99.9))
    low = float(array.min())
    if high > low:
        image = sitk.Clamp(image, sitk.sitkFloat32, low, high)
    return image


def _metric_mask(mask: sitk.Image, grid: sitk.Image, margin_mm: float) -> sitk.Image:
    """``mask`` on ``grid`` (nearest neighbour), dilated by ``margin_mm``."""
    on_grid = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), grid, sitk.Transform(), sitk.sitkNearestNeighbor,
                            0, sitk.sitkUInt8)
    radius = [int(math.ceil(margin_mm / s)) for s in grid.GetSpacing()]
    if max(radius) > 0:
        on_grid = sitk.BinaryDilate(on_grid, radius, sitk.sitkBall)
    return on_grid


def _sitk_seed(seed: int) -> int:
    """SimpleITK seed for the engine's ``seed``: SimpleITK reads 0 as "seed from the wall clock"
    (``sitk.sitkWallClock``), which would make the default ``seed=0`` irreproducible."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed) + 1


def _new_method(fixed_mask: Optional[sitk.Image], percentage: float, seed: int) -> sitk.ImageRegistrationMethod:
    """Registration method with the settings shared by the candidate ranking and both stages."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(percentage), _sitk_seed(seed))
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _initial_candidates(
    fixed: sitk.Image, moving: sitk.Image, fixed_mask: Optional[sitk.Image], seed: int
) -> Tuple[sitk.Euler3DTransform, str]:
    """Best rigid start among moments- and geometry-centred transforms with a few rotations.

    Each candidate is scored by the metric on coarse (3x working spacing) copies; this costs a
    few hundredths of a second and rescues starts that are far off (neck in the field of view,
    unusual head tilt) where the optimiser would otherwise end in a local optimum.
    """
    coarse_spacing = 3.0 * max(fixed.GetSpacing())
    coarse_fixed = _working_copy(fixed, coarse_spacing)
    coarse_moving = _working_copy(moving, coarse_spacing)
    coarse_mask = None if fixed_mask is None else _metric_mask(fixed_mask, coarse_fixed, 0.0)
    method = _new_method(coarse_mask, 1.0, seed)
    method.SetMetricSamplingStrategy(method.NONE)
    best: Tuple[float, Optional[sitk.Euler3DTransform], str] = (math.inf, None, "")
    for name, mode in (("moments", sitk.CenteredTransformInitializerFilter.MOMENTS),
                       ("geometry", sitk.CenteredTransformInitializerFilter.GEOMETRY)):
        try:
            base = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), mode)
        except RuntimeError:
            continue  # e.g. zero total mass for moments
        base = sitk.Euler3DTransform(base)
        for angles in INITIAL_ROTATIONS:
            candidate = sitk.Euler3DTransform(base)
            candidate.SetRotation(*angles)
            method.SetInitialTransform(candidate, inPlace=False)
            try:
                value = method.MetricEvaluate(coarse_fixed, coarse_moving)
            except RuntimeError:
                continue  # too few samples overlap: not a usable start
            if value < best[0]:
                label = f"{name}, rotation {tuple(round(math.degrees(a)) for a in angles)} deg"
                best = (value, candidate, label)
    if best[1] is None:
        raise InputError("registration: the input and the template do not overlap for any initial position; "
                         "is the input a brain volume with a valid geometry?")
    return best[1], best[2]


def _run_stage(
    fixed: sitk.Image,
    moving: sitk.Image,
    fixed_mask: Optional[sitk.Image],
    initial: sitk.Transform,
    shrink_factors: Sequence[int],
    smoothing_sigmas: Sequence[float],
    sampling_percentage: float,
    seed: int,
    learning_rate: float,
    progress: Progress,
    name: str,
    voxel_mm: float,
) -> Tuple[sitk.Transform, int, str]:
    """One multi-resolution stage optimising ``initial`` in place; returns (it, iterations, stop condition).

    Sampling percentages grow at coarse levels (``percentage * factor**3``, at most 1) so every
    level has about the same number of samples: a shrunk level has too few voxels otherwise.
    Smoothing sigmas are in voxels of the working grid (``voxel_mm``) and applied in millimetres:
    an axis coarser than the working grid (a clinical scan's 5-7 mm slices) keeps its voxels, and
    a sigma in its own voxels would blur it three times as far as the other axes, which sent thick-
    slice scans 20 mm off (the README's registration section).
    """
    method = _new_method(fixed_mask, sampling_percentage, seed)
    method.SetMetricSamplingPercentagePerLevel(
        [min(1.0, float(sampling_percentage) * f**3) for f in shrink_factors], _sitk_seed(seed))
    method.SetShrinkFactorsPerLevel([int(f) for f in shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(s) * float(voxel_mm) for s in smoothing_sigmas])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=1e-3, numberOfIterations=MAX_ITERATIONS,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=True)

    levels = len(shrink_factors)
    state = {"iterations": 0, "cancelled": False}

    def on_iteration() -> None:
        state["iterations"] += 1
        level = method.GetCurrentLevel()
        fraction = (level + min(method.GetOptimizerIteration(), MAX_ITERATIONS) / MAX_ITERATIONS) / levels
        try:
            progress.report(fraction, f"registration: {name}, level {level + 1}/{levels}")
        except Cancelled:  # an exception cannot cross the SimpleITK callback: stop, re-raise below
            state["cancelled"] = True
            method.StopRegistration()

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise InputError(f"registration to the template failed in the {name} stage "
                         f"({detail[-1] if detail else 'unknown reason'})") from None
    if state["cancelled"]:
        progress.check_cancel()
    return initial, int(state["iterations"]), method.GetOptimizerStopConditionDescription()


def register_to_template(
    image: sitk.Image,
    template: sitk.Image,
    template_mask: Optional[sitk.Image] = None,
    *,
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2, 1, 0),
    sampling_percentage: float = 0.1,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    working_spacing_mm: float = WORKING_SPACING_MM,
    device: Optional[torch.device] = None,
) -> RegistrationResult:
    """Affine transform from ``template`` (fixed) to ``image`` (moving) space by mutual information.

    ``template_mask`` (the template's brain, any grid in template space) restricts the metric to
    the brain and a margin around it, so a skull in ``image`` does not matter, and sets the
    region of the overlap check; without it the template's Otsu foreground is used for the check
    and the metric uses the whole template. ``shrink_factors`` / ``smoothing_sigmas`` (voxels)
    define the resolution levels relative to copies of both images at ``working_spacing_mm``;
    ``sampling_percentage`` is the share of voxels sampled at the finest level, drawn with
    ``seed`` (>= 0) so that the result is reproducible (up to the order of multi-threaded sums,
    which moves points by some 1e-4 mm). ``progress(fraction, message)`` and ``cancel()``
    behave as elsewhere in the engine.

    A rigid stage from the best of a few initial positions is followed by an affine stage started
    from the rigid result at scale 1 and at each of :data:`AFFINE_START_SCALES`; the best end point
    by the quality check's metric wins, and the rigid result itself if no affine one beats it.

    The result carries the transform, the final metric, the brain overlap and the warnings of
    :func:`~.registration_method.check_registration`; a bad registration is reported, not raised, so the caller can
    still show its map with a warning. :class:`InputError` is raised for unusable inputs.

    ``device``: run it there in torch (:mod:`.torch_registration`, the same method; how the
    detector registers on a GPU); None: SimpleITK on the CPU.
    """
    check_arguments(image, template, shrink_factors, smoothing_sigmas, sampling_percentage, seed)
    if device is not None:
        from .torch_registration import register_on_device

        return register_on_device(image, template, template_mask, device, shrink_factors, smoothing_sigmas,
                                  sampling_percentage, seed, Progress(progress, cancel), working_spacing_mm)
    with _one_itk_thread():
        return _register(image, template, template_mask, shrink_factors, smoothing_sigmas, sampling_percentage,
                         seed, progress, cancel, working_spacing_mm)


def check_arguments(image: sitk.Image, template: sitk.Image, shrink_factors: Sequence[int],
                    smoothing_sigmas: Sequence[float], sampling_percentage: float, seed: int) -> None:
    """The inputs and settings of a registration, checked before any work (on either device)."""
    validate_volume(image, "input")
    validate_volume(template, "template")
    if len(shrink_factors) != len(smoothing_sigmas) or not shrink_factors:
        raise ValueError("shrink_factors and smoothing_sigmas need the same, non-zero number of levels")
    if not 0.0 < sampling_percentage <= 1.0:
        raise ValueError(f"sampling_percentage must be in (0, 1], got {sampling_percentage}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


@contextlib.contextmanager
def _one_itk_thread() -> Iterator[None]:
    """ITK on one thread while the registration runs: the same scan then registers to the same bits.

    ITK's Mattes metric adds its threads' histograms in the order they finish, so with two threads
    the same scan registered twice ended up to 1e-4 mm apart, and voxels near the threshold flipped
    between runs (13 of the sample's 12,393 mask voxels); a map must not depend on thread timing.
    """
    with _ITK_THREADS_LOCK:
        previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            yield
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _register(image, template, template_mask, shrink_factors, smoothing_sigmas, sampling_percentage, seed,
              progress, cancel, working_spacing_mm) -> RegistrationResult:
    steps = Progress(progress, cancel)
    started = time.perf_counter()

    steps.report(0.0, "registration: preparing")
    fixed = _working_copy(template, working_spacing_mm)
    moving = _working_copy(image, working_spacing_mm)
    fixed_mask = None if template_mask is None else _metric_mask(template_mask, fixed, MASK_MARGIN_MM)
    if fixed_mask is not None and not sitk.GetArrayViewFromImage(fixed_mask).any():
        raise InputError("registration: the template mask is empty on the template grid")

    steps.report(0.05, "registration: initialisation")
    initial, init_label = _initial_candidates(fixed, moving, fixed_mask, seed)

    rigid, rigid_iterations, rigid_stop = _run_stage(
        fixed, moving, fixed_mask, initial, shrink_factors, smoothing_sigmas, sampling_percentage, seed,
        learning_rate=2.0, progress=steps.sub(0.1, 0.5), name="rigid", voxel_mm=working_spacing_mm,
    )
    starts = (1.0,) + AFFINE_START_SCALES
    share = 0.4 / len(starts)
    affine = metric = None
    affine_iterations, affine_stop = 0, ""
    for index, scale in enumerate(starts):
        candidate, iterations, stop = _run_stage(
            fixed, moving, fixed_mask, _scaled_affine(rigid, scale), shrink_factors, smoothing_sigmas,
            sampling_percentage, seed, learning_rate=1.0,
            progress=steps.sub(0.5 + index * share, 0.5 + (index + 1) * share), name="affine",
            voxel_mm=working_spacing_mm,
        )
        value = _final_metric(fixed, moving, fixed_mask, candidate, sampling_percentage, seed)
        affine_iterations += iterations
        if metric is None or value < metric - START_MARGIN:
            affine, metric = candidate, value
            affine_stop = stop if scale == 1.0 else f"{stop} (from a start at scale {scale:g}, metric {value:.3f})"

    steps.report(0.9, "registration: quality check")
    assert affine is not None and metric is not None
    rigid_as_affine = _scaled_affine(rigid, 1.0)
    rigid_metric = _final_metric(fixed, moving, fixed_mask, rigid_as_affine, sampling_percentage, seed)
    if rigid_metric < metric:
        # The affine stage restarts at the coarse, smoothed levels, where nine more degrees of freedom
        # can fit the template's brain to a brighter ring around it (the enhancing dura of a
        # post-contrast scan, inflating the brain by 20-27 %) and end worse than where it began.
        affine_stop += (f"; kept the rigid result: its metric {rigid_metric:.3f} is better than the affine "
                        f"stage's {metric:.3f}")
        affine, metric = rigid_as_affine, rigid_metric
    region = template_mask if template_mask is not None else foreground_mask(template, "otsu")
    overlap, coverage = template_brain_overlap(affine, moving, region)

    result = RegistrationResult(
        transform=affine,
        metric=metric,
        iterations=rigid_iterations + affine_iterations,
        stop_condition=f"rigid: {rigid_stop}; affine: {affine_stop}",
        brain_overlap=overlap,
        brain_coverage=coverage,
        initialisation=init_label,
    )
    result.warnings = check_registration(result)
    result.seconds = time.perf_counter() - started
    steps.report(1.0, "registration: done")
    return result


def _scaled_affine(rigid: sitk.Euler3DTransform, scale: float) -> sitk.AffineTransform:
    """An affine transform equal to ``rigid`` with its matrix scaled by ``scale`` about the same centre."""
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix([float(v) * float(scale) for v in rigid.GetMatrix()])
    affine.SetTranslation(rigid.GetTranslation())
    return affine


def _final_metric(fixed: sitk.Image, moving: sitk.Image, fixed_mask: Optional[sitk.Image], transform: sitk.Transform,
                  sampling_percentage: float, seed: int) -> float:
    """The quality check's metric of ``transform``: the same seeded sampling for every scan and stage."""
    method = _new_method(fixed_mask, min(1.0, 4 * sampling_percentage), seed)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))
