"""Voxel- and sample-level metrics of anomaly maps against ground-truth lesion masks.

Volumes have millions of voxels, so every metric is vectorised: AUROC and average precision come
from scikit-learn, and the Dice over thresholds from one sort of the scores plus cumulative counts
(O(n log n) for *all* thresholds instead of one pass over the volume per threshold).

Conventions shared by every function: arrays may have any (matching) shape; ``truth`` and ``mask``
are binarised with ``> 0``; ``mask`` restricts the voxels that count (e.g. the brain); a voxel is
predicted anomalous when ``score >= threshold``. Scores must be finite.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..postprocessing import sample_score

__all__ = [
    "best_dice", "dice", "dice_curve", "mean_curves", "sample_auroc", "sample_score", "threshold_curves",
    "voxel_auprc", "voxel_auroc",
]

#: Points of :func:`threshold_curves`: half spread over the lesion voxels' scores, half over the
#: normal voxels' upper tail (false-positive rates from 1e-6 to 1, log-spaced), where precision changes.
CURVE_POINTS = 200


def _select(values: np.ndarray, mask: Optional[np.ndarray], what: str) -> np.ndarray:
    """``values`` flattened, restricted to the voxels of ``mask``; shapes must match exactly.

    A shape mismatch is a programming error (grids are checked before, in the report), hence
    ``ValueError`` rather than broadcasting silently.
    """
    values = np.asarray(values)
    if mask is None:
        return values.ravel()
    mask = np.asarray(mask)
    if mask.shape != values.shape:
        raise ValueError(f"{what} has shape {values.shape} but the mask has shape {mask.shape}")
    return values[mask > 0]


def _pair(
    scores: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray]:
    """Masked, flattened ``(scores, truth > 0)`` of the same length."""
    scores, truth = np.asarray(scores), np.asarray(truth)
    if scores.shape != truth.shape:
        raise ValueError(f"scores have shape {scores.shape} but the truth has shape {truth.shape}")
    return _select(scores, mask, "scores"), _select(truth, mask, "truth") > 0


def voxel_auroc(scores: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Area under the voxel-wise ROC curve; NaN when the truth has a single class inside the mask."""
    s, t = _pair(scores, truth, mask)
    n_pos = int(np.count_nonzero(t))
    if n_pos == 0 or n_pos == t.size:
        return math.nan
    from sklearn.metrics import roc_auc_score  # imported on use: it costs a second at start-up

    return float(roc_auc_score(t, s))


def voxel_auprc(scores: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Voxel-wise average precision (area under the precision-recall curve); NaN without a positive.

    Unlike AUROC it is not inflated by the huge number of easy normal voxels, which is why lesion
    segmentation papers report it.
    """
    s, t = _pair(scores, truth, mask)
    if not t.any():
        return math.nan
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(t, s))


def dice(prediction: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Dice overlap of two binary masks (``> 0``); 1.0 when both are empty (nothing missed, nothing wrong)."""
    p, t = _pair(prediction, truth, mask)
    p = p > 0
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total


def _sorted_counts(s: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Scores sorted ascending and ``below[i]`` = number of positives among the ``i`` lowest scores.

    With these, ``scores >= sorted[i]`` predicts ``n - i`` voxels of which ``n_pos - below[i]`` are
    true positives, for every ``i`` at once.
    """
    order = np.argsort(s, kind="stable")
    below = np.zeros(s.size + 1, dtype=np.int64)
    np.cumsum(t[order], out=below[1:])
    return s[order], below


def _just_above(top: np.generic) -> np.generic:
    """The lowest threshold that flags nothing when ``top`` is the highest score.

    The next value of ``top``'s own type: NumPy 1.x steps towards a float64 infinity in float64, a
    step that float32 scores round away. Integer scores: ``top + 1``.
    """
    if np.issubdtype(top.dtype, np.floating):
        return np.nextafter(top, top.dtype.type(np.inf))
    return top + 1


def best_dice(
    scores: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None
) -> Tuple[float, float]:
    """Best Dice over all thresholds and the threshold giving it (``prediction = scores >= threshold``).

    Exact: every distinct score value is tried, in O(n log n). Among equal Dice values the highest
    threshold wins. Without lesion the best is the empty prediction: Dice 1.0 with a threshold just
    above the highest score. ``(nan, nan)`` when the mask holds no voxel.
    """
    s, t = _pair(scores, truth, mask)
    if s.size == 0:
        return math.nan, math.nan
    n_pos = int(np.count_nonzero(t))
    if n_pos == 0:
        return 1.0, float(_just_above(np.max(s)))
    sorted_scores, below = _sorted_counts(s, t)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # first of each tie
    true_pos = n_pos - below[starts]
    predicted = s.size - starts
    dices = 2.0 * true_pos / (predicted + n_pos)
    best = int(np.argmax(dices[::-1]))  # reversed: ties go to the highest threshold
    index = starts.size - 1 - best
    return float(dices[index]), float(sorted_scores[starts[index]])


def dice_curve(
    scores: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float],
    mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Dice at each threshold of ``thresholds`` (for Dice-vs-threshold plots), one sort for all of them."""
    s, t = _pair(scores, truth, mask)
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    if np.issubdtype(s.dtype, np.floating):
        thresholds = thresholds.astype(s.dtype)  # compare as ``scores >= threshold`` does
    sorted_scores, below = _sorted_counts(s, t)
    n_pos = int(below[-1])
    first_kept = np.searchsorted(sorted_scores, thresholds, side="left")  # voxels below each threshold
    true_pos = n_pos - below[first_kept]
    denominator = (s.size - first_kept) + n_pos
    return np.where(denominator > 0, 2.0 * true_pos / np.maximum(denominator, 1), 1.0)


def sample_auroc(sample_scores: Sequence[float], labels: Sequence[float]) -> float:
    """AUROC of per-volume scores against abnormal (``> 0``) / normal labels; NaN with a single class."""
    s = np.asarray(sample_scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel() > 0
    if s.shape != y.shape:
        raise ValueError(f"{s.size} sample scores but {y.size} labels")
    if y.all() or not y.any():
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def threshold_curves(
    scores: np.ndarray,
    truth: np.ndarray,
    mask: Optional[np.ndarray] = None,
    points: int = CURVE_POINTS,
) -> Optional[Dict[str, np.ndarray]]:
    """ROC, precision-recall and Dice-vs-threshold curves of one case, at about ``points`` thresholds.

    A volume has millions of distinct scores; a plot needs a few hundred points, placed where the
    curves bend: quantiles of the lesion voxels' scores (even steps of recall) and of the normal
    voxels' upper tail (log steps of false-positive rate). One sort serves every threshold. Returns
    ``threshold``, ``fpr``, ``tpr`` (= recall), ``precision`` (1 where nothing is predicted) and
    ``dice``, ordered by decreasing threshold (the curves start at the origin), or ``None`` when
    the truth has a single class inside the mask (a normal case has no such curves).
    """
    s, t = _pair(scores, truth, mask)
    n_pos = int(np.count_nonzero(t))
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    half = max(2, points // 2)
    candidates = np.concatenate([
        np.quantile(s[t], np.linspace(0.0, 1.0, half)),
        np.quantile(s[~t], 1.0 - np.logspace(-6, 0, half)),
        [np.max(s)],
    ]).astype(s.dtype if np.issubdtype(s.dtype, np.floating) else np.float64)
    thresholds = np.unique(candidates)[::-1]
    sorted_scores, below = _sorted_counts(s, t)
    first_kept = np.searchsorted(sorted_scores, thresholds, side="left")
    predicted = s.size - first_kept
    true_pos = n_pos - below[first_kept]
    false_pos = predicted - true_pos
    # Start at "nothing predicted" so every curve begins at the origin (recall 0, precision 1).
    thresholds = np.r_[_just_above(thresholds[0]), thresholds].astype(np.float64)
    predicted, true_pos, false_pos = np.r_[0, predicted], np.r_[0, true_pos], np.r_[0, false_pos]
    return {
        "threshold": thresholds,
        "fpr": false_pos / n_neg,
        "tpr": true_pos / n_pos,
        "precision": np.where(predicted > 0, true_pos / np.maximum(predicted, 1), 1.0),
        "dice": 2.0 * true_pos / (predicted + n_pos),
    }


def mean_curves(curves: Sequence[Mapping[str, np.ndarray]], points: int = 201) -> Dict[str, np.ndarray]:
    """Curves of several cases (:func:`threshold_curves`) averaged for one picture of a data set.

    Each curve is resampled onto a common axis first, as is usual for mean ROC/PR curves: the
    true-positive rate at even steps of false-positive rate, the interpolated precision (the best
    precision at this recall or more) at even steps of recall, and Dice at thresholds spread over
    the quantiles of all cases' thresholds (a case scores Dice 0 above its own range). Returns
    ``fpr``, ``tpr``, ``recall``, ``precision``, ``threshold`` (decreasing) and ``dice``.
    """
    if not curves:
        raise ValueError("mean_curves needs at least one curve")
    grid = np.linspace(0.0, 1.0, points)
    tpr = np.mean([np.interp(grid, c["fpr"], c["tpr"]) for c in curves], axis=0)
    precision = []
    for c in curves:
        best_after = np.maximum.accumulate(np.asarray(c["precision"])[::-1])[::-1]  # max precision at >= recall
        at = np.searchsorted(np.asarray(c["tpr"]), grid, side="left")
        precision.append(np.where(at < best_after.size, best_after[np.minimum(at, best_after.size - 1)], 0.0))
    levels = np.quantile(np.concatenate([np.asarray(c["threshold"]) for c in curves]), grid)[::-1]
    dice = np.mean([np.interp(levels[::-1], np.asarray(c["threshold"])[::-1], np.asarray(c["dice"])[::-1],
                              right=0.0)[::-1] for c in curves], axis=0)
    tpr[0] = 0.0  # every curve starts at the origin (nothing predicted)
    return {"fpr": grid, "tpr": tpr, "recall": grid, "precision": np.mean(precision, axis=0),
            "threshold": levels, "dice": dice}
