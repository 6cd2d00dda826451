"""How an anomaly map looks in Slicer: a heat map over the scan, transparent where nothing scored.

Pure MRML (no Qt), so it runs in Slicer and under the ``slicer-core`` wheel alike; every
function takes the nodes it works on and finds the scene through ``node.GetScene()``.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
from slicer import vtkMRMLColorTableNode, vtkMRMLScalarVolumeDisplayNode
from vtkmodules.util.numpy_support import vtk_to_numpy

__all__ = [
    "DEFAULT_COLOUR_NODE_ID", "HEAT_COLOUR_NODE_IDS", "heat_colour_choices", "heat_colour_node_id", "map_values",
    "set_map_display", "show_anomaly_map",
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


def map_values(map_node) -> np.ndarray:
    """The map's voxels as a flat, read-only numpy *view* (no copy: the slider calls this often)."""
    image_data = map_node.GetImageData()
    if image_data is None or image_data.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{map_node.GetName()}' holds no image data")
    values = vtk_to_numpy(image_data.GetPointData().GetScalars())
    values.flags.writeable = False
    return values


def heat_colour_node_id(scene, preferred: Optional[str] = DEFAULT_COLOUR_NODE_ID) -> str:
    """ID of a heat colour table in ``scene``: ``preferred`` if present, else the first of
    :data:`HEAT_COLOUR_NODE_IDS`, else a small Inferno-like table added once (a singleton)."""
    for node_id in ([preferred] if preferred else []) + list(HEAT_COLOUR_NODE_IDS):
        if scene.GetNodeByID(node_id) is not None:
            return node_id
    return _add_own_heat_table(scene)


def _add_own_heat_table(scene) -> str:
    """Our Inferno-like table (a singleton: added once per scene); returns its ID."""
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


def heat_colour_choices(scene) -> Dict[str, str]:
    """Name -> ID of the colour tables a map can be shown in: the heat-like ones present, our own
    Inferno-like table (added once) and, for contrast, Slicer's Rainbow and Grey where present."""
    own = scene.GetNodeByID(_add_own_heat_table(scene))
    choices = {own.GetName(): own.GetID()}
    for node_id in (*HEAT_COLOUR_NODE_IDS, "vtkMRMLColorTableNodeRainbow", "vtkMRMLColorTableNodeGrey"):
        node = scene.GetNodeByID(node_id)
        if node is not None:
            choices[node.GetName()] = node_id
    return choices


def set_map_display(map_node, colour_node_id: Optional[str] = None,
                    window: Optional[Tuple[float, float]] = None) -> None:
    """Change how a shown map looks: its colour table and/or its display window (low, high)."""
    display = map_node.GetDisplayNode()
    if display is None:
        return
    modified = display.StartModify()
    if colour_node_id:
        display.SetAndObserveColorNodeID(colour_node_id)
    if window is not None:
        low, high = float(window[0]), float(window[1])
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, max(high, low + 1e-6))
    display.EndModify(modified)


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
