"""Volumes in and out of model space: I/O, orientation, masks, intensity, slicing."""

from .intensity import foreground_mask, normalise_intensity
from .io import case_stem, read_volume, validate_volume, write_image_atomic, write_text_atomic
from .model_space import PreparedVolume, foreground_image, model_space, prepare_volume, to_input_grid_image
from .orientation import orientation_code, to_canonical, to_input_grid
from .registration import register_to_template
from .registration_method import RegistrationResult, check_registration
from .resampling import resample_to_input, resample_to_template
from .slicing import SliceLayout, plan_layout, slices_to_volume, volume_to_slices, with_context

__all__ = [
    "PreparedVolume",
    "RegistrationResult",
    "SliceLayout",
    "case_stem",
    "check_registration",
    "foreground_image",
    "foreground_mask",
    "normalise_intensity",
    "model_space",
    "orientation_code",
    "plan_layout",
    "prepare_volume",
    "read_volume",
    "register_to_template",
    "resample_to_input",
    "resample_to_template",
    "slices_to_volume",
    "to_canonical",
    "to_input_grid",
    "to_input_grid_image",
    "validate_volume",
    "volume_to_slices",
    "with_context",
    "write_image_atomic",
    "write_text_atomic",
]
