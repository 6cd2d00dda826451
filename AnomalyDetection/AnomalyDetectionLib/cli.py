"""The ``anomaly-detection`` command: models, train, calibrate, detect, evaluate, benchmark, experiment.

Every user error is one line on stderr naming the file and the problem, with exit code 2;
``detect`` on many inputs goes on past a bad one and reports it at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from tqdm import tqdm

from .device import DEVICES, resolve_device
from .errors import AnomalyDetectionError, InputError
from .models import Model, bundled_model_paths, bundled_models_dir, load_model
from .models.model_file import DEFAULT_MODEL, SLICE_AXES, load_model_file
from .postprocessing import SMOOTHING, postprocessing_settings
from .preprocessing.io import case_stem, expand_inputs
from .preprocessing.template import DEFAULT_SPACING_MM, SUPPORTED_TEMPLATES, template_entry
from .scoring import SCORES, check_score, scores_for
from .version import __version__

EXIT_USER_ERROR = 2


class TqdmProgress:
    """A ``progress(fraction, message)`` callback drawing one tqdm bar."""

    def __init__(self, description: str, enabled: bool = True) -> None:
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
        model = load_model_file(path)
        card = model.card
        print(f"{model.name}  ({path})")
        print(f"  {card['arch']}  latent {card['latent_dim']}  beta {card['beta']}  input {card['size']}x"
              f"{card['size']} {card['slice_axis']} slices, {card['orientation']}, foreground {card['foreground']}")
        print(f"  default score {card['default_score']}; calibrated thresholds: "
              + (", ".join(f"{k} {v:.4g}" for k, v in model.thresholds.items()) or "none"))
        if card.get("description"):
            print(f"  {card['description']}")
        if args.verbose:
            print(json.dumps(card, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    resolve_device(args.device)
    volumes = expand_inputs(args.normal)
    calibration = expand_inputs(args.calibration) if args.calibration else None
    bar = TqdmProgress("train", enabled=not args.quiet)
    try:
        model = train(
            volumes, args.output, arch=args.arch, size=args.size, latent_dim=args.latent, beta=args.beta,
            channels=args.channels, norm=args.norm, slice_axis=args.slice_axis, foreground=args.foreground,
            template=template_entry(args.template, args.template_spacing) if args.template else None,
            epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.lr, val_fraction=args.val_fraction, seed=args.seed,
            device=args.device, calibration_volumes=calibration, percentile=args.percentile, resume=args.resume,
            description=args.description, progress=bar,
        )
    finally:
        bar.close()
    training = model.card["training"]
    print(f"wrote {args.output}: {model.card['arch']} trained on {training['train_slices']} slices in "
          f"{training['duration_s']} s, best validation loss {training['best_validation_loss']:.2f}")
    print("calibrated thresholds: " + ", ".join(f"{k} {v:.4g}" for k, v in model.thresholds.items()))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .models import save_model
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
    from .detection import detect, write_detection

    resolve_device(args.device)
    model = load_model(args.model or _default_model())
    params = _parse_params(args.param)
    postprocessing = {"smoothing": args.smoothing, "smoothing_size": args.smoothing_size}
    threshold: Any = args.threshold if args.threshold == "auto" else _float(args.threshold, "--threshold")
    check_score(model, args.score or model.card["default_score"], params)  # fail once, not per input
    postprocessing_settings(model.card, postprocessing)
    inputs = expand_inputs(args.inputs)
    output_dir = Path(args.output_dir)
    failures = 0
    for path in inputs:
        stem = case_stem(path)
        bar = TqdmProgress(stem, enabled=not args.quiet)
        try:
            result = detect(path, model, score=args.score, threshold=threshold, device=args.device,
                            batch_size=args.batch_size, score_params=params, postprocessing=postprocessing,
                            progress=bar)
            write_detection(output_dir, stem, result)
        except AnomalyDetectionError as exc:
            failures += 1
            bar.close()
            print(f"anomaly-detection: error: {exc}", file=sys.stderr)
            continue
        bar.close()
        report = result.report
        print(f"{stem}: {report['score']} sample score {report['sample_score']:.4g}, threshold "
              f"{report['threshold']:.4g} ({report['threshold_source']}), {report['anomalous_volume_ml']:.2f} mL "
              f"anomalous, {report['timings']['total_s']:.1f} s")
        for warning in report["warnings"]:
            print(f"{stem}: warning: {warning}", file=sys.stderr)
    if failures:
        print(f"anomaly-detection: {failures} of {len(inputs)} input(s) failed", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, pair_cases, write_report

    cases = pair_cases(args.maps, args.truth, args.mask)
    bar = TqdmProgress("evaluate", enabled=not args.quiet)
    try:
        report = evaluate([c[1] for c in cases], [c[2] for c in cases],
                          [c[3] for c in cases] if args.mask else None,
                          thresholds=[c[4] for c in cases], names=[c[0] for c in cases], progress=bar,
                          curves=True)
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


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .evaluation.benchmark import format_table, run_benchmark, write_benchmark

    resolve_device(args.device)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, not {args.limit}")
    models = [load_model(name) for name in args.model] if args.model else _bundled_models()
    models, scores = _benchmark_scores(models, args.score)
    cases, total = _benchmark_cases(args.quick, args.limit)
    bar = TqdmProgress("benchmark", enabled=not args.quiet)
    try:
        report = run_benchmark(models, cases, scores, device=args.device, batch_size=args.batch_size,
                               progress=bar, total=total)
    finally:
        bar.close()
    paths = write_benchmark(report, args.output_dir)
    print(format_table(report))
    print(f"{report['n_cases']} cases in {report['seconds_total']:.0f} s; wrote "
          + ", ".join(str(p) for p in paths.values()))
    return 0


#: The experiments, in the order ``experiment all`` runs them (kept here so --help needs no import).
EXPERIMENT_NAMES = ("zimmerer2019", "zhou2020", "cai2024")


def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import run_experiment

    resolve_device(args.device)
    names = list(EXPERIMENT_NAMES) if args.name == "all" else [args.name]
    for name in names:
        bar = TqdmProgress(name, enabled=not args.quiet)
        command = " ".join(["anomaly-detection", "experiment", name] + (["--quick"] if args.quick else [])
                           + ["--seed", str(args.seed), "--workers", str(args.workers)])
        try:
            paths = run_experiment(name, args.output_dir, quick=args.quick, device=args.device, seed=args.seed,
                                   workers=args.workers, progress=bar, command=command)
        finally:
            bar.close()
        print(f"{name}: wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _bundled_models() -> List[Model]:
    """Every bundled model, the default one first (the benchmark checks its targets on the first)."""
    paths = sorted(bundled_model_paths(), key=lambda p: p.stem != DEFAULT_MODEL)
    if not paths:
        raise InputError("no bundled models found: build them with 'make models', or pass --model NAME_OR_PATH")
    return [load_model(p) for p in paths]


def _benchmark_scores(
    models: List[Model], requested: Optional[Sequence[str]]
) -> Tuple[List[Model], Optional[Dict[str, List[str]]]]:
    """``(models, scores per model name)`` for ``--score``: each model runs the requested scores it
    has (kl_grad is VAE-only), and a model with none of them is left out with a note."""
    if not requested:
        return models, None
    kept: List[Model] = []
    scores: Dict[str, List[str]] = {}
    for model in models:
        chosen = [s for s in dict.fromkeys(requested) if s in scores_for(model)]
        if chosen:
            kept.append(model)
            scores[model.name] = chosen
        else:
            print(f"anomaly-detection: note: model {model.name} has none of the scores {', '.join(requested)}; "
                  "left out", file=sys.stderr)
    if not kept:
        raise InputError(f"no model has the score(s) {', '.join(requested)}")
    return kept, scores


def _benchmark_cases(quick: bool, limit: Optional[int]) -> Tuple[Iterable[Any], int]:
    """``(cases, number of cases)``: the generated benchmark cases, each made only when the run
    reaches it, so the whole set never sits in memory."""
    from .data.benchmark_cases import benchmark_case_specs, iter_benchmark_cases
    from .evaluation.benchmark import balanced_subset

    specs = balanced_subset(benchmark_case_specs(quick=quick), limit)
    return iter_benchmark_cases(specs), len(specs)


def _default_model() -> Path:
    paths = bundled_model_paths()
    if not paths:
        raise InputError("no bundled model found: pass --model PATH (train one with 'anomaly-detection train' "
                         "or rebuild the bundled ones with 'make models')")
    return next((p for p in paths if p.stem == DEFAULT_MODEL), paths[0])


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
    tr.add_argument("--arch", choices=("vae", "ae"), default="vae")
    tr.add_argument("--latent", type=int, default=None, help="latent dimension (default 128 for vae, 32 for ae)")
    tr.add_argument("--beta", type=float, default=1.0, help="KL weight of the (beta-)VAE")
    tr.add_argument("--size", type=int, default=128, help="in-plane slice size, a multiple of 16")
    tr.add_argument("--channels", type=_channels, default=[32, 64, 128, 128], help="encoder channels, e.g. 32,64,128")
    tr.add_argument("--norm", choices=("instance", "batch"), default="instance", help="normalisation layers")
    tr.add_argument("--slice-axis", choices=SLICE_AXES, default="axial")
    tr.add_argument("--foreground", choices=("otsu", "nonzero"), default="otsu")
    tr.add_argument("--template", choices=SUPPORTED_TEMPLATES, default=None,
                    help="train in this template's space: every volume is registered to it (as detect will)")
    tr.add_argument("--template-spacing", type=float, default=DEFAULT_SPACING_MM,
                    help="voxel size (mm) of the template space")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tr.add_argument("--val-fraction", type=float, default=0.2, help="fraction of volumes held out")
    tr.add_argument("--calibration", nargs="+", help="normal volumes to calibrate thresholds on "
                                                    "(default: the held-out volumes)")
    tr.add_argument("--percentile", type=float, default=99.5, help="threshold percentile of normal voxels")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt if present")
    tr.add_argument("--description", default="", help="training data description for the model card")
    tr.add_argument("--device", choices=DEVICES, default="auto")
    tr.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)

    ca = sub.add_parser("calibrate", help="recalibrate a model's thresholds on normal volumes (e.g. your scanner's)")
    ca.add_argument("model", help="model file or bundled model name")
    ca.add_argument("normal", nargs="+", help="normal volumes not used in training: files, folders or globs")
    ca.add_argument("--output", "-o", help="model file to write (default: overwrite the given model file)")
    ca.add_argument("--percentile", type=float, default=99.5, help="threshold percentile of normal voxels")
    ca.add_argument("--batch-size", type=int, default=32)
    ca.add_argument("--device", choices=DEVICES, default="auto")
    ca.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ca.set_defaults(func=cmd_calibrate)

    de = sub.add_parser("detect", help="anomaly map, mask and report for each input volume")
    de.add_argument("inputs", nargs="+", help="volumes: files, DICOM folders, folders of files or globs")
    de.add_argument("--output-dir", "-o", required=True)
    de.add_argument("--model", "-m", help="model file or bundled model name")
    de.add_argument("--score", choices=SCORES, help="anomaly score (default: the model's)")
    de.add_argument("--threshold", default="auto", help="'auto' (calibrated) or a number")
    de.add_argument("--param", action="append", metavar="KEY=VALUE",
                    help="score parameter, e.g. steps=20, alpha=1.0, lam=0.1, samples=4, members=reconstruction,combi")
    de.add_argument("--smoothing", choices=SMOOTHING, help="override the model's map smoothing")
    de.add_argument("--smoothing-size", type=float, help="median radius (voxels) or Gaussian sigma (mm)")
    de.add_argument("--device", choices=DEVICES, default="auto")
    de.add_argument("--batch-size", type=int, default=32)
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

    be = sub.add_parser("benchmark", help="lesion benchmark: every model and score on generated cases with "
                                          "ground truth; table, CSV/JSON report and figure")
    be.add_argument("--model", "-m", nargs="+", action="extend", metavar="NAME_OR_PATH",
                    help="models to benchmark (default: every bundled model, the default one first)")
    be.add_argument("--score", nargs="+", action="extend", choices=SCORES,
                    help="scores to run (default: every score each model has)")
    be.add_argument("--quick", action="store_true", help="the small case set (a few minutes on a CPU)")
    be.add_argument("--limit", type=int, help="run at most N cases, taken in turn from each lesion type and normal")
    be.add_argument("--output-dir", "-o", default="benchmark-output")
    be.add_argument("--device", choices=DEVICES, default="auto")
    be.add_argument("--batch-size", type=int, default=32)
    be.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    be.set_defaults(func=cmd_benchmark)

    ex = sub.add_parser("experiment", help="rerun a paper's experiment; writes a Markdown/HTML report with tables "
                                           "and figures under OUTPUT_DIR/NAME")
    ex.add_argument("name", choices=[*EXPERIMENT_NAMES, "all"],
                    help="zimmerer2019 (VAE scores), zhou2020 (beta sweep), cai2024 (AE latent size), or all")
    ex.add_argument("--quick", action="store_true", help="tiny data, seconds: checks the code path, not the papers")
    ex.add_argument("--output-dir", "-o", default="reports")
    ex.add_argument("--device", choices=DEVICES, default="auto")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--workers", type=int, default=0, help="processes preparing brain subjects in parallel")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_experiment)
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
