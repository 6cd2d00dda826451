"""Figures people look at: slices of input, reference, anomaly map and mask side by side.

Rendered with matplotlib's non-interactive Agg backend, so figures are written from a shell, CI
or Slicer's Python without a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..preprocessing.orientation import to_canonical


def _axial_views(images: Sequence[Optional[sitk.Image]], index: Optional[int], focus: Optional[sitk.Image]
                 ) -> Tuple[list, int]:
    """Axial slices (LPS canonical, anterior up) of each image at ``index`` or the focus' centre of mass."""
    arrays = [sitk.GetArrayFromImage(to_canonical(img, "LPS")) if img is not None else None for img in images]
    if index is None:
        weights = sitk.GetArrayFromImage(to_canonical(focus, "LPS")) if focus is not None else None
        if weights is not None and weights.sum() > 0:
            index = int(round(np.average(np.arange(weights.shape[0]), weights=weights.sum(axis=(1, 2)))))
        else:
            index = arrays[0].shape[0] // 2
    return [a[index] if a is not None else None for a in arrays], index


def overview_figure(
    image: sitk.Image,
    anomaly_map: sitk.Image,
    mask: Optional[sitk.Image] = None,
    truth: Optional[sitk.Image] = None,
    path: Union[str, os.PathLike[str], None] = None,
    title: str = "",
    slice_index: Optional[int] = None,
) -> object:
    """A one-row PNG: input, input with reference outline, anomaly heat map, input with mask outline.

    The slice is axial through the reference's (else the map's) centre of mass, so the lesion is in
    view. Returns the matplotlib figure; writes it to ``path`` when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    focus = truth if truth is not None else anomaly_map
    (img, heat, msk, ref), index = _axial_views([image, anomaly_map, mask, truth], slice_index, focus)
    low, high = np.percentile(img, [1, 99.5])
    panels = [("input", None, None), ("reference", ref, "lime"), ("anomaly map", None, None), ("mask", msk, "red")]
    panels = [p for p in panels if not (p[0] in ("reference", "mask") and p[1] is None)]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for axis, (label, outline, colour) in zip(axes[0], panels):
        axis.imshow(img, cmap="gray", vmin=low, vmax=high)
        if label == "anomaly map":
            shown = np.ma.masked_where(heat <= 0, heat)
            top = np.percentile(heat[heat > 0], 99.9) if (heat > 0).any() else 1.0
            axis.imshow(shown, cmap="inferno", vmin=0, vmax=top, alpha=0.85)
        if outline is not None and outline.any():
            axis.contour(outline > 0, levels=[0.5], colors=colour, linewidths=1.0)
        axis.set_title(label)
        axis.axis("off")
    figure.suptitle(f"{title} (axial slice {index})".strip())
    figure.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(str(path), dpi=110)
        plt.close(figure)
    return figure
