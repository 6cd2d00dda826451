"""Networks and the model file format (weights + model card)."""

from ..catalog import bundled_model_paths, bundled_models_dir
from .model_file import Model, build_model, load_model, load_model_file, make_card, save_model, validate_card
from .networks import SliceAE, SliceVAE, kl_divergence, negative_elbo, reconstruction_loss

__all__ = [
    "Model", "SliceAE", "SliceVAE", "build_model", "bundled_model_paths", "bundled_models_dir",
    "kl_divergence", "load_model", "load_model_file", "make_card", "negative_elbo", "reconstruction_loss", "save_model",
    "validate_card",
]
