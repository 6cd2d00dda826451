"""Choosing an auto-encoder's latent dimension from normal data only.

Cai et al. 2024 show that a plain AE detects anomalies well when its latent carries about as
much information as the normal data need, and no more: a wide latent also reconstructs
anomalies (the AE approaches the identity), a too narrow one cannot reconstruct normal anatomy
(false positives everywhere). Picking that size automatically from normal data is left open in
the paper. The rule used here is the linear intrinsic dimension of the normal slices:

    latent = the smallest number of principal components that explain ``explained`` (default
    90 %) of the variance of the normal training slices, rounded up to a multiple of 8,
    within [``minimum``, ``maximum``].

A linear estimate is an upper bound on what a non-linear decoder needs for the same fidelity,
and the 90 % level leaves fine texture (noise, the last tenth of the variance) out of the latent,
which is what keeps the AE from copying anything it is shown. It costs one randomised SVD of a
few thousand slices, no training, and is reproducible from the seed.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

#: Share of the normal slices' variance the latent must be able to explain.
DEFAULT_EXPLAINED = 0.90


def choose_latent_dim(
    slices: np.ndarray,
    explained: float = DEFAULT_EXPLAINED,
    minimum: int = 8,
    maximum: int = 256,
    max_slices: int = 4000,
    seed: int = 0,
) -> Dict[str, Any]:
    """The latent dimension for normal ``slices`` ``(n, 1, h, w)`` by the rule above, and how it was found.

    Returns ``{"latent_dim", "components_for_explained", "explained", "rule", "curve"}`` where
    ``curve`` is the cumulative explained variance of the first components (for the model card
    and figures).
    """
    if not 0 < explained < 1:
        raise ValueError(f"explained variance must be in (0, 1), got {explained}")
    n = len(slices)
    if n < 2:
        raise ValueError("choosing a latent size needs at least two normal slices")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=min(n, max_slices), replace=False))
    data = torch.from_numpy(np.asarray(slices[chosen], dtype=np.float32).reshape(len(chosen), -1))
    data = data - data.mean(0, keepdim=True)
    rank = min(maximum * 2, *data.shape)
    torch.manual_seed(seed)
    _, singular, _ = torch.svd_lowrank(data, q=rank, niter=4)
    total = float((data ** 2).sum())
    cumulative = np.cumsum(singular.numpy().astype(np.float64) ** 2) / total
    reached = np.nonzero(cumulative >= explained)[0]
    components = int(reached[0]) + 1 if reached.size else rank
    latent = int(min(maximum, max(minimum, 8 * int(np.ceil(components / 8)))))
    return {
        "latent_dim": latent,
        "components_for_explained": components,
        "explained": explained,
        "rule": (f"smallest number of principal components of the normal training slices explaining "
                 f"{100 * explained:.0f} % of their variance, rounded up to a multiple of 8, within "
                 f"[{minimum}, {maximum}]"),
        "curve": [round(float(v), 5) for v in cumulative[:64]],
        "slices_used": int(len(chosen)),
    }
