"""MRML side of the AnomalyDetection Slicer module: volume nodes in, map/segmentation/table nodes out.

Imports Slicer's MRML classes and VTK but no Qt, CTK, ``slicer.util`` or ``slicer.app``, so the
same code runs inside Slicer and under the ``slicer-core`` wheel (tests, batch scripts). Every
function takes its nodes as arguments and reaches the scene through ``node.GetScene()``.
"""

from .evaluation import evaluate_nodes, segment_to_image
from .logic import RECONSTRUCTED, RESULTS_CSV, DetectionOutputs, process, process_folder, resolve_model
from .nodes import image_to_volume_node, node_array, same_grid, volume_node_to_image
from .outputs import (
    DEFAULT_COLOUR_NODE_ID,
    ensure_segmentation_converters,
    heat_colour_node_id,
    set_slice_layers,
    show_anomaly_map,
    update_segmentation,
)

__all__ = [
    "DEFAULT_COLOUR_NODE_ID", "RECONSTRUCTED", "RESULTS_CSV", "DetectionOutputs", "ensure_segmentation_converters",
    "evaluate_nodes", "heat_colour_node_id", "image_to_volume_node", "node_array", "process", "process_folder",
    "resolve_model", "same_grid", "segment_to_image", "set_slice_layers", "show_anomaly_map",
    "update_segmentation", "volume_node_to_image",
]
