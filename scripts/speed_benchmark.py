"""Speed benchmark: where a detection's time goes, seconds per volume for every score, and batching.

Why: users need to know how long detection takes on an ordinary brain scan, and where the time goes,
before choosing a score or a device. Three tables, Markdown for the README, with the machine:

1. the bundled default model on the shipped sample, stage by stage as ``anomaly-detection detect``
   runs it: start-up (a fresh interpreter importing the pipeline and loading the model), reading,
   registration, the rest of the preparation, scoring, post-processing and writing the outputs,
   beside the command's own wall time (on CUDA the registration, resampling and smoothing run on the
   GPU in torch, on the CPU in SimpleITK);
2. the whole ``detect`` pipeline for every score on the standard 182x218x182 MNI grid at 1 mm in
   128x128 axial slices, on CPU and on CUDA where present (default cards with untrained weights,
   which cost the same time as trained ones);
3. what batching buys over one slice at a time.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from AnomalyDetectionLib import Detector, detect, write_detection
from AnomalyDetectionLib.catalog import DEFAULT_MODEL
from AnomalyDetectionLib.device import resolve_device
from AnomalyDetectionLib.models.model_file import Model, build_model, make_card
from AnomalyDetectionLib.scoring import score_slices, scores_for
from AnomalyDetectionLib.scoring.ensemble import default_members
from AnomalyDetectionLib.scoring.slice_scores import energy_projection
from AnomalyDetectionResearch.data import load_anatomy

GRID = (182, 218, 182)  # the standard MNI152 1 mm grid (x, y, z)
SAMPLE = Path(__file__).resolve().parents[1] / "AnomalyDetection" / "Resources" / "Samples" / "brain_t1_tumour.nrrd"
#: What ``anomaly-detection detect`` does before it reads a scan: import the pipeline, load the model.
START_UP = ("import time; t = time.perf_counter(); from AnomalyDetectionLib.pipeline import Detector; "
            "Detector({model!r}, device={device!r}); print(time.perf_counter() - t)")
SIZE = 128
DEFAULT_STEPS = int(inspect.signature(energy_projection).parameters["steps"].default)
QUICK_STEPS, QUICK_SLICES = 3, 32


def mni_volume(axial_slices: Optional[int] = None) -> sitk.Image:
    """nilearn's MNI152 2009a T1 (197x233x189) resampled, centred, to 182x218x182 (or ``axial_slices``) at 1 mm."""
    image = load_anatomy("mni152_t1")
    size = [GRID[0], GRID[1], axial_slices or GRID[2]]
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = centre - direction @ ((np.array(size) - 1) / 2.0)
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), (1.0, 1.0, 1.0),
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def machine(devices: List[torch.device]) -> Dict[str, Any]:
    """Facts about the machine the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": next((torch.cuda.get_device_name(d) for d in devices if d.type == "cuda"), None),
            "load_average": load_average(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def load_average() -> Optional[float]:
    """The 1-minute load average: other work on the machine skews every number here."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def clock(device: torch.device) -> float:
    """``perf_counter`` after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def best_time(run: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Fastest of ``repeats`` timed runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = clock(device)
        run()
        times.append(clock(device) - start)
    return min(times)


def score_params(arch: str, score: str, steps: int) -> Dict[str, Any]:
    """``steps`` for energy_projection, also inside an ensemble that has it as a member."""
    projects = score == "energy_projection" or (score == "ensemble" and "energy_projection" in default_members(arch))
    return {"steps": steps} if projects else {}


def per_volume(
    model: Model, volume: sitk.Image, warm: np.ndarray, device: torch.device, args: argparse.Namespace
) -> List[Dict]:
    """Table 1 rows: ``detect`` timings (best total of ``repeats``) for every score; ``warm``-up slices first."""
    rows = []
    for score in scores_for(model):
        params = score_params(model.card["arch"], score, args.energy_steps)
        score_slices(model.to(device), warm, score, params, args.batch_size)
        reports = [detect(volume, model, score=score, device=str(device), batch_size=args.batch_size,
                          score_params=params, name="MNI152").report for _ in range(args.repeats)]
        report = min(reports, key=lambda r: r["timings"]["total_s"])
        rows.append({"device": str(device), "arch": model.card["arch"], "score": score, "score_params": params,
                     "slices_scored": report["slices_scored"], **report["timings"]})
        print(f"  {device} {model.card['arch']} {score}: {report['timings']['total_s']} s", file=sys.stderr)
    return rows


def stages(device: torch.device, args: argparse.Namespace) -> List[Dict]:
    """Table 1 rows: the default model on the shipped sample, stage by stage (medians of ``repeats``)."""
    rows = []
    for _ in range(args.repeats):
        begun = time.perf_counter()
        started = subprocess.run([sys.executable, "-c", START_UP.format(model=DEFAULT_MODEL, device=str(device))],
                                 capture_output=True, text=True, check=True)
        start_up = time.perf_counter() - begun
        imports = float(started.stdout.strip())
        detector = Detector(DEFAULT_MODEL, device=str(device), batch_size=args.batch_size)
        result = detector.detect(str(SAMPLE))
        timings = result.report["timings"]
        with tempfile.TemporaryDirectory() as folder:
            written = time.perf_counter()
            write_detection(folder, "sample", result)
            write_s = time.perf_counter() - written
            command = [str(Path(sys.executable).with_name("anomaly-detection")), "detect", str(SAMPLE),
                       "--output-dir", folder, "--device", str(device), "-q"]
            begun = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            wall = time.perf_counter() - begun
        rows.append({"device": str(device), "start_up_s": start_up, "imports_s": imports,
                     "read_s": timings["read_s"], "register_s": timings["register_s"],
                     "prepare_rest_s": timings["prepare_s"] - timings["read_s"] - timings["register_s"],
                     "score_s": timings["score_s"],
                     "postprocess_s": timings["postprocess_s"], "write_s": write_s, "command_s": wall})
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "device"}
    print(f"  {device} sample: {median['command_s']:.2f} s for the command", file=sys.stderr)
    return [{"device": str(device), "score": result.report["score"], **median}]


def batching(model: Model, slices: np.ndarray, device: torch.device, args: argparse.Namespace) -> List[Dict]:
    """Table 2 rows: slices/s of one slice at a time vs ``batch_size`` at once, in the same run."""
    model.to(device)
    rows = []
    for score in ("reconstruction", "combi"):
        score_slices(model, slices[:2], score, batch_size=2)  # warm-up
        rate = {}
        for batch in (1, args.batch_size):
            run = lambda b=batch, s=score: score_slices(model, slices, s, batch_size=b)  # noqa: E731
            rate[batch] = len(slices) / best_time(run, device, args.repeats)
        rows.append({"device": str(device), "score": score, "slices": len(slices), "batch_size": args.batch_size,
                     "per_slice_per_s": rate[1], "batched_per_s": rate[args.batch_size],
                     "speed_up": rate[args.batch_size] / rate[1]})
        print(f"  {device} {score}: {rate[1]:.1f} vs {rate[args.batch_size]:.1f} slices/s", file=sys.stderr)
    return rows


def markdown(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", help="cpu, cuda[:N] or all (cpu, plus cuda when available)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the batched runs")
    parser.add_argument("--energy-steps", type=int, help=f"energy_projection steps (default {DEFAULT_STEPS}, "
                                                          f"the score's own; --quick: {QUICK_STEPS})")
    parser.add_argument("--repeats", type=int, help="timed runs per entry, best kept (default 3; --quick: 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK_SLICES}-slice axial slab of the volume, {QUICK_STEPS} energy steps, 1 repeat")
    parser.add_argument("--output", help="also write the results as JSON, e.g. benchmark-output/benchmark.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name, full, quick in (("energy_steps", DEFAULT_STEPS, QUICK_STEPS), ("repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    devices = ([torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
               if args.device == "all" else [resolve_device(args.device)])

    facts = machine(devices)
    volume = mni_volume(QUICK_SLICES if args.quick else None)
    size = "x".join(str(n) for n in volume.GetSize())
    print(f"Machine: {facts['cpu']}, {facts['cores']} cores, {facts['os']}, Python {facts['python']}, torch "
          f"{facts['torch']} ({facts['torch_threads']} CPU threads), GPU: {facts['gpu'] or 'none'}, "
          f"load average {facts['load_average']} at start, {facts['date']}")
    print(f"Volume: MNI152 2009a T1 resampled to {size} at 1 mm{' (--quick: central axial slab)' if args.quick else ''}"
          f"; {SIZE}x{SIZE} axial slices; default-card VAE and AE with untrained weights (timing only); "
          f"batch size {args.batch_size}; energy_projection steps {args.energy_steps}; best of {args.repeats}.\n")

    torch.manual_seed(0)
    models = [build_model(make_card(arch=arch, size=SIZE, name=f"benchmark-{arch}")) for arch in ("vae", "ae")]
    prepared = Detector(models[0], device="cpu").prepare(volume, "MNI152")
    slices = prepared.slices[prepared.foreground_fraction() > 0]
    if args.quick:  # the central QUICK_SLICES
        slices = slices[max(0, len(slices) // 2 - QUICK_SLICES // 2):][:QUICK_SLICES]
    table0: List[Dict] = []
    table1: List[Dict] = []
    table2: List[Dict] = []
    for device in devices:
        table0 += stages(device, args)
        for model in models:
            table1 += per_volume(model, volume, slices[len(slices) // 2:][:2], device, args)
        table2 += batching(models[0], slices, device, args)

    facts["load_average_end"] = load_average()
    print(f"Where the time goes: `anomaly-detection detect` with the bundled default ({DEFAULT_MODEL}, "
          f"{table0[0]['score']}) on the shipped sample {SAMPLE.name}, median of {args.repeats} (seconds; start-up is "
          "a fresh interpreter importing the pipeline and loading the model, of which imports and loading alone):\n")
    stage_keys = ("start_up_s", "imports_s", "read_s", "register_s", "prepare_rest_s", "score_s", "postprocess_s",
                  "write_s")
    print(markdown(["device", "start-up", "(imports + model)", "reading", "registration", "rest of preparation",
                    "scoring",
                    "post-processing", "writing", "sum", "whole command"],
                   [[r["device"]] + [f"{r[k]:.2f}" for k in stage_keys]
                    + [f"{sum(r[k] for k in stage_keys if k != 'imports_s'):.2f}", f"{r['command_s']:.2f}"]
                    for r in table0]))
    print()
    print(f"Seconds per {size} volume with `detect` on an in-memory image ({table1[0]['slices_scored']} slices "
          f"scored; load average at the end {facts['load_average_end']}):\n")
    print(markdown(["device", "model", "score", "prepare s", "scoring s", "post-processing s", "total s"],
                   [[r["device"], r["arch"].upper(), r["score"] + (f" ({r['score_params']['steps']} steps)"
                     if r["score_params"] else ""), f"{r['prepare_s']:.2f}", f"{r['score_s']:.2f}",
                     f"{r['postprocess_s']:.2f}", f"{r['total_s']:.2f}"] for r in table1]))
    print(f"\nSlices/s with `score_slices` on {len(slices)} prepared slices, VAE, one at a time vs batched:\n")
    print(markdown(["device", "score", "1 slice at a time", f"batch of {args.batch_size}", "batched / one at a time"],
                   [[r["device"], r["score"], f"{r['per_slice_per_s']:.1f}", f"{r['batched_per_s']:.1f}",
                     f"{r['speed_up']:.1f}x"] for r in table2]))
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "output"}
        path.write_text(json.dumps({"machine": facts, "settings": settings, "volume_size": list(volume.GetSize()),
                                    "slice_size": SIZE, "stages": table0, "per_volume": table1,
                                    "batching": table2}, indent=2) + "\n")
        print(f"\nresults written to {path}")


if __name__ == "__main__":
    main()
