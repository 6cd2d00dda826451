"""One student's scene: a scan, its detection, the threshold, the truth and the evaluation.

Everything here works on an MRML scene through the Slicer module's MRML layer
(``AnomalyDetectionMRML``) and the engine's pipeline: the map node, the anomaly segment, the
threshold rule and the metrics table are the same functions the Slicer module calls, so the page
and Slicer cannot disagree. No trame and no view here: :mod:`.app` binds this to a page, and tests
drive it directly.

Scene changes happen on the thread that owns the scene (the server's event loop); only
:meth:`WebSession.compute` (the engine's work, no node touched) may run in a worker thread.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from AnomalyDetectionLib.catalog import SAMPLE_NAME, bundled_model_paths, resolve_model_path, sample_paths
from AnomalyDetectionLib.errors import InputError
from AnomalyDetectionLib.preprocessing.io import read_volume
from AnomalyDetectionMRML import (
    SEGMENT_NAME,
    Detection,
    DetectionOutputs,
    add_to_scene,
    detect_image,
    evaluate_nodes,
    image_to_volume_node,
    labelmap_to_segmentation,
    mask_at,
    segment_to_image,
    threshold_range,
    update_segmentation,
    volume_node_to_image,
)

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "EXPORT_SUFFIXES", "Prepared", "WebSession", "upload_to_image"]

#: Largest upload the page accepts (a 1 mm head is about 30 MB uncompressed; DICOM series zip well).
DEFAULT_MAX_UPLOAD_MB = 300
#: What the page offers for download -> the file name's ending after ``<scan>_`` (as ``detect`` names them).
EXPORT_SUFFIXES = {"map": "anomaly.nii.gz", "mask": "mask.nii.gz", "segmentation": "segmentation.nii.gz"}
#: File endings the page accepts (a zip holds a DICOM series).
UPLOAD_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip")

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


def _suffix(name: str) -> str:
    lower = name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else Path(lower).suffix


def upload_to_image(name: str, content: bytes, max_mb: float = DEFAULT_MAX_UPLOAD_MB,
                    allow_constant: bool = False) -> sitk.Image:
    """An uploaded file (NIfTI, NRRD, MHA or a zipped DICOM series) as a validated 3D scalar image.

    The engine's reader does every check (:func:`~AnomalyDetectionLib.preprocessing.io.read_volume`:
    unreadable, 4D, RGB, empty, NaN...), so the page shows the same one-line error as ``detect``.
    The file is read from a private temporary folder that is removed afterwards.
    """
    base = Path(name or "upload").name
    if len(content) > max_mb * 1e6:
        raise InputError(f"{base}: {len(content) / 1e6:.0f} MB is over the upload limit of {max_mb:g} MB")
    if not content:
        raise InputError(f"{base}: the file is empty")
    suffix = _suffix(base)
    if suffix not in UPLOAD_SUFFIXES:
        raise InputError(f"{base}: not a volume file this page reads ({', '.join(UPLOAD_SUFFIXES)}; "
                         "a DICOM series as a .zip)")
    with tempfile.TemporaryDirectory(prefix="anomaly-upload-") as folder:
        try:
            return _read_upload(Path(folder), base, suffix, content, allow_constant)
        except InputError as exc:  # the engine names its private copy; the student knows the file's name
            raise InputError(str(exc).replace(str(Path(folder) / base), base).replace(folder, base)) from None


def _read_upload(folder: Path, base: str, suffix: str, content: bytes, allow_constant: bool) -> sitk.Image:
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                for member in archive.infolist():  # no path may leave the folder
                    target = (folder / member.filename).resolve()
                    if not str(target).startswith(str(folder.resolve()) + os.sep):
                        raise InputError(f"{base}: the archive holds a path outside itself ({member.filename})")
                archive.extractall(folder)
        except zipfile.BadZipFile:
            raise InputError(f"{base}: not a readable zip archive") from None
        series = _dicom_folder(folder)
        if series is None:
            raise InputError(f"{base}: the archive holds no DICOM series")
        return read_volume(series, allow_constant=allow_constant)
    path = folder / base
    path.write_bytes(content)
    return read_volume(path, allow_constant=allow_constant)


def _dicom_folder(root: Path) -> Optional[Path]:
    """The first folder under ``root`` (itself included) in which ITK finds a DICOM series."""
    for folder in [root] + sorted(p for p in root.rglob("*") if p.is_dir()):
        if sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
            return folder
    return None


@dataclass
class Prepared:
    """What a detection needs from the scene, taken on the scene's thread before the worker starts."""

    image: sitk.Image
    name: str
    detector: Any
    extra_scores: Tuple[str, ...] = ()
    with_reconstruction: bool = False


@dataclass
class WebSession:
    """A scene and what the page did to it. ``scene``: the trame-slicer application's MRML scene."""

    scene: Any
    #: Model files offered in the page (default: the bundled ones, the default model first).
    model_paths: List[Path] = field(default_factory=bundled_model_paths)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    scan_node: Any = None
    truth_node: Any = None
    outputs: Optional[DetectionOutputs] = None
    threshold: Optional[float] = None
    #: Whether ``outputs`` holds every score's map and the reconstruction (teaching mode).
    teaching: bool = False
    #: The evaluation's table and Dice-vs-threshold chart nodes (updated in place by each Evaluate).
    metrics_table: Any = None
    dice_chart: Any = None
    _models: Dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------ inputs

    def load_sample(self) -> None:
        """The shipped sample scan and its ground truth (as a segmentation), replacing the scene's scan."""
        scan_path, truth_path = sample_paths()
        self._replace_scan(read_volume(scan_path), SAMPLE_NAME,
                           truth=read_volume(truth_path, allow_constant=True))

    def load_upload(self, name: str, content: bytes) -> None:
        """An uploaded scan; the previous scan and its results stay untouched if it is refused."""
        image = upload_to_image(name, content, self.max_upload_mb)
        stem = Path(name).name
        for suffix in UPLOAD_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        self._replace_scan(image, stem or "upload")

    def load_truth_upload(self, name: str, content: bytes) -> None:
        """An uploaded reference segmentation (a labelmap on any grid in the scan's space)."""
        if self.scan_node is None:
            raise InputError("load a scan before its reference segmentation")
        image = upload_to_image(name, content, self.max_upload_mb, allow_constant=True)
        truth = labelmap_to_segmentation(image, self.scene, f"{self.scan_node.GetName()} truth", self.scan_node)
        self._remove(self.truth_node)
        self.truth_node = truth

    def _replace_scan(self, image: sitk.Image, name: str, truth: Optional[sitk.Image] = None) -> None:
        scan = image_to_volume_node(image, self.scene, name)
        scan.CreateDefaultDisplayNodes()
        truth_node = None
        try:
            if truth is not None:
                truth_node = labelmap_to_segmentation(truth, self.scene, f"{name} truth", scan)
        except BaseException:
            self._remove(scan)
            raise
        self.clear()
        self.scan_node, self.truth_node = scan, truth_node
        if truth_node is not None:
            display = truth_node.GetDisplayNode()
            display.SetVisibility2DFill(False)
            display.SetVisibility2DOutline(True)
            display.SetVisibility3D(False)

    def clear(self) -> None:
        """Remove the scan and everything made from it."""
        outputs = self.outputs
        if outputs is not None:
            for node in [outputs.map_node, outputs.segmentation_node, outputs.foreground_node,
                         outputs.reconstruction_node, *outputs.score_nodes.values()]:
                self._remove(node)
        if self.dice_chart is not None and self._alive(self.dice_chart) is not None:
            series = self.dice_chart.GetNthPlotSeriesNode(0)
            self._remove(series.GetTableNode() if series is not None else None)
            self._remove(series)
        self._remove(self.dice_chart)
        self._remove(self.metrics_table)
        self._remove(self.truth_node)
        self._remove(self.scan_node)
        self.metrics_table = self.dice_chart = None
        self.scan_node = self.truth_node = self.outputs = self.threshold = None
        self.teaching = False

    def _remove(self, node) -> None:
        if self._alive(node) is not None:
            for i in range(node.GetNumberOfDisplayNodes() if hasattr(node, "GetNumberOfDisplayNodes") else 0):
                display = self._alive(node.GetNthDisplayNode(i))
                if display is not None:
                    self.scene.RemoveNode(display)
            self.scene.RemoveNode(node)

    # ---------------------------------------------------------------------------- detection

    def model(self, name_or_path: Optional[str] = None):
        """The engine's model for a bundled name or a path (loaded once per session)."""
        from AnomalyDetectionLib.models import load_model

        path = resolve_model_path(name_or_path)
        key = str(path.resolve())
        if key not in self._models:
            self._models[key] = load_model(path)
        return self._models[key]

    def prepare(self, model: Optional[str] = None, score: Optional[str] = None, device: str = "auto",
                teaching_scores: Sequence[str] = ()) -> Prepared:
        """Everything :meth:`compute` needs, read from the scene now (call on the scene's thread).

        ``teaching_scores``: more scores whose maps come side by side, with the model's
        reconstruction (the scan is registered once).
        """
        from AnomalyDetectionLib.pipeline import Detector

        if self.scan_node is None:
            raise InputError("load a scan first (the sample or an upload)")
        detector = Detector(self.model(model), score=score or None, device=device)
        image = volume_node_to_image(self.scan_node)
        return Prepared(image, self.scan_node.GetName(), detector, tuple(teaching_scores), bool(teaching_scores))

    @staticmethod
    def compute(prepared: Prepared, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> Detection:
        """The engine's work for a prepared detection: safe in a worker thread (it touches no node)."""
        return detect_image(prepared.image, prepared.name, prepared.detector, prepared.extra_scores,
                            prepared.with_reconstruction, progress, cancel)

    def apply(self, detection: Detection) -> DetectionOutputs:
        """Put a computed detection into the scene (on the scene's thread), reusing the previous nodes."""
        if self.scan_node is None or detection.name != self.scan_node.GetName():
            raise InputError("the scan changed while the detection ran; detect again")
        previous = self.outputs
        teaching = bool(detection.extra_maps) or detection.reconstruction is not None
        if previous is not None and not teaching:  # a plain run keeps no stale teaching maps
            for node in [previous.reconstruction_node, *previous.score_nodes.values()]:
                self._remove(node)
            previous = DetectionOutputs(previous.map_node, previous.segmentation_node, previous.foreground_node)
        self.outputs = add_to_scene(self.scan_node, detection, previous)
        self.threshold = float(self.outputs.report["threshold"])
        self.teaching = teaching
        return self.outputs

    # ------------------------------------------------------------------------------ threshold

    def threshold_range(self) -> Tuple[float, float]:
        """The slider's range: the map's lowest and highest value inside the scored foreground."""
        self._require_outputs()
        return threshold_range(self.outputs.map_node)

    def set_threshold(self, threshold: float) -> int:
        """Re-threshold the anomaly segment by the engine's mask rule; returns its voxel count."""
        self._require_outputs()
        update_segmentation(self.outputs.map_node, float(threshold), self.outputs.segmentation_node)
        self.threshold = float(threshold)
        return self.segment_voxels()

    def segment_voxels(self) -> int:
        """Voxels of the anomaly segment now (after any Segment Editor edit), on the map's grid."""
        image = self.segment_image()  # kept alive: a numpy view of a freed image reads garbage
        return int(np.count_nonzero(sitk.GetArrayViewFromImage(image)))

    def segment_image(self) -> sitk.Image:
        """The anomaly segment as a 0/1 image on the map's (the scan's) grid."""
        self._require_outputs()
        segmentation = self.outputs.segmentation_node
        segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(SEGMENT_NAME)
        return segment_to_image(segmentation, segment_id, self.outputs.map_node)

    # ----------------------------------------------------------------------------- evaluation

    def evaluate(self) -> Tuple[List[Tuple[str, float]], Dict[str, float], Tuple[np.ndarray, np.ndarray]]:
        """Metrics of the map against the truth at the current threshold, as the Slicer module's table.

        Returns the table's rows ``(metric, value)``, the metrics dict and the Dice curve
        ``(thresholds, dice)`` from the chart the MRML layer made.
        """
        self._require_outputs()
        if self.truth_node is None:
            raise InputError("no reference segmentation: load the sample (it has its truth) or upload one")
        segment_id = self.truth_node.GetSegmentation().GetNthSegmentID(0)
        self.metrics_table, self.dice_chart, results = evaluate_nodes(
            self.outputs.map_node, self.truth_node, segment_id, self.threshold,
            table_node=self._alive(self.metrics_table), plot_chart_node=self._alive(self.dice_chart))
        table = self.metrics_table
        rows = [(table.GetCellText(r, 0), float(table.GetCellText(r, 1))) for r in range(table.GetNumberOfRows())]
        series = self.dice_chart.GetNthPlotSeriesNode(0)
        curve = series.GetTableNode()
        thresholds = np.array([float(curve.GetCellText(r, 0)) for r in range(curve.GetNumberOfRows())])
        dices = np.array([float(curve.GetCellText(r, 1)) for r in range(curve.GetNumberOfRows())])
        return rows, results, (thresholds, dices)

    def _alive(self, node):
        return node if node is not None and self.scene.GetNodeByID(node.GetID()) is node else None

    # ------------------------------------------------------------------------------ downloads

    def export(self, what: str) -> Tuple[str, bytes]:
        """``(file name, NIfTI bytes)`` of the ``map``, the engine's ``mask`` at the current threshold
        or the edited ``segmentation``, each on the scan's grid."""
        self._require_outputs()
        if what not in EXPORT_SUFFIXES:
            raise ValueError(f"nothing to download called {what!r}")
        name = f"{self.scan_node.GetName()}_{EXPORT_SUFFIXES[what]}"
        if what == "map":
            image = volume_node_to_image(self.outputs.map_node)
        elif what == "mask":
            image = mask_at(self.outputs.map_node, self.threshold)
        else:
            image = self.segment_image()
        with tempfile.TemporaryDirectory(prefix="anomaly-download-") as folder:
            path = Path(folder) / name
            sitk.WriteImage(image, str(path), True)
            return name, path.read_bytes()

    def _require_outputs(self) -> None:
        if self.outputs is None:
            raise InputError("run Detect anomalies first")
