"""The ``anomaly-detection`` command: models, train, calibrate, detect, evaluate (+ research verbs).

Every user error is one line on stderr naming the file and the problem, with exit code 2;
``detect`` on many inputs goes on past a bad one and reports it at the end.

A verb imports only what it uses: this module's top level needs only the torch-free catalog, so
``--help``, ``models`` and argument errors answer at once. Verbs of other installed packages
(the research package's ``benchmark`` and ``experiment``) join through the entry-point group
:data:`COMMAND_GROUP`, so the engine never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .catalog import (
    ARCHITECTURES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PERCENTILE,
    DEFAULT_TEMPLATE_SPACING_MM,
    DEVICES,
    SCORE_HELP,
    SCORES,
    SLICE_AXES,
    SMOOTHING,
    SUPPORTED_TEMPLATES,
    bundled_model_paths,
    bundled_models_dir,
    calibrated_thresholds,
    read_card_file,
)
from .errors import AnomalyDetectionError, InputError
from .version import __version__

EXIT_USER_ERROR = 2
#: Entry-point group through which other packages add verbs: ``name = "package.module:add_parser"``,
#: where ``add_parser(subparsers)`` adds one sub-command whose ``func(args)`` returns an exit code.
COMMAND_GROUP = "anomaly_detection.commands"


class TqdmProgress:
    """A ``progress(fraction, message)`` callback drawing one tqdm bar."""

    def __init__(self, description: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=description, disable=not enabled, leave=False,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.update(int(fraction * 1000) - self.bar.n)
        self.bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self.bar.close()


def cmd_models(args: argparse.Namespace) -> int:
    paths = bundled_model_paths() + [Path(p) for p in args.paths]
    if not paths:
        print("no bundled models yet; train one with 'anomaly-detection train' and pass it with --model")
        return 0
    for path in paths:
        card = read_card_file(path) if path.is_file() else None
        if card is None:  # no readable card beside it: the model file itself tells (this needs torch)
            from .models import load_model_file

            card = load_model_file(path).card
        print(f"{card['name']}  ({path})")
        context = int(card.get("context_slices", 0))
        print(f"  {card['arch']}  latent {card['latent_dim']}  beta {card['beta']}  input {card['size']}x"
              f"{card['size']} {card['slice_axis']} slices" + (f" +-{context} context" if context else "")
              + f", {card['orientation']}, foreground {card['foreground']}")
        print(f"  default score {card['default_score']}; calibrated thresholds: "
              + (", ".join(f"{k} {v:.4g}" for k, v in calibrated_thresholds(card).items()) or "none"))
        if card.get("description"):
            print(f"  {card['description']}")
        if args.verbose:
            print(json.dumps(card, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .preprocessing.io import expand_inputs
    from .preprocessing.template import template_entry
    from .training import train
    from .training.distributed import launch_environment, launch_rank, start

    resolve_device(args.device)
    if args.distributed and launch_environment() is None:
        start(True, args.device)  # raises the error that says how to launch with torchrun
    main_process = launch_rank() == 0  # under torchrun, only rank 0 draws the bar and prints
    volumes = expand_inputs(args.normal)
    calibration = expand_inputs(args.calibration) if args.calibration else None
    bar = TqdmProgress("train", enabled=not args.quiet and main_process)
    try:
        model = train(
            volumes, args.output, arch=args.arch, size=args.size, latent_dim=args.latent, beta=args.beta,
            channels=args.channels, norm=args.norm, slice_axis=args.slice_axis, context_slices=args.context_slices,
            foreground=args.foreground,
            template=template_entry(args.template, args.template_spacing) if args.template else None,
            epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.lr, val_fraction=args.val_fraction, seed=args.seed,
            device=args.device, calibration_volumes=calibration, percentile=args.percentile, resume=args.resume,
            denoising=None if args.denoising is None else {"std": args.denoising},
            description=args.description, progress=bar, distributed=True if args.distributed else None,
        )
    finally:
        bar.close()
    if not main_process:
        return 0
    training = model.card["training"]
    processes = f" by {training['world_size']} processes" if training.get("world_size", 1) > 1 else ""
    print(f"wrote {args.output}: {model.card['arch']} trained on {training['train_slices']} slices{processes} in "
          f"{training['duration_s']} s, best validation loss {training['best_validation_loss']:.2f}")
    print("calibrated thresholds: " + ", ".join(f"{k} {v:.4g}" for k, v in model.thresholds.items()))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .models import load_model, save_model
    from .preprocessing.io import expand_inputs
    from .training import calibrate

    resolve_device(args.device)
    model = load_model(args.model)
    if args.output is None and model.path is not None and model.path.parent == bundled_models_dir():
        raise InputError(f"{args.model} is a bundled model: give --output for the recalibrated copy")
    bar = TqdmProgress("calibrate", enabled=not args.quiet)
    try:
        calibration = calibrate(model, expand_inputs(args.normal), args.percentile, batch_size=args.batch_size,
                                device=args.device, progress=bar)
    finally:
        bar.close()
    output = args.output or model.path
    save_model(model, output)
    print(f"wrote {output}: thresholds at the {args.percentile}th percentile of {calibration['n_volumes']} "
          "normal volume(s): " + ", ".join(f"{k} {v:.4g}" for k, v in calibration["thresholds"].items()))
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from .batch import Batch
    from .pipeline import Detector
    from .preprocessing.io import expand_inputs

    threshold: Any = args.threshold if args.threshold == "auto" else _float(args.threshold, "--threshold")
    detector = Detector(args.model, score=args.score, threshold=threshold, score_params=_parse_params(args.param),
                        postprocessing={"smoothing": args.smoothing, "smoothing_size": args.smoothing_size},
                        device=args.device, batch_size=args.batch_size)  # fails once, not per input
    batch = Batch(detector, expand_inputs(args.inputs), Path(args.output_dir), overwrite=args.overwrite)
    for path in batch.removed_temporaries:
        print(f"removed {path.name}, a temporary file of an interrupted run", file=sys.stderr)
    bar: Optional[TqdmProgress] = None

    def progress(fraction: float, message: str) -> None:
        nonlocal bar
        if bar is None:
            bar = TqdmProgress("detect", enabled=not args.quiet)
        bar(fraction, message)

    if args.cluster:
        from .cluster import run_on_ray

        outcomes = run_on_ray(batch, args.cluster, args.workers, progress=progress)
    else:
        outcomes = batch.run(progress=progress)
    try:
        for outcome in outcomes:
            if bar is not None:
                bar.close()
                bar = None
            _print_outcome(outcome)
    finally:
        if bar is not None:
            bar.close()
    failures = sum(o.status == "failed" for o in batch.outcomes)
    print(f"run summary: {batch.summary_paths['json']}")
    if failures:
        print(f"anomaly-detection: {failures} of {len(batch.outcomes)} input(s) failed", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _print_outcome(outcome: Any) -> None:
    """One line per input: its result, why it was skipped, or its error."""
    stem = outcome.case
    if outcome.status == "failed":
        print(f"anomaly-detection: error: {outcome.error}", file=sys.stderr)
        return
    if outcome.status == "skipped":
        print(f"{stem}: skipped, {outcome.note} ({outcome.outputs['report']}; --overwrite redoes it)")
        return
    report = outcome.result.report
    percentile = report["sample_percentile"]
    where = (f" (above {percentile:g} % of {report['sample_normals']} normal scans)"
             if percentile is not None else "")
    print(f"{stem}: {report['score']} sample score {report['sample_score']:.4g}{where}, threshold "
          f"{report['threshold']:.4g} ({report['threshold_source']}), {report['anomalous_volume_ml']:.2f} mL "
          f"anomalous, {report['timings']['total_s']:.1f} s")
    if outcome.note:
        print(f"{stem}: note: {outcome.note}", file=sys.stderr)
    for warning in report["warnings"]:
        print(f"{stem}: warning: {warning}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, pair_cases, write_report
    from .evaluation.against_truth import report_number

    cases = pair_cases(args.maps, args.truth, args.mask)
    bar = TqdmProgress("evaluate", enabled=not args.quiet)
    try:
        report = evaluate([c[1] for c in cases], [c[2] for c in cases],
                          [c[3] for c in cases] if args.mask else None,
                          thresholds=[c[4] for c in cases], names=[c[0] for c in cases], progress=bar,
                          curves=True,
                          sample_scores=[report_number(args.maps, c[0], "sample_score") for c in cases])
    finally:
        bar.close()
    paths = write_report(report, args.output)
    summary = report["summary"]
    print(f"{len(cases)} case(s); wrote " + ", ".join(str(path) for path in paths.values()))
    for key, value in summary.items():
        if isinstance(value, float):
            print(f"  {key}: {value:.4f}")
        elif not isinstance(value, (dict, list)):
            print(f"  {key}: {value}")
    return 0


def _float(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{option} {text!r} is neither 'auto' nor a number") from None


def _parse_params(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``--param key=value`` pairs; values are JSON where they parse (numbers, lists), text otherwise."""
    params: Dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param {item!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value.split(",") if "," in value else value
    return params


def _channels(text: str) -> List[int]:
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _plugin_commands() -> List[Callable[[Any], None]]:
    """The ``add_parser`` functions other installed packages registered under :data:`COMMAND_GROUP`."""
    from importlib.metadata import entry_points

    found = entry_points()
    group = found.select(group=COMMAND_GROUP) if hasattr(found, "select") else found.get(COMMAND_GROUP, [])
    return [entry.load() for entry in sorted(group, key=lambda e: e.name)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomaly-detection", description=(
        "Unsupervised anomaly detection in medical volumes with models trained on normal scans only."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list bundled models (and the given model files) with their cards")
    models.add_argument("paths", nargs="*", help="model files to describe too")
    models.add_argument("-v", "--verbose", action="store_true", help="print whole model cards")
    models.set_defaults(func=cmd_models)

    tr = sub.add_parser("train", help="train a model on normal volumes and calibrate its thresholds")
    tr.add_argument("normal", nargs="+", help="normal volumes: files, folders or globs")
    tr.add_argument("--output", "-o", required=True, help="model file to write (.pt)")
    tr.add_argument("--arch", choices=ARCHITECTURES, default="vae")
    tr.add_argument("--latent", type=int, default=None, help="latent dimension (default 128 for vae, 32 for ae)")
    tr.add_argument("--beta", type=float, default=1.0, help="KL weight of the (beta-)VAE")
    tr.add_argument("--size", type=int, default=128, help="in-plane slice size, a multiple of 16")
    tr.add_argument("--channels", type=_channels, default=[32, 64, 128, 128], help="encoder channels, e.g. 32,64,128")
    tr.add_argument("--norm", choices=("instance", "batch"), default="instance", help="normalisation layers")
    tr.add_argument("--slice-axis", choices=SLICE_AXES, default="axial")
    tr.add_argument("--context-slices", type=int, default=0, metavar="K",
                    help="2.5D: give the network each slice's K neighbours on either side as extra channels")
    tr.add_argument("--foreground", choices=("otsu", "nonzero"), default="otsu")
    tr.add_argument("--template", choices=SUPPORTED_TEMPLATES, default=None,
                    help="train in this template's space: every volume is registered to it (as detect will)")
    tr.add_argument("--template-spacing", type=float, default=DEFAULT_TEMPLATE_SPACING_MM,
                    help="voxel size (mm) of the template space")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    tr.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tr.add_argument("--denoising", type=float, default=None, metavar="STD",
                    help="train a denoising model: corrupt each slice with coarse noise of this std (0.2 in "
                         "Kascenas et al. 2022), drawn on a 16-px grid, and learn the clean slice")
    tr.add_argument("--val-fraction", type=float, default=0.2, help="fraction of volumes held out")
    tr.add_argument("--calibration", nargs="+", help="normal volumes to calibrate thresholds on "
                                                    "(default: the held-out volumes)")
    tr.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                    help="threshold percentile of normal voxels")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt if present")
    tr.add_argument("--description", default="", help="training data description for the model card")
    tr.add_argument("--device", choices=DEVICES, default="auto")
    tr.add_argument("--distributed", action="store_true",
                    help="train with PyTorch DDP over the processes torchrun starts (NCCL on GPUs, one per "
                         "process; Gloo on CPUs): 'torchrun --nproc-per-node N -m AnomalyDetectionLib.cli train ... "
                         "--distributed'. Under torchrun with N > 1 training is distributed anyway; the flag makes "
                         "a missing torchrun environment an error. --batch-size is per process; rank 0 writes")
    tr.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    ca = sub.add_parser("calibrate", help="recalibrate a model's thresholds on normal volumes (e.g. your scanner's)")
    ca.add_argument("model", help="model file or bundled model name")
    ca.add_argument("normal", nargs="+", help="normal volumes not used in training: files, folders or globs")
    ca.add_argument("--output", "-o", help="model file to write (default: overwrite the given model file)")
    ca.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                    help="threshold percentile of normal voxels")
    ca.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ca.add_argument("--device", choices=DEVICES, default="auto")
    ca.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ca.set_defaults(func=cmd_calibrate)

    de = sub.add_parser("detect", help="anomaly map, mask and report for each input volume")
    de.add_argument("inputs", nargs="+", help="volumes: files, DICOM folders, folders of files or globs")
    de.add_argument("--output-dir", "-o", required=True,
                    help="folder for <case>_anomaly/_mask/_foreground.nii.gz, <case>_report.json and the run summary "
                    "anomaly_detection_run.json/.csv (input path -> status and outputs); inputs with the same file "
                    "name get their folder names prefixed (p001/T1.nii.gz -> p001_T1)")
    de.add_argument("--overwrite", action="store_true",
                    help="replace outputs already in the folder; without it an input whose outputs from the same "
                    "settings are there is skipped (a rerun resumes), and other runs' outputs are an error")
    de.add_argument("--model", "-m", help="model file or bundled model name")
    de.add_argument("--score", choices=SCORES, metavar="SCORE",
                    help="anomaly score (default: the model's): " + "; ".join(
                        f"{name}: {text}" for name, text in SCORE_HELP.items()).replace("%", "%%"))
    de.add_argument("--threshold", default="auto", help="'auto' (calibrated) or a number")
    de.add_argument("--param", action="append", metavar="KEY=VALUE",
                    help="score parameter, e.g. steps=20, alpha=1.0, lam=0.1, samples=4, members=reconstruction,combi")
    de.add_argument("--smoothing", choices=SMOOTHING, help="override the model's map smoothing")
    de.add_argument("--smoothing-size", type=float, help="median radius (voxels) or Gaussian sigma (mm)")
    de.add_argument("--device", choices=DEVICES, default="auto")
    de.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    de.add_argument("--cluster", metavar="WHERE",
                    help="spread the scans over Ray (pip install .[cluster]): auto (the running cluster), "
                    "ray://HOST:PORT, local or local:N (N CPUs here); actors load the model once, the outputs, "
                    "the summary and the resume rules are those of a run without it")
    de.add_argument("--workers", type=int, help="Ray scoring actors to start (default: one per four CPUs, or one per "
                    "GPU with CUDA; more than the GPUs share them); reading and CPU registration run as tasks")
    de.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    de.set_defaults(func=cmd_detect)

    ev = sub.add_parser("evaluate", help="voxel AUROC/AUPRC, Dice and sample-level AUROC against references")
    ev.add_argument("--maps", required=True, help="folder of <case>_anomaly.nii.gz written by detect")
    ev.add_argument("--truth", required=True, help="folder of reference masks named <case>[_suffix].<ext>")
    ev.add_argument("--mask", help="folder of evaluation masks (e.g. brain masks), same naming; the maps "
                    "folder itself takes the <case>_foreground masks detect wrote")
    ev.add_argument("--output", default="report.json",
                    help="JSON report; beside it a CSV of the cases, and the lesion cases' "
                    "ROC / precision-recall / Dice-vs-threshold curves as CSV and PNG")
    ev.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate)

    for add_parser in _plugin_commands():
        add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (AnomalyDetectionError, ValueError) as exc:
        print(f"anomaly-detection: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("anomaly-detection: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
