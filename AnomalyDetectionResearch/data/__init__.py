"""Offline real anatomy (MNI152, Colin27; held-out heads for evaluation), Fashion-MNIST, and seeded synthetic
subjects/anomalies with ground truth."""

from __future__ import annotations

from AnomalyDetectionLib.preprocessing.anatomy import (
    ANATOMY,
    anatomy_path,
    available_anatomy,
    brain_mask,
    load_anatomy,
    resample_isotropic,
)

from .benchmark_cases import (
    benchmark_case_specs,
    clinical_case_specs,
    held_out_case_specs,
    iter_benchmark_cases,
    validation_case_specs,
)
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import fashion_mnist_available, load_fashion_mnist
from .held_out import HELD_OUT, VALIDATION, available_held_out, available_validation, load_held_out
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
from .population import SPLIT_SEEDS, make_case, make_subject, population, population_anatomy

__all__ = [
    "ANATOMY",
    "FASHION_MNIST_CLASSES",
    "HELD_OUT",
    "LESION_TYPES",
    "VALIDATION",
    "SPLIT_SEEDS",
    "anatomy_path",
    "available_anatomy",
    "available_held_out",
    "available_validation",
    "benchmark_case_specs",
    "clinical_case_specs",
    "brain_mask",
    "fashion_mnist_available",
    "held_out_case_specs",
    "insert_blob",
    "insert_copied_patch",
    "insert_intensity_shift",
    "insert_lesion",
    "insert_noise_patch",
    "insert_tumour",
    "iter_benchmark_cases",
    "load_anatomy",
    "load_fashion_mnist",
    "load_held_out",
    "make_case",
    "make_subject",
    "population",
    "population_anatomy",
    "random_normal_subject",
    "resample_isotropic",
    "validation_case_specs",
]
