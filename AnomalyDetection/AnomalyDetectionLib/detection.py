"""Detect anomalies in one volume: the engine's main call.

input volume -> canonical orientation, foreground, intensity normalisation, model-sized slices
-> score in batches -> slice maps back onto the input's exact grid -> post-processing -> mask at
the threshold -> report. Calibration runs the same steps on normal volumes, so a calibrated
threshold means the same thing at detection time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from .device import resolve_device
from .errors import InputError, ModelError
from .evaluation.metrics import sample_score
from .models import Model, load_model
from .postprocessing import postprocessing_settings, smooth_map, threshold_map
from .preprocessing import (
    PreparedVolume,
    foreground_image,
    prepare_volume,
    read_volume,
    to_input_grid_image,
    write_image_atomic,
    write_text_atomic,
)
from .preprocessing.io import detection_paths
from .preprocessing.registration import RegistrationResult
from .progress import CancelCheck, Progress, ProgressCallback
from .scoring import check_score, score_slices
from .version import __version__

ImageInput = Union[sitk.Image, str, "os.PathLike[str]"]
ModelInput = Union[Model, str, "os.PathLike[str]"]
#: Percentile of the volume's own foreground scores used when a model has no calibrated threshold.
UNCALIBRATED_PERCENTILE = 99.5


@dataclass
class DetectionResult:
    """Outputs of :func:`detect`, all on the input's grid."""

    anomaly_map: sitk.Image
    mask: sitk.Image
    foreground: sitk.Image
    report: Dict[str, Any] = field(default_factory=dict)
    #: The input's registration to the model's template (None for a model without one); pass it to
    #: another :func:`detect` on the same image and template to skip registering again.
    registration: Optional[RegistrationResult] = None


def score_prepared(
    model: Model,
    prepared: PreparedVolume,
    score: str,
    params: Optional[Mapping[str, Any]] = None,
    batch_size: int = 32,
    progress: Optional[Progress] = None,
    member_maps: Optional[Mapping[str, np.ndarray]] = None,
) -> np.ndarray:
    """Slice maps ``(n, 1, size, size)`` of a prepared volume; slices without foreground score 0.

    ``member_maps``: earlier results of this function on the same volume, reused by ``ensemble``.
    """
    maps = np.zeros(prepared.slices.shape, dtype=np.float32)
    occupied = prepared.foreground_fraction() > 0
    if occupied.any():
        reuse = {name: values[occupied] for name, values in (member_maps or {}).items()}
        maps[occupied] = score_slices(model, prepared.slices[occupied], score, params, batch_size,
                                      prepared.slice_foreground[occupied], progress, reuse)
    return maps


def finalise_map(
    slice_maps: np.ndarray, prepared: PreparedVolume, foreground: sitk.Image, settings: Mapping[str, Any]
) -> sitk.Image:
    """Slice maps -> post-processed float32 map on the input grid, zero outside ``foreground``."""
    return smooth_map(to_input_grid_image(slice_maps, prepared), foreground, settings)


def foreground_values(anomaly_map: sitk.Image, foreground: sitk.Image) -> np.ndarray:
    """The map's values inside the foreground, as a flat array."""
    return sitk.GetArrayViewFromImage(anomaly_map)[sitk.GetArrayViewFromImage(foreground) > 0]


def detect(
    image: ImageInput,
    model: ModelInput,
    score: Optional[str] = None,
    threshold: Union[str, float] = "auto",
    device: str = "auto",
    batch_size: int = 32,
    score_params: Optional[Mapping[str, Any]] = None,
    postprocessing: Optional[Mapping[str, Any]] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    name: Optional[str] = None,
    registration: Optional[RegistrationResult] = None,
) -> DetectionResult:
    """Anomaly map, thresholded mask and report for one volume.

    ``image`` is a SimpleITK image or a path (file or DICOM folder); ``model`` a :class:`Model`,
    a model file or a bundled model's name. ``score`` defaults to the card's (combi for VAEs,
    reconstruction for AEs). ``threshold`` is a number or ``"auto"``: the card's calibrated
    threshold for this score. ``postprocessing`` overrides the card's smoothing settings.
    ``progress(fraction, message)`` and ``cancel()`` let a GUI follow and stop the run.
    ``registration``: an earlier result's, for the same image and a model of the same template
    (several scores or models on one scan register it once). The input is never modified;
    nothing is written.
    """
    started = time.perf_counter()
    steps = Progress(progress, cancel)
    if not isinstance(image, sitk.Image):
        name = name or str(image)
        image = read_volume(image)
    name = name or "input"
    model = load_model(model)
    score = score or model.card["default_score"]
    check_score(model, score, score_params)
    settings = postprocessing_settings(model.card, postprocessing)
    torch_device = resolve_device(device)
    model.to(torch_device)
    steps.report(0.0, f"{name}: preparing")

    prepared = prepare_volume(image, model.card, name, steps.sub(0.0, 0.05), registration=registration)
    prepared_at = time.perf_counter()
    slice_maps = score_prepared(model, prepared, score, score_params, batch_size, steps.sub(0.05, 0.9))
    scored_at = time.perf_counter()
    foreground = foreground_image(prepared)
    anomaly_map = finalise_map(slice_maps, prepared, foreground, settings)
    threshold_value, source, warnings = _choose_threshold(model, score, threshold, settings, anomaly_map, foreground)
    registration = prepared.registration
    if registration is not None:
        warnings = list(registration.warnings) + warnings
    mask = threshold_map(anomaly_map, threshold_value, foreground, settings)
    steps.report(1.0, f"{name}: done")
    finished = time.perf_counter()

    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    anomalous = int(sitk.GetArrayViewFromImage(mask).sum())
    values = foreground_values(anomaly_map, foreground)
    report = {
        "input": name,
        "model": model.name,
        "model_path": str(model.path) if model.path else None,
        "score": score,
        "score_params": dict(score_params or {}),
        "threshold": threshold_value,
        "threshold_source": source,
        "postprocessing": settings,
        "sample_score": sample_score(values),
        "anomalous_voxels": anomalous,
        "anomalous_volume_ml": anomalous * voxel_ml,
        "foreground_voxels": int(values.size),
        "slices_scored": int((prepared.foreground_fraction() > 0).sum()),
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "device": str(torch_device),
        "batch_size": batch_size,
        "timings": {
            "prepare_s": round(prepared_at - started, 3),
            "score_s": round(scored_at - prepared_at, 3),
            "postprocess_s": round(finished - scored_at, 3),
            "total_s": round(finished - started, 3),
        },
        "engine_version": __version__,
        "template": model.card.get("template"),
        "registration": registration.to_report() if registration is not None else None,
        "warnings": warnings,
    }
    return DetectionResult(anomaly_map=anomaly_map, mask=mask, foreground=foreground, report=report,
                           registration=registration)


def reconstruct(
    image: ImageInput,
    model: ModelInput,
    device: str = "auto",
    batch_size: int = 32,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    name: Optional[str] = None,
    registration: Optional[RegistrationResult] = None,
) -> sitk.Image:
    """The model's reconstruction of ``image`` (its mean decoding) on the input's exact grid.

    Why: seen beside the input, the reconstruction shows what the model takes for the normal
    version of this scan, which is what the ``reconstruction`` score compares against (teaching,
    and checking a model on new data). Values are in the model's normalised intensity units
    (0 to 1 inside the foreground, 0 outside). Arguments as for :func:`detect`.
    """
    steps = Progress(progress, cancel)
    if not isinstance(image, sitk.Image):
        name = name or str(image)
        image = read_volume(image)
    model = load_model(model)
    model.to(resolve_device(device))
    prepared = prepare_volume(image, model.card, name or "input", steps.sub(0.0, 0.2), registration=registration)
    decoded = np.zeros(prepared.slices.shape, dtype=np.float32)
    occupied = np.flatnonzero(prepared.foreground_fraction() > 0)
    model.network.eval()
    part = steps.sub(0.2, 1.0)
    for start in range(0, len(occupied), batch_size):
        part.report(start / max(len(occupied), 1), f"reconstruction: slices {start + 1}-"
                    f"{min(start + batch_size, len(occupied))} of {len(occupied)}")
        chosen = occupied[start:start + batch_size]
        with torch.no_grad():
            batch = torch.from_numpy(np.ascontiguousarray(prepared.slices[chosen])).to(model.device)
            decoded[chosen] = model.network.reconstruct(batch).cpu().numpy()
    steps.report(1.0, "reconstruction: done")
    return to_input_grid_image(decoded, prepared)


def write_detection(output_dir: Union[str, os.PathLike[str]], stem: str, result: DetectionResult) -> List[Path]:
    """Write ``<stem>_anomaly.nii.gz`` (float32 map), ``<stem>_mask.nii.gz`` (uint8 anomaly mask),
    ``<stem>_foreground.nii.gz`` (uint8, the region scored) and ``<stem>_report.json`` into
    ``output_dir``; all or none (what was written is removed if a later write fails).

    The foreground goes with the map because metrics belong inside it: outside, the map is 0 by
    construction, and counting that background inflates AUROC (``evaluate --mask`` takes it).
    Returns the paths written.
    """
    targets = detection_paths(output_dir, stem)
    written: List[Path] = []
    try:
        for key, image in (("map", result.anomaly_map), ("mask", result.mask), ("foreground", result.foreground)):
            write_image_atomic(image, targets[key])
            written.append(targets[key])
        write_text_atomic(json.dumps(result.report, indent=2) + "\n", targets["report"])
        written.append(targets["report"])
    except (OSError, RuntimeError) as exc:
        for path in written:
            path.unlink()
        raise InputError(f"{output_dir}: cannot write outputs of {stem} ({exc})") from None
    return written


def _choose_threshold(
    model: Model,
    score: str,
    threshold: Union[str, float],
    settings: Mapping[str, Any],
    anomaly_map: sitk.Image,
    foreground: sitk.Image,
) -> Tuple[float, str, List[str]]:
    warnings: List[str] = []
    if not (isinstance(threshold, str) and threshold == "auto"):
        try:
            return float(threshold), "given", warnings
        except (TypeError, ValueError):
            raise ModelError(f"threshold {threshold!r} is neither 'auto' nor a number") from None
    calibration = model.card.get("calibration", {})
    if score in calibration.get("thresholds", {}):
        calibrated_with = calibration.get("postprocessing")
        if calibrated_with is not None and dict(calibrated_with) != dict(settings):
            warnings.append(f"the '{score}' threshold was calibrated with post-processing {calibrated_with}, "
                            f"not {dict(settings)}; it may not give the calibrated false-positive rate")
        return float(calibration["thresholds"][score]), "calibrated", warnings
    values = foreground_values(anomaly_map, foreground)
    warnings.append(f"model '{model.name}' has no calibrated threshold for '{score}': using the "
                    f"{UNCALIBRATED_PERCENTILE}th percentile of this volume's foreground scores")
    return float(np.percentile(values, UNCALIBRATED_PERCENTILE)), "volume percentile (uncalibrated)", warnings
