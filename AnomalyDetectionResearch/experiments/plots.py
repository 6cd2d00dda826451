"""The experiments' pictures: curves over a swept setting, and score maps of the same cases across methods."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from AnomalyDetectionLib.evaluation.figures import pyplot, save_figure

PathLike = Union[str, "os.PathLike[str]"]


def curve_figure(
    path: PathLike,
    x: Sequence[float],
    series: Mapping[str, Sequence[Optional[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    marks: Optional[Mapping[str, float]] = None,
) -> None:
    """One line per entry of ``series`` over ``x``; ``marks`` draws labelled vertical lines (e.g. a rule's pick)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for label, values in series.items():
        y = np.array([np.nan if v is None else float(v) for v in values])
        axis.plot(list(x), y, marker="o", label=label)
    for label, value in (marks or {}).items():
        axis.axvline(value, color="grey", linestyle="--", linewidth=1)
        axis.text(value, axis.get_ylim()[1], f" {label}", rotation=90, va="top", ha="right", fontsize=8)
    if logx:
        axis.set_xscale("log", base=2 if all(float(v).is_integer() for v in x) else 10)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def maps_figure(
    path: PathLike,
    cases: Sequence[Tuple[str, np.ndarray, Optional[np.ndarray], Mapping[str, np.ndarray]]],
    title: str = "",
) -> None:
    """Rows = cases, columns = the input (truth outlined in green) then one score map per method.

    Each case is ``(label, image 2D, truth 2D or None, {method: map 2D})``; every map is scaled to
    its own 99.5th percentile, since scores have different units and only their ranking matters.
    """
    plt = pyplot()
    methods = list(cases[0][3]) if cases else []
    columns = 1 + len(methods)
    figure, axes = plt.subplots(len(cases), columns, figsize=(1.9 * columns, 2.0 * len(cases) + 0.4), squeeze=False)
    for row, (label, image, truth, maps) in enumerate(cases):
        low, high = np.percentile(image, [1, 99.5])
        axes[row][0].imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        if truth is not None and np.any(truth):
            axes[row][0].contour(truth > 0, levels=[0.5], colors="lime", linewidths=0.8)
        axes[row][0].set_ylabel(label, fontsize=8)
        for col, method in enumerate(methods, start=1):
            values = np.asarray(maps[method], dtype=np.float32)
            top = np.percentile(values, 99.5) if np.any(values > 0) else 1.0
            axes[row][col].imshow(values, cmap="inferno", vmin=0, vmax=top if top > 0 else 1.0)
            if row == 0:
                axes[row][col].set_title(method, fontsize=8)
        if row == 0:
            axes[row][0].set_title("input + truth", fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
