"""Post-processing: smoothing, restriction to the foreground, thresholding and small-component removal."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.postprocessing import (
    normalise_map,
    postprocessing_settings,
    same_postprocessing,
    smooth_map,
    threshold_map,
)


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def test_median_removes_isolated_voxels_and_background_is_zeroed() -> None:
    heat = np.zeros((10, 10, 10), np.float32)
    heat[5, 5, 5] = 9.0  # a single hot voxel: noise
    heat[1:4, 1:4, 1:4] = 5.0  # a 27-voxel blob survives a radius-1 median
    heat[8, 8, 8] = 3.0  # outside the foreground
    foreground = np.ones_like(heat, np.uint8)
    foreground[7:, 7:, 7:] = 0
    settings = postprocessing_settings({}, {"smoothing": "median", "smoothing_size": 1})
    out = sitk.GetArrayFromImage(smooth_map(_image(heat), _image(foreground), settings))
    assert out[5, 5, 5] == 0 and out[2, 2, 2] == 5.0 and out[8, 8, 8] == 0


def test_threshold_keeps_foreground_and_drops_small_components() -> None:
    heat = np.zeros((12, 12, 12), np.float32)
    heat[2:6, 2:6, 2:6] = 1.0  # 64 voxels
    heat[9, 9, 9] = 1.0  # 1 voxel
    foreground = _image(np.ones_like(heat, np.uint8))
    settings = postprocessing_settings({}, {"min_component_voxels": 10})
    mask = sitk.GetArrayFromImage(threshold_map(_image(heat), 0.5, foreground, settings))
    assert mask.sum() == 64 and mask[9, 9, 9] == 0
    zero_threshold = sitk.GetArrayFromImage(threshold_map(_image(heat), 0.0, _image((heat > 0).astype(np.uint8)),
                                                          postprocessing_settings({})))
    assert zero_threshold.sum() == 65  # never the background, even at threshold 0


def test_settings_come_from_the_card_and_are_checked() -> None:
    card = {"postprocessing": {"smoothing": "gaussian", "smoothing_size": 2.0}}
    assert postprocessing_settings(card)["smoothing"] == "gaussian"
    assert postprocessing_settings(card, {"smoothing": None})["smoothing"] == "gaussian"
    assert postprocessing_settings(card, {"smoothing": "none"})["smoothing"] == "none"
    with pytest.raises(ValueError, match="unknown smoothing"):
        postprocessing_settings({}, {"smoothing": "bilateral"})
    with pytest.raises(ValueError, match="unknown post-processing"):
        postprocessing_settings({}, {"dilate": 3})


def test_scan_normalisation_removes_a_persons_offset_and_scale_but_keeps_the_lesion() -> None:
    """Two scans whose maps differ by an affine change of the whole brain (a new person's cortex
    scored higher) become the same map; a lesion of 1 % of the foreground stays far above the rest."""
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 1.0, size=(10, 20, 20)).astype(np.float32)
    base[4:6, 8:10, 8:10] = 40.0  # the lesion: 8 of the 3600 foreground voxels
    foreground = np.ones_like(base, np.uint8)
    foreground[:, :, :2] = 0
    settings = postprocessing_settings({}, {"normalisation": "scan"})
    first = sitk.GetArrayFromImage(normalise_map(_image(base * foreground), _image(foreground), settings))
    shifted = (3.0 * base + 5.0) * foreground
    second = sitk.GetArrayFromImage(normalise_map(_image(shifted), _image(foreground), settings))
    np.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-4)
    inside = first[foreground > 0]
    assert inside.min() == 0.0 and np.median(inside) == pytest.approx(0.0, abs=1e-3)
    assert first[5, 9, 9] > 5 * np.percentile(inside, 99)  # the lesion still stands out
    assert (first[foreground == 0] == 0).all()  # the background stays 0
    # "none" leaves the map alone; a flat map does not divide by zero
    unchanged = normalise_map(_image(base), _image(foreground), postprocessing_settings({}))
    assert np.array_equal(sitk.GetArrayFromImage(unchanged), base)
    flat = sitk.GetArrayFromImage(normalise_map(_image(np.ones_like(base)), _image(foreground), settings))
    assert np.isfinite(flat).all() and (flat == 0).all()


def test_a_card_calibrated_before_a_setting_existed_means_its_default() -> None:
    old = {"smoothing": "median", "smoothing_size": 1.0, "min_component_voxels": 0}
    assert same_postprocessing(old, postprocessing_settings({}))
    assert not same_postprocessing(old, postprocessing_settings({}, {"normalisation": "scan"}))
    with pytest.raises(ValueError, match="normalisation"):
        postprocessing_settings({}, {"normalisation": "percentile"})
