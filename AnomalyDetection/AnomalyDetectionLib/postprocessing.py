"""Post-processing of anomaly maps on the input grid, as in the literature.

Restriction to the foreground, an optional median or Gaussian filter (isolated noisy voxels are
rarely lesions), an optional per-scan normalisation (a new person's whole map can sit higher than
the calibration normals' did, which a fixed threshold turns into false positives), and removal of
connected components smaller than a minimum size from the thresholded mask. The settings live in
the model card, because calibrated thresholds are only valid for the post-processing they were
calibrated with.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from .catalog import MAP_NORMALISATIONS, SMOOTHING

if TYPE_CHECKING:  # imported on use: the MRML layer loads this module without torch
    import torch

DEFAULT_POSTPROCESSING: Dict[str, Any] = {"smoothing": "median", "smoothing_size": 1.0, "normalisation": "none",
                                          "min_component_voxels": 0}

#: MAD -> standard deviation of a normal distribution.
_MAD_TO_SD = 1.4826


def postprocessing_settings(card: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The card's post-processing (engine defaults where it says nothing), with ``overrides`` applied."""
    settings = dict(DEFAULT_POSTPROCESSING)
    settings.update(card.get("postprocessing", {}))
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(settings) - set(DEFAULT_POSTPROCESSING)
    if unknown:
        raise ValueError(f"unknown post-processing setting(s): {', '.join(sorted(unknown))}")
    if settings["smoothing"] not in SMOOTHING:
        raise ValueError(f"unknown smoothing {settings['smoothing']!r}; choose one of {', '.join(SMOOTHING)}")
    if settings["normalisation"] not in MAP_NORMALISATIONS:
        raise ValueError(f"unknown map normalisation {settings['normalisation']!r}; choose one of "
                         f"{', '.join(MAP_NORMALISATIONS)}")
    return settings


def same_postprocessing(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two post-processing settings do the same, an entry either leaves out meaning the
    engine's default (a card calibrated before a setting existed used that setting's default)."""
    return {**DEFAULT_POSTPROCESSING, **first} == {**DEFAULT_POSTPROCESSING, **second}


def smooth_map(anomaly_map: sitk.Image, foreground: sitk.Image, settings: Mapping[str, Any],
               device: Optional[torch.device] = None) -> sitk.Image:
    """Filter the map as ``settings`` say and zero it outside the foreground.

    ``smoothing_size`` is the median radius in voxels or the Gaussian sigma in millimetres.
    ``device``: filter there in torch (the median is the same; the Gaussian is MONAI's truncated
    kernel instead of SimpleITK's recursive one); None: SimpleITK on the CPU.
    """
    method, size = settings["smoothing"], float(settings["smoothing_size"])
    if device is not None and ((method == "median" and size >= 1) or (method == "gaussian" and size > 0)):
        import torch

        from .preprocessing.torch_resampling import gaussian_smooth, median_smooth

        values = torch.from_numpy(sitk.GetArrayFromImage(sitk.Cast(anomaly_map, sitk.sitkFloat32))).to(device)
        if method == "median":
            values = median_smooth(values, int(size))
        else:
            values = gaussian_smooth(values[None, None], [size] * 3, anomaly_map.GetSpacing())[0, 0]
        smoothed = sitk.GetImageFromArray(values.cpu().numpy())
        smoothed.CopyInformation(anomaly_map)
        return sitk.Mask(smoothed, foreground)
    if method == "median" and size >= 1:
        anomaly_map = sitk.Median(anomaly_map, [int(size)] * 3)
    elif method == "gaussian" and size > 0:
        anomaly_map = sitk.SmoothingRecursiveGaussian(anomaly_map, size)
    return sitk.Mask(sitk.Cast(anomaly_map, sitk.sitkFloat32), foreground)


def normalise_map(anomaly_map: sitk.Image, foreground: sitk.Image, settings: Mapping[str, Any]) -> sitk.Image:
    """The map as ``settings["normalisation"]`` says: unchanged, or (``"scan"``) in robust standard
    deviations above the scan's own median foreground score, ``max(0, (m - median) / (1.4826 MAD))``.

    Why: a model that knows a few brains scores a new person's whole cortex higher than it scored the
    calibration normals, so a fixed threshold flags a few per cent of a normal brain. Measured against
    the scan's own typical voxel, the map keeps its shape (a lesion is a small part of the foreground
    and hardly moves the median or the MAD) but loses that per-person offset and scale. Values below
    the median become 0: they are never anomalous, and the map stays non-negative like every score.
    """
    if settings.get("normalisation", "none") == "none":
        return anomaly_map
    values = sitk.GetArrayViewFromImage(anomaly_map)  # read only: the result is a new array
    inside = sitk.GetArrayViewFromImage(foreground) > 0
    if not inside.any():
        return anomaly_map
    scores = values[inside].astype(np.float64)
    median = float(np.median(scores))
    spread = _MAD_TO_SD * float(np.median(np.abs(scores - median)))
    if not spread > 0:  # a flat map (e.g. a constant scan): nothing stands out
        spread = float(np.std(scores)) or 1.0
    normalised = np.zeros_like(values, dtype=np.float32)
    normalised[inside] = np.maximum((scores - median) / spread, 0.0)
    image = sitk.GetImageFromArray(normalised)
    image.CopyInformation(anomaly_map)
    return image


def threshold_map(
    anomaly_map: sitk.Image, threshold: float, foreground: sitk.Image, settings: Mapping[str, Any]
) -> sitk.Image:
    """uint8 mask of ``map >= threshold`` inside the foreground, without components smaller than
    ``min_component_voxels`` (the background is never anomalous, even at a zero threshold)."""
    mask = sitk.Cast(anomaly_map >= float(threshold), sitk.sitkUInt8) * sitk.Cast(foreground > 0, sitk.sitkUInt8)
    minimum = int(settings.get("min_component_voxels", 0))
    if minimum > 1:
        kept = sitk.RelabelComponent(sitk.ConnectedComponent(mask), minimumObjectSize=minimum)
        mask = sitk.Cast(kept > 0, sitk.sitkUInt8)
    return mask


def sample_score(scores: np.ndarray, mask: Optional[np.ndarray] = None, top_fraction: float = 0.01) -> float:
    """Mean of the top ``top_fraction`` of voxel scores inside the mask (at least one voxel).

    One number per volume for "is this scan abnormal?": a small lesion moves the top percent a lot
    but the mean of the whole volume hardly at all. NaN when the mask holds no voxel.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    s = np.asarray(scores).ravel() if mask is None else np.asarray(scores)[_inside(scores, mask)]
    if s.size == 0:
        return math.nan
    k = max(1, int(math.ceil(top_fraction * s.size - 1e-9)))
    top = np.partition(s, s.size - k)[s.size - k:]
    return float(np.mean(top, dtype=np.float64))


def _inside(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != np.shape(scores):
        raise ValueError(f"scores have shape {np.shape(scores)} but the mask has shape {mask.shape}")
    return mask > 0
