"""Template-space models: a scan in any pose, voxel size and orientation, skull or not, is registered
to the model's template, and everything the model computes there comes back onto the scan's grid."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.errors import ModelError
from AnomalyDetectionLib.models import make_card
from AnomalyDetectionLib.models.model_file import validate_card
from AnomalyDetectionLib.preprocessing import foreground_image, prepare_volume, to_input_grid_image
from AnomalyDetectionLib.preprocessing.template import load_template, template_entry
from AnomalyDetectionResearch.data import available_anatomy, brain_mask, load_anatomy

COARSE = template_entry(spacing_mm=3.0)


def oblique_scan(image: sitk.Image, angles=(0.25, -0.15, 0.35), spacing=(1.2, 1.0, 2.5),
                 orientation: str = "PIR", label: bool = False) -> sitk.Image:
    """``image`` on a rotated, anisotropic grid with another voxel order, as a scanner might write it."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*angles)
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ np.asarray(image.GetDirection()).reshape(3, 3)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    size = [int(e / s) for e, s in zip(extent, spacing)]
    origin = centre - direction @ ((np.asarray(size) - 1) / 2 * np.asarray(spacing))
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    moved = sitk.Resample(image, size, sitk.Transform(), interpolator, origin.tolist(), spacing,
                          direction.ravel().tolist(), 0.0, image.GetPixelID())
    return sitk.DICOMOrient(moved, orientation)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
            and a.GetDirection() == b.GetDirection())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def head():
    """A real head with skull (Colin27) and its brain, or the skull-stripped MNI152 where Colin27 is missing."""
    if "colin27_ch2" in available_anatomy():
        image = load_anatomy("colin27_ch2", spacing_mm=1.5)
        brain = sitk.Cast(load_anatomy("colin27_ch2bet", spacing_mm=1.5) > 5, sitk.sitkUInt8)
    else:
        image = load_anatomy("mni152_t1", spacing_mm=1.5)
        brain = brain_mask(image)
    return oblique_scan(image), oblique_scan(sitk.BinaryFillhole(brain), label=True)


@pytest.fixture(scope="module")
def prepared(head):
    card = make_card(size=64, channels=(8, 16, 32), template=COARSE)
    started = time.perf_counter()
    result = prepare_volume(head[0], card, "oblique head")
    return card, result, time.perf_counter() - started


def test_template_space_is_the_cropped_brain_at_the_card_spacing() -> None:
    space = load_template(COARSE)
    assert space.image.GetSpacing() == (3.0, 3.0, 3.0)
    assert same_grid(space.image, space.brain)
    brain = sitk.GetArrayViewFromImage(space.brain)
    volume_ml = brain.sum() * 27 / 1000
    assert 1200 < volume_ml < 2000  # a brain, ventricles included
    # cropped: the brain reaches within a few voxels of every face
    for axis in range(3):
        occupied = np.nonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        assert occupied[0] <= 3 and occupied[-1] >= brain.shape[axis] - 4


def test_cards_check_their_template() -> None:
    card = make_card(template=COARSE)
    assert card["foreground"] == "template" and card["template"]["name"] == "mni152_t1"
    with pytest.raises(ModelError, match="template"):
        validate_card(dict(card, template={"name": "no_such_template", "spacing_mm": 1.0, "margin_mm": 0.0}))
    with pytest.raises(ModelError, match="template"):
        validate_card(dict(card, template=None))  # foreground 'template' without a template
    with pytest.raises(ModelError, match="spacing"):
        template_entry(spacing_mm=0.0)


def test_skull_on_oblique_scan_registers_and_its_brain_comes_back_on_its_grid(head, prepared) -> None:
    image, true_brain = head
    _, result, _ = prepared
    assert result.registration is not None and not result.registration.warnings
    report = result.registration.to_report()
    assert report["metric"] < -0.25 and report["brain_overlap"] > 0.9
    foreground = foreground_image(result)
    assert same_grid(foreground, image)
    # The template's brain mapped back onto the scan covers the scan's own brain, not its skull.
    overlap = dice(sitk.GetArrayViewFromImage(foreground) > 0, sitk.GetArrayViewFromImage(true_brain) > 0)
    assert overlap > 0.85


def test_maps_come_back_on_the_input_grid_through_the_inverse_transform(head, prepared) -> None:
    image, _ = head
    _, result, _ = prepared
    # The model-space slices themselves, mapped back, must reproduce the scan's brain (normalised).
    back = to_input_grid_image(result.slices, result)
    assert same_grid(back, image)
    scan = sitk.GetArrayViewFromImage(image)
    mapped = sitk.GetArrayViewFromImage(back)
    inside = sitk.GetArrayFromImage(foreground_image(result)) > 0
    correlation = np.corrcoef(scan[inside], mapped[inside])[0, 1]
    assert correlation > 0.85  # through a 3 mm template grid and 64-pixel slices: blurred, not misplaced
    assert np.all(mapped[~inside] == 0)


def test_a_registration_can_be_reused(head, prepared) -> None:
    card, first, first_seconds = prepared
    started = time.perf_counter()
    again = prepare_volume(head[0], card, "oblique head", registration=first.registration)
    assert time.perf_counter() - started < first_seconds
    np.testing.assert_array_equal(again.slices, first.slices)
    assert again.fits(card) and not again.fits(make_card(size=64, channels=(8, 16, 32)))


def test_a_scan_with_the_vertex_cut_off_is_judged_on_the_brain_it_shows(head, prepared) -> None:
    """A clinical scan often leaves out the top of the head. The template's brain outside the
    scan's field of view has no data (only the fill value), so it is not foreground: it would pull
    the intensity normalisation, the per-scan map normalisation and the sample score."""
    card, whole, _ = prepared
    image = head[0]
    in_view = sitk.DICOMOrient(image, "LPS")
    in_view = in_view[:, :, : int(0.7 * in_view.GetSize()[2])]  # S is the last LPS axis: the top 30 % cut off
    cut = prepare_volume(in_view, card, "head, vertex cut off")
    assert cut.registration.brain_coverage < 0.97 and not cut.registration.warnings
    assert cut.foreground.sum() < whole.foreground.sum()
    assert cut.foreground.sum() / whole.foreground.sum() == pytest.approx(cut.registration.brain_coverage, abs=0.05)
    fill = float(np.min(sitk.GetArrayViewFromImage(in_view)))
    canonical = sitk.GetArrayViewFromImage(cut.canonical)
    # Inside the foreground the resampled scan is imaged tissue, not the fill of the cut-off part.
    assert np.mean(canonical[cut.foreground] == fill) < 0.01
    assert np.mean(canonical[sitk.GetArrayFromImage(load_template(COARSE).brain) > 0] == fill) > 0.05
