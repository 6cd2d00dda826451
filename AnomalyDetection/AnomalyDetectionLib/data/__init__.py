"""Offline real anatomy (MNI152, Colin27) and seeded synthetic subjects/anomalies with ground truth."""

from __future__ import annotations

from .anatomy import ANATOMY, anatomy_path, available_anatomy, brain_mask, load_anatomy, resample_isotropic
from .lesions import (
    LESION_TYPES,
    insert_blob,
    insert_copied_patch,
    insert_intensity_shift,
    insert_lesion,
    insert_noise_patch,
    insert_tumour,
    random_normal_subject,
)

__all__ = [
    "ANATOMY",
    "LESION_TYPES",
    "anatomy_path",
    "available_anatomy",
    "brain_mask",
    "insert_blob",
    "insert_copied_patch",
    "insert_intensity_shift",
    "insert_lesion",
    "insert_noise_patch",
    "insert_tumour",
    "load_anatomy",
    "random_normal_subject",
    "resample_isotropic",
]
