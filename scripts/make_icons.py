"""Draw the module / extension icon and the Sample Data thumbnail (outputs are committed).

Why a script: the pictures Slicer shows for the extension are derived from the shipped sample,
so anyone can redraw them after the sample or the style changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import SimpleITK as sitk

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402 (the backend must be chosen first)
from matplotlib.patches import Circle, Ellipse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "AnomalyDetection" / "Resources" / "Samples"


def icon(path: Path, size_px: int = 128) -> None:
    """A head outline with a brain, its midline and an inferno-coloured 'anomaly' spot."""
    fig = plt.figure(figsize=(1, 1), dpi=size_px)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(Ellipse((0.5, 0.5), 0.86, 0.94, fc="#d9d9d9", ec="#3a3a3a", lw=3))
    ax.add_patch(Ellipse((0.5, 0.5), 0.70, 0.80, fc="#8f8f8f", ec="none"))
    ax.plot([0.5, 0.5], [0.14, 0.86], color="#5a5a5a", lw=2)
    for radius, alpha in ((0.20, 0.25), (0.14, 0.45), (0.09, 0.7), (0.05, 1.0)):
        ax.add_patch(Circle((0.66, 0.62), radius, fc=plt.cm.inferno(0.55 + 0.4 * alpha), ec="none", alpha=alpha))
    fig.savefig(path, dpi=size_px, transparent=True)
    plt.close(fig)


def thumbnail(path: Path) -> None:
    """The sample's axial slice with the most lesion, the lesion outlined."""
    scan = sitk.DICOMOrient(sitk.ReadImage(str(SAMPLES / "brain_t1_tumour.nrrd")), "LPS")
    truth = sitk.Resample(sitk.ReadImage(str(SAMPLES / "brain_t1_tumour_truth.nrrd")), scan,
                          sitk.Transform(), sitk.sitkNearestNeighbor)
    values, lesion = sitk.GetArrayFromImage(scan).astype(float), sitk.GetArrayFromImage(truth)
    k = int(np.argmax(lesion.reshape(lesion.shape[0], -1).sum(1)))
    image, outline = values[k], lesion[k] > 0
    fig = plt.figure(figsize=(2.6, 2.8), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    ax.imshow(image, cmap="gray", vmin=np.percentile(image, 1), vmax=np.percentile(image, 99.5),
              aspect=scan.GetSpacing()[1] / scan.GetSpacing()[0])
    ax.contour(outline, levels=[0.5], colors=["#ff6a1a"], linewidths=1.2)
    fig.savefig(path, dpi=100, facecolor="black")
    plt.close(fig)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    icon(ROOT / "AnomalyDetection" / "Resources" / "Icons" / "AnomalyDetection.png")
    icon(ROOT / "Resources" / "AnomalyDetection.png")
    thumbnail(ROOT / "AnomalyDetection" / "Resources" / "Icons" / "brain_t1_tumour.png")
