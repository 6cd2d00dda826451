"""Reading, validating and atomically writing volumes.

A volume in the engine is a ``SimpleITK.Image``: it carries its geometry (size, spacing, origin,
direction) wherever it goes, so no output can lose it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_output
from ..errors import InputError
from .file_checks import (
    check_file_header,
    check_input_path,
    check_memory,
    check_nifti_data,
    dicom_series_files,
    is_nifti,
)

PathLike = Union[str, "os.PathLike[str]"]

#: Extensions (lower case) recognised as image files when scanning folders.
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

#: What ``detect`` writes per input ``<stem>``: the anomaly map, the thresholded anomaly mask, the
#: foreground it scored (the brain for the template models; the region where the map is defined and
#: where metrics belong), and the JSON report. ``evaluate`` finds its inputs by the same names.
DETECTION_OUTPUTS: Dict[str, str] = {
    "map": "_anomaly.nii.gz", "mask": "_mask.nii.gz", "foreground": "_foreground.nii.gz", "report": "_report.json",
}
MAP_SUFFIX = "_anomaly"
#: Largest magnitude a voxel may have: every volume is cast to float32 on its way to the model.
FLOAT32_LIMIT = float(np.finfo(np.float32).max)
#: How far a direction matrix may be from orthonormal (rounding in headers) and still be taken as one.
ORTHONORMAL_TOLERANCE = 1e-3
MASK_SUFFIX = "_mask"


def detection_paths(output_dir: PathLike, stem: str) -> Dict[str, Path]:
    """The files ``detect`` writes for input ``stem`` (keys of :data:`DETECTION_OUTPUTS`)."""
    return {key: Path(output_dir) / f"{stem}{suffix}" for key, suffix in DETECTION_OUTPUTS.items()}


def case_stem(path: PathLike) -> str:
    """Name of a case without folder and image extension (``scan.nii.gz`` -> ``scan``)."""
    name = Path(path).name
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def case_stems(paths: Sequence[PathLike]) -> List[str]:
    """One output name per input, distinct (also without regard to letter case) and stable.

    An input keeps its plain :func:`case_stem` unless another input has the same one; then the
    names of the folders above it are prefixed, nearest first, until the names differ
    (``p001/T1.nii.gz``, ``p002/T1.nii.gz`` -> ``p001_T1``, ``p002_T1``); two files of one folder
    that differ only by extension keep it (``scan_nrrd``, ``scan_nii_gz``). The same inputs give
    the same names on every run, in any order. The same file twice, or two names that differ
    only by letter case (one file on a case-insensitive disk), is an error naming both.
    """
    absolute = [Path(os.path.abspath(p)) for p in paths]
    depth = [0] * len(absolute)
    with_extension = [False] * len(absolute)
    while True:
        names = [_stem_at(path, d, e) for path, d, e in zip(absolute, depth, with_extension)]
        groups: Dict[str, List[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.lower(), []).append(i)
        clashes = [members for members in groups.values() if len(members) > 1]
        if not clashes:
            return names
        for members in clashes:
            for i in members:
                others = [j for j in members if j != i]
                if any(absolute[j].parent == absolute[i].parent for j in others) or depth[i] >= _depth_limit(
                        absolute[i]):
                    if with_extension[i]:
                        j = others[0]
                        what = "is given twice" if absolute[i] == absolute[j] else "differs only by letter case"
                        raise InputError(f"{paths[i]}: {what} (and {paths[j]}); the outputs would overwrite each other")
                    with_extension[i] = True
                else:
                    depth[i] += 1


def _depth_limit(path: Path) -> int:
    return len([part for part in path.parent.parts if part != path.anchor])


def _stem_at(path: Path, depth: int, with_extension: bool) -> str:
    """The stem with the names of ``depth`` folders before it and, if asked, its extension after it."""
    folders = [part for part in path.parent.parts if part != path.anchor]
    stem = case_stem(path)
    if with_extension:
        stem = f"{stem}_{path.name[len(stem):].lstrip('.').replace('.', '_') or 'noext'}"
    return "_".join(folders[len(folders) - depth:] + [stem]) if depth else stem


def read_volume(path: PathLike, allow_constant: bool = False) -> sitk.Image:
    """Read a 3D scalar volume from an image file or a DICOM series folder and validate it.

    ``allow_constant`` accepts a constant volume, as labels may be (an empty truth of a normal case).
    Before reading: the path must lead somewhere readable and the header's voxel count must fit
    into memory; after: NIfTI data is checked where ITK hides faults (see :mod:`.file_checks`).
    """
    path = Path(path)
    check_input_path(path)
    if not path.is_dir():
        check_file_header(path)
    try:
        image = _read_dicom_folder(path) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot be read as an image ({_reader_problem(exc)})") from None
    if not path.is_dir() and is_nifti(path):
        check_nifti_data(path)
    validate_volume(image, str(path), allow_constant)
    return image


def _reader_problem(exc: RuntimeError) -> str:
    """ITK's reason in a few words: its last line, or the line that says what it refused."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        if "Refusing to change spacing" in line:
            return "zero or negative voxel spacing " + line.rsplit(" to ", 1)[-1].strip()
        if "Bad direction" in line:
            return "singular direction matrix (determinant 0)"
        if "Unable to determine ImageIO reader" in line:
            return "no reader recognises its content"
    return lines[-1] if lines else "unknown reason"


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(folder))
    return reader.Execute()


def validate_volume(image: sitk.Image, name: str = "input", allow_constant: bool = False) -> None:
    """Raise :class:`InputError` unless ``image`` is a non-empty, finite, non-constant 3D scalar volume
    (constant allowed with ``allow_constant``: a scan with nothing in it is an error, a label is not)."""
    dim = image.GetDimension()
    if dim == 4:
        raise InputError(f"{name}: 4D image (size {image.GetSize()}); give a single 3D volume")
    if dim != 3:
        raise InputError(f"{name}: {dim}D image (size {image.GetSize()}); a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name}: vector image with {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(RGB or multi-channel); a scalar volume is needed"
        )
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{name}: complex-valued voxels ({image.GetPixelIDTypeAsString()}); give a magnitude image")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name}: volume of size {size} is empty or a single slice")
    _validate_geometry(image, name)
    check_memory(size, 0, name)  # already in memory: what processing it adds
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(np.size(array) - np.count_nonzero(finite))
            raise InputError(f"{name}: {bad} voxels are NaN or Inf")
        largest = float(np.abs(array).max())
        if largest > FLOAT32_LIMIT:
            raise InputError(f"{name}: voxel values up to {largest:.3g} do not fit the float32 the models compute in "
                             f"(at most {FLOAT32_LIMIT:.3g}); rescale the volume")
    if not allow_constant and array.min() == array.max():
        raise InputError(f"{name}: volume is constant (every voxel is {array.flat[0]}); nothing to detect")


def _validate_geometry(image: sitk.Image, name: str) -> None:
    """Refuse a grid no output could be put back on: non-positive spacing, a singular or sheared direction.

    ITK accepts a non-orthonormal direction from a NRRD file; the models' reorientation and the
    outputs' geometry assume an orthonormal one, so such a volume must be resampled first.
    """
    spacing = image.GetSpacing()
    if min(spacing) <= 0 or not all(np.isfinite(spacing)):
        raise InputError(f"{name}: voxel spacing {spacing} is zero, negative or not finite")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.isfinite(direction).all() or abs(np.linalg.det(direction)) < 1e-6:
        raise InputError(f"{name}: singular direction matrix {direction.round(4).tolist()}")
    deviation = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOLERANCE:
        raise InputError(f"{name}: direction matrix is not orthonormal (its axes are sheared or scaled: "
                         f"{direction.round(4).tolist()}); resample the volume onto an orthogonal grid first")


def write_image_atomic(image: sitk.Image, path: PathLike, compress: bool = True) -> None:
    """Write ``image`` to ``path`` through a temporary file in the same folder, then rename.

    A reader never sees a half-written file, and a failed write leaves no file behind.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_output(path, suffix) as tmp:
        sitk.WriteImage(image, tmp, compress)


def write_text_atomic(text: str, path: PathLike) -> None:
    """Write a text file (JSON, CSV) atomically, like :func:`write_image_atomic`."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def expand_inputs(patterns: Sequence[str]) -> List[Path]:
    """Files, folders and glob patterns -> the image files and DICOM series folders they name.

    A folder holding image files stands for those files; a folder without any stands for one
    DICOM series. A pattern that matches nothing is kept, so it is reported as missing.
    A file named twice (directly, through a folder or a pattern) is kept once. Broken and looping
    symbolic links with an image extension are kept too, so that they are reported, not skipped.
    """
    found: List[Path] = []
    seen = set()
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for match in matches or [pattern]:
            path = Path(match)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if (p.is_symlink() or p.is_file()) and _is_image_file(p))
                candidates = files or [path]
            else:
                candidates = [path]
            for candidate in candidates:
                key = os.path.abspath(candidate)
                if key not in seen:
                    seen.add(key)
                    found.append(candidate)
    return found


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS if ext != ".dcm")
