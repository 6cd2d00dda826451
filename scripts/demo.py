"""The README's demo: the bundled brain models on the shipped sample scan, with metrics and pictures.

The sample (``AnomalyDetection/Resources/Samples/brain_t1_tumour.nrrd``, made by
``scripts/make_sample.py``) is a T1 brain with skull, in its own head pose, voxel order and voxel
size, with a tumour-like lesion whose ground truth ships beside it. This runs exactly what a user
runs on their own scan, ``detect`` with a bundled model, for every bundled model and each of its
scores (the input is registered to the template once and the registration reused), then scores
the maps against the truth. Outputs per model and score: ``<stem>_anomaly.nii.gz``,
``<stem>_mask.nii.gz``, ``<stem>_foreground.nii.gz`` and ``<stem>_report.json`` (as ``anomaly-detection
detect`` writes them),
a metrics JSON and an overview PNG; and one ``curves.png`` with the ROC, precision-recall and
Dice-against-threshold curves of every model and score, their calibrated thresholds marked.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from AnomalyDetectionLib import Detector, evaluate, load_model, write_detection
from AnomalyDetectionLib.catalog import bundled_model_names, sample_paths
from AnomalyDetectionLib.cli import TqdmProgress
from AnomalyDetectionLib.evaluation import write_report
from AnomalyDetectionLib.evaluation.figures import curves_figure, overview_figure
from AnomalyDetectionLib.preprocessing import read_volume
from AnomalyDetectionLib.scoring import scores_for

SAMPLE_SCAN, SAMPLE_TRUTH = sample_paths()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--input", type=Path, default=SAMPLE_SCAN)
    parser.add_argument("--truth", type=Path, default=SAMPLE_TRUTH)
    parser.add_argument("--model", nargs="+", default=None,
                        help="model names or files (default: every bundled model, the default one first)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    scan = read_volume(args.input)
    truth = read_volume(args.truth, allow_constant=True)
    names = args.model or bundled_model_names()
    print(f"input {args.input.name}: {scan.GetSize()} voxels of {tuple(round(s, 2) for s in scan.GetSpacing())} mm")

    rows = []
    curves: dict = {}  # "model score" -> ROC / PR / Dice curves, drawn together at the end
    thresholds: dict = {}
    prepared = None  # every bundled model shares one template: register once
    for name in names:
        model = load_model(name)
        for score in scores_for(model):
            if score == "intensity" and model.name != names[0]:  # no network: the first model's row is the yardstick
                continue
            detector = Detector(model, score=score, device=args.device)
            stem = f"{args.input.name.split('.')[0]}_{model.name}_{score}"
            bar = TqdmProgress(f"{model.name} {score}")
            try:
                result = detector.detect(scan, name=args.input.name, progress=bar, reuse=prepared)
            finally:
                bar.close()
            prepared = result.prepared
            write_detection(args.output_dir / "maps", stem, result)
            overview_figure(scan, result.anomaly_map, result.mask, truth, args.output_dir / f"{stem}.png",
                            title=f"{args.input.name}: {model.name}, {score}")
            metrics = evaluate([result.anomaly_map], [truth], [result.foreground],
                               thresholds=[result.report["threshold"]], names=[stem], curves=True)
            curves[f"{model.name} {score}"] = metrics.pop("curves")[stem]
            thresholds[f"{model.name} {score}"] = result.report["threshold"]
            write_report(metrics, args.output_dir / "metrics" / f"{stem}.json")
            rows.append((model.name, score, metrics["cases"][0], result.report))
    curves_png = curves_figure(curves, args.output_dir / "curves.png", thresholds,
                               title=f"{args.input.name}: every bundled model and score")

    print()
    print("| model | score | voxel AUROC | AUPRC | Dice at calibrated threshold | best Dice | seconds |")
    print("|---|---|---|---|---|---|---|")
    for model_name, score, case, report in rows:
        print(f"| {model_name} | {score} | {case['voxel_auroc']:.3f} | {case['voxel_auprc']:.3f} | "
              f"{case['dice']:.3f} | {case['best_dice']:.3f} | {report['timings']['total_s']:.1f} |")
    first = rows[0][3]
    if first.get("registration"):
        print(f"\nregistration to {first['template']['name']}: metric {first['registration']['metric']:.3f}, "
              f"brain overlap {first['registration']['brain_overlap']:.2f}, warnings: {first['warnings'] or 'none'}")
    print(f"outputs in {args.output_dir}/ (overview PNGs: {args.output_dir}/<input>_<model>_<score>.png, "
          f"curves: {curves_png}); "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
