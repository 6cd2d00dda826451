"""The anomaly segment in Slicer: exactly the engine's mask, at any threshold the slider sets.

The engine has one mask rule (``AnomalyDetectionLib.postprocessing.threshold_map``: the map at or
above the threshold *inside the foreground*, small components removed as the model's
post-processing says). A detection's segment is its mask, voxel for voxel; moving the threshold
re-applies the same rule to the map with the foreground and post-processing the detection left
on the map node (:func:`detection_state`), so no background voxel is ever "Anomaly" and the
segment always equals what ``anomaly-detection detect`` would write at that threshold.

Pure MRML (no Qt); every function finds the scene through its nodes.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from slicer import (
    vtkBinaryLabelmapToClosedSurfaceConversionRule,
    vtkClosedSurfaceToBinaryLabelmapConversionRule,
    vtkMRMLSegmentationNode,
    vtkSegmentationConverterFactory,
    vtkSlicerSegmentationsModuleLogic,
)
from vtkmodules.util.numpy_support import vtk_to_numpy

from AnomalyDetectionLib.errors import InputError
from AnomalyDetectionLib.postprocessing import postprocessing_settings, threshold_map

from .nodes import image_to_volume_node, oriented_image_like, volume_node_to_image

__all__ = [
    "FOREGROUND_ROLE", "REPORT_ATTRIBUTE", "SEGMENT_NAME", "THRESHOLD_ATTRIBUTE", "detection_report", "detection_state",
    "ensure_segmentation_converters", "foreground_node", "labelmap_to_segmentation", "mask_at", "set_anomaly_segment",
    "threshold_range", "update_segmentation",
]

SEGMENT_NAME = "Anomaly"
SEGMENT_COLOUR = (1.0, 0.3, 0.1)
#: Node reference from a map node to the labelmap of the region its detection scored.
FOREGROUND_ROLE = "AnomalyDetection.Foreground"
#: Map node attribute holding the detection report (JSON): its threshold and post-processing.
REPORT_ATTRIBUTE = "AnomalyDetection.Report"
#: Attribute with the threshold a detection used (map node) or the segment shows (segmentation node).
THRESHOLD_ATTRIBUTE = "AnomalyDetection.Threshold"


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> closed-surface converter rules if nobody has.

    Slicer's Segmentations module registers them at start-up; a bare MRML process (the
    ``slicer-core`` wheel, tests, batch scripts) has none, and then a segmentation cannot even hold
    a binary labelmap. Registering only the missing ones keeps Slicer's own rules untouched.
    """
    factory = vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for rule_class in (vtkBinaryLabelmapToClosedSurfaceConversionRule, vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule_class.__name__ not in present:
            factory.RegisterConverterRule(rule_class())


def foreground_node(map_node) -> Any:
    """The labelmap node of the region the map's detection scored (None for a map made elsewhere)."""
    return map_node.GetNodeReference(FOREGROUND_ROLE) if map_node is not None else None


def detection_report(map_node) -> Optional[Dict[str, Any]]:
    """The report (threshold, post-processing, warnings...) the map's detection left on the node, or None."""
    text = map_node.GetAttribute(REPORT_ATTRIBUTE) if map_node is not None else None
    try:
        report = json.loads(text) if text else None
    except ValueError:
        return None
    return report if isinstance(report, dict) and "threshold" in report else None


def detection_state(map_node) -> Tuple[sitk.Image, Dict[str, Any]]:
    """``(foreground, post-processing)`` that the map's detection left on the node, for the mask rule.

    Both are saved with the scene (a node reference and an attribute), so a reloaded scene
    thresholds exactly as the detection did.
    """
    node = foreground_node(map_node)
    if node is None:
        raise InputError(f"volume '{map_node.GetName()}' is not an anomaly map of this module (it has no "
                         "foreground); run 'Detect anomalies' on the scan")
    report = detection_report(map_node) or {}
    return volume_node_to_image(node), postprocessing_settings({"postprocessing": report.get("postprocessing", {})})


def threshold_range(map_node) -> Tuple[float, float]:
    """The map's lowest and highest value inside its foreground: the range a threshold slider needs.

    (Below the lowest foreground value every foreground voxel is already anomalous; the
    background, where the map is 0, never is.)
    """
    foreground, _ = detection_state(map_node)
    anomaly_map = volume_node_to_image(map_node)  # kept alive while its numpy view is read
    values = sitk.GetArrayViewFromImage(anomaly_map)[sitk.GetArrayViewFromImage(foreground) > 0]
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


def _segment_id(segmentation_node, segment_name: str, color: Sequence[float]) -> str:
    """ID of the segment named ``segment_name`` (created empty, with ``color``, if missing)."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if segment_id:
        return segment_id
    return segmentation.AddEmptySegment("", segment_name, [float(c) for c in color])


def _new_segmentation_node(map_node, name: Optional[str]):
    scene = map_node.GetScene()
    if scene is None:
        raise ValueError(f"volume '{map_node.GetName()}' is not in a scene")
    segmentation_node = vtkMRMLSegmentationNode()
    segmentation_node.SetName(name or f"{map_node.GetName()} segmentation")
    scene.AddNode(segmentation_node)
    segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility2DOutline(True)
        display.SetVisibility2DFill(False)
        display.SetOpacity2DOutline(1.0)
    return segmentation_node


def set_anomaly_segment(
    map_node,
    mask: sitk.Image,
    threshold: float,
    segmentation_node: Optional[vtkMRMLSegmentationNode] = None,
    name: Optional[str] = None,
    closed_surface: bool = True,
) -> vtkMRMLSegmentationNode:
    """Make segment :data:`SEGMENT_NAME` exactly ``mask`` (an engine mask on the map's grid).

    Creates the segmentation node (in the map's scene, under the map's parent transform) or
    updates ``segmentation_node`` in place, keeping the segment and its ID. The reference geometry
    is the map's, so the Segment Editor edits on the map's grid too; ``closed_surface`` asks for
    the 3D representation (the 2D views show the outline).
    """
    ensure_segmentation_converters()
    if segmentation_node is None:
        segmentation_node = _new_segmentation_node(map_node, name)
    elif name:
        segmentation_node.SetName(name)
    if segmentation_node.GetTransformNodeID() != map_node.GetTransformNodeID():
        segmentation_node.SetAndObserveTransformNodeID(map_node.GetTransformNodeID())
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(map_node)

    labelmap = oriented_image_like(map_node)
    voxels = vtk_to_numpy(labelmap.GetPointData().GetScalars())
    values = sitk.GetArrayViewFromImage(mask)
    if values.size != voxels.size:
        raise ValueError(f"the mask has {values.size} voxels, the map '{map_node.GetName()}' {voxels.size}")
    voxels[:] = (values.ravel() > 0).astype(np.uint8)
    labelmap.Modified()

    segment_id = _segment_id(segmentation_node, SEGMENT_NAME, SEGMENT_COLOUR)
    segmentation_node.GetSegmentation().GetSegment(segment_id).SetColor(*SEGMENT_COLOUR)
    ok = vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        labelmap, segmentation_node, segment_id, vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    if not ok:
        raise RuntimeError(f"could not set the labelmap of segment '{SEGMENT_NAME}' of "
                           f"'{segmentation_node.GetName()}'")
    if closed_surface:
        segmentation_node.CreateClosedSurfaceRepresentation()
    segmentation_node.SetAttribute(THRESHOLD_ATTRIBUTE, repr(float(threshold)))
    segmentation_node.SetAttribute("AnomalyDetection.SegmentID", segment_id)
    return segmentation_node


def update_segmentation(
    map_node,
    threshold: float,
    segmentation_node: Optional[vtkMRMLSegmentationNode] = None,
    name: Optional[str] = None,
    closed_surface: bool = True,
) -> vtkMRMLSegmentationNode:
    """Re-threshold the map into the anomaly segment by the engine's mask rule (the slider's call).

    The foreground and post-processing come from the map's detection (:func:`detection_state`),
    so the segment equals the engine's mask at ``threshold``: nothing outside the foreground,
    components smaller than the model's minimum removed.
    """
    return set_anomaly_segment(map_node, mask_at(map_node, threshold), threshold, segmentation_node, name,
                               closed_surface)


def mask_at(map_node, threshold: float) -> sitk.Image:
    """The engine's mask of the map at ``threshold``, with the foreground and post-processing its
    detection left on the node: what ``detect`` would write as ``<stem>_mask.nii.gz`` there."""
    foreground, settings = detection_state(map_node)
    return threshold_map(volume_node_to_image(map_node), float(threshold), foreground, settings)


def labelmap_to_segmentation(labelmap: sitk.Image, scene, name: str, reference_node=None) -> vtkMRMLSegmentationNode:
    """A new segmentation node in ``scene`` with one segment per label of ``labelmap`` (a reference truth).

    ``reference_node`` (the scan) sets the segmentation's reference geometry, so editing it later
    happens on the scan's grid. No temporary node stays behind; a labelmap without a labelled
    voxel is an :class:`InputError` and adds nothing.
    """
    ensure_segmentation_converters()
    if not np.any(sitk.GetArrayViewFromImage(labelmap)):
        raise InputError(f"'{name}': no labelled voxels to import as a segmentation")
    label_node = image_to_volume_node(sitk.Cast(labelmap, sitk.sitkUInt8) if labelmap.GetPixelID() != sitk.sitkUInt8
                                      else labelmap, scene, f"{name} labels", label=True)
    segmentation_node = vtkMRMLSegmentationNode()
    segmentation_node.SetName(name)
    try:
        scene.AddNode(segmentation_node)
        segmentation_node.CreateDefaultDisplayNodes()
        if reference_node is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        imported = vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation_node)
        if not imported or segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError(f"'{name}': the labelmap could not be imported as a segmentation")
    except BaseException:
        scene.RemoveNode(segmentation_node)
        raise
    finally:
        scene.RemoveNode(label_node)
    return segmentation_node
