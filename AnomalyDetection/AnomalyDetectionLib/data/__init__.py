"""Offline real anatomy (MNI152, Colin27) and seeded synthetic subjects and lesions with ground truth."""

from __future__ import annotations

from .anatomy import ANATOMY, anatomy_path, available_anatomy, brain_mask, load_anatomy, resample_isotropic
from .lesions import insert_blob, random_normal_subject

__all__ = [
    "ANATOMY",
    "anatomy_path",
    "available_anatomy",
    "brain_mask",
    "insert_blob",
    "load_anatomy",
    "random_normal_subject",
    "resample_isotropic",
]
