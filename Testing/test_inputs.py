"""Bad inputs get one clear error naming the file and the problem; good ones of every kind are read."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.device import resolve_device
from AnomalyDetectionLib.errors import DeviceError, InputError
from AnomalyDetectionLib.preprocessing import case_stem, read_volume, validate_volume, write_image_atomic


def _volume(shape=(12, 14, 16), value=None) -> sitk.Image:
    rng = np.random.default_rng(0)
    array = rng.random(shape).astype(np.float32) if value is None else np.full(shape, value, np.float32)
    return sitk.GetImageFromArray(array)


@pytest.mark.parametrize("image, message", [
    (sitk.GetImageFromArray(np.random.rand(10, 10).astype(np.float32)), "2D image"),
    (sitk.JoinSeries([_volume(), _volume()]), "4D image"),
    (sitk.GetImageFromArray(np.random.randint(0, 255, (4, 5, 6, 3)).astype(np.uint8), isVector=True),
     "vector image with 3 components"),
    (_volume((1, 10, 10)), "empty or a single slice"),
    (_volume(value=7.0), "constant"),
])
def test_invalid_volumes(image, message) -> None:
    with pytest.raises(InputError, match=message):
        validate_volume(image, "scan.nrrd")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels(bad) -> None:
    array = np.random.rand(5, 6, 7).astype(np.float32)
    array[2, 3, 4] = bad
    with pytest.raises(InputError, match="scan.nii.gz: 1 voxels are NaN or Inf"):
        validate_volume(sitk.GetImageFromArray(array), "scan.nii.gz")


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"\x00\x01 not an image")
    with pytest.raises(InputError, match="garbage.nii.gz: cannot be read as an image"):
        read_volume(garbage)
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_volume(tmp_path)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_formats_round_trip_with_geometry(tmp_path, ext) -> None:
    image = _volume()
    image.SetSpacing((0.7, 1.1, 2.5))
    image.SetOrigin((3.0, -4.0, 5.0))
    path = tmp_path / f"scan{ext}"
    write_image_atomic(image, path)
    read = read_volume(path)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-5)
    assert case_stem(path) == "scan"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_dicom_series_folder(tmp_path) -> None:
    array = (np.random.default_rng(1).random((6, 16, 18)) * 1000).astype(np.int16)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        slice_image = sitk.GetImageFromArray(array[k:k + 1])
        slice_image.SetSpacing((0.8, 0.8, 2.0))
        slice_image.SetOrigin((0.0, 0.0, 2.0 * k))
        for tag, value in {"0010|0010": "Test^Patient", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4",
                           "0020|0032": f"0\\0\\{2.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(k + 1), "0008|0060": "MR"}.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    volume = read_volume(folder)
    assert volume.GetSize() == (18, 16, 6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume), array)
    assert case_stem(folder) == "series"


def test_cuda_without_cuda_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
