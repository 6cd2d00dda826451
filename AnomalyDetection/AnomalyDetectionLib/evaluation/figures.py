"""Figures people look at: slices of input, reference, anomaly map and mask side by side.

Rendered with matplotlib's non-interactive Agg backend, so figures are written from a shell, CI
or Slicer's Python without a display.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_output
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


#: The panels of a figure row: title, which view is drawn as an outline over the input, its colour.
PANELS = (("input", None, None), ("reference", "truth", "lime"), ("anomaly map", None, None), ("mask", "mask", "red"))


def axial_slices(
    image: sitk.Image,
    anomaly_map: sitk.Image,
    mask: Optional[sitk.Image] = None,
    truth: Optional[sitk.Image] = None,
    slice_index: Optional[int] = None,
) -> Tuple[Dict[str, Any], int]:
    """The 2D axial views a figure row shows, and the slice index (LPS, anterior up).

    The slice goes through the truth's (else the map's) centre of mass, so the lesion is in view.
    Returning small 2D arrays lets a long run (the benchmark) keep the pictures of a few cases
    without keeping their volumes. ``aspect`` is the in-plane voxel height/width ratio.
    """
    focus = truth if truth is not None else anomaly_map
    (img, heat, msk, ref), index = _axial_views([image, anomaly_map, mask, truth], slice_index, focus)
    spacing = to_canonical(image, "LPS").GetSpacing()
    views = {"image": img, "anomaly_map": heat, "mask": msk, "truth": ref, "aspect": spacing[1] / spacing[0]}
    return views, index


def _draw_row(axes: Sequence[Any], views: Mapping[str, Any], titles: Optional[Mapping[str, str]] = None) -> None:
    """One row of panels (:data:`PANELS`, less the outlines without a view), titled with the panel
    names, or as ``titles`` renames them, or untitled when ``titles`` is empty."""
    img = np.asarray(views["image"], dtype=np.float32)
    heat = np.asarray(views["anomaly_map"], dtype=np.float32)
    aspect = float(views.get("aspect") or 1.0)
    low, high = np.percentile(img, [1, 99.5])
    panels = [p for p in PANELS if p[1] is None or views.get(p[1]) is not None]
    for axis, (label, outline_key, colour) in zip(axes, panels):
        axis.imshow(img, cmap="gray", vmin=low, vmax=high, aspect=aspect)
        if label == "anomaly map":
            shown = np.ma.masked_where(heat <= 0, heat)
            top = np.percentile(heat[heat > 0], 99.9) if (heat > 0).any() else 1.0
            axis.imshow(shown, cmap="inferno", vmin=0, vmax=top, alpha=0.85, aspect=aspect)
        outline = None if outline_key is None else np.asarray(views[outline_key])
        if outline is not None and outline.any():
            axis.contour(outline > 0, levels=[0.5], colors=colour, linewidths=1.0)
        if titles is None or titles:
            axis.set_title((titles or {}).get(label, label))
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)


def save_figure(figure: Any, path: Union[str, os.PathLike[str]]) -> None:
    """Write ``figure`` as PNG through a temporary file, so a reader never sees half a picture."""
    from matplotlib import pyplot as plt

    try:
        with atomic_output(path, ".png") as tmp:
            figure.savefig(tmp, dpi=110)
    finally:
        plt.close(figure)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


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
    plt = pyplot()
    views, index = axial_slices(image, anomaly_map, mask, truth, slice_index)
    n_panels = sum(1 for p in PANELS if p[1] is None or views.get(p[1]) is not None)
    figure, axes = plt.subplots(1, n_panels, figsize=(3.2 * n_panels, 3.6), squeeze=False)
    _draw_row(axes[0], views)
    figure.suptitle(f"{title} (axial slice {index})".strip())
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def cases_figure(
    rows: Sequence[Tuple[str, Mapping[str, Any]]],
    path: Union[str, os.PathLike[str]],
    title: str = "",
) -> Path:
    """A PNG with one row per case (label, views from :func:`axial_slices`): input, truth outline,
    anomaly map and mask, all with the four panels so that rows line up; written to ``path``."""
    if not rows:
        raise ValueError("cases_figure needs at least one row")
    plt = pyplot()
    figure, axes = plt.subplots(len(rows), len(PANELS), figsize=(3.0 * len(PANELS), 3.0 * len(rows) + 0.5),
                                squeeze=False)
    for i, (label, views) in enumerate(rows):
        complete = {key: views.get(key) for key in ("image", "anomaly_map", "aspect")}
        for key in ("truth", "mask"):
            value = views.get(key)
            complete[key] = np.zeros_like(np.asarray(views["image"])) if value is None else value
        _draw_row(axes[i], complete, titles={"reference": "ground truth"} if i == 0 else {})
        axes[i][0].set_ylabel(label, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)
    return Path(path)


#: Cases drawn with a legend entry each; beyond that the curves are drawn thin and unlabelled.
MAX_LABELLED_CURVES = 10


def _operating_point(levels: np.ndarray, threshold: float) -> int:
    """Index of the last curve point whose threshold is at or above ``threshold`` (levels decrease)."""
    return max(int(np.searchsorted(-levels, -threshold, side="right")) - 1, 0)


def curves_figure(
    curves: Mapping[str, Mapping[str, Any]],
    path: Union[str, os.PathLike[str]],
    thresholds: Optional[Mapping[str, Optional[float]]] = None,
    title: str = "",
    annotate: bool = True,
) -> Path:
    """ROC, precision-recall and Dice-against-threshold curves, one line per label, as one PNG.

    ``curves`` maps a label (a case, or a model and score) to arrays ``fpr``/``tpr`` (ROC),
    ``precision`` against ``recall`` and ``dice`` against ``threshold`` (decreasing): either
    :func:`.metrics.threshold_curves` of one case, whose points are thresholds (no ``recall``:
    it is ``tpr``), or :func:`.metrics.mean_curves` of several, each panel on its own axis. Where
    ``thresholds`` gives a label's calibrated threshold, its operating point is marked (on all
    three panels for one case, on the Dice panel for a mean), so one sees what the threshold
    costs: how much of the lesion it keeps and how much it adds. With ``annotate`` the legend
    gives each line's AUROC and average precision from the drawn points (within a percent of the
    exact values).
    """
    if not curves:
        raise ValueError("curves_figure needs at least one curve")
    plt = pyplot()
    figure, (roc_axis, pr_axis, dice_axis) = plt.subplots(1, 3, figsize=(13.5, 4.4))
    labelled = len(curves) <= MAX_LABELLED_CURVES
    colours = plt.get_cmap("tab10")
    for i, (label, curve) in enumerate(curves.items()):
        fpr, tpr, precision, dice, level = (np.asarray(curve[key], dtype=np.float64)
                                            for key in ("fpr", "tpr", "precision", "dice", "threshold"))
        recall = np.asarray(curve.get("recall", tpr), dtype=np.float64)
        roc_label = pr_label = label
        if annotate:
            roc_label += f" (AUROC {float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)):.3f})"
            pr_label += f" (AP {float(np.sum(np.diff(recall) * precision[1:])):.3f})"
        style = {"color": colours(i % 10), "linewidth": 1.5} if labelled else {"color": "tab:blue", "alpha": 0.4,
                                                                               "linewidth": 0.8}
        roc_axis.plot(fpr, tpr, label=roc_label if labelled else None, **style)
        pr_axis.plot(recall, precision, label=pr_label if labelled else None, **style)
        dice_axis.plot(level, dice, **style)
        threshold = (thresholds or {}).get(label)
        if threshold is None or not math.isfinite(threshold):
            continue
        at = _operating_point(level, threshold)
        panels = [(dice_axis, level, dice)]
        if "recall" not in curve:  # one case's points: one index is one threshold on every panel
            panels += [(roc_axis, fpr, tpr), (pr_axis, recall, precision)]
        for axis, x, y in panels:
            axis.plot([x[at]], [y[at]], marker="o", markersize=5, color=style["color"],
                      markeredgecolor="black", linestyle="none")
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_axis.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", title="ROC",
                 xlim=(0, 1), ylim=(0, 1.01))
    pr_axis.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    dice_axis.set(xlabel="threshold", ylabel="Dice", title="Dice against threshold", ylim=(0, 1.01))
    if labelled:
        roc_axis.legend(fontsize=7, loc="lower right")
        pr_axis.legend(fontsize=7, loc="upper right")
    if thresholds and any(value is not None for value in thresholds.values()):
        dice_axis.text(0.98, 0.97, "dot: calibrated threshold", transform=dice_axis.transAxes, ha="right",
                       va="top", fontsize=8)
    for axis in (roc_axis, pr_axis, dice_axis):
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)
    return Path(path)
