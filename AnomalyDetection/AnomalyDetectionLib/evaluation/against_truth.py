"""Evaluation of anomaly maps against ground truth: per case, over a data set, and to JSON/CSV.

This is the engine behind ``anomaly-detection evaluate --maps DIR --truth DIR [--mask DIR]``: it
pairs the maps written by ``detect`` with truth (and mask) files by case name, computes the voxel
and sample metrics of :mod:`.metrics`, and writes a report a spreadsheet can open.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..preprocessing.io import (
    IMAGE_EXTENSIONS,
    MAP_SUFFIX,
    MASK_SUFFIX,
    case_stem,
    read_volume,
    validate_volume,
    write_text_atomic,
)
from ..progress import Progress
from . import metrics

__all__ = [
    "csv_text", "evaluate", "evaluate_case", "match_files", "pair_cases", "report_number", "summarise", "write_report",
]

ImageOrPath = Union[sitk.Image, str, Path]

#: Relative tolerance on spacing, origin and direction when checking that two images share a grid.
GRID_TOLERANCE = 1e-4
#: Metrics averaged over the lesion cases in the summary.
SUMMARY_METRICS = (
    "voxel_auroc", "voxel_auprc", "dice", "best_dice", "lesion_volume_ml", "detected_volume_ml",
)


# ----------------------------------------------------------------------------------------- reading


def _load(item: ImageOrPath, name: str, label: bool) -> sitk.Image:
    """An image given in memory or as a path; labels (truth, mask) may be constant."""
    if isinstance(item, sitk.Image):
        validate_volume(item, name, allow_constant=label)
        return item
    return read_volume(item, allow_constant=label)


def _describe(item: ImageOrPath, kind: str, case: str) -> str:
    """How error messages name an input: its file when there is one, else its role in the case."""
    return f"{kind} {item}" if not isinstance(item, sitk.Image) else f"{kind} of case {case!r}"


def _check_grid(reference: sitk.Image, image: sitk.Image, what: str) -> None:
    """Raise :class:`InputError` unless ``image`` lies on exactly the voxel grid of ``reference``.

    Metrics compare voxel ``i`` of the map with voxel ``i`` of the truth, so a truth on another
    grid (e.g. not resampled after cropping) would give plausible-looking but meaningless numbers.
    """
    if image.GetSize() != reference.GetSize():
        raise InputError(
            f"{what}: size {image.GetSize()} differs from the anomaly map's {reference.GetSize()}; "
            "resample it onto the map's grid"
        )
    for prop in ("Spacing", "Origin", "Direction"):
        theirs = np.asarray(getattr(image, "Get" + prop)(), dtype=np.float64)
        ours = np.asarray(getattr(reference, "Get" + prop)(), dtype=np.float64)
        scale = np.maximum(1.0, np.maximum(np.abs(theirs), np.abs(ours)))
        if np.any(np.abs(theirs - ours) > GRID_TOLERANCE * scale):
            raise InputError(
                f"{what}: {prop.lower()} {tuple(np.round(theirs, 6))} differs from the anomaly map's "
                f"{tuple(np.round(ours, 6))}; resample it onto the map's grid"
            )


# ------------------------------------------------------------------------------------------ metrics


def evaluate_case(
    anomaly_map: sitk.Image,
    truth: sitk.Image,
    mask: Optional[sitk.Image] = None,
    threshold: Optional[float] = None,
    name: str = "",
    curves: bool = False,
    sample_score: Optional[float] = None,
) -> Dict[str, Any]:
    """Metrics of one anomaly map against its truth (``> 0`` = lesion), restricted to ``mask``.

    ``sample_score``: the detection's own (its report's ``sample_score``, taken before the per-scan
    normalisation); without it, the top 1 % of the map inside the mask.

    Undefined metrics are NaN (AUROC of a normal case); metrics that need a threshold are None
    without one. ``lesion_voxels`` and ``is_abnormal`` count the whole truth, the others only the
    voxels inside the mask. ``curves`` adds ``"curves"``: :func:`.metrics.threshold_curves` (None
    for a normal case).
    """
    return _evaluate_case(anomaly_map, truth, mask, threshold, name, "truth", "mask", with_curves=curves,
                          sample_score=sample_score)


def _evaluate_case(
    anomaly_map: sitk.Image,
    truth: sitk.Image,
    mask: Optional[sitk.Image],
    threshold: Optional[float],
    name: str,
    truth_label: str,
    mask_label: str,
    with_curves: bool = False,
    sample_score: Optional[float] = None,
) -> Dict[str, Any]:
    """:func:`evaluate_case` with the names its errors give the truth and the mask; ``with_curves``
    adds ``"curves"`` (:func:`.metrics.threshold_curves`, computed here where the voxels are selected)."""
    prefix = f"{name}: " if name else ""
    _check_grid(anomaly_map, truth, prefix + truth_label)
    if mask is not None:
        _check_grid(anomaly_map, mask, prefix + mask_label)
    scores = sitk.GetArrayViewFromImage(anomaly_map)
    lesion = sitk.GetArrayViewFromImage(truth) > 0
    if mask is not None:
        inside = sitk.GetArrayViewFromImage(mask) > 0
        s, t = scores[inside], lesion[inside]  # select once; the metrics then get flat arrays
    else:
        s, t = scores.ravel(), lesion.ravel()
    voxel_ml = float(np.prod(anomaly_map.GetSpacing())) / 1000.0
    lesion_voxels = int(np.count_nonzero(lesion))
    best, best_threshold = metrics.best_dice(s, t)
    result: Dict[str, Any] = {
        "case": name,
        "voxel_auroc": metrics.voxel_auroc(s, t),
        "voxel_auprc": metrics.voxel_auprc(s, t),
        "dice": None,
        "threshold": None if threshold is None else float(threshold),
        "best_dice": best,
        "best_threshold": best_threshold,
        "sample_score": metrics.sample_score(s) if sample_score is None else float(sample_score),
        "lesion_voxels": lesion_voxels,
        "lesion_volume_ml": lesion_voxels * voxel_ml,
        "detected_volume_ml": None,
        "detected_fraction": None,
        "is_abnormal": lesion_voxels > 0,
    }
    if threshold is not None:
        detected = s >= threshold
        n_detected = int(np.count_nonzero(detected))
        result["dice"] = metrics.dice(detected, t)
        result["detected_volume_ml"] = n_detected * voxel_ml
        result["detected_fraction"] = n_detected / s.size if s.size else math.nan
    if with_curves:
        result["curves"] = metrics.threshold_curves(s, t)
    return result


def mean_median(values: Sequence[Any]) -> Tuple[float, float]:
    """Mean and median of the defined (not None, not NaN) values; NaN when there is none."""
    defined = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not defined:
        return math.nan, math.nan
    return float(np.mean(defined)), float(np.median(defined))


def summarise(cases: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Summary of per-case results: voxel metrics over lesion cases, sample AUROC, false positives.

    Voxel metrics are averaged over lesion cases only: on a normal case they are undefined (AUROC)
    or trivially perfect (Dice of two empty masks). Normal cases instead give the false-positive
    rate, the mean fraction of in-mask voxels at or above the threshold. Keys are flat
    (``voxel_auroc_mean``, ``voxel_auroc_median``...) so the summary prints and tabulates as is.
    """
    abnormal = [c for c in cases if c["is_abnormal"]]
    normal = [c for c in cases if not c["is_abnormal"]]
    summary: Dict[str, Any] = {"n_cases": len(cases), "n_abnormal": len(abnormal), "n_normal": len(normal)}
    for key in SUMMARY_METRICS:
        summary[f"{key}_mean"], summary[f"{key}_median"] = mean_median([c[key] for c in abnormal])
    summary["sample_auroc"] = metrics.sample_auroc(
        [c["sample_score"] for c in cases], [c["is_abnormal"] for c in cases]
    )
    fractions = [c["detected_fraction"] for c in normal if c["detected_fraction"] is not None]
    summary["false_positive_rate"] = float(np.mean(fractions)) if fractions else None
    return summary


def evaluate(
    maps: Sequence[ImageOrPath],
    truths: Sequence[ImageOrPath],
    masks: Optional[Sequence[Optional[ImageOrPath]]] = None,
    thresholds: Optional[Sequence[Optional[float]]] = None,
    names: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    curves: bool = False,
    sample_scores: Optional[Sequence[Optional[float]]] = None,
) -> Dict[str, Any]:
    """Evaluate a data set: ``{"cases": [one dict per case], "summary": {...}}`` (see :func:`summarise`).

    ``sample_scores``: each case's detection sample score where known (see :func:`evaluate_case`).

    Inputs are images or paths, read one case at a time so a large data set never sits in memory.
    ``curves`` adds ``"curves"``: ``{case: ROC / precision-recall / Dice-vs-threshold points}`` for
    every lesion case (:func:`.metrics.threshold_curves`), which :func:`write_report` writes as a
    CSV and a PNG.
    """
    n = len(maps)
    for what, values in (("truths", truths), ("masks", masks), ("thresholds", thresholds), ("names", names),
                         ("sample scores", sample_scores)):
        if values is not None and len(values) != n:
            raise InputError(f"{n} anomaly maps but {len(values)} {what}")
    if n == 0:
        raise InputError("no anomaly map to evaluate")
    steps = Progress(progress, cancel)
    cases: List[Dict[str, Any]] = []
    for i in range(n):
        item = maps[i]
        name = names[i] if names is not None else _default_name(item, i)
        steps.report(i / n, f"Evaluating {name} ({i + 1}/{n})")
        anomaly_map = _load(item, _describe(item, "anomaly map", name), label=False)
        truth = _load(truths[i], _describe(truths[i], "truth", name), label=True)
        mask_item = masks[i] if masks is not None else None
        mask = None if mask_item is None else _load(mask_item, _describe(mask_item, "mask", name), label=True)
        threshold = thresholds[i] if thresholds is not None else None
        cases.append(
            _evaluate_case(
                anomaly_map, truth, mask, threshold, name,
                _describe(truths[i], "truth", name),
                "mask" if mask_item is None else _describe(mask_item, "mask", name),
                with_curves=curves, sample_score=sample_scores[i] if sample_scores is not None else None,
            )
        )
    steps.report(1.0, f"Evaluated {n} case{'s' if n != 1 else ''}")
    report: Dict[str, Any] = {"cases": cases, "summary": summarise(cases)}
    if curves:
        found = {case["case"]: case.pop("curves") for case in cases}
        report["curves"] = {name: curve for name, curve in found.items() if curve is not None}
    return report


def _default_name(item: ImageOrPath, index: int) -> str:
    """Case name from a map file (``x_anomaly.nii.gz`` -> ``x``), or ``case<index>`` for an image."""
    if isinstance(item, sitk.Image):
        return f"case{index}"
    stem = case_stem(item)
    return stem[: -len(MAP_SUFFIX)] if stem.endswith(MAP_SUFFIX) and len(stem) > len(MAP_SUFFIX) else stem


# ---------------------------------------------------------------------------------- pairing files


def _image_files(folder: Path) -> List[Path]:
    """Image files of ``folder`` (recognised extension), sorted, hidden/temporary files skipped."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _match(stems: Sequence[str], folder: Path, kind: str, required: bool,
           skip_suffixes: Sequence[str] = (MAP_SUFFIX,)) -> Dict[str, Optional[Path]]:
    """For each case stem, the file of ``folder`` named ``<stem>`` or ``<stem>_*``.

    A file goes to the *longest* stem it matches, so case ``a`` does not claim ``a_1_seg`` when a
    case ``a_1`` exists. Files whose stem ends with one of ``skip_suffixes`` are never candidates:
    anomaly maps always, and in ``detect``'s own output folder also its thresholded masks, so that
    ``--mask`` naming the maps folder takes the ``<stem>_foreground`` written there, not the
    anomaly mask (scoring inside the detection would make AUROC meaningless).
    """
    claimed: Dict[str, List[Path]] = {stem: [] for stem in stems}
    for path in _image_files(folder):
        name = case_stem(path)
        if name.endswith(tuple(skip_suffixes)):
            continue
        matching = [s for s in stems if name == s or name.startswith(s + "_")]
        if matching:
            claimed[max(matching, key=len)].append(path)
    found: Dict[str, Optional[Path]] = {}
    for stem, paths in claimed.items():
        exact = [p for p in paths if case_stem(p) == stem]
        paths = exact or paths
        if len(paths) > 1:
            listed = ", ".join(p.name for p in paths)
            raise InputError(f"{folder}: several {kind} files match case {stem!r} ({listed}); keep one")
        if not paths and required:
            raise InputError(f"{folder}: no {kind} file for anomaly map {stem}{MAP_SUFFIX} "
                             f"(looked for {stem} or {stem}_*)")
        found[stem] = paths[0] if paths else None
    return found


def match_files(
    stems: Sequence[str], folder: Union[str, Path], kind: str = "truth", required: bool = False
) -> Dict[str, Optional[Path]]:
    """For each case stem, the file of ``folder`` named ``<stem>`` or ``<stem>_*`` (None if there is
    none and not ``required``); the pairing rule of :func:`pair_cases`, for callers (batch detection
    in Slicer) that have case names rather than a folder of maps."""
    return _match(stems, Path(folder), kind, required)


def report_number(maps_dir: Union[str, Path], stem: str, key: str) -> Optional[float]:
    """The number ``key`` (``threshold``, ``sample_score``) that ``detect`` wrote into
    ``<stem>_report.json`` in ``maps_dir``, if there is such a report and value."""
    report_path = Path(maps_dir) / f"{stem}_report.json"
    if not report_path.is_file():
        return None
    try:
        value = json.loads(report_path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{report_path}: not a readable detection report ({exc})") from None
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{report_path}: {key} {value!r} is not a number") from None


def pair_cases(
    maps_dir: Union[str, Path],
    truth_dir: Union[str, Path],
    mask_dir: Optional[Union[str, Path]] = None,
) -> List[Tuple[str, Path, Path, Optional[Path], Optional[float]]]:
    """Pair the ``<stem>_anomaly`` maps of ``maps_dir`` with their truth (and mask) files.

    Returns ``(stem, map, truth, mask or None, threshold or None)`` per case, sorted by stem; the
    threshold comes from ``<stem>_report.json`` beside the map. A map without a truth file (or
    without a mask when ``mask_dir`` is given) raises :class:`InputError` naming it. ``mask_dir``
    may be ``maps_dir``: the mask is then the ``<stem>_foreground`` that ``detect`` wrote.
    """
    maps_dir, truth_dir = Path(maps_dir), Path(truth_dir)
    maps: Dict[str, Path] = {}
    for path in _image_files(maps_dir):
        stem = case_stem(path)
        if stem.endswith(MAP_SUFFIX) and len(stem) > len(MAP_SUFFIX):
            maps[stem[: -len(MAP_SUFFIX)]] = path
    if not maps:
        raise InputError(f"{maps_dir}: no anomaly maps (<case>{MAP_SUFFIX}.nii.gz files written by detect)")
    stems = sorted(maps)
    detect_outputs = (MAP_SUFFIX, MASK_SUFFIX)  # in the maps folder, detect's anomaly masks are not inputs

    def skipped(folder: Path) -> Sequence[str]:
        return detect_outputs if folder.resolve() == maps_dir.resolve() else (MAP_SUFFIX,)

    truth = _match(stems, truth_dir, "truth", required=True, skip_suffixes=skipped(truth_dir))
    mask: Dict[str, Optional[Path]] = {}
    if mask_dir is not None:
        mask = _match(stems, Path(mask_dir), "mask", required=True, skip_suffixes=skipped(Path(mask_dir)))
    pairs: List[Tuple[str, Path, Path, Optional[Path], Optional[float]]] = []
    for stem in stems:
        threshold = report_number(maps_dir, stem, "threshold")
        truth_path = truth[stem]
        assert truth_path is not None  # required=True
        pairs.append((stem, maps[stem], truth_path, mask.get(stem), threshold))
    return pairs


# ------------------------------------------------------------------------------------------ writing


def plain_json(value: Any) -> Any:
    """``value`` with numpy scalars made Python and NaN/Inf made None, so JSON holds no NaN token."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(report: Dict[str, Any], json_path: Union[str, Path]) -> Dict[str, Path]:
    """Write ``report`` as JSON (NaN as null) and its cases as CSV beside it (same stem); all atomic.

    A report with ``"curves"`` (``evaluate(..., curves=True)``) also gets ``<stem>_curves.csv`` (one
    row per case and threshold) and ``<stem>_curves.png`` (ROC, precision-recall and Dice against
    threshold, the calibrated threshold marked); the JSON keeps only cases and summary. Returns the
    paths written: ``json``, ``csv`` and, with curves, ``curves_csv`` and ``curves_png``.
    """
    json_path = Path(json_path)
    curves = report.get("curves")
    plain = plain_json({key: value for key, value in report.items() if key != "curves"})
    write_text_atomic(json.dumps(plain, indent=2, allow_nan=False) + "\n", json_path)
    stem = _strip_json(json_path.name)
    paths = {"json": json_path, "csv": json_path.with_name(stem + ".csv")}
    write_text_atomic(csv_text(plain.get("cases", [])), paths["csv"])
    if curves:
        from .figures import curves_figure

        paths["curves_csv"] = json_path.with_name(stem + "_curves.csv")
        write_text_atomic(csv_text(_curve_rows(curves)), paths["curves_csv"])
        thresholds = {case["case"]: case.get("threshold") for case in report.get("cases", [])}
        paths["curves_png"] = curves_figure(curves, json_path.with_name(stem + "_curves.png"), thresholds)
    return paths


def _curve_rows(curves: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Long format for a spreadsheet: one row per case and threshold."""
    rows: List[Dict[str, Any]] = []
    for case, curve in curves.items():
        columns = list(curve)
        for values in zip(*(np.asarray(curve[key], dtype=np.float64) for key in columns)):
            rows.append({"case": case, **{key: float(value) for key, value in zip(columns, values)}})
    return rows


def csv_text(rows: Sequence[Dict[str, Any]]) -> str:
    """CSV of flat dicts: the union of their keys as columns (first-seen order), empty cells for
    None/NaN, lists joined with ``;`` so one row stays one line a spreadsheet can filter."""
    rows = [plain_json(row) for row in rows]
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value


def _strip_json(name: str) -> str:
    """``report.json`` -> ``report`` (any other name is kept whole, so the CSV never overwrites it)."""
    return name[: -len(".json")] if name.lower().endswith(".json") else name
