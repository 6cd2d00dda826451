"""Scoring a stack of slices in batches, with progress, cancellation and the ensemble."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..catalog import SCORES, scores_for_card
from ..errors import ModelError
from ..models import Model
from ..progress import Progress
from .ensemble import combine, default_members
from .slice_scores import SLICE_SCORES
from .yardstick import intensity_deviation

#: Scores of the whole stack that use no network: the intensity yardstick.
VOLUME_SCORES = ("intensity",)
assert SCORES == (*SLICE_SCORES, "ensemble", *VOLUME_SCORES), (
    "catalog.SCORES must list the slice scores, the ensemble, then the yardstick")


def scores_for(model: Model) -> List[str]:
    """Scores that apply to ``model`` (the gradient-of-KL family needs a VAE)."""
    return scores_for_card(model.card)


def check_score(model: Model, score: str, params: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Validate ``score`` and its ``params`` for ``model``; return the params to use."""
    if score not in SCORES:
        raise ModelError(f"unknown score '{score}'; choose one of {', '.join(SCORES)}")
    if score not in scores_for(model):
        raise ModelError(f"score '{score}' needs a VAE; model '{model.name}' is a deterministic auto-encoder "
                         f"(its scores: {', '.join(scores_for(model))})")
    params = dict(params or {})
    if score in VOLUME_SCORES:
        if params:
            raise ModelError(f"score '{score}' takes no parameter {', '.join(sorted(params))}")
        return {}
    if score == "ensemble":
        members = default_members(model.card["arch"], params.pop("members", None))
        method = params.pop("normalisation", "rank")
        for member in members:
            if member == "ensemble":
                raise ModelError("an ensemble cannot contain itself")
            if member in VOLUME_SCORES:
                raise ModelError(f"'{member}' is the yardstick the ensemble is measured against, not a member")
            check_score(model, member)
        member_params = {m: _accepted(model, m, params, strict=False) for m in members}
        unused = set(params) - {k for p in member_params.values() for k in p}
        if unused:
            raise ModelError(f"no ensemble member of score 'ensemble' takes {', '.join(sorted(unused))}")
        return {"members": list(members), "normalisation": method, "member_params": member_params}
    return _accepted(model, score, params, strict=True)


#: Score parameters whose default a model card sets: parameter -> card key (absent key: the function's default).
CARD_DEFAULTS = {"sigma": "gradient_sigma_px"}


def _accepted(model: Model, score: str, params: Mapping[str, Any], strict: bool) -> Dict[str, Any]:
    names = list(inspect.signature(SLICE_SCORES[score]).parameters)[2:]
    unknown = set(params) - set(names)
    if strict and unknown:
        raise ModelError(f"score '{score}' takes no parameter {', '.join(sorted(unknown))} "
                         f"(its parameters: {', '.join(names) or 'none'})")
    accepted = {k: v for k, v in params.items() if k in names}
    for name, key in CARD_DEFAULTS.items():
        if name in names and name not in accepted and model.card.get(key) is not None:
            accepted[name] = model.card[key]
    return accepted


def _calibrated_stats(model: Model) -> Dict[str, Any]:
    return dict(model.card.get("calibration", {}).get("stats", {}))


def score_slices(
    model: Model,
    slices: np.ndarray,
    score: str,
    params: Optional[Mapping[str, Any]] = None,
    batch_size: int = 32,
    foreground: Optional[np.ndarray] = None,
    progress: Optional[Progress] = None,
    member_maps: Optional[Mapping[str, np.ndarray]] = None,
) -> np.ndarray:
    """Score a stack in batches on the model's device: ``(n, 1, size, size)`` float32 maps out.

    ``slices`` is what the network takes, ``(n, 2k + 1, size, size)`` for a model with ``k``
    context slices (:meth:`~AnomalyDetectionLib.preprocessing.PreparedVolume.network_input`);
    the maps are those of the centre slices.

    The ensemble is combined over the whole stack, so without calibration its members are
    normalised against every foreground voxel of the volume, not one batch's. ``member_maps``
    are maps of this same stack already computed with the members' default parameters (a
    benchmark that has just run every score); the ensemble combines them instead of running
    those members again. The ``intensity`` yardstick takes its median and spread from the
    stack's ``foreground`` (all non-zero voxels without one) and runs no network.
    """
    checked = check_score(model, score, params)
    progress = progress or Progress()
    centre = slices[:, model.context_slices:model.context_slices + 1]  # the slices the maps are of
    if score in VOLUME_SCORES:
        progress.report(1.0, f"{score}: done")
        return intensity_deviation(centre, foreground if foreground is not None else centre > 0)
    if score != "ensemble":
        return _run_batches(model, slices, score, checked, batch_size, progress)
    members: Sequence[str] = checked["members"]
    maps = {}
    for index, member in enumerate(members):
        part = progress.sub(index / len(members), (index + 1) / len(members))
        if member_maps is not None and member in member_maps and checked["member_params"][member] == check_score(
                model, member):
            maps[member] = member_maps[member]
            continue
        maps[member] = _run_batches(model, slices, member, checked["member_params"][member], batch_size, part)
    reference = foreground if foreground is not None else centre > 0
    return combine(maps, checked["normalisation"], _calibrated_stats(model), reference)


def as_batch(slices: np.ndarray, device: torch.device) -> torch.Tensor:
    """``slices`` as a float32 tensor on ``device`` in the standard (NCHW) memory layout, always.

    Why: a stack's channel axis has size 1, so numpy may give it any stride, and torch reads a
    stride of one element there as channels-last: the CPU convolutions then take another path and
    score other last bits. The same slices unpickled on a cluster worker (standard strides) scored
    up to 3e-7 apart from ``detect``'s, so every batch is copied into a fresh standard tensor.
    """
    batch = torch.empty(slices.shape, dtype=torch.float32, device=device)
    batch.copy_(torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32)))
    return batch


def _run_batches(
    model: Model, slices: np.ndarray, score: str, params: Mapping[str, Any], batch_size: int, progress: Progress
) -> np.ndarray:
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    function = SLICE_SCORES[score]
    device = model.device
    out = np.empty((len(slices), 1, *slices.shape[2:]), dtype=np.float32)
    total = len(slices)
    model.network.eval()
    for start in range(0, total, batch_size):
        progress.report(start / max(total, 1), f"{score}: slices {start + 1}-{min(start + batch_size, total)}"
                        f" of {total}")
        batch = as_batch(slices[start:start + batch_size], device)
        out[start:start + batch_size] = function(model.network, batch, **params).detach().cpu().numpy()
    progress.report(1.0, f"{score}: done")
    return out
