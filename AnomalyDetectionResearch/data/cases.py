"""What a generated subject or benchmark case is: plain records shared by data generation and evaluation.

A *subject* is a plausible normal brain made from one of the offline templates and placed in its
own native space (head pose, voxel size, orientation, skull or not), so that every case exercises
the whole detection path, registration included. A *case* is a subject with or without one
inserted anomaly and its voxel-exact ground truth. Subjects are identified by their split and
seed alone; the splits draw seeds from disjoint ranges, so an evaluation case never shares a
subject, or a random draw, with training or calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import SimpleITK as sitk

#: Splits of the generated population; each has its own seed range (see ``population.SPLIT_SEEDS``).
#: ``held_out`` subjects are made from held-out anatomy only (:mod:`.held_out`), for evaluation.
#: ``validation`` subjects are made from the validation heads, on which the shipped default is chosen.
#: ``clinical`` subjects are the held-out heads again, in a clinical acquisition (:mod:`.clinical`).
SPLITS = ("train", "calibration", "benchmark", "held_out", "validation", "clinical")

#: How a subject was acquired: a 3D research T1, or a clinical 2D post-contrast one (:mod:`.clinical`).
ACQUISITIONS = ("research", "clinical")


@dataclass(frozen=True)
class SubjectSpec:
    """Everything that defines one generated normal subject, reproducibly.

    ``anatomy`` is a key of :data:`AnomalyDetectionLib.preprocessing.anatomy.ANATOMY` (the template it is made
    from), ``skull`` whether the native image keeps the skull (only where the template has one),
    ``orientation`` the 3-letter DICOM code of its voxel axes, ``spacing`` its voxel size in mm,
    ``acquisition`` one of :data:`ACQUISITIONS`.
    """

    split: str
    seed: int
    anatomy: str
    skull: bool
    orientation: str
    spacing: Tuple[float, float, float]
    acquisition: str = "research"

    @property
    def name(self) -> str:
        return f"{self.split}-{self.seed:05d}"


@dataclass(frozen=True)
class CaseSpec:
    """A benchmark case: a subject and the anomaly inserted into it (``lesion`` None for a normal case)."""

    subject: SubjectSpec
    lesion: Optional[str]
    lesion_seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.subject.name}-{self.lesion or 'normal'}"


@dataclass
class Subject:
    """A generated subject in its native space: the T1 image and its true brain mask (uint8), same grid."""

    spec: SubjectSpec
    image: sitk.Image
    brain: sitk.Image


@dataclass
class BenchmarkCase:
    """A generated case on its native grid: image, truth (uint8; all zero for a normal case) and brain (uint8)."""

    spec: CaseSpec
    image: sitk.Image
    truth: sitk.Image
    brain: sitk.Image

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        """The lesion type, or ``"normal"``."""
        return self.spec.lesion or "normal"
