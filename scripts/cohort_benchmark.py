"""Cohort throughput: ``detect`` one scan after another against ``detect --cluster local:N``.

Generates a cohort of ``--scans`` distinct scans from the shipped sample (each moved by its own
seeded rigid transform of up to 8 degrees and 10 mm, with a little noise, so every registration
does real work; ``p000.nrrd``, ... in one folder), then times the whole command for each mode in
one run of this script and prints scans per second, the ratio to the first mode and, from the
per-scan reports, the mean seconds of each stage (reading, registration, the rest of the
preparation, scoring, post-processing). Every mode writes into a fresh folder and starts its own
Ray, so Ray's start-up is part of its time, as for a user.

Usage: ``.venv/bin/python scripts/cohort_benchmark.py [--scans 8] [--modes sequential local:1 local:2]
[--device cpu|cuda]``; on a GPU machine ``--scans 200 --device cuda --modes sequential local:1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from AnomalyDetectionLib.catalog import sample_paths

STAGES = ("read_s", "register_s", "prepare_rest_s", "score_s", "postprocess_s")


def generate(sample: Path, folder: Path, count: int) -> None:
    """``count`` scans: the sample under seeded rigid moves on its own grid, plus 1 % noise."""
    image = sitk.ReadImage(str(sample), sitk.sitkFloat32)
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])
    peak = float(sitk.GetArrayViewFromImage(image).max())
    for index in range(count):
        rng = np.random.default_rng(index)
        move = sitk.Euler3DTransform()
        move.SetCenter(centre)
        move.SetRotation(*np.deg2rad(rng.uniform(-8, 8, 3)))
        move.SetTranslation(rng.uniform(-10, 10, 3).tolist())
        moved = sitk.Resample(image, image, move, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        array = sitk.GetArrayFromImage(moved)
        array += rng.normal(0.0, 0.01 * peak, array.shape).astype(np.float32)
        out = sitk.GetImageFromArray(np.clip(array, 0, None).astype(np.int16))
        out.CopyInformation(image)
        sitk.WriteImage(out, str(folder / f"p{index:03d}.nrrd"), True)


def stage_means(out: Path) -> Dict[str, float]:
    """Mean seconds per stage over the run's reports."""
    timings = [json.loads(Path(case["report"]).read_text())["timings"]
               for case in json.loads((out / "anomaly_detection_run.json").read_text())["cases"] if case["report"]]
    for t in timings:
        t["prepare_rest_s"] = t["prepare_s"] - t.get("read_s", 0.0) - t["register_s"]
    return {key: statistics.mean(t.get(key, 0.0) for t in timings) for key in STAGES}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["sequential", "local:1", "local:2"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    scan, _ = sample_paths()
    with tempfile.TemporaryDirectory(prefix="ad-cohort-") as folder:
        cohort = Path(folder) / "cohort"
        cohort.mkdir()
        generate(scan, cohort, args.scans)
        rows = []
        for mode in args.modes:
            out = Path(folder) / f"out_{mode.replace(':', '_')}"
            command = [sys.executable, "-m", "AnomalyDetectionLib.cli", "detect", str(cohort), "-o", str(out),
                       "--device", args.device, "-q"] + ([] if mode == "sequential" else ["--cluster", mode])
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            rows.append((mode, time.perf_counter() - started, stage_means(out)))
            print(f"  {mode}: {rows[-1][1]:.1f} s", file=sys.stderr)
    base = rows[0][1]
    title = f"mode ({args.scans} generated scans, default model, {args.device})"
    names = ["reading", "registration", "rest of preparation", "scoring", "post-processing"]
    print(f"| {title} | seconds | scans/s | vs {rows[0][0]} | " + " | ".join(f"{n} s/scan" for n in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for mode, seconds, stages in rows:
        print(f"| {mode} | {seconds:.1f} | {args.scans / seconds:.3f} | {base / seconds:.2f}x | "
              + " | ".join(f"{stages[key]:.2f}" for key in STAGES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
