"""Threshold calibration on held-out normal volumes.

A threshold is the chosen percentile (default 99.5th) of the scores of normal foreground voxels,
so it sets the false-positive rate on normal data (0.5 % of voxels) without any labelled lesion.
The same pass records each score's normal statistics, which the ensemble uses to bring its
members onto one scale, and each normal volume's sample score, against which a new scan's sample
score becomes a percentile ("above 94 % of the normal scans"): the per-scan answer, calibrated
like the voxel threshold.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..catalog import DEFAULT_BATCH_SIZE, DEFAULT_PERCENTILE, SCORES
from ..models import Model
from ..pipeline import SAMPLE_SCORE_RULE, Detector, foreground_values
from ..preprocessing import foreground_image
from ..progress import CancelCheck, Progress, ProgressCallback
from ..scoring import check_score, score_statistics, scores_for
from .dataset import VolumeInput, prepared_input, volume_name


def calibrate(
    model: Model,
    normal_volumes: Sequence[VolumeInput],
    percentile: float = DEFAULT_PERCENTILE,
    scores: Optional[Sequence[str]] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    max_voxels_per_volume: int = 500_000,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> Dict[str, Any]:
    """Compute thresholds and normal statistics for ``scores`` (default: all that apply) and store them
    in ``model.card["calibration"]``; returns that dict."""
    if not normal_volumes:
        raise ValueError("calibration needs at least one normal volume")
    if not 0 < percentile < 100:
        raise ValueError(f"percentile {percentile} is not between 0 and 100")
    steps = Progress(progress, cancel)
    scores = list(scores or scores_for(model))
    for score in scores:
        check_score(model, score)
    base_scores = sorted({m for s in scores for m in _members(model, s)}, key=list(SCORES).index)
    detectors = {s: Detector(model, score=s, device=device, batch_size=batch_size) for s in scores + base_scores}
    settings = dict(detectors[scores[0]].settings.postprocessing)
    rng = np.random.default_rng(seed)

    per_volume: List[Dict[str, np.ndarray]] = []
    prepared_volumes = []
    slice_values: Dict[str, List[np.ndarray]] = {s: [] for s in base_scores}
    for index, volume in enumerate(normal_volumes):
        part = steps.sub(index / len(normal_volumes), (index + 1) / len(normal_volumes))
        prepared = prepared_input(volume, model.card, index, part.sub(0.0, 0.2))
        maps = {}
        scoring = part.sub(0.2, 1.0)
        for k, score in enumerate(base_scores):
            part_k = scoring.sub(k / len(base_scores), (k + 1) / len(base_scores))
            maps[score] = detectors[score].score(prepared, part_k)
            slice_values[score].append(_subsample(maps[score][prepared.slice_foreground], max_voxels_per_volume, rng))
        per_volume.append(maps)
        prepared_volumes.append(prepared)
    stats = {s: score_statistics(np.concatenate(v)) for s, v in slice_values.items()}

    # The ensemble brings its members onto one scale with the card's normal statistics: give the
    # card the new ones while the ensemble's normal maps are made, exactly as detection will use them.
    previous = model.card.get("calibration", {})
    model.card["calibration"] = {**previous, "stats": stats}
    try:
        thresholds: Dict[str, float] = {}
        sample_scores: Dict[str, List[float]] = {}
        # Each volume's foreground on its input grid, resampled once rather than once per score.
        foregrounds = [foreground_image(prepared) for prepared in prepared_volumes]
        for score in scores:
            values = []
            sample_scores[score] = []
            for prepared, maps, foreground in zip(prepared_volumes, per_volume, foregrounds):
                detector = detectors[score]
                slice_map = maps[score] if score in maps else detector.score(prepared, member_maps=maps)
                smoothed = detector.smoothed_map(slice_map, prepared, foreground)
                sample_scores[score].append(detector.sample_score(smoothed, foreground))
                inside = foreground_values(detector.normalised(smoothed, foreground), foreground)
                values.append(_subsample(inside, max_voxels_per_volume, rng))
            thresholds[score] = float(np.percentile(np.concatenate(values), percentile))
    except BaseException:
        model.card["calibration"] = previous
        raise

    calibration = {
        "percentile": float(percentile),
        "n_volumes": len(normal_volumes),
        "volumes": [volume_name(v, i) for i, v in enumerate(normal_volumes)],
        "postprocessing": settings,
        "thresholds": thresholds,
        "stats": stats,
        "sample_scores": sample_scores,
        "sample_score_rule": SAMPLE_SCORE_RULE,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    model.card["calibration"] = calibration
    steps.report(1.0, "calibrated")
    return calibration


def _members(model: Model, score: str) -> List[str]:
    return list(check_score(model, score)["members"]) if score == "ensemble" else [score]


def _subsample(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32).ravel()
    return values if values.size <= limit else rng.choice(values, size=limit, replace=False)
