"""The lesion benchmark: every model and score on generated cases with voxel-exact ground truth.

Why: a user choosing a model or a score needs to know how well each finds lesions, how often it
flags healthy tissue and how long it takes, measured the same way for all of them. Each case
goes through exactly what ``detect`` does (preparation, scoring, post-processing, the calibrated
threshold), so the numbers describe the tool as shipped. Metrics are computed inside the case's
*true* brain mask, independent of the model's own foreground, so models with different
foregrounds are compared on the same voxels.

A case is prepared once per model and scored with every score, and only its metrics are kept
(plus four small 2D slices for the figure), so a long benchmark runs in the memory of one case.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from AnomalyDetectionLib.catalog import UNCALIBRATED_PERCENTILE
from AnomalyDetectionLib.device import resolve_device
from AnomalyDetectionLib.errors import InputError
from AnomalyDetectionLib.evaluation import metrics
from AnomalyDetectionLib.evaluation.against_truth import csv_text, evaluate_case, mean_median, plain_json
from AnomalyDetectionLib.evaluation.figures import axial_slices, cases_figure, curves_figure
from AnomalyDetectionLib.models import Model
from AnomalyDetectionLib.pipeline import Detector
from AnomalyDetectionLib.postprocessing import postprocessing_settings
from AnomalyDetectionLib.preprocessing import model_space
from AnomalyDetectionLib.preprocessing.io import write_text_atomic
from AnomalyDetectionLib.progress import CancelCheck, Progress, ProgressCallback
from AnomalyDetectionLib.scoring import SCORES, check_score, scores_for
from AnomalyDetectionLib.version import __version__

from .selection import finite, format_choice, worst_fp_rate

if TYPE_CHECKING:  # the data package (generators, templates) is only needed by whoever makes the cases
    from .data.cases import BenchmarkCase

__all__ = [
    "ANATOMY_TARGETS", "TARGETS", "Target", "balanced_subset", "check_targets", "format_table", "format_target",
    "machine_info", "run_benchmark", "summarise_by_anatomy", "summarise_by_type", "summarise_rows", "write_benchmark",
]

NORMAL = "normal"
#: Lesion types shown in the figure (the first case of each, in the order met).
FIGURE_CASES = 4
#: Metrics averaged over lesion cases in the summary and per-type rows.
LESION_METRICS = ("voxel_auroc", "voxel_auprc", "dice", "best_dice")


@dataclass(frozen=True)
class Target:
    """A quality target of the default model and score: ``value comparison threshold``."""

    key: str
    description: str
    comparison: str  # ">=" or "<="
    threshold: float


#: The targets of the default model and score on the lesion benchmark (subjects generated from the
#: training templates).
TARGETS = (
    Target("hyper_blob_voxel_auroc", "voxel AUROC on hyper_blob cases", ">=", 0.95),
    Target("hyper_blob_voxel_auprc", "voxel AUPRC on hyper_blob cases", ">=", 0.5),
    Target("voxel_auroc", "mean voxel AUROC over lesion cases", ">=", 0.93),
    Target("voxel_auprc", "mean voxel AUPRC over lesion cases", ">=", 0.5),
    Target("copied_patch_voxel_auroc", "voxel AUROC on copied_patch cases", ">=", 0.8),
    Target("sample_auroc", "sample-level AUROC, lesion vs normal cases", ">=", 0.9),
    Target("normal_fp_rate", "false-positive voxel rate on normal cases", "<=", 0.01),
)

#: The targets on anatomy no shipped model was trained on (held-out and validation sets): a map
#: that holds on new brains, calibrated per person, and better than the plain intensity rule.
ANATOMY_TARGETS = (
    Target("auprc_over_intensity", "voxel AUPRC minus the intensity rule's, worst lesion type", ">=", 0.0),
    Target("voxel_auroc", "mean voxel AUROC over lesion cases", ">=", 0.9),
    Target("sample_auroc", "sample-level AUROC, lesion vs normal cases", ">=", 0.9),
    Target("worst_person_fp_rate", "false-positive voxel rate, worst normal case of any person", "<=", 0.01),
)


# --------------------------------------------------------------------------------------- running


def run_benchmark(
    models: Sequence[Model],
    cases: Iterable[BenchmarkCase],
    scores: Optional[Mapping[str, Sequence[str]]] = None,
    device: str = "auto",
    batch_size: int = 32,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    total: Optional[int] = None,
    title: str = "Lesion benchmark",
    targets: Sequence[Target] = TARGETS,
) -> Dict[str, Any]:
    """Benchmark ``models`` on ``cases``; returns a plain JSON-able report (undefined metrics are None).

    ``title`` names the case set in the report and its table (the held-out-anatomy set has its own);
    ``targets`` are the ones to check (:data:`ANATOMY_TARGETS` on anatomy outside training).

    ``scores`` maps a model name to the scores to run (default: every score the model has, in
    :data:`~AnomalyDetectionLib.scoring.SCORES` order). ``cases`` is consumed once, one case at a
    time (a generator keeps memory to one case); ``total`` is its length for the progress when it
    has no ``len``. ``progress(fraction, message)`` and ``cancel()`` work as in ``detect``;
    cancelling raises :class:`~AnomalyDetectionLib.errors.Cancelled`.

    Report keys: ``cases`` (one row per case x model x score), ``summary`` (one row per model x
    score), ``by_type`` (model x score x lesion type), ``targets`` (``targets`` checked on the
    first model's default score), ``registrations``, ``models``, ``machine``, ``figure`` (2D
    slices for :func:`write_benchmark`'s picture).
    """
    plan = _plan(models, scores)
    torch_device = resolve_device(device)
    for model, _ in plan:
        model.to(torch_device)
    focus = _focus(plan)
    steps = Progress(progress, cancel)
    if total is None and isinstance(cases, Sized):
        total = len(cases)
    machine = machine_info(torch_device)  # at the start: its load average is the one the run competed with
    started = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    registrations: List[Dict[str, Any]] = []
    figure: List[Dict[str, Any]] = []
    curves: Dict[str, List[Dict[str, np.ndarray]]] = {}  # "model score" -> per-lesion-case curves
    count = 0
    for index, case in enumerate(cases):
        steps.check_cancel()
        start, end = (min(index / total, 1.0), min((index + 1) / total, 1.0)) if total else (0.0, 0.0)
        part = Progress(_prefixed(progress, f"{case.name} ({index + 1}/{total or '?'})"), cancel, start, end)
        part.report(0.0, "preparing")
        shown = {entry["kind"] for entry in figure}
        want_figure = case.kind != NORMAL and case.kind not in shown and len(figure) < FIGURE_CASES
        case_rows, case_registrations, views, case_curves = _run_case(case, plan, batch_size, part,
                                                                      focus if want_figure else None)
        for key, curve in case_curves.items():
            curves.setdefault(key, []).append(curve)
        rows += case_rows
        registrations += case_registrations
        if views is not None:
            figure.append(views)
        count += 1
    if count == 0:
        raise InputError("the benchmark has no case to run")
    steps.report(1.0, f"benchmarked {count} case{'s' if count != 1 else ''}")

    summary = summarise_rows(rows)
    by_type = summarise_by_type(rows)
    by_anatomy = summarise_by_anatomy(rows)
    kinds: Dict[str, int] = {}
    for row in rows:
        if row["model"] == focus[0] and row["score"] == focus[1]:
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    kinds = dict(sorted(kinds.items(), key=lambda item: item[0] == NORMAL))  # lesion types first, as met
    report = {
        "benchmark": title,
        "engine_version": __version__,
        "machine": machine,
        "settings": {"device": str(torch_device), "batch_size": batch_size,
                     "uncalibrated_percentile": UNCALIBRATED_PERCENTILE,
                     "metrics_mask": "true brain mask of each case, on its native grid"},
        "models": [_describe_model(model, model_scores) for model, model_scores in plan],
        "default": {"model": focus[0], "score": focus[1]},
        "n_cases": count,
        "case_counts": kinds,
        "seconds_total": round(time.perf_counter() - started, 2),
        "summary": summary,
        "by_type": by_type,
        "by_anatomy": by_anatomy,
        "target_fp_rate": _target_fp_rate(plan[0][0]),
        "targets": check_targets(summary, by_type, focus, by_anatomy, targets),
        "cases": rows,
        "registrations": registrations,
        "curves": {key: {name: values.tolist() for name, values in metrics.mean_curves(found).items()}
                   for key, found in curves.items()},
        "figure": figure,
    }
    return plain_json(report)


def _prefixed(callback: Optional[ProgressCallback], prefix: str) -> Optional[ProgressCallback]:
    """``callback`` with ``prefix`` before every message, so nested steps say which case they are on."""
    if callback is None:
        return None
    return lambda fraction, message: callback(fraction, f"{prefix}: {message}")


def _plan(models: Sequence[Model], scores: Optional[Mapping[str, Sequence[str]]]) -> List[Tuple[Model, List[str]]]:
    """``(model, scores)`` pairs, checked before any case runs so a typo fails in a second, not an hour."""
    if not models:
        raise InputError("no model to benchmark")
    names = [model.name for model in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"several models are named {', '.join(duplicates)}: results are keyed by model name")
    unknown = sorted(set(scores or {}) - set(names))
    if unknown:
        raise InputError(f"scores given for unknown model(s) {', '.join(unknown)} (models: {', '.join(names)})")
    plan = []
    spaces: List[Dict[str, Any]] = []  # model spaces whose intensity yardstick is already in the plan
    for model in models:
        chosen = list((scores or {}).get(model.name) or scores_for(model))
        for score in chosen:
            check_score(model, score)
        # The yardstick uses no network: models sharing a model space share it, so it runs once.
        if "intensity" in chosen and model_space(model.card) in spaces and model is not models[0]:
            chosen.remove("intensity")
        elif "intensity" in chosen:
            spaces.append(model_space(model.card))
        plan.append((model, sorted(dict.fromkeys(chosen), key=SCORES.index)))
    return [(model, chosen) for model, chosen in plan if chosen]


def _focus(plan: Sequence[Tuple[Model, List[str]]]) -> Tuple[str, str]:
    """The default model (the first) and its card's default score, or its first benchmarked score."""
    model, model_scores = plan[0]
    default = model.card.get("default_score")
    return model.name, default if default in model_scores else model_scores[0]


def _run_case(
    case: BenchmarkCase,
    plan: Sequence[Tuple[Model, List[str]]],
    batch_size: int,
    steps: Progress,
    figure_for: Optional[Tuple[str, str]],
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Optional[Dict[str, Any]], Dict[str, Any]]:
    """Rows of one case for every model and score, its registrations, its figure slices if asked,
    and (a lesion case) its ROC / precision-recall / Dice curves by ``"model score"``."""
    rows: List[Dict[str, Any]] = []
    curves: Dict[str, Any] = {}
    registrations: List[Dict[str, Any]] = []
    earlier = None  # the case prepared for an earlier model: its registration is reused where it fits
    views: Optional[Dict[str, Any]] = None
    for m, (model, model_scores) in enumerate(plan):
        part = steps.sub(m / len(plan), (m + 1) / len(plan))
        detectors = {score: Detector(model, score=score, batch_size=batch_size) for score in model_scores}
        members = check_score(model, "ensemble")["members"] if "ensemble" in model_scores else []
        computed: Dict[str, Tuple[np.ndarray, float]] = {}  # member -> (slice maps, seconds), for the ensemble
        prepared = None
        for s, score in enumerate(model_scores):
            width = 1.0 / len(model_scores)
            part.report(s * width, f"{model.name} {score}")
            reused_maps = {k: computed[k][0] for k in members if k in computed} if score == "ensemble" else None
            # The first score of a model prepares the case (reusing an earlier model's registration
            # to the same template, as a user running both would not); the others reuse it.
            result = detectors[score].detect(case.image, name=case.name, reuse=prepared or earlier,
                                             progress=part.sub(s * width, (s + 1) / len(model_scores)).as_callback(),
                                             cancel=steps.cancel, member_maps=reused_maps,
                                             keep_slice_maps=score in members)
            timings = result.report["timings"]
            if prepared is None:
                prepared = result.prepared
                reused = earlier is not None and prepared.registration is not None and (
                    prepared.registration is earlier.registration)
                # A reused registration still counts in this model's time: ``detect`` alone would pay it.
                prepare_s = timings["prepare_s"] + (prepared.registration.seconds if reused else 0.0)
                registration = prepared.registration
                if registration is not None:
                    registrations.append({"case": case.name, "model": model.name, "reused": reused,
                                          **registration.to_report()})
            if score in members:
                computed[score] = (result.slice_maps, timings["score_s"])
            # Members reused from this case still count: ``detect`` with the ensemble alone would run them.
            scoring_s = timings["score_s"] + sum(computed[k][1] for k in (reused_maps or {}))
            row, curve = _case_row(case, result.anomaly_map, result.mask, result.report["threshold"],
                                   result.report["sample_score"])
            if curve is not None:
                curves[f"{model.name} {score}"] = curve
            source = result.report["threshold_source"]
            row.update({
                "model": model.name, "score": score, "threshold_source": source,
                "calibrated": source == "calibrated",
                "prepare_s": round(prepare_s, 3), "score_s": round(scoring_s, 3),
                "postprocess_s": timings["postprocess_s"],
                "seconds": round(prepare_s + scoring_s + timings["postprocess_s"], 3),
                "registration_metric": None if registration is None else registration.metric,
                "registration_brain_overlap": None if registration is None else registration.brain_overlap,
                "registration_brain_coverage": None if registration is None else registration.brain_coverage,
                "warnings": result.report["warnings"],
            })
            rows.append(_ordered(row))
            if figure_for == (model.name, score):
                views = _figure_views(case, result.anomaly_map, result.mask)
            del result
        earlier = earlier if prepared is None or prepared.registration is None else prepared
        del prepared
    return rows, registrations, views, curves


#: Column order of the per-case rows (others follow).
CASE_COLUMNS = (
    "case", "kind", "model", "score", "voxel_auroc", "voxel_auprc", "dice", "best_dice", "best_threshold",
    "threshold", "threshold_source", "calibrated", "sample_score", "fp_rate", "lesion_voxels", "lesion_volume_ml",
    "flagged_volume_ml", "flagged_outside_brain_ml", "brain_voxels", "seconds", "prepare_s", "score_s",
    "postprocess_s", "registration_metric", "registration_brain_overlap", "registration_brain_coverage", "warnings",
)


def _ordered(row: Dict[str, Any]) -> Dict[str, Any]:
    return {**{k: row[k] for k in CASE_COLUMNS if k in row}, **row}


def _case_row(case: BenchmarkCase, anomaly_map: sitk.Image, mask: sitk.Image, threshold: float,
              sample_score: float) -> Tuple[Dict[str, Any], Optional[Dict[str, np.ndarray]]]:
    """Metrics of one map and mask inside the case's true brain, and its curves (None: normal case).

    The ranking metrics come from :func:`~.report.evaluate_case` (which also checks the grids);
    Dice and the false-positive rate use the post-processed mask ``detect`` would return, not
    just ``map >= threshold``, because that mask is what a user gets; the sample score is the
    detection's own (its report's, over the model's foreground), the number a user sorts by.
    """
    result = evaluate_case(anomaly_map, case.truth, case.brain, None, case.name, curves=True,
                           sample_score=sample_score)
    brain = sitk.GetArrayViewFromImage(case.brain) > 0
    truth = sitk.GetArrayViewFromImage(case.truth) > 0
    flagged = sitk.GetArrayViewFromImage(mask) > 0
    healthy = brain & ~truth
    n_healthy = int(np.count_nonzero(healthy))
    voxel_ml = float(np.prod(case.image.GetSpacing())) / 1000.0
    subject = getattr(case.spec, "subject", None)
    return {
        "case": case.name,
        "kind": case.kind,
        "voxel_auroc": result["voxel_auroc"],
        "voxel_auprc": result["voxel_auprc"],
        "dice": metrics.dice(flagged, truth, brain) if truth.any() else math.nan,
        "best_dice": result["best_dice"] if truth.any() else math.nan,
        "best_threshold": result["best_threshold"] if truth.any() else math.nan,
        "threshold": float(threshold),
        "sample_score": result["sample_score"],
        "fp_rate": int(np.count_nonzero(flagged & healthy)) / n_healthy if n_healthy else math.nan,
        "lesion_voxels": result["lesion_voxels"],
        "lesion_volume_ml": result["lesion_volume_ml"],
        "flagged_volume_ml": int(np.count_nonzero(flagged & brain)) * voxel_ml,
        "flagged_outside_brain_ml": int(np.count_nonzero(flagged & ~brain)) * voxel_ml,
        "brain_voxels": int(np.count_nonzero(brain)),
        # a clinical acquisition of a person is its own row beside the person's research scans
        "anatomy": (getattr(subject, "anatomy", None) if getattr(subject, "acquisition", "research") == "research"
                    else f"{subject.anatomy} ({subject.acquisition})"),
        "acquisition": getattr(subject, "acquisition", None),
        "skull": getattr(subject, "skull", None),
        "orientation": getattr(subject, "orientation", None),
        "spacing": list(getattr(subject, "spacing", case.image.GetSpacing())),
    }, result["curves"]


def _figure_views(case: BenchmarkCase, anomaly_map: sitk.Image, mask: sitk.Image) -> Dict[str, Any]:
    """The axial slice through the lesion's centre of mass, as small plain arrays (lists)."""
    views, index = axial_slices(case.image, anomaly_map, mask, case.truth)
    entry: Dict[str, Any] = {"case": case.name, "kind": case.kind, "slice_index": index,
                             "aspect": views["aspect"]}
    for key in ("image", "anomaly_map", "truth", "mask"):
        entry[key] = np.asarray(views[key], dtype=np.float32 if key in ("image", "anomaly_map") else np.uint8).tolist()
    return entry


# -------------------------------------------------------------------------------------- summaries


def _mean(values: Iterable[Any]) -> float:
    """Mean of the defined values (None and NaN left out); NaN when none is defined."""
    return mean_median(list(values))[0]


def _groups(rows: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    """Rows by ``(model, score)``, in the order they first appear."""
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["score"]), []).append(row)
    return groups


def _sample_auroc(lesion: Sequence[Dict[str, Any]], normal: Sequence[Dict[str, Any]]) -> float:
    """Sample-level AUROC of lesion against normal cases (NaN without both)."""
    pairs = [(r["sample_score"], 1) for r in lesion] + [(r["sample_score"], 0) for r in normal]
    pairs = [(s, y) for s, y in pairs if s is not None and math.isfinite(s)]
    if not pairs:
        return math.nan
    return metrics.sample_auroc([s for s, _ in pairs], [y for _, y in pairs])


def _lesion_means(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    return {key: _mean(r[key] for r in rows) for key in LESION_METRICS}


def summarise_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per model x score: voxel metrics averaged over lesion cases (undefined on normal
    ones), sample-level AUROC, the false-positive rate averaged over normal cases (what a user
    sees on a healthy scan) and the mean seconds per case over all cases."""
    summary = []
    for (model, score), group in _groups(rows).items():
        lesion = [r for r in group if r["kind"] != NORMAL]
        normal = [r for r in group if r["kind"] == NORMAL]
        summary.append({
            "model": model, "score": score, "n_lesion": len(lesion), "n_normal": len(normal),
            **_lesion_means(lesion),
            "sample_auroc": _sample_auroc(lesion, normal),
            "fp_rate": _mean(r["fp_rate"] for r in normal),
            "fp_rate_all": _mean(r["fp_rate"] for r in group),
            "seconds": _mean(r["seconds"] for r in group),
            "calibrated": all(r["calibrated"] for r in group),
        })
    return summary


def summarise_by_type(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per model x score x lesion type, with the sample AUROC of that type against the
    normal cases: which kinds of anomaly a score finds, and which it misses."""
    result = []
    for (model, score), group in _groups(rows).items():
        normal = [r for r in group if r["kind"] == NORMAL]
        kinds = list(dict.fromkeys(r["kind"] for r in group if r["kind"] != NORMAL))
        for kind in kinds:
            of_kind = [r for r in group if r["kind"] == kind]
            result.append({"model": model, "score": score, "lesion_type": kind, "n": len(of_kind),
                           **_lesion_means(of_kind), "sample_auroc": _sample_auroc(of_kind, normal),
                           "fp_rate": _mean(r["fp_rate"] for r in of_kind)})
    return result


def summarise_by_anatomy(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per model x score x anatomy (the template or held-out person a case is made from): the
    false-positive rate on its normal cases, mean and worst, and the lesion metrics on its lesion
    cases. Calibration that holds on new people must hold for each of them, not only on average."""
    result = []
    for (model, score), group in _groups(rows).items():
        for anatomy in dict.fromkeys(r["anatomy"] for r in group):
            mine = [r for r in group if r["anatomy"] == anatomy]
            normal = [r["fp_rate"] for r in mine if r["kind"] == NORMAL]
            defined = [v for v in normal if v is not None and math.isfinite(v)]
            result.append({"model": model, "score": score, "anatomy": anatomy, "n_normal": len(normal),
                           "n_lesion": len(mine) - len(normal), "fp_rate": _mean(normal),
                           "fp_rate_max": max(defined) if defined else math.nan,
                           **_lesion_means([r for r in mine if r["kind"] != NORMAL])})
    return result


def _target_fp_rate(model: Model) -> Optional[float]:
    """The voxel false-positive rate the first model's calibration aims at (1 - percentile / 100)."""
    percentile = (model.card.get("calibration") or {}).get("percentile")
    return None if percentile is None else round(1.0 - float(percentile) / 100.0, 6)


def check_targets(
    summary: Sequence[Dict[str, Any]],
    by_type: Sequence[Dict[str, Any]],
    focus: Tuple[str, str],
    by_anatomy: Sequence[Dict[str, Any]] = (),
    targets: Sequence[Target] = TARGETS,
) -> List[Dict[str, Any]]:
    """Each of ``targets`` for the ``(model, score)`` in ``focus``: value, met (None when not
    measured, e.g. no case of that lesion type) and margin (positive: met with that much to spare)."""
    values = _target_values(summary, by_type, focus, by_anatomy)
    checked = []
    for target in targets:
        value = values.get(target.key)
        defined = value is not None and math.isfinite(value)
        margin = None
        if defined:
            margin = value - target.threshold if target.comparison == ">=" else target.threshold - value
        checked.append({
            "target": target.key, "description": target.description, "model": focus[0], "score": focus[1],
            "comparison": target.comparison, "threshold": target.threshold,
            "value": value if defined else None, "met": (margin >= 0) if margin is not None else None,
            "margin": margin,
        })
    return checked


def _target_values(
    summary: Sequence[Dict[str, Any]],
    by_type: Sequence[Dict[str, Any]],
    focus: Tuple[str, str],
    by_anatomy: Sequence[Dict[str, Any]],
) -> Dict[str, Optional[float]]:
    """What each target key measures, for ``focus``; a value is None where no case measures it."""
    overall = next((r for r in summary if (r["model"], r["score"]) == focus), {})
    mine = {r["lesion_type"]: r for r in by_type if (r["model"], r["score"]) == focus}
    values: Dict[str, Optional[float]] = {
        "voxel_auroc": overall.get("voxel_auroc"),
        "voxel_auprc": overall.get("voxel_auprc"),
        "sample_auroc": overall.get("sample_auroc"),
        "normal_fp_rate": overall.get("fp_rate"),
    }
    for kind in ("hyper_blob", "copied_patch"):
        values[f"{kind}_voxel_auroc"] = mine.get(kind, {}).get("voxel_auroc")
    values["hyper_blob_voxel_auprc"] = mine.get("hyper_blob", {}).get("voxel_auprc")
    values["worst_person_fp_rate"] = worst_fp_rate(by_anatomy, focus)
    # The intensity yardstick runs once per model space, under the first model of that space.
    yardstick = {r["lesion_type"]: r for r in by_type if r["model"] == focus[0] and r["score"] == "intensity"}
    gaps = [mine[kind]["voxel_auprc"] - yardstick[kind]["voxel_auprc"] for kind in mine
            if kind in yardstick and finite(mine[kind]["voxel_auprc"]) and finite(yardstick[kind]["voxel_auprc"])]
    values["auprc_over_intensity"] = min(gaps) if gaps and focus[1] != "intensity" else None
    return values


# ------------------------------------------------------------------------------------------ machine


def machine_info(device: Union[str, torch.device, None] = None) -> Dict[str, Any]:
    """Facts about the machine the numbers were measured on (timings mean little without them)."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    device = torch.device(device) if device is not None else None
    gpu = None
    if device is not None and device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    return {
        "cpu": cpu, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "device": None if device is None else str(device), "gpu": gpu,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "engine_version": __version__,
    }


def _describe_model(model: Model, model_scores: Sequence[str]) -> Dict[str, Any]:
    card = model.card
    return {"name": model.name, "path": str(model.path) if model.path else None, "arch": card.get("arch"),
            "default_score": card.get("default_score"), "scores": list(model_scores),
            "thresholds": model.thresholds, "postprocessing": postprocessing_settings(card),
            "template": card.get("template")}


# -------------------------------------------------------------------------------------- formatting


def _number(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value) * scale:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def format_target(target: Mapping[str, Any]) -> str:
    """One line: ``- <description> >= 0.95: 0.973 (met, margin +0.023)``."""
    head = f"- {target['description']} {target['comparison']} {target['threshold']:g}: "
    if target["met"] is None:
        return head + "not measured (no such case)"
    status = "met" if target["met"] else "MISSED"
    return head + f"{target['value']:.4f} ({status}, margin {target['margin']:+.4f})"


def format_table(report: Mapping[str, Any]) -> str:
    """The benchmark as Markdown: the model x score table, the per-type table and the targets."""
    counts = report.get("case_counts", {})
    described = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines = [f"{report.get('benchmark', 'Lesion benchmark')}: {report.get('n_cases', '?')} cases ({described}); "
             "metrics inside each case's "
             "true brain mask; Dice and FP rate at the calibrated threshold.", ""]
    uncalibrated = False
    rows = []
    for r in report["summary"]:
        mark = "" if r["calibrated"] else " *"
        uncalibrated = uncalibrated or not r["calibrated"]
        rows.append([r["model"], r["score"] + mark, _number(r["voxel_auroc"]), _number(r["voxel_auprc"]),
                     _number(r["dice"]), _number(r["best_dice"]), _number(r["sample_auroc"]),
                     _number(r["fp_rate"], 2, 100.0), _number(r["seconds"], 2)])
    lines += _table(["model", "score", "voxel AUROC", "AUPRC", "Dice@thr", "best Dice", "sample AUROC",
                     "FP rate %", "s/case"], rows)
    if uncalibrated:
        lines += ["", f"\\* no calibrated threshold: the {UNCALIBRATED_PERCENTILE}th percentile of each volume's "
                      "foreground scores was used"]
    if report.get("by_type"):
        lines += ["", "By lesion type (sample AUROC: that type against the normal cases):", ""]
        lines += _table(
            ["model", "score", "lesion type", "n", "voxel AUROC", "AUPRC", "Dice@thr", "best Dice", "sample AUROC"],
            [[r["model"], r["score"], r["lesion_type"], str(r["n"]), _number(r["voxel_auroc"]),
              _number(r["voxel_auprc"]), _number(r["dice"]), _number(r["best_dice"]), _number(r["sample_auroc"])]
             for r in report["by_type"]])
    if report.get("by_anatomy") and len({r["anatomy"] for r in report["by_anatomy"]}) > 1:
        target = report.get("target_fp_rate")
        aim = f" (calibrated for {100 * target:.2g} %)" if target is not None else ""
        lines += ["", f"By anatomy: false positives on each template's or person's normal cases{aim}, mean and worst "
                      "case, and the lesion cases' metrics:", ""]
        lines += _table(
            ["model", "score", "anatomy", "normal cases", "FP rate %", "worst FP rate %", "lesion cases",
             "voxel AUROC", "AUPRC"],
            [[r["model"], r["score"], str(r["anatomy"]), str(r["n_normal"]), _number(r["fp_rate"], 2, 100.0),
              _number(r["fp_rate_max"], 2, 100.0), str(r["n_lesion"]), _number(r["voxel_auroc"]),
              _number(r["voxel_auprc"])] for r in report["by_anatomy"]])
    targets = report.get("targets", [])
    if targets:
        default = report.get("default", {})
        lines += ["", f"Targets ({default.get('model')}, {default.get('score')}):"]
        lines += [format_target(t) for t in targets]
    if report.get("choice"):
        lines += [""] + format_choice(report["choice"])
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- writing


def write_benchmark(report: Mapping[str, Any], output_dir: Union[str, os.PathLike[str]]) -> Dict[str, Path]:
    """Write the benchmark's files into ``output_dir``, each atomically; returns them by kind.

    ``benchmark.json`` (everything but the figure's pixels), ``benchmark.csv`` (summary rows),
    ``benchmark_cases.csv`` (case x model x score), ``benchmark_by_type.csv``, ``benchmark.md``
    (:func:`format_table`), ``benchmark.png`` (when the report has lesion cases to show) and
    ``benchmark_curves.png`` (each model and score's ROC, precision-recall and Dice-vs-threshold
    curves averaged over the lesion cases, the calibrated threshold marked).
    """
    folder = Path(output_dir)
    plain = plain_json(dict(report))
    figure = plain.pop("figure", []) or []
    plain["figure_cases"] = [{k: entry[k] for k in ("case", "kind", "slice_index")} for entry in figure]
    paths = {"json": folder / "benchmark.json", "csv": folder / "benchmark.csv",
             "cases_csv": folder / "benchmark_cases.csv", "by_type_csv": folder / "benchmark_by_type.csv",
             "by_anatomy_csv": folder / "benchmark_by_anatomy.csv", "markdown": folder / "benchmark.md"}
    write_text_atomic(json.dumps(plain, indent=2, allow_nan=False) + "\n", paths["json"])
    write_text_atomic(csv_text(plain["summary"]), paths["csv"])
    write_text_atomic(csv_text(plain["cases"]), paths["cases_csv"])
    write_text_atomic(csv_text(plain.get("by_type", [])), paths["by_type_csv"])
    write_text_atomic(csv_text(plain.get("by_anatomy", [])), paths["by_anatomy_csv"])
    write_text_atomic(format_table(plain), paths["markdown"])
    if figure:
        default = plain.get("default", {})
        rows = [(f"{e['kind']}\n{e['case']}\nslice {e['slice_index']}",
                 {**{k: np.asarray(e[k]) for k in ("image", "anomaly_map", "truth", "mask")}, "aspect": e["aspect"]})
                for e in figure]
        paths["figure"] = cases_figure(rows, folder / "benchmark.png",
                                       title=f"{default.get('model')}, {default.get('score')}")
    if plain.get("curves"):
        paths["curves"] = _curves_figure(plain, folder / "benchmark_curves.png")
    return paths


def _curves_figure(report: Mapping[str, Any], path: Path) -> Path:
    """The mean curves, labelled with the summary's exact means (not the averaged curves' areas)."""
    summary = {f"{row['model']} {row['score']}": row for row in report["summary"]}
    calibrated = {f"{row['model']} {row['score']}": row["threshold"] for row in report["cases"]
                  if row.get("calibrated")}
    curves, thresholds = {}, {}
    for key, curve in report["curves"].items():
        row = summary.get(key, {})
        label = f"{key} (AUROC {_number(row.get('voxel_auroc'))}, AUPRC {_number(row.get('voxel_auprc'))})"
        curves[label] = curve
        thresholds[label] = calibrated.get(key)
    lesion_cases = sum(n for kind, n in report.get("case_counts", {}).items() if kind != NORMAL)
    return curves_figure(curves, path, thresholds, annotate=False,
                         title=f"Mean over {lesion_cases} lesion cases (inside the true brain)")


def balanced_subset(specs: Sequence[Any], limit: Optional[int]) -> List[Any]:
    """At most ``limit`` case specs taken in turn from each kind (lesion type or normal), in order.

    A quick run with ``--limit`` then still has every kind and normal cases, so its sample AUROC
    and false-positive rate mean something; the first ``limit`` specs could all be one type.
    """
    specs = list(specs)
    if limit is None or limit >= len(specs):
        return specs
    queues: Dict[str, List[Any]] = {}
    for spec in specs:
        queues.setdefault(getattr(spec, "lesion", None) or NORMAL, []).append(spec)
    chosen: List[Any] = []
    while len(chosen) < limit:
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    order = {id(spec): i for i, spec in enumerate(specs)}
    return sorted(chosen, key=lambda spec: order[id(spec)])
