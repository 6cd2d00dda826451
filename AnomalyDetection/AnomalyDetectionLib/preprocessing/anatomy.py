"""Real brain anatomy that is available offline, for tests, demos and benchmarks.

Unsupervised anomaly detection can only be tested meaningfully on images that look like brains:
noise or geometric phantoms are reconstructed perfectly or not at all. Two public templates need
no download at run time:

* MNI ICBM152 2009a (T1 and grey/white matter probability maps) ships inside the nilearn wheel,
  a dependency of the project, so it is always present.
* Colin27 (single subject, with and without skull) comes with Debian's ``mricron-data`` package;
  it is optional and only used where installed.

A folder named by the environment variable ``ANOMALY_DETECTION_ANATOMY_DIR`` is searched first
for the same file names, for machines where the packages cannot be installed (a cluster node,
a Slicer without nilearn).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Union

import SimpleITK as sitk

from ..errors import InputError
from .io import read_volume

#: Folder of Debian's ``mricron-data`` templates; a module attribute so tests can point it elsewhere.
COLIN27_DIR = Path("/usr/share/mricron/templates")


class AnatomySource(NamedTuple):
    """Where a template lives: ``"nilearn"`` (inside the installed wheel) or ``"mricron"`` (Debian)."""

    source: str
    filename: str
    description: str


ANATOMY: Dict[str, AnatomySource] = {
    "mni152_t1": AnatomySource(
        "nilearn", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "MNI ICBM152 2009a T1, skull-stripped, 1 mm"
    ),
    "mni152_gm": AnatomySource(
        "nilearn", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", "MNI ICBM152 2009a grey matter probability"
    ),
    "mni152_wm": AnatomySource(
        "nilearn", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", "MNI ICBM152 2009a white matter probability"
    ),
    "colin27_ch2": AnatomySource("mricron", "ch2.nii.gz", "Colin27 T1 with skull, 1 mm"),
    "colin27_ch2bet": AnatomySource("mricron", "ch2bet.nii.gz", "Colin27 T1 brain-extracted, 1 mm"),
    "colin27_ch2better": AnatomySource("mricron", "ch2better.nii.gz", "Colin27 T1 high quality, 0.5 mm"),
}


def _nilearn_data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError("nilearn is not installed; it ships the MNI152 template (pip install nilearn)")
    return Path(spec.origin).parent / "datasets" / "data"


#: Environment variable naming an extra folder that holds template files under their usual names.
ANATOMY_DIR_VARIABLE = "ANOMALY_DETECTION_ANATOMY_DIR"


def _candidate_path(name: str) -> Path:
    entry = ANATOMY[name]
    override = os.environ.get(ANATOMY_DIR_VARIABLE)
    if override and (Path(override) / entry.filename).is_file():
        return Path(override) / entry.filename
    folder = _nilearn_data_dir() if entry.source == "nilearn" else COLIN27_DIR
    return folder / entry.filename


def available_anatomy() -> Dict[str, Path]:
    """The templates present on this machine, name -> file (missing optional ones are left out)."""
    found: Dict[str, Path] = {}
    for name in ANATOMY:
        try:
            path = _candidate_path(name)
        except InputError:
            continue
        if path.is_file():
            found[name] = path
    return found


def anatomy_path(name: str) -> Path:
    """File of template ``name``; :class:`InputError` saying how to get it when it is missing."""
    if name not in ANATOMY:
        raise InputError(f"unknown anatomy {name!r}; choose one of {', '.join(ANATOMY)}")
    path = _candidate_path(name)
    if not path.is_file():
        if ANATOMY[name].source == "mricron":
            raise InputError(
                f"anatomy {name!r} needs {path}, which is missing; install it with "
                "'apt-get install mricron-data' (Debian/Ubuntu)"
            )
        raise InputError(f"anatomy {name!r}: {path} is missing; reinstall nilearn")
    return path


def load_anatomy(name: str, spacing_mm: Optional[float] = None) -> sitk.Image:
    """Template ``name`` as float32, optionally resampled to isotropic ``spacing_mm``.

    Coarse spacings (3-4 mm) make models train in seconds on a CPU, which is what tests need.
    The result is a fresh image the caller may modify.
    """
    path = anatomy_path(name)
    return sitk.Image(_load_cached(str(path), None if spacing_mm is None else float(spacing_mm)))


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, spacing_mm: Optional[float]) -> sitk.Image:
    # Cached because test sessions and demos load the same template many times; callers get copies.
    image = sitk.Cast(read_volume(path), sitk.sitkFloat32)
    return image if spacing_mm is None else resample_isotropic(image, spacing_mm)


def resample_isotropic(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Linear resampling to isotropic ``spacing_mm``, same origin and direction, same extent to a voxel.

    When downsampling, a Gaussian of FWHM equal to the new spacing is applied first so that thin
    structures are averaged rather than aliased.
    """
    if spacing_mm <= 0:
        raise InputError(f"spacing must be positive, got {spacing_mm} mm")
    old_spacing = image.GetSpacing()
    sigmas = [math.sqrt(max(spacing_mm**2 - s**2, 0.0)) / 2.3548 for s in old_spacing]
    if max(sigmas) > 0:
        image = sitk.SmoothingRecursiveGaussian(image, sigmas)
    size = [max(1, int(round(n * s / spacing_mm))) for n, s in zip(image.GetSize(), old_spacing)]
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing_mm,) * 3,
        image.GetDirection(), 0.0, sitk.sitkFloat32,
    )


def brain_mask(name_or_image: Union[str, sitk.Image] = "mni152_t1") -> sitk.Image:
    """Binary (uint8) brain mask: MNI152 grey + white matter probability above 0.5.

    Given an MNI152 name, the mask is on the 1 mm template grid; given an image, which must be in
    MNI space (e.g. a resampled template from :func:`load_anatomy`), the probabilities are
    resampled linearly onto its grid first. It serves as ground-truth foreground for lesions and
    metrics, independent of any intensity threshold.
    """
    if isinstance(name_or_image, str) and not name_or_image.startswith("mni152"):
        raise InputError(f"brain_mask is defined for the MNI152 templates, not {name_or_image!r}")
    # The nilearn maps are stored as uint8 with probability 1 at 255.
    probability = (
        sitk.Cast(load_anatomy("mni152_gm"), sitk.sitkFloat32) + sitk.Cast(load_anatomy("mni152_wm"), sitk.sitkFloat32)
    ) / 255.0
    if isinstance(name_or_image, sitk.Image):
        probability = sitk.Resample(probability, name_or_image, sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.Cast(probability > 0.5, sitk.sitkUInt8)
