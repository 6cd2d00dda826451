"""The model file: weights plus a model card, and the checks that keep the two consistent.

A model file (``.pt``) is a ``torch.save`` dictionary ``{"format", "format_version", "card",
"state_dict"}``. The card is a JSON-able dict that says everything needed to use the weights on a
new scan: architecture and hyper-parameters, input size, slice axis, orientation, foreground rule,
intensity normalisation, how it was trained, and the thresholds calibrated on normal data. It is
loaded with ``weights_only=True``, so a model file cannot run code.
"""

from __future__ import annotations

import copy
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..atomic import atomic_output
from ..catalog import ARCHITECTURES as CARD_ARCHITECTURES
from ..catalog import DEFAULT_MODEL, DEFAULT_SCORES, SLICE_AXES, resolve_model_path
from ..errors import ModelError
from ..preprocessing.template import validate_template_entry
from ..version import __version__
from .networks import ARCHITECTURES, build_network

FORMAT = "anomaly-detection-model"
FORMAT_VERSION = 1
FOREGROUND_METHODS = ("otsu", "nonzero", "template")
assert set(CARD_ARCHITECTURES) == set(ARCHITECTURES), "catalog.ARCHITECTURES must list the networks' architectures"
__all__ = ["DEFAULT_MODEL", "FORMAT", "FORMAT_VERSION", "Model", "build_model", "load_model", "load_model_file",
           "make_card", "save_model", "validate_card"]

#: Keys every card must have, and the type each must have.
_REQUIRED = {
    "name": str,
    "arch": str,
    "latent_dim": int,
    "channels": list,
    "beta": (int, float),
    "norm": str,
    "size": int,
    "slice_axis": str,
    "orientation": str,
    "foreground": str,
    "intensity": dict,
    "default_score": str,
    "engine_version": str,
}


#: Most neighbours on either side a card may ask for as context (a 1.5 mm slice's +-12 mm).
MAX_CONTEXT_SLICES = 8

#: Where the upper intensity percentile of a new model's inputs lands in [0, 1]; the rest is headroom
#: so that lesions brighter than any normal tissue stay brighter than it (cards without the key: 1.0).
DEFAULT_UPPER_VALUE = 0.8


def make_card(
    arch: str = "vae",
    size: int = 128,
    latent_dim: Optional[int] = None,
    channels: Sequence[int] = (32, 64, 128, 128),
    beta: float = 1.0,
    norm: str = "instance",
    slice_axis: str = "axial",
    orientation: str = "LPS",
    foreground: str = "otsu",
    intensity_percentiles: Sequence[float] = (1.0, 99.0),
    intensity_upper_value: float = DEFAULT_UPPER_VALUE,
    min_foreground_fraction: float = 0.05,
    name: str = "model",
    description: str = "",
    template: Optional[Mapping[str, Any]] = None,
    gradient_sigma_px: Optional[float] = None,
    context_slices: int = 0,
) -> Dict[str, Any]:
    """A new model card with the engine's defaults; :func:`validate_card` checks it.

    ``template`` (see :func:`~AnomalyDetectionLib.preprocessing.template.template_entry`) makes a
    model that works in a template space: inputs are registered to it and the template's brain
    mask is the foreground, so ``foreground`` becomes ``"template"``. ``intensity_percentiles``
    of the foreground map to 0 and ``intensity_upper_value`` (see
    :func:`~AnomalyDetectionLib.preprocessing.intensity.normalise_intensity`). ``gradient_sigma_px``
    smooths the gradient scores (see :mod:`~AnomalyDetectionLib.scoring.slice_scores`); by default
    Zimmerer et al.'s 3 px at 64-px slices, scaled with the slice size. ``context_slices``
    neighbours on either side of each slice are the network's extra input channels (2.5D; see
    :mod:`~AnomalyDetectionLib.models.networks`); cards without the key mean 0.
    """
    card = {
        "name": name,
        "description": description,
        "arch": arch,
        "latent_dim": int(latent_dim if latent_dim is not None else (128 if arch == "vae" else 32)),
        "channels": [int(c) for c in channels],
        "beta": float(beta) if arch == "vae" else 0.0,
        "norm": norm,
        "size": int(size),
        "slice_axis": slice_axis,
        "context_slices": int(context_slices),
        "orientation": orientation,
        "foreground": "template" if template is not None else foreground,
        "template": dict(template) if template is not None else None,
        "min_foreground_fraction": float(min_foreground_fraction),
        "intensity": {"method": "percentile", "lower": float(intensity_percentiles[0]),
                      "upper": float(intensity_percentiles[1]), "upper_value": float(intensity_upper_value)},
        "default_score": DEFAULT_SCORES[arch],
        "gradient_sigma_px": float(gradient_sigma_px if gradient_sigma_px is not None else 3.0 * size / 64),
        "engine_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "training": {},
        "calibration": {},
    }
    validate_card(card)
    return card


def validate_card(card: Any, source: str = "model card") -> None:
    """Raise :class:`ModelError` naming ``source`` if the card does not describe a model this code builds."""
    if not isinstance(card, dict):
        raise ModelError(f"{source}: the model card is not a dictionary")
    for key, kind in _REQUIRED.items():
        if key not in card:
            raise ModelError(f"{source}: the model card has no '{key}'")
        if not isinstance(card[key], kind) or isinstance(card[key], bool):
            raise ModelError(f"{source}: the model card's '{key}' has the wrong type ({type(card[key]).__name__})")
    checks = [
        (card["arch"] in ARCHITECTURES, f"architecture '{card['arch']}' is not one of {', '.join(ARCHITECTURES)}"),
        (card["size"] >= 16 and card["size"] % 16 == 0, f"input size {card['size']} is not a multiple of 16"),
        (card["slice_axis"] in SLICE_AXES, f"slice axis '{card['slice_axis']}' is not one of {', '.join(SLICE_AXES)}"),
        (card["foreground"] in FOREGROUND_METHODS,
         f"foreground rule '{card['foreground']}' is not one of {', '.join(FOREGROUND_METHODS)}"),
        (len(card["orientation"]) == 3, f"orientation '{card['orientation']}' is not a 3-letter code"),
        (card["latent_dim"] >= 1, f"latent dimension {card['latent_dim']} is not positive"),
        (len(card["channels"]) >= 1 and 2 ** len(card["channels"]) <= card["size"],
         f"{len(card['channels'])} down-sampling levels do not fit input size {card['size']}"),
        (card["intensity"].get("method") == "percentile", "intensity normalisation is not 'percentile'"),
        (float(card.get("gradient_sigma_px") or 0.0) >= 0.0,
         f"gradient smoothing {card.get('gradient_sigma_px')} px is negative"),
        (isinstance(card.get("context_slices", 0), int) and not isinstance(card.get("context_slices", 0), bool)
         and 0 <= card.get("context_slices", 0) <= MAX_CONTEXT_SLICES,
         f"context slices {card.get('context_slices')!r} is not a whole number from 0 to {MAX_CONTEXT_SLICES}"),
        (0.0 < float(card["intensity"].get("upper_value", 1.0)) <= 1.0,
         f"intensity upper_value {card['intensity'].get('upper_value')} is not in (0, 1]"),
    ]
    for ok, problem in checks:
        if not ok:
            raise ModelError(f"{source}: {problem}")
    template = card.get("template")
    if template is not None:
        validate_template_entry(template, source)
    if (template is not None) != (card["foreground"] == "template"):
        raise ModelError(f"{source}: foreground rule 'template' goes with a template entry, and only with one")


@dataclass
class Model:
    """A network with its card; what ``load_model`` returns and every engine call takes."""

    network: nn.Module
    card: Dict[str, Any]
    path: Optional[Path] = None

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def is_variational(self) -> bool:
        return bool(self.network.is_variational)

    @property
    def context_slices(self) -> int:
        """Neighbours on either side of a slice that the network takes as context (0: slice-wise)."""
        return int(self.card.get("context_slices", 0))

    @property
    def thresholds(self) -> Dict[str, float]:
        return dict(self.card.get("calibration", {}).get("thresholds", {}))

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: Union[str, torch.device]) -> Model:
        self.network.to(device)
        return self


def build_model(card: Dict[str, Any]) -> Model:
    """A freshly initialised :class:`Model` for ``card``."""
    validate_card(card)
    network = build_network(card["arch"], card["size"], card["latent_dim"], card["channels"],
                            card["beta"], card["norm"], int(card.get("context_slices", 0)))
    return Model(network=network, card=copy.deepcopy(card))


def save_model(model: Model, path: Union[str, os.PathLike[str]], half: bool = False) -> Path:
    """Write ``model`` atomically; ``half`` stores fp16 weights (loaded back as fp32) for small files."""
    path = Path(path)
    validate_card(model.card, str(path))
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.network.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "card": model.card, "state_dict": state}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_model_file(path: Union[str, os.PathLike[str]]) -> Model:
    """Load and check a model file; every way it can be wrong is a :class:`ModelError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-model files
        if "Weights only load failed" in str(exc):
            raise ModelError(f"{path}: refused: it holds Python objects that could run code when loaded, which a "
                             "model file never does (weights-only load)") from None
        raise ModelError(f"{path}: not a model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not an AnomalyDetection model file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {payload.get('format_version')} is not supported "
                         f"(this engine reads version {FORMAT_VERSION})")
    card = payload.get("card")
    validate_card(card, str(path))
    model = build_model(card)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ModelError(f"{path}: the file holds no weights")
    try:
        model.network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        detail = str(exc).splitlines()[0]
        raise ModelError(f"{path}: the weights do not match the model card ({detail})") from None
    model.network.eval()
    model.path = path
    return model


def load_model(model: Union[None, Model, str, os.PathLike[str]] = None) -> Model:
    """A :class:`Model` from a model, a model file path or a bundled model's name (``None``: the
    default model), found by :func:`~AnomalyDetectionLib.catalog.resolve_model_path`'s one rule."""
    if isinstance(model, Model):
        return model
    return load_model_file(resolve_model_path(model))
