"""Offline anatomy and seeded synthetic subjects/lesions: geometry, ground truth, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.data import (
    ANATOMY,
    anatomy_path,
    available_anatomy,
    brain_mask,
    insert_blob,
    load_anatomy,
    random_normal_subject,
)
from AnomalyDetectionLib.data import anatomy as anatomy_module
from AnomalyDetectionLib.errors import InputError

SPACING = 4.0


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def mni4() -> sitk.Image:
    return load_anatomy("mni152_t1", spacing_mm=SPACING)


@pytest.fixture(scope="module")
def mask4(mni4) -> sitk.Image:
    return brain_mask(mni4)


def extent(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())


def test_mni152_is_always_available_at_1mm() -> None:
    assert {"mni152_t1", "mni152_gm", "mni152_wm"} <= set(available_anatomy())
    image = load_anatomy("mni152_t1")
    assert image.GetDimension() == 3
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == (197, 233, 189)
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert array(image).max() > array(image).min()


def test_resampling_keeps_origin_direction_and_extent(mni4) -> None:
    full = load_anatomy("mni152_t1")
    assert mni4.GetSpacing() == pytest.approx((SPACING,) * 3)
    assert mni4.GetOrigin() == pytest.approx(full.GetOrigin())
    assert mni4.GetDirection() == pytest.approx(full.GetDirection())
    assert np.all(np.abs(extent(mni4) - extent(full)) <= SPACING / 2)
    assert mni4.GetPixelID() == sitk.sitkFloat32


def test_loaded_images_are_independent_copies() -> None:
    first = load_anatomy("mni152_t1", spacing_mm=SPACING)
    first[10, 10, 10] = 12345.0
    assert load_anatomy("mni152_t1", spacing_mm=SPACING)[10, 10, 10] != 12345.0


def test_brain_mask_is_binary_brain_sized_and_on_the_grid(mni4, mask4) -> None:
    full = brain_mask("mni152_t1")
    assert full.GetSize() == (197, 233, 189) and full.GetPixelID() == sitk.sitkUInt8
    volume_ml = array(full).sum() / 1000.0
    assert 900 < volume_ml < 1800  # adult brain tissue, CSF excluded
    assert mask4.GetSize() == mni4.GetSize() and mask4.GetOrigin() == mni4.GetOrigin()
    assert set(np.unique(array(mask4))) == {0, 1}
    # Tissue is brighter than the background outside the mask.
    assert array(mni4)[array(mask4) == 1].mean() > 3 * array(mni4)[array(mask4) == 0].mean()


def test_unknown_anatomy_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown anatomy"):
        anatomy_path("no_such_brain")


def test_missing_colin27_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(anatomy_module, "COLIN27_DIR", tmp_path)
    assert not any(name.startswith("colin27") for name in available_anatomy())
    with pytest.raises(InputError, match="apt-get install mricron-data"):
        load_anatomy("colin27_ch2bet")


def test_present_colin27_is_found_and_loaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(anatomy_module, "COLIN27_DIR", tmp_path)
    fake = sitk.GetImageFromArray(np.arange(6 * 7 * 8, dtype=np.uint8).reshape(6, 7, 8))
    sitk.WriteImage(fake, str(tmp_path / ANATOMY["colin27_ch2bet"].filename))
    assert available_anatomy()["colin27_ch2bet"] == tmp_path / "ch2bet.nii.gz"
    loaded = load_anatomy("colin27_ch2bet")
    assert loaded.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(array(loaded), array(fake).astype(np.float32))


def test_blob_mask_matches_the_changed_voxels(mni4, mask4) -> None:
    before = array(mni4).copy()
    lesion, truth = insert_blob(mni4, 3, brain_mask=mask4, radius_mm=10.0, contrast=0.6)
    np.testing.assert_array_equal(array(mni4), before)  # input untouched
    assert lesion.GetPixelID() == sitk.sitkFloat32 and truth.GetPixelID() == sitk.sitkUInt8
    for out in (lesion, truth):
        assert out.GetSize() == mni4.GetSize() and out.GetOrigin() == mni4.GetOrigin()
        assert out.GetSpacing() == mni4.GetSpacing() and out.GetDirection() == mni4.GetDirection()
    diff = array(lesion) - before
    inside = array(truth) == 1
    assert inside.sum() >= 10
    peak = diff.max()
    low, high = np.percentile(before[array(mask4) == 1], [1, 99])
    assert peak == pytest.approx(0.6 * (high - low), rel=0.05)
    assert np.all(diff[inside] >= 0.5 * peak - 1e-3)  # every truth voxel changed by half the peak
    assert np.all(np.abs(diff[~inside]) <= 0.5 * peak + 1e-3)
    assert np.abs(diff[~inside]).sum() < np.abs(diff[inside]).sum()  # most of the change is in the mask
    assert np.count_nonzero(np.abs(diff[~inside]) > 0.05 * peak) < 2 * inside.sum()  # a thin border only
    assert (array(mask4)[inside] == 1).mean() > 0.8  # the lesion lies in the brain


def test_hypointense_blob_lowers_intensity(mni4, mask4) -> None:
    lesion, truth = insert_blob(mni4, 11, brain_mask=mask4, radius_mm=12.0, contrast=-0.5)
    diff = array(lesion) - array(mni4)
    inside = array(truth) == 1
    assert inside.any() and np.all(diff <= 1e-4)
    assert diff[inside].mean() < -0.2 * np.percentile(array(mni4)[array(mask4) == 1], 99)


def test_blob_is_reproducible_and_depends_on_the_seed(mni4) -> None:
    first = insert_blob(mni4, 5)
    again = insert_blob(mni4, np.random.default_rng(5))
    other = insert_blob(mni4, 6)
    np.testing.assert_array_equal(array(first[0]), array(again[0]))
    np.testing.assert_array_equal(array(first[1]), array(again[1]))
    assert not np.array_equal(array(first[1]), array(other[1]))


def test_blob_at_a_given_centre_covers_it(mni4) -> None:
    centre = (0.0, -20.0, 10.0)
    _, truth = insert_blob(mni4, 0, radius_mm=8.0, center=centre)
    index = truth.TransformPhysicalPointToIndex(centre)
    assert truth[index] == 1


def test_random_normal_subject_keeps_geometry_and_is_seeded(mni4, mask4) -> None:
    before = array(mni4).copy()
    first, moved = random_normal_subject(mni4, 1, mask=mask4)
    again, moved_again = random_normal_subject(mni4, 1, mask=mask4)
    other, _ = random_normal_subject(mni4, 2)
    np.testing.assert_array_equal(array(mni4), before)
    for out in (first, moved):
        assert out.GetSize() == mni4.GetSize() and out.GetOrigin() == mni4.GetOrigin()
        assert out.GetSpacing() == mni4.GetSpacing() and out.GetDirection() == mni4.GetDirection()
    assert first.GetPixelID() == sitk.sitkFloat32 and moved.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(array(first), array(again))
    np.testing.assert_array_equal(array(moved), array(moved_again))
    assert np.abs(array(first) - array(other)).mean() > 0.01 * before.max()
    # Still the same brain: strongly correlated with the template, moved mask on the bright tissue.
    assert np.corrcoef(array(first).ravel(), before.ravel())[0, 1] > 0.8
    assert array(first)[array(moved) == 1].mean() > 3 * array(first)[array(moved) == 0].mean()
    assert 0.85 < array(moved).sum() / array(mask4).sum() < 1.2
    assert random_normal_subject(mni4, 1)[1] is None
