"""Volumes in and out of model space: I/O, orientation, masks, intensity, slicing."""

from .intensity import foreground_mask, normalise_intensity
from .io import case_stem, read_volume, validate_volume, write_image_atomic, write_text_atomic
from .model_space import PreparedVolume, foreground_image, prepare_volume, to_input_grid_image
from .orientation import orientation_code, to_canonical, to_input_grid
from .slicing import SliceLayout, plan_layout, slices_to_volume, volume_to_slices

__all__ = [
    "PreparedVolume", "SliceLayout", "case_stem", "foreground_image", "foreground_mask", "normalise_intensity",
    "orientation_code", "plan_layout", "prepare_volume", "read_volume", "slices_to_volume", "to_canonical",
    "to_input_grid", "to_input_grid_image", "validate_volume", "volume_to_slices", "write_image_atomic",
    "write_text_atomic",
]
