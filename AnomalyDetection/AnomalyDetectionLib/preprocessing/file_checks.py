"""Checks on an input file before and beside SimpleITK's reading of it.

Why a module of its own: SimpleITK reads some broken files without a word. ITK 5.4's NIfTI reader
returns a truncated ``.nii``/``.nii.gz`` padded with zeros, turns NaN and Inf voxels into 0 (fixed
only in ITK 6) and replaces a zero voxel size by 1; it follows symbolic links into a loop and
reports that as "cannot find"; it happily starts reading a header that promises more voxels than
the machine holds, which ends in an out-of-memory kill instead of an error. Each check here turns
one of these into a one-line :class:`~AnomalyDetectionLib.errors.InputError` naming the file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

#: float32 copies of the volume a detection holds at its peak (cast, canonical, normalised, slices,
#: slice maps, the map on the input grid, its smoothing, mask and foreground), on top of the input.
#: Measured: 34 bytes per voxel beyond the input (peak RSS, a 200 x 200 x 160 float32 volume, combi
#: and energy_projection, CPU, 2026-12-02); 10 copies (40 bytes) leave some headroom.
WORKING_COPIES = 10
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def check_input_path(path: Path) -> None:
    """Refuse a path that is missing, a broken or looping symbolic link, unreadable, or an empty file."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: symbolic link loop (the link leads back to itself)") from None
        if os.path.islink(path):
            raise InputError(f"{path}: broken symbolic link (to {os.readlink(path)})") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise InputError(f"{path}: permission denied") from None
        raise InputError(f"{path}: no such file or folder") from None
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputError(f"{path}: permission denied (folder cannot be listed)")
        return
    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
    except PermissionError:
        raise InputError(f"{path}: permission denied (file cannot be read)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    if not first:
        raise InputError(f"{path}: empty file (0 bytes)")


def available_memory() -> Optional[int]:
    """Bytes of memory this process can still get (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_needed(size: Sequence[int], bytes_per_voxel: int) -> int:
    """Bytes a detection of a volume of ``size`` holds at its peak (see :data:`WORKING_COPIES`)."""
    voxels = int(np.prod([int(s) for s in size], dtype=np.float64))
    return voxels * (int(bytes_per_voxel) + 4 * WORKING_COPIES)


def check_memory(size: Sequence[int], bytes_per_voxel: int, name: str) -> None:
    """Refuse, before anything is read, a volume whose processing cannot fit into the free memory."""
    needed = memory_needed(size, bytes_per_voxel)
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(f"{name}: volume of {' x '.join(str(int(s)) for s in size)} voxels would need about "
                         f"{_gib(needed)} of memory to process; {_gib(available)} is available")


def _gib(count: float) -> str:
    gib = count / 2 ** 30
    return f"{gib:.3g} GiB" if gib < 1024 else f"{gib / 1024:.3g} TiB"


def check_file_header(path: Path) -> None:
    """Read only the header: refuse too many voxels for the memory, and complex voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # the full read gives the reader's reason
    pixel = reader.GetPixelID()
    if pixel in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{path}: complex-valued voxels ({sitk.GetPixelIDValueAsString(pixel)}); "
                         "give a magnitude image")
    per_voxel = _bytes_per_component(pixel) * max(1, reader.GetNumberOfComponents())
    check_memory(reader.GetSize(), per_voxel, str(path))


def _bytes_per_component(pixel: int) -> int:
    sizes = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkFloat64: 8,
             sitk.sitkInt64: 8, sitk.sitkUInt64: 8}
    return sizes.get(pixel, 4)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_EXTENSIONS)


def check_nifti_data(path: Path) -> None:
    """The NIfTI faults ITK 5.4 hides: truncated data, NaN/Inf voxels, a zero voxel size.

    The raw data is read with nibabel (a second read of the file: the price of not scoring a
    falsified scan). Only called for files ITK has read already, so nibabel sees a valid header.
    """
    import nibabel as nib  # on use: reading NRRD, MHA or DICOM needs no nibabel
    from nibabel.imageglobals import LoggingOutputSuppressor

    try:
        with LoggingOutputSuppressor():  # nibabel logs the header repairs it makes; the error below says it once
            image = nib.load(str(path))
            data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError) as exc:  # truncated gzip stream, short data, bad header
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: truncated or corrupt NIfTI data ({detail})") from None
    except Exception as exc:  # nibabel raises its own types for headers it cannot use
        raise InputError(f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc})") from None
    if np.iscomplexobj(data):
        raise InputError(f"{path}: complex-valued voxels; give a magnitude image")
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise InputError(f"{path}: {bad} voxels are NaN or Inf")
    header = image.header
    if int(header.get("sform_code", 0)) == 0:
        pixdim = _raw_pixdim(path)
        if pixdim is not None and any(p == 0 for p in pixdim):
            raise InputError(f"{path}: voxel size {tuple(float(p) for p in pixdim)} in the NIfTI header has a zero; "
                             "the geometry is undefined")


def _raw_pixdim(path: Path) -> Optional[List[float]]:
    """``pixdim[1:4]`` as stored in the file (nibabel's loader silently replaces zeros by 1)."""
    import nibabel as nib

    try:
        with nib.openers.ImageOpener(str(path)) as handle:
            header = nib.Nifti1Header.from_fileobj(handle, check=False)
        return [float(p) for p in header["pixdim"][1:4]]
    except Exception:  # NIfTI-2 or an unusual header: ITK's reading stands
        return None


def dicom_series_files(folder: Path) -> List[str]:
    """The files of the one DICOM series in ``folder``, in slice order; refuse two series and gaps."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        described = "; ".join(f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))} files)"
                              for uid in series)
        raise InputError(f"{folder}: folder holds {len(series)} DICOM series ({described}); "
                         "give one series per folder")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    _check_slice_positions(folder, files)
    return files


def _check_slice_positions(folder: Path, files: Sequence[str]) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (a missing slice)."""
    if len(files) < 3:
        return
    positions = []
    normal = None
    reader = sitk.ImageFileReader()
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            if normal is None:
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(cosines[:3], cosines[3:6])
            positions.append(float(np.dot(normal, [float(v) for v in reader.GetMetaData("0020|0032").split("\\")])))
        except (RuntimeError, ValueError, IndexError):
            return  # no usable position tags: ITK's own reading decides
    steps = np.diff(np.sort(positions))
    typical = float(np.median(steps))
    if typical <= 0:
        raise InputError(f"{folder}: DICOM series has several slices at the same position")
    worst = int(np.argmax(np.abs(steps - typical)))
    if abs(steps[worst] - typical) > 0.1 * typical:
        raise InputError(f"{folder}: DICOM series has missing or unevenly spaced slices (a gap of "
                         f"{steps[worst]:.3g} mm after slice {worst + 1} of {len(files)}, the others "
                         f"{typical:.3g} mm apart)")
