"""The papers' experiments as runnable teaching reports (``anomaly-detection experiment NAME``).

* ``zimmerer2019``: VAE scores (reconstruction, KL-gradient, ELBO-gradient, combi) on
  Fashion-MNIST and on generated brain lesions (Zimmerer et al. 2019, arXiv 1907.02796).
* ``zhou2020``: a beta-VAE swept over beta, every score including energy-based projection and the
  ensemble (Zhou, Deng & Wu 2020, arXiv 2005.10686).
* ``cai2024``: a plain AE swept over its latent size, with latent entropy, and a rule that picks
  the size from normal data only (Cai, Chen & Cheng 2024, arXiv 2403.09303).

Each writes ``report.md``, ``report.html``, ``results.json`` and PNG figures under
``reports/<name>/``. ``quick=True`` runs the same code on tiny data in seconds (for tests).
"""

from __future__ import annotations

import datetime
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from AnomalyDetectionLib.device import resolve_device
from AnomalyDetectionLib.progress import CancelCheck, Progress, ProgressCallback
from AnomalyDetectionLib.version import __version__

from ..benchmark import machine_info
from . import cai2024, zhou2020, zimmerer2019
from .context import ExperimentContext
from .document import ExperimentReport

PathLike = Union[str, "os.PathLike[str]"]

#: Experiment name -> function building its report.
EXPERIMENTS: Dict[str, Callable[[ExperimentContext], ExperimentReport]] = {
    "zimmerer2019": zimmerer2019.run,
    "zhou2020": zhou2020.run,
    "cai2024": cai2024.run,
}


def run_experiment(
    name: str,
    output_dir: PathLike = "reports",
    quick: bool = False,
    device: str = "auto",
    seed: int = 0,
    workers: int = 0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    command: Optional[str] = None,
) -> Dict[str, Path]:
    """Run experiment ``name`` and write its report under ``output_dir/name``; returns the written files."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    torch_device = resolve_device(device)
    folder = Path(output_dir) / name
    context = ExperimentContext(
        name=name, output_dir=folder, quick=quick, device=str(torch_device), seed=seed, workers=workers,
        command=command or " ".join(shlex.quote(a) for a in ["anomaly-detection", "experiment", name]
                                    + (["--quick"] if quick else []) + ["--seed", str(seed)]),
        progress=Progress(progress, cancel),
    )
    machine = machine_info(torch_device)
    started = time.perf_counter()
    report = EXPERIMENTS[name](context)
    seconds = time.perf_counter() - started
    run = {
        "command": context.command, "quick": quick, "seed": seed, "device": str(torch_device),
        "engine_version": __version__, "python": sys.version.split()[0], "machine": machine,
        "seconds": round(seconds, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    report.results["run"] = run
    report.parts.insert(1, "\n".join([
        "## How this was run",
        f"- command: `{context.command}`" + (" (quick mode: tiny data, the numbers mean nothing)" if quick else ""),
        f"- date: {run['date']}; engine {__version__}; seed {seed}",
        f"- machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, device {torch_device}",
        f"- total time: {seconds / 60:.1f} min",
    ]))
    return report.write(folder)


__all__ = ["EXPERIMENTS", "ExperimentContext", "ExperimentReport", "run_experiment"]
