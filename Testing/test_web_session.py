"""The web app's scene logic without a browser: uploads become images through the engine's reader.

What a student can upload (NIfTI, NRRD, MHA, a zipped DICOM series) and what is refused, each
with the engine's one-line error naming the student's file, never the server's private copy.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")
from AnomalyDetectionLib.errors import InputError  # noqa: E402
from AnomalyDetectionWeb.session import upload_to_image  # noqa: E402
from test_faults import dicom_series  # noqa: E402


def volume() -> sitk.Image:
    image = sitk.GetImageFromArray((np.arange(6 * 7 * 8).reshape(6, 7, 8) % 17).astype(np.int16))
    image.SetSpacing((0.9, 1.1, 2.5))
    image.SetOrigin((3.0, -4.0, 5.0))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_an_uploaded_volume_file_is_read_with_its_geometry(tmp_path, suffix):
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(volume(), str(path))
    image = upload_to_image(path.name, path.read_bytes())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(volume()))
    np.testing.assert_allclose(image.GetSpacing(), volume().GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), volume().GetOrigin(), atol=1e-5)


def test_a_zipped_dicom_series_is_read_from_any_folder_inside_the_archive(tmp_path):
    series = dicom_series(tmp_path / "series")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(series.iterdir()):
            archive.write(file, f"patient/study/{file.name}")
    image = upload_to_image("export.zip", buffer.getvalue())
    assert image.GetSize() == (18, 16, 6)
    assert image.GetSpacing()[2] == pytest.approx(2.0)


def _zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, message", [
    ("scan.nii.gz", b"", "the file is empty"),
    ("notes.txt", b"hello", "not a volume file this page reads"),
    ("scan.nii.gz", b"not an image at all", "cannot be read"),
    ("export.zip", b"PK not really a zip", "not a readable zip archive"),
    ("export.zip", _zip({"readme.txt": "no images"}), "holds no DICOM series"),
    ("export.zip", _zip({"../../escape.dcm": "x"}), "a path outside itself"),
])
def test_a_bad_upload_is_one_line_naming_the_students_file(name, content, message):
    with pytest.raises(InputError) as refused:
        upload_to_image(name, content)
    text = str(refused.value)
    assert message in text and text.startswith(Path(name).name) and "anomaly-upload-" not in text


def test_an_upload_over_the_limit_is_refused_before_it_is_read():
    with pytest.raises(InputError, match="over the upload limit of 1 MB"):
        upload_to_image("big.nrrd", b"\0" * 1_500_000, max_mb=1)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_an_rgb_upload_is_refused_as_rgb(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(InputError, match=r"^photo.*RGB"):
        upload_to_image(path.name, path.read_bytes())
