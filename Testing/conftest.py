"""Shared fixtures: real anatomy (MNI152 from nilearn) at low resolution, and tiny trained models.

Everything is small enough for a 2-core CPU: 3 mm volumes, 64 x 64 slices (about the volumes'
own in-plane resolution), narrow networks, 25 short epochs (about 6 s each). The models are trained
once per test session and shared.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib import Model, train
from AnomalyDetectionResearch.data import brain_mask, insert_blob, load_anatomy, random_normal_subject

SPACING_MM = 3.0
TINY = {"size": 64, "channels": (8, 16, 32, 32), "batch_size": 16, "learning_rate": 2e-3, "device": "cpu", "seed": 0}


@pytest.fixture(scope="session")
def template() -> sitk.Image:
    return load_anatomy("mni152_t1", spacing_mm=SPACING_MM)


@pytest.fixture(scope="session")
def template_2mm() -> sitk.Image:
    """The MNI152 T1 at 2 mm and its brain mask on the same grid: the registration tests' template."""
    return load_anatomy("mni152_t1", spacing_mm=2.0)


@pytest.fixture(scope="session")
def mask_2mm(template_2mm) -> sitk.Image:
    return sitk.Resample(brain_mask("mni152_t1"), template_2mm, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


@pytest.fixture(scope="session")
def normal_volumes(template) -> List[sitk.Image]:
    """Five 'subjects': random plausible deformations and contrasts of the template."""
    return [random_normal_subject(template, seed)[0] for seed in range(5)]


@pytest.fixture(scope="session")
def lesion_case(template) -> Tuple[sitk.Image, sitk.Image]:
    """A subject never used in training with one bright, smooth lesion, and its truth mask."""
    subject = random_normal_subject(template, 1234)[0]
    return insert_blob(subject, 7, radius_mm=10.0, contrast=0.8)


@pytest.fixture(scope="session")
def tiny_vae(normal_volumes, tmp_path_factory) -> Model:
    path = tmp_path_factory.mktemp("models") / "tiny_vae.pt"
    return train(normal_volumes[:4], path, arch="vae", latent_dim=16, epochs=25, **TINY)


@pytest.fixture(scope="session")
def tiny_ae(normal_volumes, tmp_path_factory) -> Model:
    path = tmp_path_factory.mktemp("models") / "tiny_ae.pt"
    return train(normal_volumes[:4], path, arch="ae", latent_dim=16, epochs=25, **TINY)


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)
