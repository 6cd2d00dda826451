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
``sitk.Resample`` needs to pull the input onto the template grid; :func:`resample_to_input`
uses its inverse to bring an anomaly map back onto the input grid exactly.

A registration that obviously failed must not give a silently wrong anomaly map, so
:func:`check_registration` compares the final metric, the share of the mapped template brain
that lies inside the input's foreground, and the transform's scaling with what normal scans
give, and the result carries its warnings into the report.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import Cancelled, InputError
from ..progress import CancelCheck, Progress, ProgressCallback
from .intensity import foreground_mask
from .io import validate_volume

if TYPE_CHECKING:  # torch only where a device is given: the MRML layer loads this module without it
    import torch

#: Isotropic spacing (mm) of the copies that are registered; axes already coarser are kept.
WORKING_SPACING_MM = 2.0

#: Margin (mm) by which the template brain mask is dilated for the metric: the brain's border
#: (brain against CSF or background) carries much of the alignment information.
MASK_MARGIN_MM = 4.0

#: Histogram bins of the Mattes mutual information: enough for grey/white/CSF/background, few
#: enough for the thousands of samples of the coarse levels.
HISTOGRAM_BINS = 32
#: ITK's thread count is process-wide: registrations in threads of one process take turns (see _one_itk_thread).
_ITK_THREADS_LOCK = threading.Lock()

#: Rotations (radians about the template's x, y, z axes) tried on top of each initial centre.
#: Head tilt (about x, left-right) varies most between scans, so it gets two extra tries.
INITIAL_ROTATIONS: Tuple[Tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (0.26, 0.0, 0.0), (-0.26, 0.0, 0.0),
    (0.0, 0.26, 0.0), (0.0, -0.26, 0.0),
    (0.0, 0.0, 0.26), (0.0, 0.0, -0.26),
)

#: Isotropic scales the affine stage also starts from (on top of the rigid result itself, scale 1).
#: From scale 1 the affine stage can grow the template's brain onto the skull or the enhancing dura
#: of a head whose brain is smaller than the template's (it ended 10-27 % too large on three of the
#: held-out and validation cases, brain Dice 0.67-0.83 against the truth); started 15 % smaller it
#: reaches the right optimum (Dice 0.90-0.96, mutual information -0.34 to -0.70 instead of -0.16 to
#: -0.21), and on scans where scale 1 was right both starts end at the same optimum.
AFFINE_START_SCALES: Tuple[float, ...] = (0.85,)

#: An affine result from another start replaces the one from scale 1 only if its metric is lower by
#: more than this: equal optima (up to the sampling's noise) keep the scale-1 result.
START_MARGIN = 0.01

#: Iterations per resolution level of each stage.
MAX_ITERATIONS = 100

#: Interpolators that keep label values, and so the labels' pixel type (sitkLabelLinear: SimpleITK >= 2.3).
_LABEL_INTERPOLATORS = tuple(
    getattr(sitk, name)
    for name in ("sitkNearestNeighbor", "sitkLabelGaussian", "sitkLabelLinear")
    if hasattr(sitk, name)
)

#: Quality limits of :func:`check_registration`. The metric is the Mattes MI value as SimpleITK
#: reports it (negative; lower is better). Synthetic normal subjects made from the 2 mm MNI152
#: template (affine + elastic deformation, bias, gamma, noise, texture, with or without a
#: simulated skull, inverted T2-like contrast) end at -0.8 to -1.8; a noise volume ends near 0, a
#: brain turned upside down (wrong header) at -0.20, an ellipsoid phantom at -0.22. Real scans
#: are less similar to an average template than synthetic ones, hence the margin: a value above
#: ``max_metric`` means the images share almost no information where the brain should be.
#: ``min_overlap`` is the fraction of the template brain mapped onto the input *within the input's
#: field of view* that falls inside the input's foreground. Good registrations of the validation
#: heads (OASIS-30, ICBM 2009c: 1 mm, and in 6.5 mm slices with 60 mm of the head cut off; skull on
#: and skull-stripped) give 0.92-0.998; the 6.5 mm OASIS head registered 21.8 mm off (the README's
#: registration section) 0.73; noise 0.5. It used to count the brain outside the field of view as
#: missed, which put correct partial-coverage registrations at 0.74-0.81, as low as that miss, so
#: the limit had to sit at 0.7 and caught neither.
#: ``min_coverage`` is the share of the template brain inside the input's field of view: below it the
#: scan holds too little of the brain for a trustworthy registration or map.
#: ``scale_range`` bounds the singular values of the affine matrix: adult brains differ in size by
#: some 15 %, a factor outside [0.7, 1.4] is a transform that shrank or blew up the brain to fit.
DEFAULT_EXPECTED: Dict[str, Any] = {
    "max_metric": -0.25,
    "min_overlap": 0.85,
    "min_coverage": 0.5,
    "scale_range": (0.7, 1.4),
}


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_to_template`.

    ``transform`` maps template (fixed) physical points to input (moving) physical points, as
    ``sitk.Resample`` expects for pulling the input onto the template grid. ``metric`` is the
    Mattes MI at the end (SimpleITK sign: lower is better), re-evaluated on the working grid with
    the seeded sampling so it is comparable between scans. ``brain_overlap`` is the fraction of
    the template brain mapped into the input's field of view that lies inside the input's
    foreground, ``brain_coverage`` the fraction of the template brain inside that field of view
    (both ``None`` when not computed; see :func:`template_brain_overlap`). ``warnings`` are the
    findings of :func:`check_registration`.
    """

    transform: sitk.Transform
    metric: float
    iterations: int
    stop_condition: str
    brain_overlap: Optional[float] = None
    brain_coverage: Optional[float] = None
    warnings: List[str] = field(default_factory=list)
    initialisation: str = ""
    seconds: float = 0.0

    def to_report(self) -> Dict[str, Any]:
        """JSON-able summary for a detection report: the transform in several readable forms
        (SimpleITK parameters to rebuild it, and a 4x4 homogeneous matrix in LPS millimetres),
        the quality measures and the warnings."""
        report: Dict[str, Any] = {
            "transform_type": self.transform.GetName(),
            "maps": "template (fixed) LPS mm -> input (moving) LPS mm",
            "parameters": [float(p) for p in self.transform.GetParameters()],
            "fixed_parameters": [float(p) for p in self.transform.GetFixedParameters()],
        }
        matrix, translation, center = _affine_parts(self.transform)
        if matrix is not None:
            offset = translation + center - matrix @ center
            homogeneous = np.eye(4)
            homogeneous[:3, :3] = matrix
            homogeneous[:3, 3] = offset
            report.update({
                "matrix": matrix.tolist(),
                "translation": translation.tolist(),
                "center": center.tolist(),
                "homogeneous_matrix": homogeneous.tolist(),
                "scales": np.linalg.svd(matrix, compute_uv=False).tolist(),
            })
        report.update({
            "metric": float(self.metric) if math.isfinite(self.metric) else None,
            "metric_name": "mattes_mutual_information (SimpleITK sign: lower is better)",
            "iterations": int(self.iterations),
            "stop_condition": self.stop_condition,
            "brain_overlap": None if self.brain_overlap is None else float(self.brain_overlap),
            "brain_coverage": None if self.brain_coverage is None else float(self.brain_coverage),
            "initialisation": self.initialisation,
            "seconds": round(float(self.seconds), 3),
            "warnings": list(self.warnings),
        })
        return report


def _affine_parts(transform: sitk.Transform) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Matrix, translation and centre of a matrix-offset transform (affine, rigid, similarity);
    ``(None, ...)`` for any other kind (e.g. a displacement field)."""
    try:
        downcast = transform.Downcast()
        matrix = np.asarray(downcast.GetMatrix(), dtype=float).reshape(3, 3)
        translation = np.asarray(downcast.GetTranslation(), dtype=float)
        center = np.asarray(downcast.GetCenter(), dtype=float)
    except (AttributeError, RuntimeError, TypeError):
        return None, np.zeros(3), np.zeros(3)
    return matrix, translation, center


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
    :func:`check_registration`; a bad registration is reported, not raised, so the caller can
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


def template_brain_overlap(
    transform: sitk.Transform, image: sitk.Image, template_mask: sitk.Image
) -> Tuple[float, float]:
    """``(overlap, coverage)`` of ``template_mask`` mapped onto ``image``.

    ``coverage`` is the fraction of the template brain that lands inside ``image``'s field of view
    (1 for a whole-head scan; less for a clinical scan with the vertex or skull base cut off).
    ``overlap`` is the fraction of the brain that lands inside the field of view that also lies in
    ``image``'s foreground (the Otsu head or brain region of :func:`foreground_mask`, so skull or no
    skull does not matter): a well registered brain lies inside the head whatever the coverage,
    while a miss puts part of it over background. Judged within the field of view so that partial
    coverage does not read as a miss. Computed at the resolution of ``image`` (pass a downsampled
    copy for speed).
    """
    mask_volume = float(np.count_nonzero(sitk.GetArrayViewFromImage(template_mask))) * float(
        np.prod(template_mask.GetSpacing()))
    if mask_volume <= 0.0:
        raise InputError("registration: the template mask is empty")
    mapped = resample_to_input(sitk.Cast(template_mask > 0, sitk.sitkUInt8), image, transform,
                               sitk.sitkNearestNeighbor, 0)
    inside = sitk.GetArrayViewFromImage(mapped).astype(bool)
    in_view = int(np.count_nonzero(inside))
    if in_view == 0:
        return 0.0, 0.0
    foreground = sitk.GetArrayFromImage(foreground_mask(image, "otsu")).astype(bool)  # a copy: the mask is temporary
    # The whole brain's mapped volume is the template's times |det|; the part of it on the input
    # grid over that is the coverage.
    matrix, _, _ = _affine_parts(transform)
    expected_volume = mask_volume * (1.0 if matrix is None else abs(float(np.linalg.det(matrix))))
    coverage = min(1.0, in_view * float(np.prod(image.GetSpacing())) / expected_volume)
    return float(np.count_nonzero(inside & foreground) / in_view), float(coverage)


def check_registration(result: RegistrationResult, expected: Optional[Dict[str, Any]] = None) -> List[str]:
    """Warnings (possibly none) for a registration whose quality measures are implausible.

    ``expected`` overrides entries of :data:`DEFAULT_EXPECTED` (``max_metric``, ``min_overlap``,
    ``min_coverage``, ``scale_range``). Each warning is one sentence a user can act on; the caller
    decides whether to go on (the anomaly map of a misregistered scan is mostly false positives).
    """
    limits = dict(DEFAULT_EXPECTED)
    if expected:
        limits.update(expected)
    warnings: List[str] = []
    if not math.isfinite(result.metric) or result.metric > float(limits["max_metric"]):
        warnings.append(
            f"registration probably failed: mutual information {result.metric:.3f} is above "
            f"{float(limits['max_metric']):.3f} (input and template share little information); "
            "check that the input is a brain MRI and its orientation is right"
        )
    if result.brain_overlap is not None and result.brain_overlap < float(limits["min_overlap"]):
        warnings.append(
            f"registration probably failed: only {100 * result.brain_overlap:.0f} % of the template brain within "
            f"the field of view falls inside the input's foreground (expected at least "
            f"{100 * float(limits['min_overlap']):.0f} %)"
        )
    if result.brain_coverage is not None and result.brain_coverage < float(limits["min_coverage"]):
        warnings.append(
            f"only {100 * result.brain_coverage:.0f} % of the brain is inside the scan's field of view (expected "
            f"at least {100 * float(limits['min_coverage']):.0f} %): the registration and the map of so partial a "
            "scan are unreliable"
        )
    matrix, _, _ = _affine_parts(result.transform)
    if matrix is not None:
        scales = np.linalg.svd(matrix, compute_uv=False)
        low, high = (float(v) for v in limits["scale_range"])
        if scales.min() < low or scales.max() > high:
            warnings.append(
                f"registration probably failed: the transform scales the brain by {scales.min():.2f} to "
                f"{scales.max():.2f} (plausible: {low:.2f} to {high:.2f})"
            )
    return warnings


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
    (template -> input points, as found by :func:`register_to_template`)."""
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
