"""How the outputs look in Slicer: the heat-map display and the thresholded anomaly segmentation.

Pure MRML (no Qt), so it runs in Slicer and under the ``slicer-core`` wheel alike; every
function takes the nodes it works on and finds the scene through ``node.GetScene()``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import vtk
from slicer import (
    vtkBinaryLabelmapToClosedSurfaceConversionRule,
    vtkClosedSurfaceToBinaryLabelmapConversionRule,
    vtkMRMLColorTableNode,
    vtkMRMLScalarVolumeDisplayNode,
    vtkMRMLSegmentationNode,
    vtkOrientedImageData,
    vtkSegmentationConverterFactory,
    vtkSlicerSegmentationsModuleLogic,
)
from vtkmodules.util.numpy_support import vtk_to_numpy

__all__ = [
    "DEFAULT_COLOUR_NODE_ID", "HEAT_COLOUR_NODE_IDS", "ensure_segmentation_converters", "heat_colour_node_id",
    "map_values", "oriented_image_like", "set_slice_layers", "show_anomaly_map", "update_segmentation",
]

#: Slicer's perceptually uniform black-red-yellow table: low scores dark, anomalies bright.
DEFAULT_COLOUR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
#: Heat-like tables tried in turn when the requested one is not in the scene (Inferno comes from a
#: file Slicer loads at start-up; the others are built in). Without any, our own table is added.
HEAT_COLOUR_NODE_IDS = (
    DEFAULT_COLOUR_NODE_ID,
    "vtkMRMLColorTableNodeFileMagma.txt",
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeIron",
)
_OWN_HEAT_TAG = "AnomalyDetectionHeat"
#: Inferno's colours at 0, 0.25, 0.5, 0.75 and 1 (matplotlib's published colour map), interpolated.
_OWN_HEAT_ANCHORS = ((0.0, 0.0, 0.016), (0.341, 0.063, 0.431), (0.737, 0.216, 0.329),
                     (0.976, 0.557, 0.035), (0.988, 1.0, 0.643))
#: Percentiles of the non-zero map values that span the display window: robust to a few extreme voxels.
WINDOW_PERCENTILES = (1.0, 99.5)
SEGMENT_NAME = "Anomaly"
SEGMENT_COLOUR = (1.0, 0.3, 0.1)


# -------------------------------------------------------------------------------------- helpers


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


def map_values(map_node) -> np.ndarray:
    """The map's voxels as a flat, read-only numpy *view* (no copy: the slider calls this often)."""
    image_data = map_node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{map_node.GetName()}' holds no image data")
    values = vtk_to_numpy(image_data.GetPointData().GetScalars())
    values.flags.writeable = False
    return values


def oriented_image_like(volume_node, scalar_type: int = vtk.VTK_UNSIGNED_CHAR) -> vtkOrientedImageData:
    """An allocated (zero) oriented image on exactly the volume node's voxel grid."""
    image = vtkOrientedImageData()
    image.SetExtent(volume_node.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.AllocateScalars(scalar_type, 1)
    image.GetPointData().GetScalars().Fill(0)
    return image


def heat_colour_node_id(scene, preferred: Optional[str] = DEFAULT_COLOUR_NODE_ID) -> str:
    """ID of a heat colour table in ``scene``: ``preferred`` if present, else the first of
    :data:`HEAT_COLOUR_NODE_IDS`, else a small Inferno-like table added once (a singleton)."""
    for node_id in ([preferred] if preferred else []) + list(HEAT_COLOUR_NODE_IDS):
        if scene.GetNodeByID(node_id) is not None:
            return node_id
    existing = scene.GetSingletonNode(_OWN_HEAT_TAG, "vtkMRMLColorTableNode")
    if existing is not None:
        return existing.GetID()
    table = vtkMRMLColorTableNode()
    table.SetName("Anomaly heat")
    table.SetSingletonTag(_OWN_HEAT_TAG)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    anchors = np.array(_OWN_HEAT_ANCHORS)
    positions = np.linspace(0.0, 1.0, len(anchors))
    for i, t in enumerate(np.linspace(0.0, 1.0, 256)):
        r, g, b = (float(np.interp(t, positions, anchors[:, c])) for c in range(3))
        table.SetColor(i, f"heat{i}", r, g, b, 1.0)
    table.SetHideFromEditors(False)
    scene.AddNode(table)
    return table.GetID()


def _robust_range(map_node) -> Tuple[float, float]:
    """Display range: percentiles of the non-zero voxels (the map is 0 outside the foreground)."""
    values = map_values(map_node)
    inside = values[values != 0]
    if inside.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(inside, WINDOW_PERCENTILES))
    if not high > low:
        low, high = float(inside.min()), float(inside.max())
        if not high > low:
            high = low + 1.0
    return low, high


# --------------------------------------------------------------------------------------- display


def show_anomaly_map(
    map_node,
    colour_node_id: Optional[str] = DEFAULT_COLOUR_NODE_ID,
    threshold: Optional[float] = None,
) -> vtkMRMLScalarVolumeDisplayNode:
    """Display the anomaly map as a heat map; returns its (created or reused) display node.

    The window spans robust percentiles of the non-zero scores, so one hot voxel does not wash
    the map out. Voxels below ``threshold`` (or, without one, the exact zeros outside the
    foreground) are made transparent, so the map overlays the scan instead of hiding it.
    """
    scene = map_node.GetScene()
    display = map_node.GetDisplayNode()
    if display is None:
        map_node.CreateDefaultDisplayNodes()
        display = map_node.GetDisplayNode()
    modified = display.StartModify()
    if scene is not None:
        display.SetAndObserveColorNodeID(heat_colour_node_id(scene, colour_node_id))
    low, high = _robust_range(map_node)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    display.AutoThresholdOff()
    finite_max = float(np.finfo(np.float32).max)
    lower = float(threshold) if threshold is not None else float(np.nextafter(np.float32(0), np.float32(1)))
    display.SetThreshold(lower, finite_max)
    display.ApplyThresholdOn()
    display.SetInterpolate(False)
    display.EndModify(modified)
    return display


def set_slice_layers(background_node=None, foreground_node=None, foreground_opacity: Optional[float] = 0.5) -> int:
    """Show ``background_node`` under ``foreground_node`` in every slice view of their scene.

    The MRML equivalent of ``slicer.util.setSliceViewerLayers``, usable without Qt; returns the
    number of slice views changed (0 outside a Slicer with views).
    """
    node = foreground_node or background_node
    scene = node.GetScene() if node is not None else None
    if scene is None:
        return 0
    count = scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(count):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if background_node is not None:
            composite.SetBackgroundVolumeID(background_node.GetID())
        if foreground_node is not None:
            composite.SetForegroundVolumeID(foreground_node.GetID())
            if foreground_opacity is not None:
                composite.SetForegroundOpacity(float(foreground_opacity))
    return count


# ---------------------------------------------------------------------------------- segmentation


def _segment_id(segmentation_node, segment_name: str, color: Sequence[float]) -> str:
    """ID of the segment named ``segment_name`` (created empty, with ``color``, if missing)."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if segment_id:
        return segment_id
    return segmentation.AddEmptySegment("", segment_name, [float(c) for c in color])


def update_segmentation(
    map_node,
    threshold: float,
    segmentation_node: Optional[vtkMRMLSegmentationNode] = None,
    segment_name: str = SEGMENT_NAME,
    color: Sequence[float] = SEGMENT_COLOUR,
    closed_surface: bool = True,
    name: Optional[str] = None,
) -> vtkMRMLSegmentationNode:
    """Set segment ``segment_name`` to ``map >= threshold`` on the map's exact voxel grid.

    Creates the segmentation node (in the map's scene, under the map's parent transform) or
    updates ``segmentation_node`` in place, keeping the segment and its ID, so a threshold slider
    can call this on every change: one numpy comparison and one labelmap copy. The reference
    geometry is the map's, so the Segment Editor edits on the map's grid too. ``closed_surface``
    asks for the 3D representation (kept up to date by Slicer after that); the 2D views show the
    outline.
    """
    ensure_segmentation_converters()
    scene = map_node.GetScene()
    if segmentation_node is None:
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
    elif name:
        segmentation_node.SetName(name)
    if segmentation_node.GetTransformNodeID() != map_node.GetTransformNodeID():
        segmentation_node.SetAndObserveTransformNodeID(map_node.GetTransformNodeID())
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(map_node)

    labelmap = oriented_image_like(map_node)
    inside = vtk_to_numpy(labelmap.GetPointData().GetScalars())
    np.greater_equal(map_values(map_node), float(threshold), out=inside, casting="unsafe")
    labelmap.Modified()

    segment_id = _segment_id(segmentation_node, segment_name, color)
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    segment.SetColor(*[float(c) for c in color])
    ok = vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        labelmap, segmentation_node, segment_id, vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    if not ok:
        raise RuntimeError(f"could not set the labelmap of segment '{segment_name}' of "
                           f"'{segmentation_node.GetName()}'")
    if closed_surface:
        segmentation_node.CreateClosedSurfaceRepresentation()
    segmentation_node.SetAttribute("AnomalyDetection.Threshold", repr(float(threshold)))
    segmentation_node.SetAttribute("AnomalyDetection.SegmentID", segment_id)
    return segmentation_node
