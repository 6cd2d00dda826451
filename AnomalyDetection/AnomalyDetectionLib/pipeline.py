"""The one detector: settings -> prepare -> score -> map -> post-process -> threshold -> mask.

Every caller that turns a scan into an anomaly map goes through :class:`Detector`: ``detect`` and
the command line, the Slicer module and its batch call, calibration, the benchmark and the paper
experiments. So a rule (how a threshold is chosen, what the mask is, when a registration may be
reused) exists once, and a calibrated threshold means at detection time what it meant when it
was calibrated.

A detector is a model plus a frozen, validated :class:`DetectionSettings` (score, score
parameters, threshold, post-processing, device, batch size), built once from the model card and
the caller's overrides; layers pass the detector (or its settings) down, never a long list of
arguments. Its steps are public, so a caller that needs only part of the chain (calibration
scores normal volumes and sets its own thresholds; the benchmark keeps the slice maps of the
ensemble's members) uses the same steps instead of repeating them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from .catalog import DEFAULT_BATCH_SIZE, UNCALIBRATED_PERCENTILE
from .device import ComputeRun, resolve_device, with_memory_fallback
from .errors import ModelError, OutputError
from .models import Model, load_model
from .postprocessing import (
    normalise_map,
    postprocessing_settings,
    same_postprocessing,
    sample_score,
    smooth_map,
    threshold_map,
)
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
from .preprocessing.registration_method import RegistrationResult
from .progress import CancelCheck, Progress, ProgressCallback
from .scoring import check_score, score_slices
from .scoring.stack import VOLUME_SCORES, as_batch
from .version import __version__

ImageInput = Union[sitk.Image, str, "os.PathLike[str]"]
ModelInput = Union[None, Model, str, "os.PathLike[str]"]

__all__ = [
    "SAMPLE_SCORE_RULE", "DetectionResult", "DetectionSettings", "Detector", "detect", "foreground_values",
    "reconstruct",
    "write_detection",
]

#: How :meth:`Detector.sample_score` is taken, recorded with a calibration's normal sample scores:
#: a card calibrated under another rule has no percentile to give (its normals are not comparable).
SAMPLE_SCORE_RULE = "top 1 % mean, before the per-scan normalisation"


@dataclass(frozen=True)
class DetectionSettings:
    """What a detection does, checked against one model card; immutable once built.

    Build it with :meth:`for_model`, which fills in the card's defaults (score, smoothing) and
    refuses what the model cannot do, so an error comes before any scan is read.
    """

    score: str
    score_params: Mapping[str, Any] = field(default_factory=dict)
    threshold: Union[str, float] = "auto"
    postprocessing: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_params", MappingProxyType(dict(self.score_params)))
        object.__setattr__(self, "postprocessing", MappingProxyType(dict(self.postprocessing)))

    @classmethod
    def for_model(
        cls,
        model: Model,
        score: Optional[str] = None,
        threshold: Union[str, float] = "auto",
        score_params: Optional[Mapping[str, Any]] = None,
        postprocessing: Optional[Mapping[str, Any]] = None,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> DetectionSettings:
        """Validated settings for ``model``: ``None`` means the card's choice.

        ``threshold`` is ``"auto"`` (the card's calibrated threshold for the score) or a number;
        ``postprocessing`` overrides single entries of the card's post-processing.
        """
        chosen = score or model.card["default_score"]
        check_score(model, chosen, score_params)
        if not (isinstance(threshold, str) and threshold == "auto"):
            try:
                threshold = float(threshold)
            except (TypeError, ValueError):
                raise ModelError(f"threshold {threshold!r} is neither 'auto' nor a number") from None
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, not {batch_size!r}")
        resolve_device(device)  # DeviceError now, not after the registration
        return cls(score=chosen, score_params=dict(score_params or {}), threshold=threshold,
                   postprocessing=postprocessing_settings(model.card, postprocessing), device=str(device),
                   batch_size=batch_size)

    def as_dict(self) -> Dict[str, Any]:
        """Plain JSON-able values (the report's ``settings``)."""
        return {"score": self.score, "score_params": dict(self.score_params), "threshold": self.threshold,
                "postprocessing": dict(self.postprocessing), "device": self.device, "batch_size": self.batch_size}


@dataclass
class DetectionResult:
    """Outputs of one detection, all on the input's grid."""

    anomaly_map: sitk.Image
    mask: sitk.Image
    foreground: sitk.Image
    report: Dict[str, Any] = field(default_factory=dict)
    #: The input in the model's space, registration included: pass it as ``reuse=`` to another
    #: detection of the same scan (another score or model) so the scan is prepared once.
    prepared: Optional[PreparedVolume] = None
    #: The score's slice maps before they were put back on the input grid (the ensemble's members
    #: reuse them); None unless the detection was asked to keep them.
    slice_maps: Optional[np.ndarray] = None

    @property
    def registration(self) -> Optional[RegistrationResult]:
        """The input's registration to the model's template (None for a model without one)."""
        return self.prepared.registration if self.prepared is not None else None


def foreground_values(anomaly_map: sitk.Image, foreground: sitk.Image) -> np.ndarray:
    """The map's values inside the foreground, as a flat array."""
    return sitk.GetArrayViewFromImage(anomaly_map)[sitk.GetArrayViewFromImage(foreground) > 0]


class Detector:
    """A model with its settings: turns scans into anomaly maps, masks and reports.

    ``Detector("brain_t1_vae", score="reconstruction")`` or ``Detector(model, settings)``. The
    model is moved to the settings' device once. :meth:`detect` runs the whole chain; the steps
    (:meth:`prepare`, :meth:`score`, :meth:`smoothed_map`, :meth:`normalised`, :meth:`sample_score`,
    :meth:`choose_threshold`, :meth:`mask`) are public for callers that need a part of it.
    """

    def __init__(self, model: ModelInput = None, settings: Optional[DetectionSettings] = None,
                 **choices: Any) -> None:
        self.model = load_model(model)
        if settings is not None and choices:
            raise TypeError(f"give either settings or choices ({', '.join(sorted(choices))}), not both")
        self.settings = settings if settings is not None else DetectionSettings.for_model(self.model, **choices)
        self.model.to(resolve_device(self.settings.device))

    def __repr__(self) -> str:
        return f"Detector({self.model.name!r}, {self.settings})"

    def with_settings(self, **changes: Any) -> Detector:
        """A detector of the same (loaded) model whose settings differ by ``changes``, re-validated.

        A new ``score`` without new ``score_params`` starts from that score's defaults.
        """
        current = self.settings.as_dict()
        if "score" in changes and "score_params" not in changes:
            current["score_params"] = {}
        current.update(changes)
        return Detector(self.model, DetectionSettings.for_model(self.model, **current))

    # --------------------------------------------------------------------------------- steps

    def prepare(self, image: sitk.Image, name: str = "input", progress: Optional[Progress] = None,
                reuse: Optional[PreparedVolume] = None) -> PreparedVolume:
        """``image`` in the model's space; ``reuse``: an earlier preparation of the same image.

        The one reuse rule: a volume prepared for the same model space is used as it is; one
        prepared for another model of the same template lends its registration; anything else is
        prepared anew.
        """
        registration = None
        if reuse is not None:
            if not reuse.same_input(image):
                raise ValueError(f"{name}: the prepared volume to reuse was made from another image")
            if reuse.fits(self.model.card):
                return reuse
            registration = reuse.registration_for(self.model.card)
        return prepare_volume(image, self.model.card, name, progress, registration=registration,
                              device=self.geometry_device)

    @property
    def geometry_device(self) -> Optional[torch.device]:
        """Where registration, resampling and smoothing run in torch: the model's device when it is a
        GPU; None (SimpleITK on the CPU) otherwise, where SimpleITK is the faster and the reference."""
        device = self.model.device
        return device if device.type == "cuda" else None

    def score(self, prepared: PreparedVolume, progress: Optional[Progress] = None,
              member_maps: Optional[Mapping[str, np.ndarray]] = None,
              compute: Optional[List[ComputeRun]] = None) -> np.ndarray:
        """Slice maps ``(n, 1, size, size)`` of the settings' score; slices without foreground score 0.

        ``member_maps``: slice maps of this volume already computed with the ensemble members'
        default parameters, which the ensemble then reuses. A CUDA out-of-memory error retries at
        smaller batches, then on the CPU (:func:`~.device.with_memory_fallback`); ``compute``, if
        given, receives where the scoring ran in the end, with the fallback's warnings.
        """
        settings = self.settings
        maps = np.zeros(prepared.slices.shape, dtype=np.float32)
        occupied = prepared.foreground_fraction() > 0
        home = self.model.device
        run = ComputeRun(settings.batch_size, str(home))
        if occupied.any():
            reuse = {name: values[occupied] for name, values in (member_maps or {}).items()}

            def score_at(batch_size: int) -> np.ndarray:
                return score_slices(self.model, prepared.network_input(occupied, self.model.context_slices),
                                    settings.score, dict(settings.score_params), batch_size,
                                    prepared.slice_foreground[occupied], progress, reuse)

            try:
                maps[occupied], run = with_memory_fallback(score_at, settings.batch_size, home, self.model.to,
                                                           f"'{settings.score}' score")
            finally:
                if self.model.device != home:
                    self.model.to(home)  # the next scan tries the chosen device again
        if compute is not None:
            compute.append(run)
        return maps

    def smoothed_map(self, slice_maps: np.ndarray, prepared: PreparedVolume, foreground: sitk.Image) -> sitk.Image:
        """Slice maps -> the smoothed map on the input grid, before the per-scan normalisation (the
        one the scan's sample score is taken from, :meth:`sample_score`)."""
        return smooth_map(to_input_grid_image(slice_maps, prepared), foreground, self.settings.postprocessing,
                          prepared.device)

    def normalised(self, smoothed: sitk.Image, foreground: sitk.Image) -> sitk.Image:
        """:meth:`smoothed_map`'s result normalised as the post-processing says: the anomaly map
        (float32 on the input grid, zero outside the foreground)."""
        return normalise_map(smoothed, foreground, self.settings.postprocessing)

    @staticmethod
    def sample_score(smoothed: sitk.Image, foreground: sitk.Image) -> float:
        """How abnormal the scan is as a whole: the mean of the top 1 % of its foreground scores on
        the map *before* the per-scan normalisation.

        Why before: the normalisation measures each voxel against the scan's own typical voxel, so
        it removes exactly the scan-wide excess a whole-scan answer needs. Chosen on the validation
        set (``scripts/sample_score_study.py``): lesion-vs-normal sample AUROC 0.721 averaged over
        four model/score pairs, against 0.609 on the normalised map (held-out: 0.741 against 0.667).
        """
        return sample_score(foreground_values(smoothed, foreground))

    def choose_threshold(self, anomaly_map: sitk.Image, foreground: sitk.Image) -> Tuple[float, str, List[str]]:
        """``(threshold, source, warnings)``: the given number, the card's calibrated threshold for
        the score, or (uncalibrated model) a percentile of this volume's own foreground scores."""
        settings, card = self.settings, self.model.card
        if not isinstance(settings.threshold, str):
            return float(settings.threshold), "given", []
        calibration = card.get("calibration", {})
        if settings.score in calibration.get("thresholds", {}):
            warnings = []
            calibrated_with = calibration.get("postprocessing")
            if calibrated_with is not None and not same_postprocessing(calibrated_with, settings.postprocessing):
                warnings.append(f"the '{settings.score}' threshold was calibrated with post-processing "
                                f"{calibrated_with}, not {dict(settings.postprocessing)}; it may not give the "
                                "calibrated false-positive rate")
            return float(calibration["thresholds"][settings.score]), "calibrated", warnings
        values = foreground_values(anomaly_map, foreground)
        warning = (f"model '{self.model.name}' has no calibrated threshold for '{settings.score}': using the "
                   f"{UNCALIBRATED_PERCENTILE}th percentile of this volume's foreground scores")
        return float(np.percentile(values, UNCALIBRATED_PERCENTILE)), "volume percentile (uncalibrated)", [warning]

    def sample_percentile(self, value: float) -> Dict[str, Any]:
        """How abnormal the scan is as a whole: the percentage of the calibration's normal scans whose
        sample score is below ``value`` (``sample_percentile``, None without calibrated normals for
        this score, post-processing and :data:`SAMPLE_SCORE_RULE`) and how many normals that is
        (``sample_normals``)."""
        calibration = self.model.card.get("calibration", {})
        normals = (calibration.get("sample_scores") or {}).get(self.settings.score)
        same = same_postprocessing(calibration.get("postprocessing") or {}, self.settings.postprocessing) and (
            calibration.get("sample_score_rule") == SAMPLE_SCORE_RULE)
        if not normals or not same or not np.isfinite(value):
            return {"sample_percentile": None, "sample_normals": len(normals or [])}
        below = float(np.mean(np.asarray(normals, dtype=np.float64) < value))
        return {"sample_percentile": round(100.0 * below, 1), "sample_normals": len(normals)}

    def mask(self, anomaly_map: sitk.Image, foreground: sitk.Image, threshold: float) -> sitk.Image:
        """The anomaly mask at ``threshold`` by the engine's one mask rule (foreground only, small
        components removed as the post-processing says); the Slicer segment uses the same rule."""
        return threshold_map(anomaly_map, threshold, foreground, self.settings.postprocessing)

    # ----------------------------------------------------------------------------- the chain

    def detect(
        self,
        image: ImageInput,
        name: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
        reuse: Optional[PreparedVolume] = None,
        member_maps: Optional[Mapping[str, np.ndarray]] = None,
        keep_slice_maps: bool = False,
    ) -> DetectionResult:
        """Anomaly map, mask and report for one volume (a SimpleITK image, a file or a DICOM folder).

        ``progress(fraction, message)`` and ``cancel()`` let a GUI follow and stop the run;
        ``reuse`` is an earlier result's ``prepared`` for the same scan. The input is never
        modified and nothing is written.
        """
        started = time.perf_counter()
        steps = Progress(progress, cancel)
        if not isinstance(image, sitk.Image):
            name = name or str(image)
            image = read_volume(image)
        read_s = time.perf_counter() - started
        name = name or "input"
        steps.report(0.0, f"{name}: preparing")
        prepared = self.prepare(image, name, steps.sub(0.0, 0.05), reuse)
        newly_registered = prepared.registration is not None and (
            reuse is None or reuse.registration is not prepared.registration)
        prepared_at = time.perf_counter()
        compute: List[ComputeRun] = []
        slice_maps = self.score(prepared, steps.sub(0.05, 0.9), member_maps, compute)
        result = self.finish(prepared, slice_maps, compute[0], {
            "read_s": read_s,
            "register_s": prepared.registration.seconds if newly_registered else 0.0,
            "prepare_s": prepared_at - started,  # reading and registration included
            "score_s": time.perf_counter() - prepared_at,
        }, keep_slice_maps, name, image)
        steps.report(1.0, f"{name}: done")
        return result

    def score_many(self, volumes: Sequence[PreparedVolume]) -> List[Tuple[np.ndarray, ComputeRun]]:
        """:meth:`score` of several volumes, their slices in shared batches: what a cohort's worker
        does so a GPU is not left half-empty by the last batch of every scan.

        Each volume's slice maps are those :meth:`score` gives it alone (the networks score each
        slice on its own: on the CPU the same bits). The ensemble's members are batched across the
        volumes and combined per volume; the intensity yardstick needs no batching.
        """
        settings = self.settings
        if len(volumes) < 2 or settings.score in VOLUME_SCORES:
            return [self._score_alone(prepared) for prepared in volumes]
        members = (check_score(self.model, settings.score, dict(settings.score_params))["member_params"]
                   if settings.score == "ensemble" else {settings.score: dict(settings.score_params)})
        occupied = [prepared.foreground_fraction() > 0 for prepared in volumes]
        # each scan's context slices come from that scan alone, before the stacks are shared out
        context = self.model.context_slices
        stack = np.concatenate([prepared.network_input(chosen, context) for prepared, chosen in zip(volumes, occupied)])
        bounds = np.cumsum([0] + [int(chosen.sum()) for chosen in occupied])
        home = self.model.device
        shared: Dict[str, np.ndarray] = {}
        runs: List[ComputeRun] = []
        try:
            for member, params in members.items():
                shared[member], run = with_memory_fallback(
                    lambda size, m=member, p=params: score_slices(self.model, stack, m, p, size) if len(stack)
                    else np.zeros((0, 1, *stack.shape[2:]), np.float32), settings.batch_size, home, self.model.to,
                    f"'{member}' score")
                runs.append(run)
        finally:
            if self.model.device != home:
                self.model.to(home)
        run = ComputeRun(min(r.batch_size for r in runs), runs[-1].device, [w for r in runs for w in r.warnings])
        results = []
        for index, (prepared, chosen) in enumerate(zip(volumes, occupied)):
            mine = {member: values[bounds[index]:bounds[index + 1]] for member, values in shared.items()}
            if settings.score == "ensemble":
                results.append((self.score(prepared, member_maps=self._full(mine, prepared, chosen)), run))
            else:
                maps = np.zeros(prepared.slices.shape, dtype=np.float32)
                maps[chosen] = mine[settings.score]
                results.append((maps, run))
        return results

    def _score_alone(self, prepared: PreparedVolume) -> Tuple[np.ndarray, ComputeRun]:
        compute: List[ComputeRun] = []
        maps = self.score(prepared, compute=compute)
        return maps, compute[0]

    @staticmethod
    def _full(maps: Mapping[str, np.ndarray], prepared: PreparedVolume, chosen: np.ndarray) -> Dict[str, np.ndarray]:
        """Maps of the occupied slices spread back over all of ``prepared``'s slices (zeros elsewhere)."""
        full = {}
        for member, values in maps.items():
            full[member] = np.zeros(prepared.slices.shape, dtype=np.float32)
            full[member][chosen] = values
        return full

    def finish(self, prepared: PreparedVolume, slice_maps: np.ndarray, compute: ComputeRun,
               timings: Mapping[str, float], keep_slice_maps: bool = False, name: Optional[str] = None,
               image: Optional[sitk.Image] = None) -> DetectionResult:
        """Slice maps of ``prepared`` -> the detection: map on the input grid, sample score, per-scan
        normalisation, threshold, mask and report. ``timings`` (seconds) so far: ``read_s``,
        ``register_s``, ``prepare_s``, ``score_s``; post-processing and the total are added.
        ``name`` and ``image`` as the report should give them (default: the prepared volume's)."""
        began = time.perf_counter()
        foreground = foreground_image(prepared)
        smoothed = self.smoothed_map(slice_maps, prepared, foreground)
        scan_score = self.sample_score(smoothed, foreground)
        anomaly_map = self.normalised(smoothed, foreground)
        del smoothed
        threshold, source, warnings = self.choose_threshold(anomaly_map, foreground)
        if prepared.registration is not None:
            warnings = list(prepared.registration.warnings) + warnings
        warnings = list(compute.warnings) + warnings
        mask = self.mask(anomaly_map, foreground, threshold)
        postprocess_s = time.perf_counter() - began
        rounded = {key: round(float(timings.get(key, 0.0)), 3) for key in ("read_s", "register_s", "prepare_s",
                                                                          "score_s")}
        rounded["postprocess_s"] = round(postprocess_s, 3)
        rounded["total_s"] = round(float(timings.get("prepare_s", 0.0)) + float(timings.get("score_s", 0.0))
                                   + postprocess_s, 3)
        report = self._report(image if image is not None else prepared.image, name or prepared.name, prepared,
                              scan_score, mask, foreground, threshold, source, warnings, rounded, compute)
        return DetectionResult(anomaly_map=anomaly_map, mask=mask, foreground=foreground, report=report,
                               prepared=prepared, slice_maps=slice_maps if keep_slice_maps else None)

    def reconstruct(self, image: ImageInput, name: Optional[str] = None,
                    progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                    reuse: Optional[PreparedVolume] = None) -> sitk.Image:
        """The model's reconstruction of ``image`` (its mean decoding) on the input's exact grid.

        Why: seen beside the input, the reconstruction shows what the model takes for the normal
        version of this scan, which is what the ``reconstruction`` score compares against
        (teaching, and checking a model on new data). Values are in the model's normalised
        intensity units (0 to 1 inside the foreground, 0 outside).
        """
        steps = Progress(progress, cancel)
        if not isinstance(image, sitk.Image):
            name = name or str(image)
            image = read_volume(image)
        prepared = self.prepare(image, name or "input", steps.sub(0.0, 0.2), reuse)
        network, batch_size = self.model.network, self.settings.batch_size
        decoded = np.zeros(prepared.slices.shape, dtype=np.float32)
        occupied = np.flatnonzero(prepared.foreground_fraction() > 0)
        network.eval()
        part = steps.sub(0.2, 1.0)
        for start in range(0, len(occupied), batch_size):
            part.report(start / max(len(occupied), 1), f"reconstruction: slices {start + 1}-"
                        f"{min(start + batch_size, len(occupied))} of {len(occupied)}")
            chosen = occupied[start:start + batch_size]
            with torch.no_grad():
                batch = as_batch(prepared.network_input(chosen, self.model.context_slices), self.model.device)
                decoded[chosen] = network.reconstruct(batch).cpu().numpy()
        steps.report(1.0, "reconstruction: done")
        return to_input_grid_image(decoded, prepared)

    def _report(self, image: sitk.Image, name: str, prepared: PreparedVolume, scan_score: float,
                mask: sitk.Image, foreground: sitk.Image, threshold: float, source: str, warnings: List[str],
                timings: Mapping[str, float], compute: ComputeRun) -> Dict[str, Any]:
        model, settings = self.model, self.settings
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        anomalous = int(sitk.GetArrayViewFromImage(mask).sum())
        registration = prepared.registration
        return {
            "input": name,
            "model": model.name,
            "model_path": str(model.path) if model.path else None,
            "score": settings.score,
            "score_params": dict(settings.score_params),
            "threshold": threshold,
            "threshold_source": source,
            "postprocessing": dict(settings.postprocessing),
            "sample_score": scan_score,
            **self.sample_percentile(scan_score),
            "anomalous_voxels": anomalous,
            "anomalous_volume_ml": anomalous * voxel_ml,
            "foreground_voxels": int(np.count_nonzero(sitk.GetArrayViewFromImage(foreground))),
            "slices_scored": int((prepared.foreground_fraction() > 0).sum()),
            "size": list(image.GetSize()),
            "spacing": list(image.GetSpacing()),
            "device": compute.device,
            "batch_size": compute.batch_size,
            "timings": dict(timings),
            "engine_version": __version__,
            "template": model.card.get("template"),
            "registration": registration.to_report() if registration is not None else None,
            "warnings": warnings,
        }


def detect(image: ImageInput, model: ModelInput = None, score: Optional[str] = None,
           threshold: Union[str, float] = "auto", device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
           score_params: Optional[Mapping[str, Any]] = None, postprocessing: Optional[Mapping[str, Any]] = None,
           progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
           name: Optional[str] = None, reuse: Optional[PreparedVolume] = None) -> DetectionResult:
    """One scan, one call: ``Detector(model, score=..., ...).detect(image, ...)``.

    ``model``: a :class:`Model`, a model file or a bundled model's name (None: the default).
    ``score`` defaults to the card's; ``threshold`` is ``"auto"`` (calibrated) or a number;
    ``postprocessing`` overrides the card's smoothing settings.
    """
    detector = Detector(model, score=score, threshold=threshold, score_params=score_params,
                        postprocessing=postprocessing, device=device, batch_size=batch_size)
    return detector.detect(image, name=name, progress=progress, cancel=cancel, reuse=reuse)


def reconstruct(image: ImageInput, model: ModelInput = None, device: str = "auto",
                batch_size: int = DEFAULT_BATCH_SIZE, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None, name: Optional[str] = None,
                reuse: Optional[PreparedVolume] = None) -> sitk.Image:
    """The model's reconstruction of a scan on its grid (see :meth:`Detector.reconstruct`)."""
    detector = Detector(model, device=device, batch_size=batch_size)
    return detector.reconstruct(image, name=name, progress=progress, cancel=cancel, reuse=reuse)


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
        write_text_atomic(json.dumps(result.report, indent=2) + "\n", targets["report"])  # last: marks the set whole
        written.append(targets["report"])
    except (OSError, RuntimeError) as exc:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1:]
        raise OutputError(f"{output_dir}: cannot write the outputs of {stem} "
                          f"({detail if isinstance(detail, str) else ''.join(detail) or type(exc).__name__})") from None
    return written
