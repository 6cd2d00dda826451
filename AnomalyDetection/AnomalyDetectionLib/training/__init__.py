"""Training on normal volumes, augmentation, and threshold calibration."""

from .augmentation import DEFAULT_AUGMENTATION, augmentation_settings, make_augmentation, no_augmentation
from .calibration import DEFAULT_PERCENTILE, calibrate
from .dataset import SliceDataset, extract_slices
from .denoising import DEFAULT_DENOISING, coarse_noise, denoising_settings
from .trainer import checkpoint_path, fit_network, split_volumes, train

__all__ = [
    "DEFAULT_AUGMENTATION", "DEFAULT_DENOISING", "DEFAULT_PERCENTILE", "SliceDataset", "augmentation_settings",
    "calibrate", "checkpoint_path", "coarse_noise", "denoising_settings", "extract_slices", "fit_network",
    "make_augmentation", "no_augmentation", "split_volumes", "train",
]
