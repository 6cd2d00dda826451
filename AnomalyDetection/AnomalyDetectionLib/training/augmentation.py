"""Augmentation of normal slices with MONAI transforms.

Small affine changes, gamma contrast, a smooth bias field and noise make one scanner's normal
brains look like many; left-right flips are off by default because brains are not symmetric
enough for a flip to stay "normal" in every model's eyes (lesion laterality, asymmetric anatomy).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandFlip,
    RandGaussianNoise,
    ScaleIntensityRange,
)

DEFAULT_AUGMENTATION: Dict[str, Any] = {
    "flip": False,
    "affine": True,
    "rotate_deg": 8.0,
    "scale": 0.06,
    "translate_fraction": 0.04,
    "gamma": [0.8, 1.25],
    "bias_field": 0.15,
    "noise_std": 0.01,
    "probability": 0.5,
}


def merged_settings(defaults: Mapping[str, Any], overrides: Optional[Mapping[str, Any]], what: str) -> Dict[str, Any]:
    """``defaults`` with ``overrides`` applied; a key the defaults do not have is refused, naming ``what``."""
    settings = dict(defaults)
    unknown = set(overrides or {}) - set(settings)
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(sorted(unknown))}")
    settings.update(overrides or {})
    return settings


def augmentation_settings(overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    return merged_settings(DEFAULT_AUGMENTATION, overrides, "augmentation")


def no_augmentation() -> Dict[str, Any]:
    """Settings that leave every slice as it is (images that are already varied, e.g. Fashion-MNIST)."""
    return augmentation_settings({"affine": False, "gamma": [], "bias_field": 0.0, "noise_std": 0.0})


def make_augmentation(settings: Mapping[str, Any], size: int, seed: int) -> Compose:
    """A seeded MONAI ``Compose`` for channel-first ``(1, size, size)`` slices in [0, 1]."""
    p = float(settings["probability"])
    transforms = []
    if settings["flip"]:
        transforms.append(RandFlip(prob=0.5, spatial_axis=1))
    if settings["affine"]:
        shift = float(settings["translate_fraction"]) * size
        transforms.append(RandAffine(
            prob=p, rotate_range=np.deg2rad(float(settings["rotate_deg"])), scale_range=float(settings["scale"]),
            translate_range=(shift, shift), padding_mode="zeros", mode="bilinear",
        ))
    if settings["bias_field"] > 0:
        transforms.append(RandBiasField(prob=p, coeff_range=(0.0, float(settings["bias_field"])), degree=3))
    if settings["gamma"]:
        transforms.append(RandAdjustContrast(prob=p, gamma=tuple(settings["gamma"])))
    if settings["noise_std"] > 0:
        transforms.append(RandGaussianNoise(prob=p, std=float(settings["noise_std"])))
    transforms.append(ScaleIntensityRange(0.0, 1.0, 0.0, 1.0, clip=True))
    compose = Compose(transforms)
    compose.set_random_state(seed=seed)
    return compose
