"""A detection into the scene: the engine's :class:`~AnomalyDetectionLib.pipeline.Detector` on a volume node.

``process`` is what the *Detect anomalies* button calls, and what a Slicer Python console user
calls directly; ``process_folder`` is the batch path (files in and out, no scene). Both take a
``Detector`` (model plus validated settings), so every rule comes from the engine. Everything
that can go wrong with the user's input is checked before the first node is created, and a
failure half-way removes what this call added, so an error never leaves stray nodes behind.

What a detection puts into the scene, and what Evaluate and the threshold slider need later, is
kept on the nodes (saved with the scene): the map node references its foreground labelmap
(:data:`~.segmentation.FOREGROUND_ROLE`) and holds the report, with the threshold and the
post-processing, as attributes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from AnomalyDetectionLib.errors import AnomalyDetectionError, InputError
from AnomalyDetectionLib.evaluation.against_truth import csv_text, evaluate_case, match_files
from AnomalyDetectionLib.preprocessing.io import expand_inputs, read_volume, write_text_atomic
from AnomalyDetectionLib.progress import Progress

from .display import show_anomaly_map
from .nodes import image_to_volume_node, volume_node_to_image
from .segmentation import FOREGROUND_ROLE, REPORT_ATTRIBUTE, THRESHOLD_ATTRIBUTE, set_anomaly_segment

if TYPE_CHECKING:  # the detector comes from the caller: importing this layer needs no torch
    from AnomalyDetectionLib.pipeline import Detector

__all__ = ["RESULTS_CSV", "Detection", "DetectionOutputs", "add_to_scene", "detect_image", "process", "process_folder"]

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]
#: File name of the per-case table ``process_folder`` writes into its output folder.
RESULTS_CSV = "anomaly_detection_results.csv"


@dataclass
class DetectionOutputs:
    """What :func:`process` put into the scene; pass it back as ``outputs=`` to reuse the nodes."""

    map_node: Any
    segmentation_node: Any
    #: Labelmap of the region the detection scored (the brain); the map node references it.
    foreground_node: Any = None
    report: Dict[str, Any] = field(default_factory=dict)
    #: Score name -> volume node of that score's map (``extra_scores``); may be empty.
    score_nodes: Dict[str, Any] = field(default_factory=dict)
    #: The model's reconstruction of the scan (``with_reconstruction``), or None.
    reconstruction_node: Any = None


def _alive(node, scene) -> bool:
    """Whether a node from an earlier call can be reused: it still exists in this scene."""
    return node is not None and node.GetScene() is scene and scene.GetNodeByID(node.GetID()) is node


def _node_ids(scene) -> List[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def _remove_new_nodes(scene, before: set) -> None:
    """Remove every node added to ``scene`` since ``before`` was taken (newest first)."""
    for node_id in reversed(_node_ids(scene)):
        if node_id not in before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


def _sub_progress(steps: Progress, index: int, count: int) -> Optional[ProgressCallback]:
    """The ``index``-th of ``count`` equal parts of the caller's progress range, or None without one."""
    if steps.callback is None:
        return None
    return steps.sub(index / count, (index + 1) / count).as_callback()


@dataclass
class Detection:
    """The scene-free half of :func:`process`: the engine's results for one scan, no node touched yet.

    :func:`detect_image` makes it (safe in a worker thread: it reads no node and writes no scene),
    :func:`add_to_scene` turns it into nodes (on the thread that owns the scene). A GUI that keeps
    its views live while the model runs (the web app) calls the two apart; :func:`process` calls
    them in turn.
    """

    name: str
    result: Any  # the engine's DetectionResult
    #: Score name -> that score's map on the input's grid (``extra_scores``).
    extra_maps: Dict[str, Any] = field(default_factory=dict)
    #: The model's reconstruction on the input's grid (``with_reconstruction``), or None.
    reconstruction: Any = None


def detect_image(
    image,
    name: str,
    detector: Detector,
    extra_scores: Sequence[str] = (),
    with_reconstruction: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> Detection:
    """Run ``detector`` (and each of ``extra_scores``, reusing its registration) on ``image``; no scene.

    ``image`` is what :func:`~.nodes.volume_node_to_image` made of the input node. Engine errors
    (bad input, :class:`Cancelled`, missing CUDA) propagate unchanged.
    """
    extras = [detector.with_settings(score=s) for s in dict.fromkeys(extra_scores) if s != detector.settings.score]
    steps = Progress(progress, cancel)
    runs = 1 + len(extras) + int(with_reconstruction)
    result = detector.detect(image, name=name, progress=_sub_progress(steps, 0, runs), cancel=cancel)
    extra_maps = {}
    for i, extra in enumerate(extras, start=1):
        extra_maps[extra.settings.score] = extra.detect(image, name=name, progress=_sub_progress(steps, i, runs),
                                                        cancel=cancel, reuse=result.prepared).anomaly_map
    rebuilt = None
    if with_reconstruction:
        rebuilt = detector.reconstruct(image, name=name, progress=_sub_progress(steps, runs - 1, runs),
                                       cancel=cancel, reuse=result.prepared)
    steps.check_cancel()
    return Detection(name, result, extra_maps, rebuilt)


def add_to_scene(volume_node, detection: Detection, outputs: Optional[DetectionOutputs] = None) -> DetectionOutputs:
    """Put ``detection`` (made from ``volume_node``) into the node's scene; see :func:`process` for the nodes.

    A failure half-way removes every node this call added; the input node is never modified.
    """
    scene = volume_node.GetScene()
    if scene is None:
        raise InputError(f"volume '{volume_node.GetName()}' is not in a scene")
    name, result = detection.name, detection.result
    before = set(_node_ids(scene))
    previous = outputs or DetectionOutputs(None, None)

    def reusable(node):
        return node if _alive(node, scene) else None

    try:
        foreground_node = image_to_volume_node(result.foreground, scene, f"{name} foreground",
                                               node=reusable(previous.foreground_node), label=True)
        _place_like(foreground_node, volume_node, None)
        map_node = image_to_volume_node(result.anomaly_map, scene, f"{name} anomaly map",
                                        node=reusable(previous.map_node))
        _place_like(map_node, volume_node, result.report)
        map_node.SetNodeReferenceID(FOREGROUND_ROLE, foreground_node.GetID())
        show_anomaly_map(map_node)
        segmentation_node = set_anomaly_segment(map_node, result.mask, result.report["threshold"],
                                                reusable(previous.segmentation_node), name=f"{name} anomalies")
        score_nodes: Dict[str, Any] = {}
        for score, extra_map in detection.extra_maps.items():
            node = image_to_volume_node(extra_map, scene, f"{name} {score}",
                                        node=reusable(previous.score_nodes.get(score)))
            _place_like(node, volume_node, None)
            show_anomaly_map(node)
            score_nodes[score] = node
        reconstruction_node = None
        if detection.reconstruction is not None:
            reconstruction_node = image_to_volume_node(detection.reconstruction, scene, f"{name} reconstruction",
                                                       node=reusable(previous.reconstruction_node))
            _place_like(reconstruction_node, volume_node, None)
            reconstruction_node.CreateDefaultDisplayNodes()  # grey values, like the input
    except BaseException:
        _remove_new_nodes(scene, before)
        raise
    return DetectionOutputs(map_node, segmentation_node, foreground_node, result.report, score_nodes,
                            reconstruction_node)


def process(
    volume_node,
    detector: Detector,
    outputs: Optional[DetectionOutputs] = None,
    extra_scores: Sequence[str] = (),
    with_reconstruction: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> DetectionOutputs:
    """Detect anomalies in ``volume_node`` with ``detector``; create (or, with ``outputs``, update) the nodes.

    Outputs: a float32 map volume ``"<input> anomaly map"`` on the input's exact grid, shown as a
    heat map; a segmentation ``"<input> anomalies"`` whose segment ``"Anomaly"`` is the engine's
    mask (what ``detect`` writes as ``<stem>_mask.nii.gz``); the scored region as a labelmap
    ``"<input> foreground"``; for each of ``extra_scores`` that score's map ``"<input> <score>"``
    (side-by-side maps for teaching; the scan is registered once); with ``with_reconstruction``
    the model's reconstruction of the scan ``"<input> reconstruction"`` (grey values: what the
    model takes for the normal scan). All outputs sit under the input's parent transform.
    The input node is never modified. Engine errors (bad input, :class:`Cancelled`, missing CUDA)
    propagate unchanged, and no node of this call remains. The same as :func:`detect_image`
    followed by :func:`add_to_scene`.
    """
    image = volume_node_to_image(volume_node)  # InputError for no node/data, RGB, 4D, empty
    if volume_node.GetScene() is None:
        raise InputError(f"volume '{volume_node.GetName()}' is not in a scene")
    detection = detect_image(image, volume_node.GetName(), detector, extra_scores, with_reconstruction,
                             progress, cancel)
    return add_to_scene(volume_node, detection, outputs)


def _place_like(output_node, input_node, report: Optional[Mapping[str, Any]]) -> None:
    """Put an output under the input's parent transform and note where it came from."""
    output_node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    output_node.SetAttribute("AnomalyDetection.InputVolumeID", input_node.GetID() or "")
    if report is not None:
        output_node.SetAttribute(THRESHOLD_ATTRIBUTE, repr(float(report["threshold"])))
        output_node.SetAttribute(REPORT_ATTRIBUTE, json.dumps(report, default=str))


# ------------------------------------------------------------------------------------------ batch


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def process_folder(
    input_dir: Union[str, os.PathLike[str]],
    output_dir: Union[str, os.PathLike[str]],
    detector: Detector,
    truth_dir: Optional[Union[str, os.PathLike[str]]] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    overwrite: bool = False,
) -> Path:
    """Detect anomalies in every volume of ``input_dir`` with ``detector``; write maps, masks, reports and a CSV.

    Per input ``<stem>``: ``output_dir/<stem>_anomaly.nii.gz``, ``_mask.nii.gz``, ``_foreground.nii.gz``
    and ``_report.json``, through the engine's batch runner (:class:`~AnomalyDetectionLib.batch.Batch`),
    as ``anomaly-detection detect`` writes them: distinct stems, outputs of an earlier run kept
    (an input whose outputs from the same settings are there is skipped, so a rerun resumes;
    another run's outputs are an error unless ``overwrite``), the run summary
    ``anomaly_detection_run.json``/``.csv`` beside them. The CSV (:data:`RESULTS_CSV`) has one row
    per input: status, model, score, threshold, sample score, anomalous volume and, when
    ``truth_dir`` holds ``<stem>`` or ``<stem>_*``, voxel AUROC, AUPRC, Dice and best Dice inside
    the engine's foreground mask (for inputs detected in this run). A bad input is recorded in
    the ``error`` column and the run goes on; a folder that cannot be written stops it
    (:class:`~AnomalyDetectionLib.errors.OutputError`); cancelling stops it at once. Returns the
    CSV's path. Uses no scene.
    """
    from AnomalyDetectionLib.batch import Batch

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: no such folder")
    batch = Batch(detector, expand_inputs([str(input_dir)]), output_dir, overwrite=overwrite)
    truths = match_files([o.case for o in batch.outcomes], truth_dir, "truth") if truth_dir is not None else {}

    rows: List[Dict[str, Any]] = []
    for outcome in batch.run(progress=progress, cancel=cancel):
        truth_path = truths.get(outcome.case)
        row: Dict[str, Any] = {
            "case": outcome.case, "input": outcome.input, "status": outcome.status, "model": detector.model.name,
            "score": detector.settings.score, "threshold": None, "threshold_source": None, "sample_score": None,
            "sample_percentile": None, "anomalous_volume_ml": None,
            "truth": str(truth_path) if truth_path else None, "voxel_auroc": None, "voxel_auprc": None,
            "dice": None, "best_dice": None, "best_threshold": None, "seconds": outcome.seconds,
            "error": outcome.error,
        }
        result = outcome.result
        if result is not None:
            report = result.report
            row.update(threshold=report["threshold"], threshold_source=report["threshold_source"],
                       sample_score=_finite(report["sample_score"]), sample_percentile=report["sample_percentile"],
                       anomalous_volume_ml=report["anomalous_volume_ml"])
            if truth_path is not None:
                try:
                    case = evaluate_case(result.anomaly_map, read_volume(truth_path, allow_constant=True),
                                         result.foreground, report["threshold"], outcome.case,
                                         sample_score=report["sample_score"])
                    row.update({k: _finite(case[k]) for k in
                                ("voxel_auroc", "voxel_auprc", "dice", "best_dice", "best_threshold")})
                except AnomalyDetectionError as exc:
                    row["error"] = str(exc)
        rows.append(row)
    csv_path = output_dir / RESULTS_CSV
    write_text_atomic(csv_text(rows), csv_path)
    return csv_path
