"""The module's logic: run the engine on a volume node and put the results into the scene.

``process`` is what the *Detect anomalies* button calls, and what a Slicer Python console user
calls directly; ``process_folder`` is the batch path (engine only, files in and out, no scene).
Everything that can go wrong with the user's input or model is checked before the first node is
created, and a failure half-way removes what this call added, so an error never leaves stray
nodes behind.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import SimpleITK as sitk

from AnomalyDetectionLib import Cancelled, Model, detect, load_model, reconstruct, write_detection
from AnomalyDetectionLib.device import resolve_device
from AnomalyDetectionLib.errors import AnomalyDetectionError, InputError
from AnomalyDetectionLib.evaluation.report import csv_text, evaluate_case, match_files
from AnomalyDetectionLib.models.model_file import DEFAULT_MODEL
from AnomalyDetectionLib.postprocessing import postprocessing_settings
from AnomalyDetectionLib.preprocessing.io import case_stem, expand_inputs, read_volume, write_text_atomic
from AnomalyDetectionLib.progress import Progress
from AnomalyDetectionLib.scoring import check_score

from .nodes import image_to_volume_node, volume_node_to_image
from .outputs import SEGMENT_NAME, show_anomaly_map, update_segmentation

__all__ = ["RECONSTRUCTED", "RESULTS_CSV", "DetectionOutputs", "process", "process_folder", "resolve_model"]

ModelInput = Union[None, Model, str, "os.PathLike[str]"]
ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]
#: File name of the per-case table ``process_folder`` writes into its output folder.
RESULTS_CSV = "anomaly_detection_results.csv"
#: ``DetectionOutputs.extra_nodes`` key of the model's reconstruction of the input (``reconstruction=True``).
RECONSTRUCTED = "reconstructed"


@dataclass
class DetectionOutputs:
    """What :func:`process` put into the scene; pass it back as ``outputs=`` to reuse the nodes."""

    map_node: Any
    segmentation_node: Any
    report: Dict[str, Any] = field(default_factory=dict)
    #: Score name -> volume node of that score's map (``extra_scores``); may be empty.
    extra_nodes: Dict[str, Any] = field(default_factory=dict)
    #: The engine's foreground (brain) mask on the input grid; ``evaluate_nodes(..., mask=)`` takes it.
    foreground: Optional[sitk.Image] = None


def resolve_model(model: ModelInput) -> Model:
    """A loaded :class:`Model` from None (the bundled default), a bundled name, a path or a Model."""
    return load_model(DEFAULT_MODEL if model is None else model)


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


def process(
    volume_node,
    model: ModelInput = None,
    score: Optional[str] = None,
    threshold: Union[str, float] = "auto",
    device: str = "auto",
    batch_size: int = 32,
    score_params: Optional[Mapping[str, Any]] = None,
    postprocessing: Optional[Mapping[str, Any]] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    outputs: Optional[DetectionOutputs] = None,
    extra_scores: Sequence[str] = (),
    reconstruction: bool = False,
) -> DetectionOutputs:
    """Detect anomalies in ``volume_node``; create (or, with ``outputs``, update) the output nodes.

    Outputs: a float32 map volume ``"<input> anomaly map"`` on the input's exact grid, shown as a
    heat map; a segmentation ``"<input> anomalies"`` whose segment ``"Anomaly"`` is the map at the
    report's threshold; and for each of ``extra_scores`` that score's map as ``"<input> <score>"``
    (side-by-side maps for teaching; the registration is done once and reused); with
    ``reconstruction`` also the model's reconstruction of the scan ``"<input> reconstructed"``
    (grey values, ``extra_nodes["reconstructed"]``; the key differs from the ``reconstruction``
    score's map): what the model takes for the normal scan. All outputs
    sit under the input's parent transform. ``progress(fraction, message)`` and ``cancel()`` are
    passed to the engine. The input node is never modified. Engine errors (bad input, unfit model,
    :class:`Cancelled`, missing CUDA) propagate unchanged, and no node of this call remains.
    """
    image = volume_node_to_image(volume_node)  # InputError for no node/data, RGB, 4D, empty
    scene = volume_node.GetScene()
    if scene is None:
        raise InputError(f"volume '{volume_node.GetName()}' is not in a scene")
    name = volume_node.GetName()
    loaded = resolve_model(model)
    main_score = score or loaded.card["default_score"]
    check_score(loaded, main_score, score_params)
    extras = [s for s in dict.fromkeys(extra_scores) if s != main_score]
    for extra in extras:
        check_score(loaded, extra)
    postprocessing_settings(loaded.card, postprocessing)
    resolve_device(device)

    steps = Progress(progress, cancel)
    runs = 1 + len(extras) + int(reconstruction)
    common = {"device": device, "batch_size": batch_size, "postprocessing": postprocessing, "cancel": cancel,
              "name": name}
    result = detect(image, loaded, score=main_score, threshold=threshold, score_params=score_params,
                    progress=_sub_progress(steps, 0, runs), **common)
    extra_maps: Dict[str, sitk.Image] = {}
    for i, extra in enumerate(extras, start=1):
        extra_result = detect(image, loaded, score=extra, threshold="auto", registration=result.registration,
                              progress=_sub_progress(steps, i, runs), **common)
        extra_maps[extra] = extra_result.anomaly_map
    rebuilt = None
    if reconstruction:
        rebuilt = reconstruct(image, loaded, device=device, batch_size=batch_size, cancel=cancel, name=name,
                              registration=result.registration, progress=_sub_progress(steps, runs - 1, runs))
    steps.check_cancel()

    before = set(_node_ids(scene))
    previous = outputs or DetectionOutputs(None, None)
    try:
        map_node = image_to_volume_node(result.anomaly_map, scene, f"{name} anomaly map",
                                        node=previous.map_node if _alive(previous.map_node, scene) else None)
        _place_like(map_node, volume_node, result.report)
        show_anomaly_map(map_node)
        segmentation_node = update_segmentation(
            map_node, result.report["threshold"],
            previous.segmentation_node if _alive(previous.segmentation_node, scene) else None,
            segment_name=SEGMENT_NAME, name=f"{name} anomalies")
        extra_nodes: Dict[str, Any] = {}
        for extra, extra_map in extra_maps.items():
            reuse = previous.extra_nodes.get(extra)
            node = image_to_volume_node(extra_map, scene, f"{name} {extra}",
                                        node=reuse if _alive(reuse, scene) else None)
            _place_like(node, volume_node, None)
            show_anomaly_map(node)
            extra_nodes[extra] = node
        if rebuilt is not None:
            reuse = previous.extra_nodes.get(RECONSTRUCTED)
            node = image_to_volume_node(rebuilt, scene, f"{name} reconstructed",
                                        node=reuse if _alive(reuse, scene) else None)
            _place_like(node, volume_node, None)
            node.CreateDefaultDisplayNodes()  # grey values, like the input
            extra_nodes[RECONSTRUCTED] = node
    except BaseException:
        _remove_new_nodes(scene, before)
        raise
    return DetectionOutputs(map_node, segmentation_node, result.report, extra_nodes, result.foreground)


def _place_like(output_node, input_node, report: Optional[Mapping[str, Any]]) -> None:
    """Put an output under the input's parent transform and note where it came from."""
    output_node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    output_node.SetAttribute("AnomalyDetection.InputVolumeID", input_node.GetID() or "")
    if report is not None:
        output_node.SetAttribute("AnomalyDetection.Threshold", repr(float(report["threshold"])))
        output_node.SetAttribute("AnomalyDetection.Report", json.dumps(report, default=str))


# ------------------------------------------------------------------------------------------ batch


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def process_folder(
    input_dir: Union[str, os.PathLike[str]],
    output_dir: Union[str, os.PathLike[str]],
    model: ModelInput = None,
    score: Optional[str] = None,
    threshold: Union[str, float] = "auto",
    device: str = "auto",
    truth_dir: Optional[Union[str, os.PathLike[str]]] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    batch_size: int = 32,
    score_params: Optional[Mapping[str, Any]] = None,
    postprocessing: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Detect anomalies in every volume of ``input_dir``; write maps, masks, reports and a CSV.

    Per input ``<stem>``: ``output_dir/<stem>_anomaly.nii.gz``, ``_mask.nii.gz``, ``_foreground.nii.gz``
    and ``_report.json`` (as ``anomaly-detection detect`` writes them). The CSV
    (:data:`RESULTS_CSV`) has one row per input: model, score, threshold, sample score, anomalous
    volume and, when ``truth_dir`` holds ``<stem>`` or ``<stem>_*``, voxel AUROC, AUPRC, Dice and
    best Dice inside the engine's foreground mask. A bad input is recorded in the ``error`` column
    and the run goes on; a bad model, score or device stops it before any input, and cancelling
    stops it at once. Returns the CSV's path. Uses no scene.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: no such folder")
    loaded = resolve_model(model)
    chosen = score or loaded.card["default_score"]
    check_score(loaded, chosen, score_params)
    postprocessing_settings(loaded.card, postprocessing)
    resolve_device(device)
    inputs = expand_inputs([str(input_dir)])
    stems = [case_stem(p) for p in inputs]
    truths = match_files(stems, truth_dir, "truth") if truth_dir is not None else {}
    output_dir.mkdir(parents=True, exist_ok=True)

    steps = Progress(progress, cancel)
    rows: List[Dict[str, Any]] = []
    for i, (path, stem) in enumerate(zip(inputs, stems)):
        steps.report(i / len(inputs), f"{stem} ({i + 1}/{len(inputs)})")
        truth_path = truths.get(stem)
        row: Dict[str, Any] = {
            "case": stem, "input": str(path), "model": loaded.name, "score": chosen, "threshold": None,
            "threshold_source": None, "sample_score": None, "anomalous_volume_ml": None,
            "truth": str(truth_path) if truth_path else None, "voxel_auroc": None, "voxel_auprc": None,
            "dice": None, "best_dice": None, "best_threshold": None, "seconds": None, "error": None,
        }
        started = time.perf_counter()
        try:
            result = detect(path, loaded, score=chosen, threshold=threshold, device=device, batch_size=batch_size,
                            score_params=score_params, postprocessing=postprocessing,
                            progress=_sub_progress(steps, i, len(inputs)), cancel=cancel, name=str(path))
            write_detection(output_dir, stem, result)
            report = result.report
            row.update(threshold=report["threshold"], threshold_source=report["threshold_source"],
                       sample_score=_finite(report["sample_score"]),
                       anomalous_volume_ml=report["anomalous_volume_ml"])
            if truth_path is not None:
                case = evaluate_case(result.anomaly_map, read_volume(truth_path, allow_constant=True),
                                     result.foreground, report["threshold"], stem)
                row.update({k: _finite(case[k]) for k in
                            ("voxel_auroc", "voxel_auprc", "dice", "best_dice", "best_threshold")})
        except Cancelled:
            raise
        except AnomalyDetectionError as exc:
            row["error"] = str(exc)
        row["seconds"] = round(time.perf_counter() - started, 3)
        rows.append(row)
    steps.report(1.0, f"{len(inputs)} input(s) done")
    csv_path = output_dir / RESULTS_CSV
    write_text_atomic(csv_text(rows), csv_path)
    return csv_path
