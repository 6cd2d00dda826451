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


def read_volume(path: PathLike, allow_constant: bool = False) -> sitk.Image:
    """Read a 3D scalar volume from an image file or a DICOM series folder and validate it.

    ``allow_constant`` accepts a constant volume, as labels may be (an empty truth of a normal case).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            image = _read_dicom_folder(path)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[-1] if first else "unknown reason"
        raise InputError(f"{path}: cannot be read as an image ({detail})") from None
    validate_volume(image, str(path), allow_constant)
    return image


def _read_dicom_folder(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(f"{folder}: folder holds {len(series)} DICOM series; give one series per folder")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
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
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name}: volume of size {size} is empty or a single slice")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{name}: {bad} voxels are NaN or Inf")
    if not allow_constant and array.min() == array.max():
        raise InputError(f"{name}: volume is constant (every voxel is {array.flat[0]}); nothing to detect")


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
    """
    found: List[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for match in matches or [pattern]:
            path = Path(match)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file() and _is_image_file(p))
                found.extend(files or [path])
            else:
                found.append(path)
    return found


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS if ext != ".dcm")
