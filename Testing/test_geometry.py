"""Every output sits exactly on its input's grid, whatever the input's orientation and spacing."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AnomalyDetectionLib import detect
from AnomalyDetectionLib.models import build_model, make_card
from AnomalyDetectionLib.preprocessing import (
    orientation_code,
    plan_layout,
    prepare_volume,
    slices_to_volume,
    to_input_grid_image,
    volume_to_slices,
)


def oblique_volume(flip_y: bool = True) -> sitk.Image:
    """An anisotropic, obliquely rotated head-like ellipsoid; its direction is closest to LPS without
    ``flip_y``, and to another orientation (an axis running anterior) with it."""
    z, y, x = np.mgrid[:24, :40, :36].astype(np.float32)
    head = ((z - 12) / 10) ** 2 + ((y - 20) / 17) ** 2 + ((x - 18) / 15) ** 2 <= 1
    array = np.where(head, 100 + 40 * np.sin(x / 4) * np.cos(y / 5), 0).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.2, 3.3))
    image.SetOrigin((-41.5, 12.25, 30.0))
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.25, -0.15, 0.4)
    flip = np.diag([1.0, -1.0 if flip_y else 1.0, 1.0])
    image.SetDirection((np.asarray(rotation.GetMatrix()).reshape(3, 3) @ flip).ravel().tolist())
    return image


def tiny_model(arch: str = "vae"):
    torch.manual_seed(0)
    model = build_model(make_card(arch=arch, size=32, channels=(4, 8, 8), latent_dim=4))
    model.network.eval()
    return model


def assert_same_grid(output: sitk.Image, reference: sitk.Image) -> None:
    assert output.GetSize() == reference.GetSize()
    assert output.GetSpacing() == reference.GetSpacing()
    assert output.GetOrigin() == reference.GetOrigin()
    assert output.GetDirection() == reference.GetDirection()


@pytest.mark.parametrize("flip_y, code", [(False, "LPS"), (True, "LAS")])
def test_test_volumes_are_oblique(flip_y: bool, code: str) -> None:
    image = oblique_volume(flip_y)
    assert orientation_code(image) == code
    assert not np.allclose(np.abs(np.asarray(image.GetDirection()).reshape(3, 3)), np.eye(3))


@pytest.mark.parametrize("flip_y", [False, True])
@pytest.mark.parametrize("score", ["reconstruction", "combi"])
def test_detect_outputs_sit_on_the_input_grid(score: str, flip_y: bool) -> None:
    image = oblique_volume(flip_y)
    before = sitk.GetArrayFromImage(image).copy()
    result = detect(image, tiny_model(), score=score, device="cpu")
    for output in (result.anomaly_map, result.mask, result.foreground):
        assert_same_grid(output, image)
    assert result.anomaly_map.GetPixelID() == sitk.sitkFloat32
    assert result.mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), before)  # input untouched
    heat = sitk.GetArrayFromImage(result.anomaly_map)
    foreground = sitk.GetArrayFromImage(result.foreground) > 0
    assert (heat[~foreground] == 0).all() and heat[foreground].max() > 0


def test_model_space_round_trip_returns_voxels_to_their_place() -> None:
    """Slicing and un-slicing the normalised input gives it back on the input grid."""
    image = oblique_volume()
    card = make_card(size=64, channels=(4, 8))
    prepared = prepare_volume(image, card)
    back = sitk.GetArrayFromImage(to_input_grid_image(prepared.slices, prepared, restrict=False))
    original = sitk.GetArrayFromImage(image)
    inside = original > 0
    assert np.corrcoef(back[inside], original[inside])[0, 1] > 0.97


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_slicing_inverse_on_every_axis(axis: str) -> None:
    volume = np.random.default_rng(0).random((20, 30, 25)).astype(np.float32)
    spacing = (3.0, 1.0, 1.5)
    layout = plan_layout(volume.shape, spacing, axis, 64)
    slices = volume_to_slices(volume, layout)
    assert slices.shape[1:] == (1, 64, 64)
    assert slices.shape[0] == volume.shape[layout.axis]
    rows, columns = (spacing[d] for d in range(3) if d != layout.axis)
    height, width = layout.padded_shape
    assert height * rows == pytest.approx(width * columns, rel=0.1)  # physically square field of view
    restored = slices_to_volume(slices, layout)
    assert restored.shape == volume.shape


def test_same_anatomy_in_another_orientation_gives_the_same_map() -> None:
    """Reorienting the file (same physical voxels) must not change the physical map."""
    image = oblique_volume()
    reoriented = sitk.DICOMOrient(image, "RAS")
    model = tiny_model()
    first = detect(image, model, score="reconstruction", device="cpu").anomaly_map
    second = detect(reoriented, model, score="reconstruction", device="cpu").anomaly_map
    assert_same_grid(second, reoriented)
    resampled = sitk.Resample(second, image, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_allclose(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(first), atol=1e-5)
