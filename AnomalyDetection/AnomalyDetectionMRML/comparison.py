"""Compare an anomaly map node with a reference segmentation: metrics table and Dice curve.

The reference segment is brought onto the anomaly map's exact voxel grid (nearest neighbour,
through any transforms between the two nodes), then the engine computes every number (voxel
AUROC, AUPRC, Dice, best Dice, volumes), so Slicer, the command line and the benchmark agree.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import vtk
from slicer import (
    vtkMRMLPlotChartNode,
    vtkMRMLPlotSeriesNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
    vtkOrientedImageData,
    vtkOrientedImageDataResample,
    vtkSegmentationConverter,
)
from vtkmodules.util.numpy_support import vtk_to_numpy

from AnomalyDetectionLib.errors import InputError
from AnomalyDetectionLib.evaluation import evaluate_case, metrics

from .nodes import oriented_image_like, volume_node_to_image
from .segmentation import ensure_segmentation_converters, foreground_node

__all__ = ["CURVE_POINTS", "dice_curve_points", "evaluate_nodes", "segment_to_image"]

#: Thresholds sampled for the Dice-vs-threshold curve.
CURVE_POINTS = 101


def segment_to_image(
    segmentation_node, segment_id: str, map_node, map_image: Optional[sitk.Image] = None
) -> sitk.Image:
    """Segment ``segment_id`` as a uint8 0/1 image on exactly ``map_node``'s grid (and geometry).

    Equivalent to exporting the segment to a labelmap with the map as reference volume, but
    without adding a temporary node to the user's scene. ``map_image``: the map already converted
    with :func:`volume_node_to_image`, to skip converting it again.
    """
    if segmentation_node is None:
        raise InputError("no reference segmentation selected")
    segmentation = segmentation_node.GetSegmentation()
    if not segment_id or segmentation.GetSegment(segment_id) is None:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no segment {segment_id!r}")
    ensure_segmentation_converters()
    labelmap_name = vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if not segmentation.ContainsRepresentation(labelmap_name):
        if not segmentation_node.CreateBinaryLabelmapRepresentation():
            raise InputError(f"segmentation '{segmentation_node.GetName()}' cannot be converted to a labelmap")
    source = vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, source)

    reference = oriented_image_like(map_node)
    truth = np.zeros(reference.GetNumberOfPoints(), dtype=np.uint8)
    if source.GetNumberOfPoints() > 0 and source.GetPointData().GetScalars() is not None:
        to_map = None
        segmentation_transform = segmentation_node.GetParentTransformNode()
        map_transform = map_node.GetParentTransformNode()
        if segmentation_transform is not None or map_transform is not None:
            to_map = vtk.vtkGeneralTransform()
            vtkMRMLTransformNode.GetTransformBetweenNodes(segmentation_transform, map_transform, to_map)
        resampled = vtkOrientedImageData()
        args = (source, reference, resampled, False, False) + ((to_map,) if to_map is not None else ())
        if not vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(*args):
            raise InputError(f"segment {segment_id!r} of '{segmentation_node.GetName()}' could not be resampled "
                             f"onto the grid of '{map_node.GetName()}'")
        truth = (vtk_to_numpy(resampled.GetPointData().GetScalars()) > 0).astype(np.uint8)
    if map_image is None:
        map_image = volume_node_to_image(map_node)
    image = sitk.GetImageFromArray(truth.reshape(sitk.GetArrayViewFromImage(map_image).shape))
    image.CopyInformation(map_image)
    return image


def dice_curve_points(
    scores: np.ndarray, truth: np.ndarray, points: int = CURVE_POINTS
) -> Tuple[np.ndarray, np.ndarray]:
    """``(thresholds, dice)``: the engine's Dice at ``points`` thresholds from the lowest non-zero
    score to the highest score (zeros are the background outside the foreground)."""
    scores = np.asarray(scores).ravel()
    positive = scores[scores > 0]
    low = float(positive.min()) if positive.size else 0.0
    high = float(scores.max()) if scores.size else 1.0
    if not high > low:
        high = low + 1.0
    thresholds = np.linspace(low, high, points)
    return thresholds, metrics.dice_curve(scores, np.asarray(truth).ravel(), thresholds)


def _set_columns(table_node, columns: List[Tuple[str, str, List[Any]]]) -> None:
    """Replace the table's content with ``(name, vtk array class, values)`` columns."""
    table = vtk.vtkTable()
    for name, kind, values in columns:
        array = getattr(vtk, kind)()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(value)
        table.AddColumn(array)
    table_node.SetAndObserveTable(table)


def _new_node(scene, node, name: str):
    node.SetName(name)
    scene.AddNode(node)
    return node


def _number(value: Optional[float]) -> float:
    return math.nan if value is None else float(value)


def evaluate_nodes(
    map_node,
    reference_segmentation_node,
    segment_id: str,
    threshold: float,
    table_node: Optional[vtkMRMLTableNode] = None,
    plot_chart_node: Optional[vtkMRMLPlotChartNode] = None,
    mask: Any = None,
) -> Tuple[vtkMRMLTableNode, vtkMRMLPlotChartNode, Dict[str, float]]:
    """Metrics of ``map_node`` against one reference segment, as a table, a Dice curve and a dict.

    ``table_node``/``plot_chart_node`` from an earlier call are updated in place (the chart's
    curve table and series with them), so re-evaluating after moving the threshold adds no node.
    ``mask`` (an image or volume node on the map's grid, > 0 inside) restricts the voxels that
    count; by default it is the foreground the map's detection scored (referenced from the map
    node, so a reloaded scene gives the same numbers), as the engine's demo and benchmark count
    inside the brain. ``mask=False`` counts every voxel of the map's grid (a map made elsewhere
    has no foreground, and then every voxel counts too). The dict holds ``dice``,
    ``best_dice``, ``best_threshold``, ``voxel_auroc``, ``voxel_auprc``, ``detected_volume_ml``,
    ``reference_volume_ml`` and ``threshold``.
    """
    scene = map_node.GetScene()
    if scene is None:
        raise InputError(f"volume '{map_node.GetName()}' is not in a scene")
    anomaly_map = volume_node_to_image(map_node)
    truth = segment_to_image(reference_segmentation_node, segment_id, map_node, anomaly_map)
    if mask is None:
        mask = foreground_node(map_node)
    elif mask is False:
        mask = None
    if mask is not None and not isinstance(mask, sitk.Image):
        mask = volume_node_to_image(mask)
    case = evaluate_case(anomaly_map, truth, mask=mask, threshold=float(threshold), name=map_node.GetName())
    segment_name = reference_segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
    results = {
        "threshold": float(threshold),
        "dice": _number(case["dice"]),
        "best_dice": _number(case["best_dice"]),
        "best_threshold": _number(case["best_threshold"]),
        "voxel_auroc": _number(case["voxel_auroc"]),
        "voxel_auprc": _number(case["voxel_auprc"]),
        "detected_volume_ml": _number(case["detected_volume_ml"]),
        "reference_volume_ml": _number(case["lesion_volume_ml"]),
    }

    rows = [
        (f"Dice at threshold {threshold:.4g}", results["dice"]),
        ("Best Dice", results["best_dice"]),
        ("Threshold of best Dice", results["best_threshold"]),
        ("Voxel AUROC", results["voxel_auroc"]),
        ("AUPRC (average precision)", results["voxel_auprc"]),
        ("Detected volume (mL)", results["detected_volume_ml"]),
        ("Reference volume (mL)", results["reference_volume_ml"]),
    ]
    if table_node is None:
        table_node = _new_node(scene, vtkMRMLTableNode(), f"{map_node.GetName()} vs {segment_name}: metrics")
    _set_columns(table_node, [("Metric", "vtkStringArray", [r[0] for r in rows]),
                              ("Value", "vtkDoubleArray", [r[1] for r in rows])])

    scores = sitk.GetArrayViewFromImage(anomaly_map)
    labels = sitk.GetArrayViewFromImage(truth)
    if mask is not None:
        inside = sitk.GetArrayViewFromImage(mask) > 0
        scores, labels = scores[inside], labels[inside]
    thresholds, dices = dice_curve_points(scores, labels)
    plot_chart_node = _update_curve(scene, plot_chart_node, thresholds, dices, threshold, map_node.GetName(),
                                    segment_name)
    return table_node, plot_chart_node, results


def _update_curve(scene, chart, thresholds, dices, threshold: float, map_name: str, segment_name: str):
    """Create or refresh the Dice-vs-threshold chart: its table, its series and the chart itself."""
    series = chart.GetNthPlotSeriesNode(0) if chart is not None and chart.GetNumberOfPlotSeriesNodes() else None
    curve_table = series.GetTableNode() if series is not None else None
    if curve_table is None:
        curve_table = _new_node(scene, vtkMRMLTableNode(), f"{map_name} vs {segment_name}: Dice curve")
    _set_columns(curve_table, [("Threshold", "vtkDoubleArray", [float(t) for t in thresholds]),
                               ("Dice", "vtkDoubleArray", [float(d) for d in dices])])
    if series is None:
        series = _new_node(scene, vtkMRMLPlotSeriesNode(), f"Dice vs threshold ({segment_name})")
        series.SetPlotType(vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineWidth(2)
        series.SetColor(1.0, 0.3, 0.1)
    series.SetAndObserveTableNodeID(curve_table.GetID())
    series.SetXColumnName("Threshold")
    series.SetYColumnName("Dice")
    if chart is None:
        chart = _new_node(scene, vtkMRMLPlotChartNode(), f"{map_name} vs {segment_name}: Dice vs threshold")
        chart.SetXAxisTitle("threshold")
        chart.SetYAxisTitle("Dice")
        chart.SetLegendVisibility(False)
    if chart.GetNumberOfPlotSeriesNodes() == 0:
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(f"Dice vs threshold (current {threshold:.4g})")
    return chart
