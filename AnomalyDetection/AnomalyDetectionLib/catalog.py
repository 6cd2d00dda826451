"""The engine's front door without torch: constants, score names, model lookup and model cards.

Why a module of its own: the Slicer module must start, fill its combo boxes and show a model's
scores before PyTorch is installed, and ``anomaly-detection --help`` or ``models`` should answer
in a fraction of a second. Everything here is plain Python (``json`` and ``pathlib``), so
``import AnomalyDetectionLib.catalog`` costs nothing, and every front end reads the same values
instead of keeping copies of them.

Model lookup follows one rule (:func:`resolve_model_path`): an existing file path wins; otherwise
the name of a bundled model (the file stem in :func:`bundled_models_dir`); otherwise a
:class:`~AnomalyDetectionLib.errors.ModelError` listing the bundled names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .errors import ModelError

PathLike = Union[str, "os.PathLike[str]"]

#: The bundled model used when none is named.
DEFAULT_MODEL = "brain_t1_ae"
MODEL_SUFFIX = ".pt"
#: A readable copy of a model file's card lies beside it: ``<name>.card.json`` next to ``<name>.pt``.
CARD_SUFFIX = ".card.json"

#: Every score, in the order tables and menus list them; ``ensemble`` combines others; ``intensity`` is
#: the yardstick (a plain intensity rule, no network) every learned map is measured against.
SCORES = ("reconstruction", "ssim_residual", "kl_grad", "elbo_grad", "combi", "energy_projection", "ensemble",
          "intensity")
#: Scores that need a variational model (they differentiate its KL term).
VARIATIONAL_ONLY = ("kl_grad", "elbo_grad", "combi")
#: One sentence per score: what it measures and where it comes from (help texts and tooltips).
SCORE_HELP: Dict[str, str] = {
    "reconstruction": "Reconstruction error |x - x_hat| of each voxel: simple, fast, the baseline every paper "
                      "compares against.",
    "ssim_residual": "Structural residual 1 - local SSIM(x, x_hat): compares each voxel's neighbourhood "
                     "(brightness, contrast, pattern) with the reconstruction's rather than its value, so a "
                     "lesion with normal intensity but abnormal texture still shows (SSIM: Wang et al. 2004; "
                     "as an anomaly score: Bergmann et al. 2019).",
    "kl_grad": "Gradient of the KL term with respect to the input, |dKL/dx| (VAEs only): voxels that push the "
               "scan's code away from normal anatomy (Zimmerer et al. 2019).",
    "elbo_grad": "Gradient of the whole ELBO (reconstruction + KL) with respect to the input (VAEs only), in one "
                 "backward pass (Zimmerer et al. 2019).",
    "combi": "Reconstruction error times KL-gradient (VAEs only), the combination Zimmerer et al. 2019 found "
             "best on brain MRI.",
    "energy_projection": "Moves the scan towards normality by gradient steps on the reconstruction energy, "
                         "score |x_0 - x_T|: sharper maps, about ten times slower (Dehaene et al. 2020, studied "
                         "by Zhou et al. 2020).",
    "ensemble": "Rank- or z-score-normalised average of several scores, more robust than any single score when "
                "none is best for every lesion (Zhou et al. 2020).",
    "intensity": "The yardstick, no network: |x - median| / MAD of the scan's normalised intensities inside the "
                 "brain; a learned score must beat it (Meissen et al. 2021: on brain MRI it is hard to beat).",
}

#: Default score of a new model card by architecture. For VAEs the ELBO gradient: on the first
#: validation report it measured as well as the energy-based projection at a sixth of the time, and
#: far above ``combi`` (mean AUPRC over lesion types 0.258 against 0.146); on the rerun of 2026-12-07
#: (``reports/validation``) its gap to the VAE's reconstruction error is within that set's noise. AEs
#: keep the fast reconstruction error. The bundled cards name the validation rule's choice instead.
DEFAULT_SCORES: Dict[str, str] = {"vae": "elbo_grad", "ae": "reconstruction"}

DEVICES = ("auto", "cpu", "cuda")
#: Map filters of the post-processing (see :mod:`~AnomalyDetectionLib.postprocessing`).
SMOOTHING = ("none", "median", "gaussian")
#: Per-scan normalisations of the map: "none", or "scan" (robust standard deviations above the
#: scan's own median foreground score, see :func:`~AnomalyDetectionLib.postprocessing.normalise_map`).
MAP_NORMALISATIONS = ("none", "scan")
SLICE_AXES = ("axial", "coronal", "sagittal")
ARCHITECTURES = ("vae", "ae")
#: Templates a model can work in (see :mod:`~AnomalyDetectionLib.preprocessing.template`).
SUPPORTED_TEMPLATES = ("mni152_t1",)
#: Template voxel size: 1.5 mm keeps a 128-pixel axial slice at about the brain's width.
DEFAULT_TEMPLATE_SPACING_MM = 1.5

#: Slices scored per network call.
DEFAULT_BATCH_SIZE = 32
#: Calibrated thresholds: this percentile of normal foreground voxels (a 0.5 % false-positive rate).
DEFAULT_PERCENTILE = 99.5
#: Percentile of the volume's own foreground scores used when a model has no calibrated threshold.
UNCALIBRATED_PERCENTILE = 99.5


def _resources_dir(folder: str) -> Path:
    """``folder`` of the shipped resources: inside an installed wheel or in the Slicer module's Resources.

    A wheel carries them as ``AnomalyDetectionLib/resources/<folder>``; a source tree and a Slicer
    extension keep them in ``AnomalyDetection/Resources/<folder>`` beside this package.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "resources" / folder, here.parent / "Resources" / folder):
        if candidate.is_dir():
            return candidate
    return here.parent / "Resources" / folder


def bundled_models_dir() -> Path:
    """Where the shipped models are (see :func:`_resources_dir`)."""
    return _resources_dir("Models")


#: Name of the shipped sample scan (a T1 head with a tumour-like lesion; ``scripts/make_sample.py``).
SAMPLE_NAME = "brain_t1_tumour"


def sample_paths() -> Tuple[Path, Path]:
    """``(scan, truth)`` of the shipped sample: the files the demo, the Slicer module and the web app load."""
    folder = _resources_dir("Samples")
    return folder / f"{SAMPLE_NAME}.nrrd", folder / f"{SAMPLE_NAME}_truth.nrrd"


def bundled_model_paths() -> List[Path]:
    """The shipped model files, the default model first."""
    folder = bundled_models_dir()
    paths = sorted(folder.glob(f"*{MODEL_SUFFIX}")) if folder.is_dir() else []
    return sorted(paths, key=lambda p: p.stem != DEFAULT_MODEL)


def bundled_model_names() -> List[str]:
    return [path.stem for path in bundled_model_paths()]


def resolve_model_path(name_or_path: Optional[PathLike] = None) -> Path:
    """The model file for a path or a bundled model's name (``None``: the default model).

    The one lookup rule of the engine, the command line and the Slicer module: an existing file
    wins, then a bundled model's name; anything else is a :class:`ModelError` naming the bundled
    models.
    """
    name = DEFAULT_MODEL if name_or_path is None or str(name_or_path) == "" else name_or_path
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    for path in bundled_model_paths():
        if path.stem == str(name):
            return path
    names = ", ".join(bundled_model_names()) or "none bundled"
    raise ModelError(f"{name}: no such model file or bundled model (bundled: {names})")


def card_path(model_path: PathLike) -> Path:
    """The readable card file that goes with a model file."""
    path = Path(model_path)
    stem = path.name[: -len(MODEL_SUFFIX)] if path.name.endswith(MODEL_SUFFIX) else path.name
    return path.with_name(stem + CARD_SUFFIX)


def read_card_file(model_path: PathLike) -> Optional[Dict[str, Any]]:
    """The card beside ``model_path`` as a dict, or ``None`` if there is none (then only loading the
    model file, which needs torch, tells its card). An unreadable card file is a :class:`ModelError`."""
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise ModelError(f"{path}: the model card is not a JSON object")
    return card


def is_variational(card: Mapping[str, Any]) -> bool:
    return card.get("arch") == "vae"


def scores_for_card(card: Mapping[str, Any]) -> List[str]:
    """The scores a model offers, in :data:`SCORES` order: the KL family only for a VAE."""
    return [score for score in SCORES if is_variational(card) or score not in VARIATIONAL_ONLY]


def default_score(card: Mapping[str, Any]) -> str:
    """The card's default score (the first score it offers if the card names none it has)."""
    scores = scores_for_card(card)
    chosen = card.get("default_score")
    return chosen if chosen in scores else scores[0]


def calibrated_thresholds(card: Mapping[str, Any]) -> Dict[str, float]:
    calibration = card.get("calibration") or {}
    return {k: float(v) for k, v in (calibration.get("thresholds") or {}).items()}
