"""Post-processing: smoothing, restriction to the foreground, thresholding and small-component removal."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.postprocessing import postprocessing_settings, smooth_map, threshold_map


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
