"""Evaluation of anomaly maps against ground truth: voxel/sample metrics and JSON/CSV reports."""

from .against_truth import evaluate, evaluate_case, pair_cases, summarise, write_report
from .metrics import (
    best_dice,
    dice,
    dice_curve,
    mean_curves,
    sample_auroc,
    sample_score,
    threshold_curves,
    voxel_auprc,
    voxel_auroc,
)

__all__ = [
    "best_dice", "dice", "dice_curve", "evaluate", "evaluate_case", "mean_curves", "pair_cases", "sample_auroc",
    "sample_score", "summarise", "threshold_curves", "voxel_auprc", "voxel_auroc", "write_report",
]
