"""Many scans into one output folder: distinct names, nothing overwritten, resumable, summarised.

Why one batch runner: the command line's ``detect`` and Slicer's ``processFolder`` both turn a
list of scans into files, and a cohort run must not lose data in either. The rules live here once:

* every input gets its own output name (:func:`~.preprocessing.io.case_stems`), so
  ``p001/T1.nii.gz`` and ``p002/T1.nii.gz`` never write over each other;
* an output set already in the folder is kept: if it is this very run's (same input, model and
  settings) the input is skipped, which is how a rerun after a crash or a kill resumes; if it is
  another run's, the input fails with :class:`~.errors.OutputExistsError`, unless ``overwrite``;
* a set is complete when its report exists (written last); an incomplete set is what a killed
  run left and is redone; the temporary files of a killed writer are removed at the start;
* a bad input is recorded and the batch goes on; a failed write (folder read-only or full) stops
  it with :class:`~.errors.OutputError`, keeping every set already written whole;
* after every input the run summary (``anomaly_detection_run.json`` and ``.csv``) maps each input
  path to its status and output files.

Every scan still goes through :meth:`~.pipeline.Detector.detect`; this module only decides what
to run and where the files go.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from .atomic import remove_stale_temporaries
from .errors import AnomalyDetectionError, Cancelled, OutputError, OutputExistsError
from .pipeline import DetectionResult, Detector, write_detection
from .preprocessing.io import DETECTION_OUTPUTS, case_stems, detection_paths, write_text_atomic
from .progress import Progress
from .version import __version__

__all__ = ["RUN_SUMMARY", "Batch", "CaseOutcome", "run_batch"]

PathLike = Union[str, "os.PathLike[str]"]
#: File name (without extension) of the run summary, written as ``.json`` and ``.csv``.
RUN_SUMMARY = "anomaly_detection_run"
#: What became of an input: written now, kept from an earlier run, failed, or not reached.
STATUSES = ("done", "skipped", "failed", "not run")
SUMMARY_COLUMNS = ("input", "case", "status", *DETECTION_OUTPUTS, "sample_score", "error", "seconds")


@dataclass
class CaseOutcome:
    """One input of a batch: its output name, status, output files and error."""

    input: str
    case: str
    status: str = "not run"
    outputs: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None
    seconds: Optional[float] = None
    #: The detection (done inputs only; not part of the summary).
    result: Optional[DetectionResult] = None
    #: A note for the user (e.g. why the input was skipped or redone).
    note: Optional[str] = None
    #: How abnormal the scan is as a whole (its report's ``sample_score``), so a cohort sorts by it.
    sample_score: Optional[float] = None

    def row(self) -> Dict[str, Any]:
        return {"input": self.input, "case": self.case, "status": self.status,
                **{key: self.outputs.get(key) for key in DETECTION_OUTPUTS}, "sample_score": self.sample_score,
                "error": self.error, "seconds": self.seconds}


class Batch:
    """A detector over a list of inputs into one output folder (see the module's rules)."""

    def __init__(self, detector: Detector, inputs: Sequence[PathLike], output_dir: PathLike,
                 overwrite: bool = False) -> None:
        self.detector = detector
        self.inputs = [Path(p) for p in inputs]
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        stems = case_stems(self.inputs)  # an error naming both inputs before anything runs
        self.outcomes = [CaseOutcome(str(path), stem) for path, stem in zip(self.inputs, stems)]
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.removed_temporaries: List[Path] = []

    @property
    def summary_paths(self) -> Dict[str, Path]:
        return {"json": self.output_dir / f"{RUN_SUMMARY}.json", "csv": self.output_dir / f"{RUN_SUMMARY}.csv"}

    def run(self, progress: Optional[Callable[[float, str], None]] = None,
            cancel: Optional[Callable[[], bool]] = None) -> Iterator[CaseOutcome]:
        """Process the inputs in order, yielding each one's outcome as it is known.

        Raises :class:`OutputError` when the folder cannot be written (the summary records how
        far the run got) and :class:`Cancelled` when ``cancel()`` asks to stop.
        """
        self.open_output_dir()
        steps = Progress(progress, cancel)
        count = len(self.outcomes)
        for index, (path, outcome) in enumerate(zip(self.inputs, self.outcomes)):
            try:
                steps.report(index / count, f"{outcome.case} ({index + 1}/{count})")
                self._run_one(path, outcome, steps.sub(index / count, (index + 1) / count), cancel)
            except Cancelled:
                self.write_summary(quiet=True)
                raise
            except OutputError as exc:
                raise self.stopped(outcome, exc) from None
            self.write_summary()
            yield outcome
            outcome.result = None  # on disk now; a cohort must not pile its maps up in memory
        steps.report(1.0, f"{count} input(s) done")

    # ------------------------------------------------------------------------------ steps

    def open_output_dir(self) -> None:
        """Create the folder, prove it writable, and clear a killed run's temporary files."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=str(self.output_dir))
            os.close(fd)
            os.remove(probe)
        except OSError as exc:
            raise OutputError(f"{self.output_dir}: cannot write into the output folder "
                              f"({exc.strerror or exc})") from None
        self.removed_temporaries = remove_stale_temporaries(self.output_dir)

    def _run_one(self, path: Path, outcome: CaseOutcome, progress: Progress,
                 cancel: Optional[Callable[[], bool]]) -> None:
        started = time.perf_counter()
        try:
            planned = self.plan(path, outcome)
            if planned is None:
                return
            try:
                result = self.detector.detect(path, name=os.path.abspath(path), progress=progress.as_callback(),
                                              cancel=cancel)
            except (OutputError, Cancelled):
                raise
            except AnomalyDetectionError as exc:
                outcome.status, outcome.error = "failed", str(exc)
                return
            self.finish(outcome, planned, result)
        finally:
            outcome.seconds = round(time.perf_counter() - started, 3)

    def plan(self, path: Path, outcome: CaseOutcome) -> Optional[List[str]]:
        """Whether ``path`` needs a detection: the names of its outputs already there (maybe none),
        or None when the input is settled here (skipped: this run's outputs are there; failed:
        another run's are). Cheap: reads at most one report. A runner that detects elsewhere (a
        cluster) calls this, detects the inputs it returns a list for, and hands each result to
        :meth:`finish`."""
        targets = detection_paths(self.output_dir, outcome.case)
        present = [key for key, target in targets.items() if target.exists()]
        if "report" in present and not self.overwrite:
            differences = self._differences(targets["report"], path)
            if differences:
                outcome.status = "failed"
                outcome.error = str(OutputExistsError(
                    f"{targets['map'].with_name(outcome.case + '_*')}: outputs of another run are there "
                    f"({', '.join(differences)} {'differs' if len(differences) == 1 else 'differ'}); "
                    "--overwrite replaces them"))
                return None
            outcome.status, outcome.note = "skipped", "outputs of this input and settings already there"
            outcome.outputs = {key: str(target) for key, target in targets.items()}
            outcome.sample_score = _report_value(targets["report"], "sample_score")
            return None
        return present

    def finish(self, outcome: CaseOutcome, present: List[str], result: DetectionResult) -> None:
        """Write a detection's outputs (atomically, the report last) and mark the input done.

        ``present``: what :meth:`plan` found there; a failed detection never reaches this, so an
        earlier set stays as it was until its replacement is written. Raises :class:`OutputError`.
        """
        targets = detection_paths(self.output_dir, outcome.case)
        if present:
            outcome.note = ("replacing the earlier outputs" if "report" in present
                            else "redoing the incomplete outputs of an interrupted run")
            self._unlink(targets["report"])  # the set is incomplete until the new report lands
        written = write_detection(self.output_dir, outcome.case, result)
        outcome.status, outcome.result = "done", result
        outcome.outputs = {key: str(p) for key, p in zip(DETECTION_OUTPUTS, written)}
        outcome.sample_score = _finite_or_none(result.report.get("sample_score"))

    def stopped(self, outcome: CaseOutcome, exc: OutputError) -> OutputError:
        """The error that ends a run whose folder cannot be written: ``outcome`` failed with ``exc``,
        the summary says how far the run got, every set written so far is complete."""
        outcome.status, outcome.error = "failed", str(exc)
        self.write_summary(quiet=True)
        done = sum(o.status in ("done", "skipped") for o in self.outcomes)
        return OutputError(f"{exc}; the run stopped after {done} of {len(self.outcomes)} input(s), every output "
                           "written so far is complete")

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputError(f"{path}: cannot remove the earlier output ({exc.strerror or exc})") from None

    def _differences(self, report_path: Path, path: Path) -> List[str]:
        """What differs between the run that wrote ``report_path`` and this one (empty: the same run)."""
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ["an unreadable report"]
        model, settings = self.detector.model, self.detector.settings
        expected = {
            "input": os.path.abspath(path), "model": model.name,
            "model_path": str(model.path) if model.path is not None else None, "score": settings.score,
            "score_params": dict(settings.score_params), "postprocessing": dict(settings.postprocessing),
        }
        differing = [key for key, value in expected.items()
                     if json.loads(json.dumps(report.get(key))) != json.loads(json.dumps(value))]
        given = not isinstance(settings.threshold, str)
        if given != (report.get("threshold_source") == "given") or (
                given and report.get("threshold") != float(settings.threshold)):
            differing.append("threshold")
        return differing

    def summary(self) -> Dict[str, Any]:
        """The run summary: settings, counts, and each input's status and outputs."""
        counts = {status: sum(o.status == status for o in self.outcomes) for status in STATUSES}
        model = self.detector.model
        return {
            "output_dir": str(self.output_dir), "model": model.name,
            "model_path": str(model.path) if model.path is not None else None,
            "settings": self.detector.settings.as_dict(), "engine_version": __version__, "started": self.started,
            "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "overwrite": self.overwrite, "counts": counts, "cases": [o.row() for o in self.outcomes],
        }

    def write_summary(self, quiet: bool = False) -> None:
        """The run summary (``.json`` and ``.csv``) as it stands; written after every input."""
        from .evaluation.against_truth import csv_text

        paths = self.summary_paths
        try:
            write_text_atomic(json.dumps(self.summary(), indent=2) + "\n", paths["json"])
            write_text_atomic(csv_text([o.row() for o in self.outcomes]), paths["csv"])
        except OSError as exc:
            if not quiet:
                raise OutputError(f"{paths['json']}: cannot write the run summary ({exc.strerror or exc})") from None


def _finite_or_none(value: Any) -> Optional[float]:
    """A number for the summary (JSON has no NaN), or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _report_value(path: Path, key: str) -> Optional[float]:
    try:
        return _finite_or_none(json.loads(path.read_text(encoding="utf-8")).get(key))
    except (OSError, ValueError, AttributeError):
        return None


def run_batch(detector: Detector, inputs: Sequence[PathLike], output_dir: PathLike, overwrite: bool = False,
              progress: Optional[Callable[[float, str], None]] = None,
              cancel: Optional[Callable[[], bool]] = None) -> List[CaseOutcome]:
    """Run a whole :class:`Batch`; returns every input's outcome (the summary is in ``output_dir``)."""
    batch = Batch(detector, inputs, output_dir, overwrite)
    for _ in batch.run(progress, cancel):
        pass
    return batch.outcomes
