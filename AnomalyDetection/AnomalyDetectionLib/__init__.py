"""AnomalyDetection engine: unsupervised anomaly detection in medical volumes.

Pure Python (torch, MONAI, SimpleITK); no Slicer, Qt or VTK, so the same calls work in Slicer's
Python console, a notebook or a shell::

    from AnomalyDetectionLib import Detector, detect, train, evaluate
    detector = Detector("brain_t1_vae", score="reconstruction")   # validated once
    result = detector.detect("scan.nrrd")                         # result.anomaly_map, .mask, .report
    report = evaluate([result.anomaly_map], ["truth.nii.gz"], thresholds=[result.report["threshold"]])

Importing the package needs no torch: the names below load their module on first use (PEP 562),
so the Slicer module and ``anomaly-detection --help`` start fast and work before PyTorch is
installed. :mod:`AnomalyDetectionLib.catalog` (constants, model lookup, cards) and
:mod:`AnomalyDetectionLib.errors` never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

from .errors import (
    AnomalyDetectionError,
    Cancelled,
    DeviceError,
    InputError,
    ModelError,
    OutputError,
    OutputExistsError,
)
from .version import __version__

#: Public name -> module (relative to this package) that defines it; loaded on first access.
_LAZY: Dict[str, str] = {
    "SCORES": ".catalog",
    "DEFAULT_MODEL": ".catalog",
    "Detector": ".pipeline",
    "DetectionSettings": ".pipeline",
    "DetectionResult": ".pipeline",
    "detect": ".pipeline",
    "reconstruct": ".pipeline",
    "write_detection": ".pipeline",
    "run_batch": ".batch",
    "Model": ".models",
    "load_model": ".models",
    "save_model": ".models",
    "train": ".training",
    "calibrate": ".training",
    "evaluate": ".evaluation",
}

__all__ = [
    "DEFAULT_MODEL", "SCORES", "AnomalyDetectionError", "Cancelled", "DetectionResult", "DetectionSettings", "Detector",
    "DeviceError", "InputError", "Model", "ModelError", "OutputError", "OutputExistsError", "__version__", "calibrate",
    "detect", "evaluate", "load_model", "reconstruct", "run_batch", "save_model", "train", "write_detection",
]
assert set(__all__) == set(_LAZY) | {"AnomalyDetectionError", "Cancelled", "DeviceError", "InputError", "ModelError",
                                     "OutputError", "OutputExistsError", "__version__"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
