"""MRML side of the AnomalyDetection Slicer module: volume nodes in, map/segmentation/table nodes out.

Imports Slicer's MRML classes and VTK but no Qt, CTK, ``slicer.util`` or ``slicer.app``, so the
same code runs inside Slicer and under the ``slicer-core`` wheel (tests, batch scripts, the web
app). Every function takes its nodes as arguments and reaches the scene through ``node.GetScene()``.

* :mod:`.nodes`: volume nodes <-> SimpleITK images with exact geometry;
* :mod:`.process`: a detection (the engine's ``Detector``) into the scene, and the folder batch;
* :mod:`.segmentation`: the anomaly segment by the engine's one mask rule;
* :mod:`.display`: the heat-map display of a map;
* :mod:`.comparison`: a map against a reference segmentation (metrics table, Dice curve).
"""

from .comparison import evaluate_nodes, segment_to_image
from .display import (
    DEFAULT_COLOUR_NODE_ID,
    heat_colour_choices,
    heat_colour_node_id,
    set_map_display,
    show_anomaly_map,
)
from .nodes import image_to_volume_node, node_array, same_grid, volume_node_to_image
from .process import RESULTS_CSV, Detection, DetectionOutputs, add_to_scene, detect_image, process, process_folder
from .segmentation import (
    SEGMENT_NAME,
    detection_report,
    detection_state,
    ensure_segmentation_converters,
    foreground_node,
    labelmap_to_segmentation,
    mask_at,
    set_anomaly_segment,
    threshold_range,
    update_segmentation,
)

__all__ = [
    "DEFAULT_COLOUR_NODE_ID", "RESULTS_CSV", "SEGMENT_NAME", "Detection", "DetectionOutputs", "add_to_scene",
    "detect_image", "detection_report", "detection_state", "ensure_segmentation_converters", "evaluate_nodes",
    "foreground_node", "heat_colour_choices", "heat_colour_node_id", "image_to_volume_node",
    "labelmap_to_segmentation", "mask_at", "node_array", "process", "process_folder", "same_grid", "segment_to_image",
    "set_anomaly_segment", "set_map_display", "show_anomaly_map", "threshold_range", "update_segmentation",
    "volume_node_to_image",
]
