"""Score ensembles: the mean of maps brought to a common scale.

Raw scores live on unrelated scales (an intensity difference, a gradient, their product), so each
member is normalised before averaging: ``rank`` maps a value to its quantile among normal-voxel
scores, ``zscore`` subtracts the normal mean and divides by the normal standard deviation. The
normal statistics come from the model card's calibration (collected on held-out normal volumes),
so the result of a slice does not depend on what else is in the batch; without calibration the
caller's own foreground voxels stand in for the normal reference.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

NORMALISATIONS = ("rank", "zscore")
DEFAULT_MEMBERS = {"vae": ("reconstruction", "kl_grad", "combi"), "ae": ("reconstruction", "energy_projection")}
#: Percentile levels stored for rank normalisation; dense at the top where thresholds live.
QUANTILE_LEVELS = np.unique(np.concatenate([np.linspace(0, 99, 100), np.linspace(99, 100, 101)]))


def score_statistics(values: np.ndarray) -> Dict[str, object]:
    """Mean, standard deviation and quantiles of normal-voxel scores (JSON-able, for the card)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no voxels to compute score statistics from")
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "levels": [float(v) for v in QUANTILE_LEVELS],
        "quantiles": [float(v) for v in np.percentile(values, QUANTILE_LEVELS)],
    }


def normalise(values: np.ndarray, stats: Mapping[str, object], method: str = "rank") -> np.ndarray:
    """``values`` on the common scale ``method`` defines, relative to the normal ``stats``."""
    values = np.asarray(values, dtype=np.float32)
    if method == "zscore":
        return (values - float(stats["mean"])) / max(float(stats["std"]), 1e-12)
    if method == "rank":
        quantiles = np.asarray(stats["quantiles"], dtype=np.float64)
        levels = np.asarray(stats["levels"], dtype=np.float64) / 100.0
        # Tied quantiles (many zero scores) would make np.interp pick an arbitrary level.
        quantiles, first = np.unique(quantiles, return_index=True)
        return np.interp(values, quantiles, levels[first]).astype(np.float32)
    raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALISATIONS)}")


def combine(
    member_maps: Mapping[str, np.ndarray],
    method: str = "rank",
    stats: Optional[Mapping[str, Mapping[str, object]]] = None,
    reference_mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Mean of the normalised member maps.

    ``stats[name]`` are the calibrated normal statistics of each member; a member without them is
    normalised against its own values inside ``reference_mask`` (all voxels if none).
    """
    normalised = []
    for name, values in member_maps.items():
        member_stats = (stats or {}).get(name)
        if member_stats is None:
            reference = values[reference_mask] if reference_mask is not None else values
            member_stats = score_statistics(reference)
        normalised.append(normalise(values, member_stats, method))
    return np.mean(normalised, axis=0).astype(np.float32)


def default_members(arch: str, members: Optional[Sequence[str]] = None) -> Sequence[str]:
    return tuple(members) if members else DEFAULT_MEMBERS[arch]
