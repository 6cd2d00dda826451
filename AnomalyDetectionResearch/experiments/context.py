"""What an experiment is given: where to write, how big to run, on which device, with which seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from AnomalyDetectionLib.progress import Progress

from .brain import FULL, QUICK, BrainData, brain_data


@dataclass
class ExperimentContext:
    """One run of one experiment.

    ``quick`` runs the same code path on tiny data in seconds (the test suite does); the numbers
    of a quick run mean nothing. ``workers`` processes prepare brain subjects in parallel.
    """

    name: str
    output_dir: Path
    quick: bool = False
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    command: str = ""
    progress: Progress = field(default_factory=Progress)

    def brain(self, progress: Optional[Progress] = None) -> BrainData:
        """The shared brain subjects and cases (built on first use in this process)."""
        return brain_data(QUICK if self.quick else FULL, self.workers, progress)

    def path(self, filename: str) -> Path:
        """A file in this experiment's report folder (created)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return self.output_dir / filename
