"""Offline anatomy and seeded synthetic subjects/lesions: geometry, ground truth, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.errors import InputError
from AnomalyDetectionLib.preprocessing import anatomy as anatomy_module
from AnomalyDetectionResearch.data import (
    ANATOMY,
    LESION_TYPES,
    anatomy_path,
    available_anatomy,
    brain_mask,
    insert_blob,
    insert_copied_patch,
    insert_intensity_shift,
    insert_lesion,
    insert_noise_patch,
    insert_tumour,
    load_anatomy,
    random_normal_subject,
)
from AnomalyDetectionResearch.data import lesions as lesions_module

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


def robust_span(image: sitk.Image, mask: sitk.Image) -> float:
    low, high = np.percentile(array(image)[array(mask) == 1], [1, 99])
    return float(high - low)


def same_geometry(out: sitk.Image, reference: sitk.Image) -> bool:
    return (
        out.GetSize() == reference.GetSize()
        and out.GetOrigin() == reference.GetOrigin()
        and out.GetSpacing() == reference.GetSpacing()
        and out.GetDirection() == reference.GetDirection()
    )


@pytest.mark.parametrize("kind", sorted(LESION_TYPES))
def test_every_lesion_kind_is_seeded_and_its_truth_is_what_changed(kind, mni4, mask4) -> None:
    before = array(mni4).copy()
    lesion, truth = insert_lesion(mni4, kind, 3, brain_mask=mask4)
    again = insert_lesion(mni4, kind, np.random.default_rng(3), brain_mask=mask4)
    other = insert_lesion(mni4, kind, 4, brain_mask=mask4)
    np.testing.assert_array_equal(array(mni4), before)  # input untouched
    np.testing.assert_array_equal(array(lesion), array(again[0]))
    np.testing.assert_array_equal(array(truth), array(again[1]))
    assert not np.array_equal(array(truth), array(other[1]))
    assert lesion.GetPixelID() == sitk.sitkFloat32 and truth.GetPixelID() == sitk.sitkUInt8
    assert same_geometry(lesion, mni4) and same_geometry(truth, mni4)

    span = robust_span(mni4, mask4)
    diff = np.abs(array(lesion) - before)
    inside = array(truth) == 1
    assert set(np.unique(array(truth))) == {0, 1} and inside.sum() >= 5
    assert (array(mask4)[inside] == 1).mean() > 0.8  # in the brain
    assert (diff[inside] > 0.01 * span).mean() > 0.85  # the truth really changed
    if kind == "tumour":
        return  # mass effect changes normal tissue outside the truth: see the tumour tests
    assert diff[~inside].sum() < diff[inside].sum()
    assert np.count_nonzero(diff[~inside] > 0.05 * span) < 2 * inside.sum()  # at most a thin soft border
    if kind in ("noise_patch", "copied_patch", "intensity_shift"):
        assert diff[~inside].max() <= lesions_module.CHANGE_TOLERANCE * span  # a patch changes nothing else


def test_blob_kinds_have_the_named_sign(mni4, mask4) -> None:
    for seed in range(3):
        hyper, truth = insert_lesion(mni4, "hyper_blob", seed, brain_mask=mask4)
        hypo, _ = insert_lesion(mni4, "hypo_blob", seed, brain_mask=mask4)
        inside = array(truth) == 1
        assert (array(hyper) - array(mni4))[inside].min() > 0
        assert (array(hypo) - array(mni4))[inside].max() < 0


def test_unknown_lesion_kind_lists_the_known_ones(mni4) -> None:
    with pytest.raises(ValueError, match="copied_patch") as error:
        insert_lesion(mni4, "wart", 0)
    assert all(kind in str(error.value) for kind in LESION_TYPES)


def test_tumour_has_dark_core_bright_rim_and_darker_oedema(mni4, mask4) -> None:
    centre = (-30.0, -10.0, 15.0)
    lesion, truth, labels = insert_tumour(mni4, 2, brain_mask=mask4, radius_mm=20.0, center=centre, labels=True)
    assert labels.GetPixelID() == sitk.sitkUInt8 and same_geometry(labels, mni4)
    label = array(labels)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(array(truth), (label > 0).astype(np.uint8))
    assert labels[labels.TransformPhysicalPointToIndex(centre)] == 1  # the core is at the centre
    out = array(lesion)
    core, rim, oedema = (out[label == k].mean() for k in (1, 2, 3))
    assert core < rim and rim > oedema
    assert core < array(mni4)[label == 1].mean()  # necrosis is hypo-intense
    assert rim > array(mni4)[label == 2].mean() + 0.05 * robust_span(mni4, mask4)  # enhancement
    # Oedema is mildly hypo-intense: darker than the tissue it replaced, but still tissue.
    span = robust_span(mni4, mask4)
    drop = (array(mni4) - out)[label == 3].mean()
    assert 0.05 * span < drop < 0.35 * span
    assert (label == 3).sum() > (label == 2).sum()  # oedema reaches well beyond the tumour


def test_tumour_without_mass_effect_changes_only_its_region(mni4, mask4) -> None:
    lesion, truth = insert_tumour(mni4, 5, brain_mask=mask4, radius_mm=15.0, mass_effect_mm=0.0)
    diff = np.abs(array(lesion) - array(mni4))
    inside = array(truth) == 1
    span = robust_span(mni4, mask4)
    assert diff[~inside].sum() < diff[inside].sum()
    assert np.count_nonzero(diff[~inside] > 0.05 * span) < inside.sum()  # only the soft oedema fringe


def test_tumour_mass_effect_moves_tissue_near_it_only(mni4, mask4) -> None:
    out, labels, displacement = lesions_module._tumour(mni4, 6, mask4, 18.0, None, 4.0)
    diff = np.abs(out - array(mni4))
    span = robust_span(mni4, mask4)
    outside = labels == 0
    zone = displacement > 1e-3
    assert displacement.max() == pytest.approx(4.0, rel=0.05)  # the peak at the tumour border
    assert np.count_nonzero(diff[outside & zone] > 0.02 * span) > 20  # displaced tissue
    assert diff[outside & ~zone].max() < 0.01 * span  # the rest of the brain is untouched


def test_mass_effect_pushes_tissue_outward_by_the_displacement() -> None:
    # On an image whose intensity is the distance to the centre, pushing tissue outward by u
    # leaves at each point the intensity of a point u closer to the centre.
    size, spacing = 50, 2.0
    grid = (np.indices((size,) * 3) - (size - 1) / 2.0) * spacing
    distance = np.sqrt((grid**2).sum(axis=0)).astype(np.float32)
    image = sitk.GetImageFromArray(distance)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin((-(size - 1) / 2.0 * spacing,) * 3)
    semi_axes = np.array([12.0, 12.0, 12.0])
    moved, shift = lesions_module._mass_effect(image, np.zeros(3), semi_axes, np.eye(3), 3.0)
    np.testing.assert_array_equal(distance, array(image))  # input untouched
    ring = (distance > 14.0) & (distance < 30.0)
    assert shift[ring].max() > 1.0
    np.testing.assert_allclose(moved[ring], distance[ring] - shift[ring], atol=0.15)
    far = shift == 0
    assert far.any()
    np.testing.assert_array_equal(moved[far], distance[far])  # outside the zone: bit for bit


def test_lesion_centres_outside_the_image_are_input_errors(mni4) -> None:
    with pytest.raises(InputError, match="outside the image"):
        insert_tumour(mni4, 0, center=(500.0, 0.0, 0.0))
    for insert in (insert_noise_patch, insert_copied_patch, insert_intensity_shift):
        with pytest.raises(InputError, match="outside the image"):
            insert(mni4, 0, center=(500.0, 0.0, 0.0))


def test_noise_patch_replaces_the_box_by_noise(mni4, mask4) -> None:
    centre = (10.0, -20.0, 20.0)
    lesion, truth = insert_noise_patch(mni4, 1, brain_mask=mask4, size_mm=20.0, center=centre)
    inside = array(truth) == 1
    assert inside.sum() >= 0.9 * 5**3 and truth[truth.TransformPhysicalPointToIndex(centre)] == 1
    noise, tissue = array(lesion)[inside], array(mni4)[inside]
    assert abs(np.corrcoef(noise, tissue)[0, 1]) < 0.5  # nothing of the anatomy is left
    assert noise.std() > 0.1 * robust_span(mni4, mask4)


def test_copied_patch_comes_from_elsewhere_in_the_brain(mni4, mask4) -> None:
    size = 16.0  # four voxels per side: the inner two are copied unblended
    for seed in range(3):
        lesion, truth = insert_copied_patch(mni4, seed, brain_mask=mask4, size_mm=size)
        k, j, i = np.nonzero(array(truth))
        core = array(lesion)[k.min() + 1:k.max(), j.min() + 1:j.max(), i.min() + 1:i.max()]
        assert core.size > 0
        windows = np.lib.stride_tricks.sliding_window_view(array(mni4), core.shape)
        matches = np.argwhere(np.all(windows == core, axis=(3, 4, 5)))
        assert len(matches) >= 1
        target = np.array([k.min() + 1, j.min() + 1, i.min() + 1])
        distance_mm = np.linalg.norm((matches - target) * SPACING, axis=1)
        assert distance_mm.max() >= 2 * size
        # The blended edge lies between the original and the source.
        target_box = (slice(k.min(), k.max() + 1), slice(j.min(), j.max() + 1), slice(i.min(), i.max() + 1))
        source = matches[np.argmax(distance_mm)] - 1
        source_box = tuple(slice(s, s + b.stop - b.start) for s, b in zip(source, target_box))
        out, original, copied = array(lesion)[target_box], array(mni4)[target_box], array(mni4)[source_box]
        assert np.all(out >= np.minimum(original, copied) - 1e-3) and np.all(out <= np.maximum(original, copied) + 1e-3)


def test_intensity_shift_adds_a_constant_of_either_sign(mni4, mask4) -> None:
    span = robust_span(mni4, mask4)
    signs = set()
    for seed in range(6):
        lesion, truth = insert_intensity_shift(mni4, seed, brain_mask=mask4)
        inside = array(truth) == 1
        change = (array(lesion) - array(mni4))[inside]
        assert 0.15 * span - 1e-3 <= abs(change.mean()) <= 0.40 * span + 1e-3
        assert np.allclose(change, change.mean(), atol=1e-3 * span)  # one offset, nowhere clipped here
        signs.add(np.sign(change.mean()))
    assert signs == {-1.0, 1.0}
