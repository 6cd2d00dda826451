"""The torch geometry (the GPU path) against SimpleITK (the CPU path), run here on the CPU.

Registration: a known affine is recovered and the result agrees with SimpleITK's over the brain
within :data:`AGREEMENT_MEAN_MM` / :data:`AGREEMENT_MAX_MM`. Resampling and smoothing: the same
grids and, up to float rounding, the same voxels as ``sitk.Resample`` / ``sitk.Median``. The CUDA
run of the whole detection against the CPU one is in ``test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AnomalyDetectionLib.errors import Cancelled
from AnomalyDetectionLib.models import load_model
from AnomalyDetectionLib.postprocessing import smooth_map
from AnomalyDetectionLib.preprocessing import foreground_image, prepare_volume, to_input_grid_image
from AnomalyDetectionLib.preprocessing.registration import register_to_template
from AnomalyDetectionLib.preprocessing.torch_resampling import (
    affine_matrix,
    field_of_view_on_device,
    median_smooth,
    resample_image,
)
from test_registration import brain_points, errors_mm, make_scan

CPU = torch.device("cpu")

#: How far the torch and SimpleITK registrations of one scan may map a template brain point apart.
AGREEMENT_MEAN_MM = 1.0
AGREEMENT_MAX_MM = 2.0


@pytest.fixture(scope="module")
def affine_case(template_2mm):
    """The template moved by a rigid transform and scaled anisotropically (a known affine)."""
    scan, rigid = make_scan(template_2mm, angles_deg=(6.0, -4.0, 9.0), shift_mm=(10.0, -6.0, 4.0))
    true = sitk.AffineTransform(3)
    true.SetCenter(rigid.GetCenter())
    matrix = np.asarray(rigid.GetMatrix()).reshape(3, 3) @ np.diag([1.08, 0.94, 1.04])
    true.SetMatrix(matrix.ravel().tolist())
    true.SetTranslation(rigid.GetTranslation())
    moved = sitk.Resample(template_2mm, scan, true, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return moved, true


@pytest.fixture(scope="module")
def both(affine_case, template_2mm, mask_2mm):
    scan, _ = affine_case
    return (register_to_template(scan, template_2mm, mask_2mm, device=CPU),
            register_to_template(scan, template_2mm, mask_2mm))


def test_torch_registration_recovers_a_known_affine(both, affine_case, mask_2mm):
    found, _ = both
    distances = errors_mm(found.transform, affine_case[1], brain_points(mask_2mm))
    assert distances.mean() < 1.0 and distances.max() < 2.0, (distances.mean(), distances.max())
    assert found.warnings == []
    scales = found.to_report()["scales"]
    assert max(scales) > 1.02 and min(scales) < 0.98  # the scaling was found, not only the rigid part


def test_torch_and_simpleitk_registrations_agree_over_the_brain(both, mask_2mm):
    on_torch, on_sitk = both
    points = brain_points(mask_2mm)
    apart = np.array([np.linalg.norm(np.subtract(on_torch.transform.TransformPoint(p),
                                                 on_sitk.transform.TransformPoint(p))) for p in points])
    assert apart.mean() < AGREEMENT_MEAN_MM and apart.max() < AGREEMENT_MAX_MM, (apart.mean(), apart.max())
    # The same quality measures on the same scale, so the same limits apply to both.
    assert abs(on_torch.metric - on_sitk.metric) < 0.15, (on_torch.metric, on_sitk.metric)
    assert abs(on_torch.brain_overlap - on_sitk.brain_overlap) < 0.02
    assert abs(on_torch.brain_coverage - on_sitk.brain_coverage) < 0.02
    report = on_torch.to_report()
    assert set(report) == set(on_sitk.to_report())
    assert report["transform_type"] == "AffineTransform"


def test_a_noise_volume_is_flagged_as_on_simpleitk(template_2mm, mask_2mm):
    noise = sitk.GetImageFromArray(np.random.default_rng(0).random((60, 70, 60)).astype(np.float32))
    noise.SetSpacing((3.0, 3.0, 3.0))
    noise.SetOrigin(template_2mm.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in template_2mm.GetSize()]))
    noise.SetOrigin([o - 90.0 for o in noise.GetOrigin()])
    result = register_to_template(noise, template_2mm, mask_2mm, device=CPU, shrink_factors=(4,),
                                  smoothing_sigmas=(2,))
    assert any("registration probably failed" in w for w in result.warnings), result.warnings


def test_cancel_stops_the_torch_registration(affine_case, template_2mm, mask_2mm):
    seen = []

    def cancel() -> bool:
        return len(seen) > 3

    with pytest.raises(Cancelled):
        register_to_template(affine_case[0], template_2mm, mask_2mm, device=CPU,
                             progress=lambda fraction, message: seen.append(message), cancel=cancel)
    assert any("rigid" in message for message in seen)


def _oblique(image: sitk.Image, spacing=(1.3, 1.7, 2.9)) -> sitk.Image:
    """A grid of another spacing, direction and extent over ``image``'s space, partly outside it."""
    reference = sitk.Image([50, 44, 31], sitk.sitkFloat32)
    reference.SetSpacing(spacing)
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.3, -0.2, 0.5)
    reference.SetDirection(rotation.GetMatrix())
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()]))
    half = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ ((np.asarray(reference.GetSize()) - 1) * spacing / 2.0)
    reference.SetOrigin((centre + np.array([80.0, 10.0, 10.0]) - half).tolist())  # part of it outside the image
    return reference


def _some_affine() -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetCenter((60.0, 70.0, 40.0))
    transform.SetMatrix((1.05, 0.08, 0.0, -0.06, 0.97, 0.04, 0.02, 0.0, 1.1))
    transform.SetTranslation((4.0, -9.0, 6.5))
    return transform


@pytest.mark.parametrize("nearest", [False, True])
def test_resampling_gives_simpleitk_voxels_on_the_same_grid(template_2mm, nearest):
    image = sitk.Cast(template_2mm, sitk.sitkFloat32)
    reference, transform = _oblique(image), _some_affine()
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    expected = sitk.Resample(image, reference, transform, interpolator, -5.0, sitk.sitkFloat32)
    found = resample_image(image, reference, affine_matrix(transform), CPU, nearest=nearest, default=-5.0)
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(found, get)() == getattr(expected, get)()
    a, b = sitk.GetArrayViewFromImage(expected), sitk.GetArrayViewFromImage(found)
    assert (a == -5.0).sum() > 1000  # part of the grid lies outside the image: the default is used
    differing = np.abs(a - b) > 1e-3 * float(np.abs(a).max())
    # Nearest neighbour: a point exactly between two voxels may round either way (a handful).
    assert differing.sum() <= (20 if nearest else 0), differing.sum()


def test_field_of_view_on_device_is_simpleitks(template_2mm):
    from AnomalyDetectionLib.preprocessing.resampling import field_of_view_on_template

    image = _oblique(template_2mm)
    transform = _some_affine()
    expected = sitk.GetArrayFromImage(field_of_view_on_template(image, template_2mm, transform)) > 0
    found = field_of_view_on_device(image, template_2mm, affine_matrix(transform), CPU)
    assert 0 < expected.sum() < expected.size
    assert (expected != found).sum() <= 1e-4 * expected.size  # points exactly on the half-voxel border


def test_median_on_the_device_is_simpleitks(template_2mm):
    image = sitk.Cast(template_2mm, sitk.sitkFloat32)
    expected = sitk.GetArrayFromImage(sitk.Median(image, [1, 1, 1]))  # a copy: the filtered image is temporary
    found = median_smooth(torch.from_numpy(sitk.GetArrayFromImage(image)), 1).numpy()
    np.testing.assert_array_equal(found, expected)


def test_a_template_model_prepares_and_maps_back_on_the_device_as_on_simpleitk(lesion_case):
    """The bundled model's space, there and back, with the torch geometry (one registration, reused)."""
    image = lesion_case[0]
    card = load_model("brain_t1_vae").card
    on_sitk = prepare_volume(image, card)
    on_torch = prepare_volume(image, card, registration=on_sitk.registration, device=CPU)
    assert on_torch.device == CPU and on_sitk.device is None
    np.testing.assert_array_equal(on_torch.foreground, on_sitk.foreground)
    assert np.abs(on_torch.slices - on_sitk.slices).max() < 1e-4
    maps = np.random.default_rng(1).random(on_sitk.slices.shape).astype(np.float32)
    settings = {"smoothing": "median", "smoothing_size": 1.0, "normalisation": "none", "min_component_voxels": 0}
    results = []
    for prepared, device in ((on_sitk, None), (on_torch, CPU)):
        foreground = foreground_image(prepared)
        results.append((foreground, smooth_map(to_input_grid_image(maps, prepared), foreground, settings, device)))
    (fg_sitk, map_sitk), (fg_torch, map_torch) = results
    assert map_torch.GetSize() == image.GetSize() and map_torch.GetOrigin() == image.GetOrigin()
    a, b = sitk.GetArrayViewFromImage(fg_sitk), sitk.GetArrayViewFromImage(fg_torch)
    assert (a != b).sum() <= 0.001 * a.sum()
    a, b = sitk.GetArrayViewFromImage(map_sitk), sitk.GetArrayViewFromImage(map_torch)
    assert np.mean(np.abs(a - b) > 1e-3) < 0.001
