"""Which per-scan number says best "this scan is abnormal"? A study on the validation set, reported on held-out.

Why: since the maps are normalised per scan, the sample score (mean of the top 1 % of a scan's brain
scores) separates lesion scans from normal ones barely better than chance (sample AUROC 0.53-0.65
on the validation set). This script computes candidate definitions from one detection per case and
score, so the engine's definition is chosen on the validation set (``--cases validation``) and then
measured, unchanged, on the held-out heads (``--cases held_out``):

* ``top1_normalised``: mean of the top 1 % of the normalised map (the engine's definition before);
* ``top01_normalised``: the same over the top 0.1 %;
* ``top1_raw`` / ``top01_raw``: the same on the map before the per-scan normalisation;
* ``flagged_fraction``: the share of the brain that the calibrated mask flags;
* ``largest_component_ml``: the volume of the mask's largest connected component.

Every number is taken inside each case's true brain mask, as the benchmark does. Output: a
Markdown table (sample AUROC per definition, model and score) and the per-case CSV.

    .venv/bin/python scripts/sample_score_study.py --cases validation --output-dir reports/sample_score
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from AnomalyDetectionLib import Detector
from AnomalyDetectionLib.evaluation.metrics import sample_auroc
from AnomalyDetectionLib.postprocessing import sample_score
from AnomalyDetectionResearch.data.benchmark_cases import (
    held_out_case_specs,
    iter_benchmark_cases,
    validation_case_specs,
)

SCORES = {"brain_t1_vae": ("reconstruction", "elbo_grad", "combi"), "brain_t1_ae": ("reconstruction",)}
CASE_SETS: Dict[str, Callable[[], List[Any]]] = {"validation": validation_case_specs, "held_out": held_out_case_specs}


def definitions(raw: np.ndarray, normalised: np.ndarray, flagged: sitk.Image, brain: np.ndarray,
                voxel_ml: float) -> Dict[str, float]:
    """Every candidate sample score of one case (``raw`` / ``normalised``: map values in the brain)."""
    inside = sitk.GetArrayViewFromImage(flagged)[brain] > 0
    components = sitk.RelabelComponent(sitk.ConnectedComponent(flagged))
    labels = sitk.GetArrayViewFromImage(components)[brain]
    largest = int(np.count_nonzero(labels == 1)) if labels.size else 0
    return {
        "top1_normalised": sample_score(normalised, top_fraction=0.01),
        "top01_normalised": sample_score(normalised, top_fraction=0.001),
        "top1_raw": sample_score(raw, top_fraction=0.01),
        "top01_raw": sample_score(raw, top_fraction=0.001),
        "flagged_fraction": float(np.mean(inside)) if inside.size else float("nan"),
        "largest_component_ml": largest * voxel_ml,
    }


def run(case_set: str) -> List[Dict[str, Any]]:
    """One row per case, model and score, with every definition's value."""
    detectors = {(model, score): Detector(model, score=score, device="cpu", postprocessing={"normalisation": "none"})
                 for model, scores in SCORES.items() for score in scores}
    specs = CASE_SETS[case_set]()
    rows: List[Dict[str, Any]] = []
    for case in tqdm(iter_benchmark_cases(specs), total=len(specs), desc=case_set, file=sys.stderr):
        brain = sitk.GetArrayViewFromImage(case.brain) > 0
        voxel_ml = float(np.prod(case.image.GetSpacing())) / 1000.0
        prepared = None
        for (model, score), raw_detector in detectors.items():
            result = raw_detector.detect(case.image, name=case.name, reuse=prepared)
            prepared = result.prepared  # the next detection reuses it, or borrows its registration
            shipped = raw_detector.with_settings(postprocessing=dict(raw_detector.model.card["postprocessing"]))
            normalised = shipped.normalised(result.anomaly_map, result.foreground)
            threshold, _, _ = shipped.choose_threshold(normalised, result.foreground)
            flagged = shipped.mask(normalised, result.foreground, threshold)
            values = definitions(sitk.GetArrayViewFromImage(result.anomaly_map)[brain],
                                 sitk.GetArrayViewFromImage(normalised)[brain], flagged, brain, voxel_ml)
            rows.append({"case": case.name, "kind": case.kind, "anatomy": case.spec.subject.anatomy,
                         "model": model, "score": score, **values})
    return rows


def table(rows: Sequence[Dict[str, Any]], names: Sequence[str]) -> List[str]:
    """Markdown: sample AUROC (lesion vs normal cases) per model, score and definition."""
    lines = ["| model | score | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    keys = list(dict.fromkeys((r["model"], r["score"]) for r in rows))
    means = {name: [] for name in names}
    for key in keys:
        mine = [r for r in rows if (r["model"], r["score"]) == key]
        labels = [r["kind"] != "normal" for r in mine]
        cells = []
        for name in names:
            value = sample_auroc([r[name] for r in mine], labels)
            means[name].append(value)
            cells.append(f"{value:.3f}")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{np.mean(means[n]):.3f}**" for n in names) + " |")
    return lines


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=tuple(CASE_SETS), default="validation")
    parser.add_argument("--output-dir", type=Path, default=Path("sample-score-study"))
    args = parser.parse_args(argv)
    rows = run(args.cases)
    names = [k for k in rows[0] if k not in ("case", "kind", "anatomy", "model", "score")]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with open(args.output_dir / f"{args.cases}_cases.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    n_cases = len({r["case"] for r in rows})
    lines = [f"Sample AUROC (lesion vs normal scans), {args.cases} set, {n_cases} cases:", ""]
    lines += table(rows, names)
    (args.output_dir / f"{args.cases}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
