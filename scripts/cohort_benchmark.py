"""Cohort throughput: ``detect`` one scan after another against ``detect --cluster local:N``.

Makes a cohort of ``--scans`` copies of the shipped sample (``p000.nrrd``, ... in one folder),
then times the whole command for each mode in one run of this script and prints scans per
second and the ratio to the sequential loop. Every mode writes into a fresh folder and starts
its own Ray, so Ray's start-up is part of its time, as for a user.
Usage: ``.venv/bin/python scripts/cohort_benchmark.py [--scans 8] [--modes sequential local:2]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from AnomalyDetectionLib.catalog import sample_paths


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
        for i in range(args.scans):
            shutil.copy(scan, cohort / f"p{i:03d}{scan.suffix}")
        rows = []
        for mode in args.modes:
            out = Path(folder) / f"out_{mode.replace(':', '_')}"
            command = [sys.executable, "-m", "AnomalyDetectionLib.cli", "detect", str(cohort), "-o", str(out),
                       "--device", args.device, "-q"] + ([] if mode == "sequential" else ["--cluster", mode])
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            rows.append((mode, time.perf_counter() - started))
    base = rows[0][1]
    title = f"mode ({args.scans} scans, the sample, default model, {args.device})"
    print(f"| {title} | seconds | scans/s | vs {rows[0][0]} |")
    print("|---|---|---|---|")
    for mode, seconds in rows:
        print(f"| {mode} | {seconds:.1f} | {args.scans / seconds:.3f} | {base / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
