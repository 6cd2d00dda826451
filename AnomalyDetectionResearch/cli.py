"""The research verbs of ``anomaly-detection``: ``benchmark`` and ``experiment``.

They join the engine's command line through its entry-point group (see
``AnomalyDetectionLib.cli.COMMAND_GROUP``), so the engine never imports this package; this
module's top level imports nothing heavy, so ``anomaly-detection --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from AnomalyDetectionLib.catalog import DEFAULT_BATCH_SIZE, DEVICES, SCORES, bundled_model_paths, scores_for_card
from AnomalyDetectionLib.cli import TqdmProgress
from AnomalyDetectionLib.errors import InputError

__all__ = ["EXPERIMENT_NAMES", "add_benchmark", "add_experiment"]


def cmd_benchmark(args: argparse.Namespace) -> int:
    from AnomalyDetectionLib.device import resolve_device
    from AnomalyDetectionLib.models import load_model

    from .benchmark import ANATOMY_TARGETS, TARGETS, format_table, run_benchmark, write_benchmark
    from .selection import choose_default

    resolve_device(args.device)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, not {args.limit}")
    models = [load_model(name) for name in args.model] if args.model else _bundled_models()
    models, scores = _benchmark_scores(models, args.score)
    # each case set but the default has its flag of the same name (--held-out sets args.held_out)
    case_set = next((name for name in CASE_SET_TITLES if name != "lesion" and getattr(args, name)), "lesion")
    cases, total = _benchmark_cases(args.quick, args.limit, case_set)
    bar = TqdmProgress("benchmark", enabled=not args.quiet)
    try:
        report = run_benchmark(models, cases, scores, device=args.device, batch_size=args.batch_size,
                               progress=bar, total=total, title=CASE_SET_TITLES[case_set],
                               targets=TARGETS if case_set == "lesion" else ANATOMY_TARGETS)
    finally:
        bar.close()
    if case_set == "validation":  # the set the shipped default is chosen on
        report["choice"] = choose_default(report)
    paths = write_benchmark(report, args.output_dir)
    print(format_table(report))
    print(f"{report['n_cases']} cases in {report['seconds_total']:.0f} s; wrote "
          + ", ".join(str(p) for p in paths.values()))
    return 0


#: The experiments, in the order ``experiment all`` runs them (kept here so --help needs no import).
EXPERIMENT_NAMES = ("zimmerer2019", "zhou2020", "cai2024")


def cmd_experiment(args: argparse.Namespace) -> int:
    from AnomalyDetectionLib.device import resolve_device

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


def _bundled_models() -> List[Any]:
    """Every bundled model, the default one first (the benchmark checks its targets on the first)."""
    from AnomalyDetectionLib.models import load_model

    paths = bundled_model_paths()
    if not paths:
        raise InputError("no bundled models found: build them with 'make models', or pass --model NAME_OR_PATH")
    return [load_model(p) for p in paths]


def _benchmark_scores(
    models: List[Any], requested: Optional[Sequence[str]]
) -> Tuple[List[Any], Optional[Dict[str, List[str]]]]:
    """``(models, scores per model name)`` for ``--score``: each model runs the requested scores it
    has (kl_grad is VAE-only), and a model with none of them is left out with a note."""
    if not requested:
        return models, None
    kept: List[Any] = []
    scores: Dict[str, List[str]] = {}
    for model in models:
        chosen = [s for s in dict.fromkeys(requested) if s in scores_for_card(model.card)]
        if chosen:
            kept.append(model)
            scores[model.name] = chosen
        else:
            print(f"anomaly-detection: note: model {model.name} has none of the scores {', '.join(requested)}; "
                  "left out", file=sys.stderr)
    if not kept:
        raise InputError(f"no model has the score(s) {', '.join(requested)}")
    return kept, scores


#: The benchmark's case sets and the titles of their reports.
CASE_SET_TITLES: Dict[str, str] = {
    "lesion": "Lesion benchmark",
    "held_out": "Held-out-anatomy benchmark",
    "validation": "Validation set",
    "clinical": "Clinical-acquisition benchmark",
}


def _benchmark_cases(quick: bool, limit: Optional[int], case_set: str = "lesion") -> Tuple[Iterable[Any], int]:
    """``(cases, number of cases)``: the generated benchmark cases, the held-out-anatomy ones or the
    validation ones, each made only when the run reaches it, so the whole set never sits in memory."""
    from .benchmark import balanced_subset
    from .data.benchmark_cases import (
        benchmark_case_specs,
        clinical_case_specs,
        held_out_case_specs,
        iter_benchmark_cases,
        validation_case_specs,
    )

    if case_set not in CASE_SET_TITLES:
        raise ValueError(f"unknown case set {case_set!r}; choose one of {', '.join(CASE_SET_TITLES)}")
    if case_set == "held_out":
        specs = held_out_case_specs()
    elif case_set == "validation":
        specs = validation_case_specs()
    elif case_set == "clinical":
        specs = clinical_case_specs()
    else:
        specs = benchmark_case_specs(quick=quick)
    specs = balanced_subset(specs, limit)
    return iter_benchmark_cases(specs), len(specs)


def add_benchmark(sub: Any) -> None:
    """Add the ``benchmark`` verb to the engine's sub-command parsers."""
    be = sub.add_parser("benchmark", help="lesion benchmark: every model and score on generated cases with "
                                          "ground truth; table, CSV/JSON report and figure")
    be.add_argument("--model", "-m", nargs="+", action="extend", metavar="NAME_OR_PATH",
                    help="models to benchmark (default: every bundled model, the default one first)")
    be.add_argument("--score", nargs="+", action="extend", choices=SCORES,
                    help="scores to run (default: every score each model has)")
    be.add_argument("--quick", action="store_true", help="the small case set (a few minutes on a CPU)")
    which = be.add_mutually_exclusive_group()
    which.add_argument("--held-out", action="store_true",
                       help="the held-out-anatomy cases instead: real individuals and a template no shipped model "
                            "was trained or calibrated on (fetched at setup), two normal cases and each lesion type "
                            "on every one; evaluation only, never a choice")
    which.add_argument("--validation", action="store_true",
                       help="the validation cases instead, on which the shipped default is chosen: templates "
                            "disjoint from training, calibration and both benchmarks (fetched at setup), four "
                            "normal cases and each lesion type on every one")
    which.add_argument("--clinical", action="store_true",
                       help="the clinical-acquisition cases instead: the held-out heads as a hospital scans them "
                            "(0.8 x 0.8 x 6.5 mm axial slices, vertex and skull base left out, contrast-enhanced "
                            "dura and veins), two normal cases, a tumour, a hyper- and a hypo-intense blob on "
                            "each; evaluation only")
    be.add_argument("--limit", type=int, help="run at most N cases, taken in turn from each lesion type and normal")
    be.add_argument("--output-dir", "-o", default="benchmark-output")
    be.add_argument("--device", choices=DEVICES, default="auto")
    be.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    be.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    be.set_defaults(func=cmd_benchmark)



def add_experiment(sub: Any) -> None:
    """Add the ``experiment`` verb to the engine's sub-command parsers."""
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
