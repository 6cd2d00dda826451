"""Affine registration to the model's template: known transforms are recovered, failures are flagged.

The "scans" are the 2 mm MNI152 template moved by a known rigid transform onto another grid
(anisotropic spacing, LPS instead of the template's RAS voxel order), so the exact answer is known
and every brain point can be checked in millimetres.
"""

from __future__ import annotations

import json
import time
from typing import List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.errors import Cancelled, InputError
from AnomalyDetectionLib.preprocessing.registration import register_to_template
from AnomalyDetectionLib.preprocessing.registration_method import (
    RegistrationResult,
    check_registration,
    template_brain_overlap,
)
from AnomalyDetectionLib.preprocessing.resampling import resample_to_input, resample_to_template
from AnomalyDetectionResearch.data import available_anatomy, load_anatomy

TOLERANCE_MM = 2.0


@pytest.fixture(scope="module")
def template(template_2mm) -> sitk.Image:
    return template_2mm


@pytest.fixture(scope="module")
def template_mask(mask_2mm) -> sitk.Image:
    return mask_2mm


def _centre(image: sitk.Image) -> Tuple[float, ...]:
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])


def make_scan(
    template: sitk.Image,
    angles_deg=(8.0, -5.0, 10.0),
    shift_mm=(12.0, -7.0, 5.0),
    spacing=(1.5, 1.5, 3.0),
) -> Tuple[sitk.Image, sitk.Euler3DTransform]:
    """The template moved rigidly onto a 220 x 250 x 210 mm LPS grid of ``spacing``.

    Returns the scan and the true transform, which maps scan points to template points (the
    inverse of what the registration must find)."""
    true = sitk.Euler3DTransform()
    true.SetCenter(_centre(template))
    true.SetRotation(*np.deg2rad(angles_deg))
    true.SetTranslation(shift_mm)
    size = [int(round(extent / s)) for extent, s in zip((220.0, 250.0, 210.0), spacing)]
    origin = np.asarray(_centre(template)) - (np.asarray(size) - 1) * np.asarray(spacing) / 2.0
    scan = sitk.Resample(template, size, true, sitk.sitkLinear, origin.tolist(), spacing,
                         (1, 0, 0, 0, 1, 0, 0, 0, 1), 0.0, sitk.sitkFloat32)
    return scan, true


def brain_points(template_mask: sitk.Image, step: int = 5) -> List[Tuple[float, ...]]:
    indices = np.argwhere(sitk.GetArrayViewFromImage(template_mask) > 0)[::step]
    return [template_mask.TransformIndexToPhysicalPoint((int(i), int(j), int(k))) for k, j, i in indices]


def errors_mm(found: sitk.Transform, true: sitk.Transform, points) -> np.ndarray:
    """Distance between each template point and its image through found-then-true (identity if exact)."""
    return np.array([np.linalg.norm(np.subtract(true.TransformPoint(found.TransformPoint(p)), p)) for p in points])


def timed_registration(scan, template, template_mask, **kwargs) -> RegistrationResult:
    started = time.perf_counter()
    result = register_to_template(scan, template, template_mask, **kwargs)
    print(f"registration took {time.perf_counter() - started:.2f} s, metric {result.metric:.3f}, "
          f"overlap {result.brain_overlap:.3f}, {result.iterations} iterations, start {result.initialisation}")
    return result


def with_skull(scan: sitk.Image) -> sitk.Image:
    """The brain wrapped in dark CSF, grey bone and a bright scalp, like an unstripped T1."""
    array = sitk.GetArrayFromImage(scan)
    peak = float(array.max())
    head = sitk.BinaryFillhole(sitk.Cast(scan > 0.05 * peak, sitk.sitkUInt8))
    distance = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(head, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    array += np.where((distance > 2) & (distance <= 4), 0.1 * peak, 0.0)
    array += np.where((distance > 4) & (distance <= 9), 0.3 * peak, 0.0)
    array += np.where((distance > 9) & (distance <= 14), 1.1 * peak, 0.0)
    out = sitk.GetImageFromArray(array.astype(np.float32))
    out.CopyInformation(scan)
    return out


@pytest.fixture(scope="module")
def registered(template, template_mask):
    scan, true = make_scan(template)
    return scan, true, timed_registration(scan, template, template_mask)


def test_round_trip_recovers_known_rigid_transform(registered, template_mask):
    scan, true, result = registered
    distances = errors_mm(result.transform, true, brain_points(template_mask))
    assert distances.mean() < TOLERANCE_MM and distances.max() < TOLERANCE_MM, (distances.mean(), distances.max())
    assert result.warnings == []
    assert result.brain_overlap > 0.9
    assert result.iterations > 0 and "affine" in result.stop_condition


def test_mutual_information_tolerates_contrast_change(template, template_mask):
    scan, true = make_scan(template, angles_deg=(-6.0, 4.0, -9.0), shift_mm=(-10.0, 8.0, -6.0))
    array = np.clip(sitk.GetArrayFromImage(scan), 0.0, None)
    changed = sitk.GetImageFromArray((1000.0 * (array / array.max()) ** 0.5 + 50.0).astype(np.float32))
    changed.CopyInformation(scan)
    result = timed_registration(changed, template, template_mask)
    distances = errors_mm(result.transform, true, brain_points(template_mask))
    assert distances.mean() < TOLERANCE_MM and distances.max() < TOLERANCE_MM, (distances.mean(), distances.max())
    assert result.warnings == []


def test_skull_on_input_registers_with_template_mask(template, template_mask):
    scan, true = make_scan(template, angles_deg=(12.0, 3.0, -4.0), shift_mm=(5.0, 15.0, -10.0))
    result = timed_registration(with_skull(scan), template, template_mask)
    distances = errors_mm(result.transform, true, brain_points(template_mask))
    assert distances.mean() < TOLERANCE_MM and distances.max() < TOLERANCE_MM, (distances.mean(), distances.max())
    assert result.warnings == []


def test_clinical_thick_slice_scan_with_partial_coverage_registers(template, template_mask):
    """A clinical 2D acquisition: 0.8 x 0.8 mm in-plane, 6.5 mm axial slices (each the average over
    its thickness), skull on, the vertex and the skull base cut off. Before the smoothing was set in
    millimetres, such scans ended 20 mm off with no warning."""
    scan, true = make_scan(template, angles_deg=(6.0, -4.0, 8.0), shift_mm=(8.0, -6.0, 4.0), spacing=(0.8, 0.8, 6.5))
    # the 6.5 mm slice profile: rebuild the scan from a 1.3 mm one averaged over each slab
    fine, _ = make_scan(template, angles_deg=(6.0, -4.0, 8.0), shift_mm=(8.0, -6.0, 4.0), spacing=(0.8, 0.8, 1.3))
    slabs = sitk.GetArrayFromImage(fine)[: 5 * scan.GetSize()[2]]
    averaged = slabs.reshape(scan.GetSize()[2], 5, *slabs.shape[1:]).mean(axis=1)
    thick = sitk.GetImageFromArray(averaged.astype(np.float32))
    thick.SetSpacing((0.8, 0.8, 6.5))
    thick.SetOrigin(fine.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, 2.0)))  # slab centres
    clinical = with_skull(thick)[:, :, 5:-7]  # 32 mm of the skull base and 45 mm of the vertex cut off
    result = timed_registration(clinical, template, template_mask)
    covered = [p for p in brain_points(template_mask) if _inside(clinical, true.GetInverse().TransformPoint(p))]
    distances = errors_mm(result.transform, true, covered)
    everywhere = brain_points(template_mask)
    assert len(covered) > 0.6 * len(everywhere)  # the cut removes brain, not only skull
    assert distances.mean() < TOLERANCE_MM and distances.max() < 2 * TOLERANCE_MM, (distances.mean(), distances.max())
    # The brain cut off is partial coverage, not a miss: the overlap is judged within the field of view.
    assert result.brain_coverage == pytest.approx(len(covered) / len(everywhere), abs=0.05)
    assert result.brain_coverage < 0.98 and result.brain_overlap > 0.9
    assert result.warnings == []


def thick_slices(image: sitk.Image, spacing=(0.8, 0.8, 6.5), cut_mm=(30.0, 15.0)) -> sitk.Image:
    """``image`` as a clinical axial 2D acquisition: ``spacing`` on an LPS grid through its bounding
    box, each slice a Gaussian slab average, ``cut_mm`` (bottom, top) of the head left out."""
    corners = np.array([image.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
                        for i in (0, image.GetSize()[0] - 1) for j in (0, image.GetSize()[1] - 1)
                        for k in (0, image.GetSize()[2] - 1)])
    low, high = corners.min(axis=0), corners.max(axis=0)
    low[2], high[2] = low[2] + cut_mm[0], high[2] - cut_mm[1]
    size = [int((h - lo) / s) + 1 for lo, h, s in zip(low, high, spacing)]
    profile = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), [0.3, 0.3, spacing[2] / 2.6])
    return sitk.Resample(profile, size, sitk.Transform(), sitk.sitkLinear, low.tolist(), spacing,
                         np.eye(3).ravel().tolist(), 0.0, sitk.sitkFloat32)


def test_a_real_head_in_thick_slices_registers_like_its_isotropic_scan(template, template_mask):
    """The OASIS-30 head (another population than the template's; a validation head, fetched at
    setup) in 6.5 mm axial slices with part of the head cut off lands within half a slice of where
    the 1 mm head lands. With the smoothing in voxels it ended 20 mm off (mean), with no warning."""
    from AnomalyDetectionResearch.data import available_validation, load_held_out

    if "oasis30_t1" not in available_validation():
        pytest.skip("the OASIS-30 validation head is not on this machine ('make setup' fetches it)")
    head, _ = load_held_out("oasis30_t1")
    reference = timed_registration(head, template, template_mask)
    clinical = timed_registration(thick_slices(head), template, template_mask)
    points = brain_points(template_mask)
    moved = np.array([np.linalg.norm(np.subtract(reference.transform.TransformPoint(p),
                                                 clinical.transform.TransformPoint(p))) for p in points])
    assert reference.warnings == [] and clinical.warnings == []
    assert moved.mean() < 6.5 / 2 and moved.max() < 6.5, (moved.mean(), moved.max())
    # Where the registration used to end for this scan (smoothing in voxels): 21.8 mm off on average,
    # mutual information -0.269 (inside its limit). The overlap within the field of view catches it.
    old_miss = sitk.AffineTransform(3)
    old_miss.SetParameters(OASIS_THICK_SLICE_MISS)
    old_miss.SetFixedParameters(clinical.transform.GetFixedParameters())
    assert np.mean([np.linalg.norm(np.subtract(reference.transform.TransformPoint(p), old_miss.TransformPoint(p)))
                    for p in points]) > 15.0
    overlap, coverage = template_brain_overlap(old_miss, thick_slices(head), template_mask)
    missed = RegistrationResult(old_miss, -0.269, 0, "", brain_overlap=overlap, brain_coverage=coverage)
    assert coverage > 0.9 and overlap < 0.8
    assert any("within the field of view" in w for w in check_registration(missed))


#: The affine the registration found for the 6.5 mm OASIS head of the test above while it still
#: smoothed in voxels (SimpleITK parameters, template -> input; its centre is that of today's result).
OASIS_THICK_SLICE_MISS = (
    1.1240281625887405, -0.0037471901493364252, 0.0073830192235180055, 0.02527302478824582, 1.1304318148085382,
    0.33705037600078325, -0.00998540699261515, -0.2632034955904164, 1.3233981452644668, 109.5633487301679,
    135.4682674741416, -138.66160428871007,
)


def _inside(image: sitk.Image, point: Tuple[float, ...]) -> bool:
    index = image.TransformPhysicalPointToContinuousIndex(point)
    return all(-0.5 <= i <= n - 0.5 for i, n in zip(index, image.GetSize()))


@pytest.mark.skipif("colin27_ch2" not in available_anatomy(), reason="Colin27 (mricron-data) is not installed")
def test_real_head_with_skull_registers_without_warning(template, template_mask):
    head = load_anatomy("colin27_ch2", spacing_mm=2.0)
    result = timed_registration(head, template, template_mask)
    assert result.warnings == []
    # Colin27 is already in MNI space: the affine found is close to the identity.
    assert np.mean(errors_mm(result.transform, sitk.Transform(), brain_points(template_mask))) < 10.0


def test_registration_is_reproducible(registered, template, template_mask):
    scan, _, result = registered
    again = register_to_template(scan, template, template_mask)
    # Same seed, same samples, and ITK's metric on one thread: the same bits (with two threads the
    # order of the metric's sums moved the result by up to 1e-4 mm between runs).
    assert again.transform.GetParameters() == result.transform.GetParameters()
    assert again.metric == result.metric


def test_resample_to_input_gives_exactly_the_reference_grid(registered, template, template_mask):
    scan, _, result = registered
    smooth = sitk.SmoothingRecursiveGaussian(scan, 4.0)
    in_template = resample_to_template(smooth, template, result.transform)
    assert in_template.GetSize() == template.GetSize() and in_template.GetOrigin() == template.GetOrigin()
    back = resample_to_input(in_template, scan, result.transform)
    assert back.GetSize() == scan.GetSize()
    assert back.GetSpacing() == scan.GetSpacing()
    assert back.GetOrigin() == scan.GetOrigin()
    assert back.GetDirection() == scan.GetDirection()
    assert back.GetPixelID() == sitk.sitkFloat32

    mask_back = resample_to_input(template_mask, scan, result.transform, sitk.sitkNearestNeighbor)
    assert mask_back.GetPixelID() == template_mask.GetPixelID()
    inside = sitk.GetArrayViewFromImage(mask_back) > 0
    assert inside.sum() > 1000
    original = sitk.GetArrayViewFromImage(smooth)[inside]
    restored = sitk.GetArrayViewFromImage(back)[inside]
    assert np.corrcoef(original, restored)[0, 1] > 0.95


def test_non_invertible_transform_is_an_input_error(template):
    singular = sitk.AffineTransform(3)
    singular.SetMatrix([0.0] * 9)
    with pytest.raises(InputError, match="cannot be inverted"):
        resample_to_input(template, template, singular)


def test_noise_volume_gives_a_failure_warning(template, template_mask):
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.normal(100.0, 20.0, size=(50, 60, 55)).astype(np.float32))
    noise.SetSpacing((4.0, 4.0, 4.0))
    noise.SetOrigin((-100.0, -130.0, -110.0))
    result = timed_registration(noise, template, template_mask)
    assert result.warnings
    assert all("registration probably failed" in w for w in result.warnings)
    assert result.to_report()["warnings"] == result.warnings


def test_check_registration_limits():
    good = RegistrationResult(sitk.AffineTransform(3), metric=-1.0, iterations=10, stop_condition="",
                              brain_overlap=0.98)
    assert check_registration(good) == []
    assert len(check_registration(good, {"max_metric": -1.5})) == 1
    low_overlap = RegistrationResult(sitk.AffineTransform(3), -1.0, 10, "", brain_overlap=0.3)
    assert "30 %" in check_registration(low_overlap)[0]
    assert check_registration(RegistrationResult(sitk.AffineTransform(3), -1.0, 10, "", brain_overlap=0.98,
                                                 brain_coverage=0.8)) == []  # a scan with the vertex cut off
    sliver = RegistrationResult(sitk.AffineTransform(3), -1.0, 10, "", brain_overlap=0.98, brain_coverage=0.3)
    assert "30 % of the brain is inside the scan's field of view" in check_registration(sliver)[0]
    shrunk = sitk.AffineTransform(3)
    shrunk.SetMatrix((0.5, 0, 0, 0, 1, 0, 0, 0, 1))
    assert "scales the brain" in check_registration(RegistrationResult(shrunk, -1.0, 10, ""))[0]
    assert check_registration(RegistrationResult(sitk.AffineTransform(3), float("nan"), 0, ""))


def test_report_is_json_and_its_matrix_maps_points(registered):
    _, _, result = registered
    report = json.loads(json.dumps(result.to_report()))
    assert report["transform_type"] == "AffineTransform"
    assert report["metric"] == pytest.approx(result.metric)
    homogeneous = np.asarray(report["homogeneous_matrix"])
    point = np.array([10.0, -20.0, 30.0])
    np.testing.assert_allclose(homogeneous[:3, :3] @ point + homogeneous[:3, 3],
                               result.transform.TransformPoint(point.tolist()), atol=1e-6)
    rebuilt = sitk.AffineTransform(3)
    rebuilt.SetFixedParameters(report["fixed_parameters"])
    rebuilt.SetParameters(report["parameters"])
    np.testing.assert_allclose(rebuilt.TransformPoint(point.tolist()), result.transform.TransformPoint(point.tolist()))


def test_progress_and_cancel(registered, template, template_mask):
    scan, _, _ = registered
    seen: List[float] = []

    def cancel_after_a_few() -> bool:
        return len(seen) > 5

    with pytest.raises(Cancelled):
        register_to_template(scan, template, template_mask, progress=lambda f, _m: seen.append(f),
                             cancel=cancel_after_a_few)
    assert seen == sorted(seen) and len(seen) == 6


def test_a_brain_smaller_than_the_template_is_not_inflated_onto_the_skull(template, template_mask):
    """The held-out ITK person in one of its benchmark poses: from the rigid result at scale 1 the
    affine stage grew the template's brain 10-15 % onto the skull (brain Dice 0.70 against the case's
    true brain, mutual information -0.20: a warned failure); the start 15 % smaller finds the
    right optimum."""
    from AnomalyDetectionResearch.data import available_held_out, held_out_case_specs, make_case

    if "itk_kmeans_t1" not in available_held_out():
        pytest.skip("the held-out ITK head is not on this machine ('make setup' fetches it)")
    case = make_case(next(s for s in held_out_case_specs() if s.name == "held_out-30004-normal"))
    result = timed_registration(case.image, template, template_mask)
    mapped = sitk.GetArrayFromImage(resample_to_input(sitk.Cast(template_mask > 0, sitk.sitkUInt8), case.image,
                                                          result.transform, sitk.sitkNearestNeighbor, 0)) > 0
    truth = sitk.GetArrayViewFromImage(case.brain) > 0
    assert 2 * np.count_nonzero(mapped & truth) / (np.count_nonzero(mapped) + np.count_nonzero(truth)) > 0.85
    assert result.warnings == [] and "from a start at scale 0.85" in result.stop_condition
