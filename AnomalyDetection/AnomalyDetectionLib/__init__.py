"""AnomalyDetection engine: unsupervised anomaly detection in medical volumes.

Pure Python (torch, MONAI, SimpleITK); no Slicer, Qt or VTK, so the same calls work in Slicer's
Python console, a notebook or a shell::

    from AnomalyDetectionLib import load_model, detect, train, evaluate
    model = train(["normal1.nii.gz", "normal2.nii.gz"], "brain.pt", arch="vae", epochs=20)
    result = detect("scan.nrrd", model, score="combi")      # result.anomaly_map, .mask, .report
    report = evaluate([result.anomaly_map], ["truth.nii.gz"], thresholds=[result.report["threshold"]])
"""

from .detection import DetectionResult, detect, reconstruct, write_detection
from .errors import AnomalyDetectionError, Cancelled, DeviceError, InputError, ModelError
from .evaluation import evaluate
from .models import Model, load_model, save_model
from .scoring import SCORES
from .training import calibrate, train
from .version import __version__

__all__ = [
    "SCORES", "AnomalyDetectionError", "Cancelled", "DetectionResult", "DeviceError", "InputError", "Model",
    "ModelError", "__version__", "calibrate", "detect", "evaluate", "load_model", "reconstruct", "save_model",
    "train", "write_detection",
]
