"""Train the bundled brain T1 models (``make models``): the recipe behind AnomalyDetection/Resources/Models.

Why a script: the bundled models must be reproducible by anyone from the offline anatomy alone.
It generates a population of normal subjects from the MNI152 and Colin27 templates (random pose,
shape, bias field, contrast, noise, voxel size, orientation, skull or not; ``data.population``),
registers each to the MNI152 template exactly as ``detect`` will, and trains on the template-space
axial slices:

* ``brain_t1_vae``: VAE, latent 128, beta 1 (Zimmerer et al. 2019), plain recipe (``--models vae``);
* ``brain_t1_ae``: entropy-constrained AE whose latent size is chosen from the normal training
  slices alone (``training.latent_size``: principal components for 90 % of the variance), with the
  three training-data levers chosen on the validation set (``--models ae --synthetic-fraction 0.5
  --extra-anatomy --denoising 0.2``; the shipped default since 2026-12-07).

``make models`` runs both commands; each card's ``training.recipe`` is the command that made it.

Each card's default score is :data:`BUNDLED_DEFAULT_SCORES`, the choice of the written rule
(``AnomalyDetectionResearch.selection``) on the validation report ``reports/validation``;
``--defaults-only`` writes just those into the existing cards.

Thresholds are calibrated on subjects of the separate calibration split (99.5th percentile of
normal brain voxels) with the maps normalised per scan (``--map-normalisation scan``, the
post-processing chosen on the validation set: see the README's validation section), weights are
stored as fp16 next to a JSON copy of each model card. The benchmark split is never touched here.
``--recalibrate`` keeps the trained weights and only recalibrates the thresholds (after a change
to how a score is computed, e.g. the gradient smoothing), filling in card settings newer than the
model with the engine's defaults.

On a GPU with 16 cores the whole recipe takes a few minutes; on a 2-core laptop CPU use
``--epochs`` / ``--train-subjects`` to trade quality for time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from AnomalyDetectionLib.catalog import MAP_NORMALISATIONS, bundled_models_dir
from AnomalyDetectionLib.cli import TqdmProgress
from AnomalyDetectionLib.device import resolve_device
from AnomalyDetectionLib.models import load_model, make_card, save_model
from AnomalyDetectionLib.postprocessing import postprocessing_settings
from AnomalyDetectionLib.preprocessing.template import template_entry
from AnomalyDetectionLib.progress import Progress
from AnomalyDetectionLib.training import calibrate, train
from AnomalyDetectionLib.training.latent_size import choose_latent_dim
from AnomalyDetectionResearch.data.generation import prepared_subjects
from AnomalyDetectionResearch.data.held_out import TRAINING, available_training
from AnomalyDetectionResearch.data.population import population

DESCRIPTION = ("T1-weighted brain MRI, any orientation / voxel size / field of view, with or without skull: "
               "registered affinely to MNI152 2009a (1.5 mm), brain only. Trained on {n} generated normal "
               "subjects (MNI152 2009a and Colin27 with random pose, elastic shape change, bias field, gamma, "
               "noise, resolution and orientation; data.population split 'train').")
#: Default score per bundled model: the validation rule's choice (``python -m AnomalyDetectionResearch.selection
#: reports/validation``), the AE's for the shipped default. For the VAE, ``ssim_residual``'s lead over
#: ``reconstruction`` (0.045 mean AUPRC) is within one standard error, and the tie goes to the faster score.
BUNDLED_DEFAULT_SCORES: Dict[str, str] = {"brain_t1_vae": "reconstruction", "brain_t1_ae": "reconstruction"}
MODEL_NAMES: Dict[str, str] = {"vae": "brain_t1_vae", "ae": "brain_t1_ae"}
COMMON: Dict[str, Any] = {"size": 128, "channels": (32, 64, 128, 128), "norm": "batch", "slice_axis": "axial"}


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=bundled_models_dir())
    parser.add_argument("--models", nargs="+", choices=("vae", "ae"), default=["vae", "ae"])
    parser.add_argument("--train-subjects", type=int, default=64)
    parser.add_argument("--calibration-subjects", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vae-latent", type=int, default=128)
    parser.add_argument("--vae-beta", type=float, default=1.0,
                        help="weight of the VAE's KL term; below 1 a sharper posterior (Zhou et al. 2020's beta-VAE)")
    parser.add_argument("--channels", type=int, nargs="+", default=list(COMMON["channels"]),
                        help="encoder channels per level (the decoder mirrors them); smaller trains faster on a CPU")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--workers", type=int, default=max(0, min(12, (os.cpu_count() or 1) - 1)),
                        help="processes for subject generation/registration and augmentation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--denoising", type=float, default=None, metavar="STD",
                        help="train denoising models (Kascenas et al. 2022): coarse noise of this std on a 16-px "
                             "grid, the clean slice as target; default: plain training")
    parser.add_argument("--synthetic-fraction", type=float, default=0.0, metavar="F",
                        help="share of the training subjects that are synthetic individuals (SynthSeg-style new "
                             "folding from the MNI152 tissue maps, data.synthetic); calibration stays on templates")
    parser.add_argument("--extra-anatomy", action="store_true",
                        help="training subjects cycle over FreeSurfer's group averages too (fsaverage, WashU 711-2C "
                             "and 3T 18-year-olds; data.held_out.TRAINING, fetched by 'make setup'); calibration "
                             "stays on the templates")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="2.5D: each slice's K neighbours on either side as extra input channels (the "
                             "context lever; 0, slice-wise, is the bundled recipe)")
    parser.add_argument("--map-normalisation", choices=MAP_NORMALISATIONS, default="scan",
                        help="per-scan normalisation of the maps, written into the cards' post-processing")
    parser.add_argument("--resume", action="store_true",
                        help="continue each model from its checkpoint in --output-dir (written after every epoch; "
                             "run with the same arguments), so a long CPU run can stop and go on another day")
    parser.add_argument("--quick", action="store_true", help="a few subjects and epochs: checks the recipe runs")
    parser.add_argument("--recalibrate", action="store_true",
                        help="keep the models in --output-dir, recalibrate their thresholds on the calibration split")
    parser.add_argument("--defaults-only", action="store_true",
                        help="keep the models and thresholds in --output-dir, write only the default scores")
    return parser.parse_args(argv)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if args.quick:
        args.train_subjects, args.calibration_subjects, args.epochs = 4, 2, 1
    device = resolve_device(args.device)
    started = time.perf_counter()
    recipe_common = dict(COMMON, channels=tuple(args.channels), context_slices=args.context_slices)
    space = make_card(template=template_entry(), **recipe_common)
    workers = args.workers if args.workers > 1 else 0

    if args.defaults_only:
        return write_default_scores(args)
    if args.recalibrate:
        return recalibrate(args, space, workers, argv)
    if args.extra_anatomy and not available_training():
        raise SystemExit("--extra-anatomy: no extra training anatomy on this machine ('make setup' fetches it "
                         "with scripts/fetch_training_anatomy.sh)")
    bar = TqdmProgress("subjects")
    steps = Progress(bar)
    try:
        train_specs = population("train", args.train_subjects, args.synthetic_fraction, args.extra_anatomy)
        train_set = prepared_subjects(train_specs, space, workers, steps.sub(0.0, 0.8).as_callback())
        calibration_set = prepared_subjects(population("calibration", args.calibration_subjects), space, workers,
                                            steps.sub(0.8, 1.0).as_callback())
    finally:
        bar.close()
    extra = [name for name in TRAINING if any(spec.anatomy == name for spec in train_specs)]
    warned = [p.name for p in train_set + calibration_set if p.registration is not None and p.registration.warnings]
    print(f"{len(train_set)} training and {len(calibration_set)} calibration subjects registered in "
          f"{time.perf_counter() - started:.0f} s; registration warnings: {warned or 'none'}")

    common = dict(recipe_common, template=template_entry(), epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.lr, val_fraction=0.15, seed=args.seed, device=str(device),
                  workers=workers, calibration_volumes=calibration_set,
                  postprocessing={"normalisation": args.map_normalisation},
                  denoising=None if args.denoising is None else {"std": args.denoising},
                  description=DESCRIPTION.format(n=len(train_set)) + synthetic_note(args.synthetic_fraction)
                  + extra_anatomy_note(extra))
    recipes: Dict[str, Dict[str, Any]] = {}
    if "vae" in args.models:
        recipes[MODEL_NAMES["vae"]] = {"arch": "vae", "latent_dim": args.vae_latent, "beta": args.vae_beta}
    if "ae" in args.models:
        slices = np.concatenate([p.slices[p.foreground_fraction() >= space["min_foreground_fraction"]]
                                 for p in train_set])
        rule = choose_latent_dim(slices, seed=args.seed)
        print(f"AE latent size {rule['latent_dim']}: {rule['components_for_explained']} principal components "
              f"explain {100 * rule['explained']:.0f} % of the normal slices' variance")
        recipes[MODEL_NAMES["ae"]] = {"arch": "ae", "latent_dim": rule["latent_dim"], "latent_rule": rule}

    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, recipe in recipes.items():
        rule = recipe.pop("latent_rule", None)
        bar = TqdmProgress(name)
        unfinished = in_training_path(args.output_dir, name)
        try:
            model = train(train_set, unfinished, name=name, progress=bar, resume=args.resume, **recipe, **common)
        finally:
            bar.close()
        if rule is not None:
            model.card["training"]["latent_rule"] = rule
        model.card["training"]["synthetic_fraction"] = args.synthetic_fraction
        model.card["training"]["extra_anatomy"] = extra
        model.card["training"]["recipe"] = "scripts/train_bundled_models.py " + " ".join(argv)
        path = write_bundled(model, args.output_dir / f"{name}.pt")
        unfinished.unlink()
        training = model.card["training"]
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {training['train_slices']} slices, "
              f"{training['epochs']} epochs in {training['duration_s']} s on {training['device']}, "
              f"best validation loss {training['best_validation_loss']:.2f}; thresholds "
              + ", ".join(f"{k} {v:.4g}" for k, v in model.thresholds.items()))
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def synthetic_note(fraction: float) -> str:
    """The card description's sentence on synthetic individuals, empty without them."""
    if not fraction:
        return ""
    return (f" {100 * fraction:.0f} % of them are synthetic individuals: new folding drawn from the MNI152 "
            "tissue maps (data.synthetic).")


def extra_anatomy_note(heads: List[str]) -> str:
    """The card description's sentence on the extra training heads that went in, empty without them."""
    if not heads:
        return ""
    return (f" Subjects cycle over {len(heads)} more heads too, FreeSurfer's group averages "
            f"(data.held_out.TRAINING: {', '.join(heads)}; FreeSurfer Software License Agreement).")


def in_training_path(output_dir: Path, name: str) -> Path:
    """Where ``train`` writes a model of this recipe before :func:`write_bundled` makes it the bundled file.

    Why not the bundled path itself: its checkpoint (``<this>.ckpt``, after every epoch) lives beside it
    while training runs, and a run that stops leaves the shipped model as it was; ``--resume`` goes on
    from the checkpoint. A different recipe refuses the checkpoint (``training.trainer``).
    """
    return output_dir / f".{name}.in-training.pt"


def write_bundled(model: Any, path: Path) -> Path:
    """The model as fp16 weights plus a JSON copy of its card beside it, with the recipe's default
    score (:data:`BUNDLED_DEFAULT_SCORES`): every bundled card written carries it."""
    model.card["default_score"] = BUNDLED_DEFAULT_SCORES[model.name]
    path = save_model(model, path, half=True)
    path.with_suffix(".card.json").write_text(json.dumps(model.card, indent=2) + "\n")
    return path


def write_default_scores(args: argparse.Namespace) -> int:
    """:data:`BUNDLED_DEFAULT_SCORES` into the existing bundled cards; weights and thresholds unchanged."""
    for name in (MODEL_NAMES[arch] for arch in args.models):
        path = args.output_dir / f"{name}.pt"
        write_bundled(load_model(path), path)
        print(f"{path}: default score {BUNDLED_DEFAULT_SCORES[name]}")
    return 0


def recalibrate(args: argparse.Namespace, space: Dict[str, Any], workers: int, argv: List[str]) -> int:
    """New thresholds for the existing bundled models; card settings they predate get today's defaults."""
    started = time.perf_counter()
    bar = TqdmProgress("calibration subjects")
    try:
        calibration_set = prepared_subjects(population("calibration", args.calibration_subjects), space, workers,
                                            bar)
    finally:
        bar.close()
    for arch in args.models:
        path = args.output_dir / f"{MODEL_NAMES[arch]}.pt"
        model = load_model(path)
        defaults = make_card(arch=model.card["arch"], size=model.card["size"])
        for key in ("gradient_sigma_px",):
            model.card.setdefault(key, defaults[key])
        model.card["postprocessing"] = postprocessing_settings(
            model.card, {"normalisation": args.map_normalisation})
        bar = TqdmProgress(f"calibrating {model.name}")
        try:
            calibrate(model, calibration_set, device=args.device, seed=args.seed, progress=bar)
        finally:
            bar.close()
        model.card["calibration"]["source"] = f"calibration split ({len(calibration_set)} subjects), recalibrated"
        model.card["calibration"]["recipe"] = "scripts/train_bundled_models.py " + " ".join(argv)
        write_bundled(model, path)
        print(f"recalibrated {path}: " + ", ".join(f"{k} {v:.4g}" for k, v in model.thresholds.items()))
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
