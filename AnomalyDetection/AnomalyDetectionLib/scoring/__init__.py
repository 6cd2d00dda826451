"""Anomaly scores: per-batch slice scores, the ensemble, and scoring a whole stack of slices."""

from ..catalog import VARIATIONAL_ONLY
from .ensemble import NORMALISATIONS, combine, normalise, score_statistics
from .slice_scores import (
    SLICE_SCORES,
    combi,
    elbo_grad,
    energy_projection,
    kl_grad,
    reconstruction,
    ssim_residual,
)
from .stack import SCORES, check_score, score_slices, scores_for

__all__ = [
    "NORMALISATIONS", "SCORES", "SLICE_SCORES", "VARIATIONAL_ONLY", "check_score", "combi", "combine",
    "elbo_grad", "energy_projection", "kl_grad", "normalise", "reconstruction", "score_slices",
    "score_statistics", "scores_for", "ssim_residual",
]
