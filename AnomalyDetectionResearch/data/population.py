"""The generated normal population: which subjects each split holds and how one is made.

A subject is made in two stages. First, at 1 mm in the template's own space, a plausible new brain
is drawn from the template (:func:`~.lesions.random_normal_subject`: head pose up to 15 degrees,
brain shape, bias field, contrast, noise) and, for a benchmark case, the anomaly is painted in;
this is where the truth is exact to the voxel. Then the image is put into a *native* space of its
own, as a scanner would have written it: another voxel size (anisotropic included) and another
axis orientation. Detection therefore always runs the whole path, reorientation, resampling and
registration included, and a benchmark cannot be passed by a model that only works on images that
already sit on its template grid.

Variety is cycled deterministically by the subject's index in its split rather than drawn at
random, so that even a handful of subjects covers every template and several orientations and
voxel sizes:

* template: index mod 3 over MNI152 (skull-stripped), Colin27 brain-extracted and Colin27 with
  skull (only MNI152 where Debian's ``mricron-data`` is not installed; the population then differs
  between machines, which :func:`available_anatomy` reveals); with a ``synthetic_fraction``, that
  share of the training subjects are synthetic individuals instead (:mod:`.synthetic`), evenly spread;
  with ``extra_anatomy``, the cycle goes on over the extra training heads fetched at setup
  (:data:`~.held_out.TRAINING`: FreeSurfer's group averages, with skull every other cycle, skull-stripped
  with their own masks in between) after the templates;
* orientation: index mod 5 over :data:`ORIENTATIONS`;
* voxel size: over :data:`SPACINGS` with period 5 too, but shifted by one every five subjects, so
  every 25 consecutive subjects hold all 25 orientation / voxel-size pairs.

Splits take their seeds from the disjoint ranges of :data:`SPLIT_SEEDS`, so an evaluation subject
never shares a random draw with a training or calibration subject.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from AnomalyDetectionLib.preprocessing.anatomy import available_anatomy, brain_mask, load_anatomy

from .cases import SPLITS, BenchmarkCase, CaseSpec, Subject, SubjectSpec
from .clinical import CLINICAL_ORIENTATION, CLINICAL_SPACING, cut_coverage, enhance
from .held_out import (
    HELD_OUT,
    TRAINING,
    VALIDATION,
    available_held_out,
    available_training,
    available_validation,
    held_out_dir,
    load_held_out,
)
from .lesions import insert_lesion, random_normal_subject
from .synthetic import SYNTHETIC_ANATOMY, synthetic_individual

#: Seed range of each split; disjoint, so no two splits ever share a subject or a random draw.
SPLIT_SEEDS: Dict[str, range] = {
    "train": range(0, 10000),
    "calibration": range(10000, 20000),
    "benchmark": range(20000, 30000),
    "held_out": range(30000, 40000),
    "validation": range(40000, 50000),
    "clinical": range(50000, 60000),
}

#: Native axis orientations (DICOM codes) that subjects cycle through: the usual axial ones, a
#: sagittal acquisition (PIR) and a coronal-first one (ASL), so no model can rely on the axis order.
ORIENTATIONS: Tuple[str, ...] = ("LPS", "RAS", "LAS", "PIR", "ASL")

#: Native voxel sizes (mm, along the native voxel axes i, j, k) that subjects cycle through.
SPACINGS: Tuple[Tuple[float, float, float], ...] = (
    (1.0, 1.0, 1.0),
    (1.2, 1.2, 1.2),
    (0.9, 0.9, 2.0),
    (1.0, 1.0, 1.5),
    (1.5, 1.5, 1.5),
)

#: Head pose variety: registration has to recover rotations up to this many degrees per axis.
MAX_ROTATION_DEG = 15.0

#: Full width at half maximum over sigma of a Gaussian.
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


class _Template(NamedTuple):
    """Files a subject is made from: the image with skull (if the template has one) and without."""

    with_skull: Optional[str]
    stripped: str


_TEMPLATES: Dict[str, _Template] = {
    "mni152_t1": _Template(None, "mni152_t1"),
    "colin27_ch2": _Template("colin27_ch2", "colin27_ch2bet"),
    "colin27_ch2bet": _Template("colin27_ch2", "colin27_ch2bet"),
}


def population_anatomy() -> Tuple[str, ...]:
    """The templates subjects cycle through on this machine: Colin27 only where both of its files exist."""
    found = available_anatomy()
    if "colin27_ch2" in found and "colin27_ch2bet" in found:
        return ("mni152_t1", "colin27_ch2bet", "colin27_ch2")
    return ("mni152_t1",)


def training_anatomy(extra_anatomy: bool = False) -> Tuple[str, ...]:
    """The anatomy training subjects cycle through: :func:`population_anatomy`, then, with
    ``extra_anatomy``, the extra training heads present on this machine (:func:`available_training`).

    The extra heads come after the templates, so the cycle without them is where it always was."""
    if not extra_anatomy:
        return population_anatomy()
    return population_anatomy() + available_training()


def population(split: str, n: int, synthetic_fraction: float = 0.0, extra_anatomy: bool = False) -> List[SubjectSpec]:
    """The first ``n`` subjects of ``split``: seeds start + 0 ... start + n - 1, variety cycled by index.

    Deterministic (on a given machine, see :func:`population_anatomy`): the first ``n`` are always
    the same, and asking for more only appends subjects. With ``synthetic_fraction`` f > 0 (train
    and calibration splits only), subject i is a synthetic individual (:mod:`.synthetic`) where
    floor((i + 1) f) > floor(i f), evenly spread, and the other subjects cycle over the templates
    as before; orientation and voxel size still cycle by i. With ``extra_anatomy`` (train and
    calibration splits only) the template subjects cycle over the templates and then the extra
    training heads on this machine (:func:`training_anatomy`), with skull every other cycle; seeds,
    orientations and voxel sizes stay those of the plain population. Without it the population is
    the one the bundled models were trained on, subject for subject.
    """
    if not 0.0 <= synthetic_fraction <= 1.0:
        raise ValueError(f"synthetic_fraction must lie in [0, 1], not {synthetic_fraction}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    seeds = SPLIT_SEEDS[split]
    if not 0 <= n <= len(seeds):
        raise ValueError(f"split {split!r} holds 0 to {len(seeds)} subjects, not {n}")
    if extra_anatomy and split not in ("train", "calibration"):
        raise ValueError(f"extra training anatomy is for the train and calibration splits, not {split!r}")
    if split in ("held_out", "validation", "clinical"):
        if synthetic_fraction:
            raise ValueError(f"the {split} split is real anatomy only; synthetic individuals are for training")
        return _head_population(split, seeds, n)
    anatomy = training_anatomy(extra_anatomy)
    specs = []
    templates_so_far = 0
    for i in range(n):
        if math.floor((i + 1) * synthetic_fraction) > math.floor(i * synthetic_fraction):
            name, skull = SYNTHETIC_ANATOMY, False
        else:
            name = anatomy[templates_so_far % len(anatomy)]
            if name in TRAINING:  # every other cycle: heads with a skull stay near the templates' third
                skull = (templates_so_far // len(anatomy)) % 2 == 0
            else:
                skull = name in _TEMPLATES and _TEMPLATES[name].with_skull == name
            templates_so_far += 1
        specs.append(
            SubjectSpec(
                split=split,
                seed=seeds[i],
                anatomy=name,
                skull=skull,
                orientation=ORIENTATIONS[i % len(ORIENTATIONS)],
                spacing=SPACINGS[(i + i // len(ORIENTATIONS)) % len(SPACINGS)],
            )
        )
    return specs


def _head_population(split: str, seeds: range, n: int) -> List[SubjectSpec]:
    """Subjects cycling over the split's heads (held-out or validation) on this machine, each in its own
    orientation and voxel size as acquired (the point of these splits is anatomy; pose, contrast and
    noise vary as usual). ``clinical`` subjects are the held-out heads in the clinical acquisition of
    :mod:`.clinical` instead."""
    names = available_validation() if split == "validation" else available_held_out()
    if not names:
        raise ValueError(f"no {split.replace('_', '-')} anatomy on this machine ({held_out_dir()}): "
                         "'make setup' fetches it")
    specs = []
    for i in range(n):
        if split == "clinical":
            specs.append(SubjectSpec(split=split, seed=seeds[i], anatomy=names[i % len(names)], skull=True,
                                     orientation=CLINICAL_ORIENTATION, spacing=CLINICAL_SPACING,
                                     acquisition="clinical"))
            continue
        image, _ = load_held_out(names[i % len(names)])
        orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        specs.append(SubjectSpec(split=split, seed=seeds[i], anatomy=names[i % len(names)], skull=True,
                                 orientation=orientation, spacing=tuple(float(s) for s in image.GetSpacing())))
    return specs


def make_subject(spec: SubjectSpec) -> Subject:
    """The normal subject of ``spec`` in its native space: float32 image and uint8 brain mask, same grid."""
    image, brain, _ = _generate(spec, None, 0)
    return Subject(spec, image, brain)


def make_case(spec: CaseSpec) -> BenchmarkCase:
    """The benchmark case of ``spec`` in its subject's native space, with its truth (all zero if normal).

    The image is exactly :func:`make_subject`'s for a normal case, and differs from it only by the
    anomaly otherwise: both come from the same code path and the same seeds. The anomaly changes
    the image inside the brain mask only (the skull and scalp of a skull case stay as they were),
    and its truth lies within the case's brain mask.
    """
    image, brain, truth = _generate(spec.subject, spec.lesion, spec.lesion_seed)
    return BenchmarkCase(spec, image, truth, brain)


def _generate(spec: SubjectSpec, lesion: Optional[str], lesion_seed: int) -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """``(image, brain, truth)`` on the native grid of ``spec``, with the anomaly ``lesion`` if not None.

    The anomaly goes in at 1 mm, before resampling, so that it is blurred and sampled exactly as
    the anatomy around it, as a real lesion would be by the scanner.
    """
    if spec.anatomy == SYNTHETIC_ANATOMY:
        template, brain = synthetic_individual(spec.seed)
    else:
        template, brain = _template(spec.anatomy, spec.skull)
    image, moved_brain = random_normal_subject(template, spec.seed, mask=brain, max_rotation_deg=MAX_ROTATION_DEG)
    assert moved_brain is not None  # a mask was given
    clinical = spec.acquisition == "clinical"
    if clinical:  # contrast agent: part of the normal anatomy, painted in before any lesion
        image = enhance(image, moved_brain, spec.seed)
    truth = None
    if lesion is not None:
        changed, truth = insert_lesion(image, lesion, lesion_seed, brain_mask=moved_brain)
        image, truth = _confine(image, changed, truth, moved_brain)
    native_image = _to_native(image, spec.spacing, spec.orientation, smooth=True)
    native_brain = _mask_to_native(moved_brain, spec)
    if truth is None:
        native_truth = sitk.Image(native_brain.GetSize(), sitk.sitkUInt8)
        native_truth.CopyInformation(native_brain)
    else:
        native_truth = _mask_to_native(truth, spec)
        if not sitk.GetArrayViewFromImage(native_truth).any():
            # A lesion thinner than half a native voxel would otherwise vanish from the truth
            # while still changing the image; keep every native voxel it touches instead.
            native_truth = _mask_to_native(truth, spec, threshold=0.0)
    if clinical:
        return cut_coverage(native_image, native_brain, native_truth)
    return native_image, native_brain, native_truth


@functools.lru_cache(maxsize=8)
def _template_cached(anatomy: str, skull: bool) -> Tuple[sitk.Image, sitk.Image]:
    # Cached because a population generates many subjects from the same three templates (six with
    # the extra training heads: a cycle longer than the cache would read every file every time), and
    # the MNI brain mask is itself built from two further files; callers get copies.
    if anatomy in TRAINING and not skull:  # an extra training head, skull-stripped with its own mask
        image, brain = load_held_out(anatomy)
        return sitk.Mask(image, brain), brain
    if anatomy in HELD_OUT or anatomy in VALIDATION or anatomy in TRAINING:  # fetched at setup; with skull
        return load_held_out(anatomy)
    if anatomy not in _TEMPLATES:
        raise ValueError(f"no population template {anatomy!r}; choose one of {', '.join(_TEMPLATES)}")
    files = _TEMPLATES[anatomy]
    if skull and files.with_skull is None:
        raise ValueError(f"template {anatomy!r} has no skull; a subject made from it cannot keep one")
    if anatomy.startswith("mni152"):
        brain = brain_mask(anatomy)  # grey + white matter probability
    else:
        brain = sitk.Cast(load_anatomy(files.stripped) > 0, sitk.sitkUInt8)  # the brain extraction itself
    # Hole-filled so that the ventricles count as brain: a lesion may lie there, and a metric's
    # foreground must not have holes in the middle of the head.
    brain = sitk.BinaryFillhole(brain)
    image = load_anatomy(files.with_skull if skull else files.stripped)
    return image, brain


def _template(anatomy: str, skull: bool) -> Tuple[sitk.Image, sitk.Image]:
    """The 1 mm template image (with or without skull) and its hole-filled uint8 brain mask, same grid."""
    image, brain = _template_cached(anatomy, bool(skull))
    return sitk.Image(image), sitk.Image(brain)


def _confine(
    image: sitk.Image, changed: sitk.Image, truth: sitk.Image, brain: sitk.Image
) -> Tuple[sitk.Image, sitk.Image]:
    """Keep the anomaly's change and truth inside the brain mask; outside, ``image`` is left as it was.

    Anomalies are intracranial: a blob or patch drawn near the brain's surface must not also
    brighten the skull or scalp (or the background of a skull-stripped image), and the truth must
    lie within the brain mask that metrics use as foreground.
    """
    inside = sitk.GetArrayViewFromImage(brain) > 0
    out = np.where(inside, sitk.GetArrayViewFromImage(changed), sitk.GetArrayViewFromImage(image))
    kept = (sitk.GetArrayViewFromImage(truth) > 0) & inside
    result = sitk.GetImageFromArray(out.astype(np.float32))
    result.CopyInformation(image)
    truth_out = sitk.GetImageFromArray(kept.astype(np.uint8))
    truth_out.CopyInformation(image)
    return result, truth_out


def _mask_to_native(mask: sitk.Image, spec: SubjectSpec, threshold: float = 0.5) -> sitk.Image:
    """A 1 mm mask on the native grid of ``spec``: linear interpolation, then above ``threshold``, uint8."""
    fraction = _to_native(sitk.Cast(mask > 0, sitk.sitkFloat32), spec.spacing, spec.orientation, smooth=False)
    return sitk.Cast(fraction > threshold, sitk.sitkUInt8)


def _to_native(image: sitk.Image, spacing: Sequence[float], orientation: str, smooth: bool) -> sitk.Image:
    """``image`` reoriented to ``orientation`` and linearly resampled to ``spacing``, float32.

    The image is reoriented first: on an axis-aligned grid that is a lossless permutation and flip
    of the voxel axes, after which ``spacing`` applies to the native axes i, j, k as given (the
    2 mm of (0.9, 0.9, 2.0) is the slice axis of the native orientation). The new grid covers the
    same physical extent to within a voxel, centred on the old one. With ``smooth``, every axis
    that gets coarser is first blurred by a Gaussian whose FWHM brings the old voxel size up to the
    new one (the rule of :func:`~.anatomy.resample_isotropic`, per axis), so thin structures are
    averaged as a thick-slice acquisition would, not aliased.
    """
    oriented = sitk.DICOMOrient(image, orientation)
    old_spacing = np.asarray(oriented.GetSpacing())
    new_spacing = np.asarray([float(s) for s in spacing])
    if np.any(new_spacing <= 0):
        raise ValueError(f"voxel size must be positive, got {tuple(new_spacing)} mm")
    old_size = np.asarray(oriented.GetSize())
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    direction = np.asarray(oriented.GetDirection()).reshape(3, 3)
    centre = np.asarray(oriented.TransformContinuousIndexToPhysicalPoint([float(c) for c in (old_size - 1) / 2.0]))
    origin = centre - direction @ ((new_size - 1) / 2.0 * new_spacing)

    source = sitk.Cast(oriented, sitk.sitkFloat32)
    background = float(sitk.GetArrayViewFromImage(source).min())
    sigmas = np.sqrt(np.maximum(new_spacing**2 - old_spacing**2, 0.0)) / _FWHM_PER_SIGMA
    if smooth and sigmas.max() > 0:
        # A sampled (not recursive) Gaussian: sigmas here are often below one voxel, where the
        # recursive approximation is poor, and a zero variance leaves its axis exactly alone.
        blur = sitk.DiscreteGaussianImageFilter()
        blur.SetVariance([float(s) ** 2 for s in sigmas])
        blur.SetMaximumKernelWidth(64)
        blur.SetMaximumError(0.01)
        source = blur.Execute(source)
    return sitk.Resample(
        source, [int(n) for n in new_size], sitk.Transform(), sitk.sitkLinear, origin.tolist(),
        new_spacing.tolist(), direction.ravel().tolist(), background, sitk.sitkFloat32,
    )
