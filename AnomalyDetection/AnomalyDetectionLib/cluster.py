"""A cohort on a Ray cluster: the batch's rules, with the detections spread over workers.

Why: one machine detects one scan after another; a cohort of tens of thousands needs more. The
batch (:class:`~.batch.Batch`) keeps every rule it has for a single machine: distinct output
names, a rerun skipping what is done and redoing what failed, atomic writes with the report
last, the run summary after every scan (the manifest), a bad scan recorded while the others go
on. Only the detections move: a pool of Ray actors, each holding the model once, run
:meth:`~.pipeline.Detector.detect` (the one pipeline) on the scans the batch says need it, and
the driver writes each result as it arrives. Workers read the inputs themselves, so a cluster
needs the inputs on a shared path; the outputs are written where the driver runs.

Ray is an optional extra (``pip install .[cluster]``); importing this module does not import it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from .batch import Batch, CaseOutcome
from .errors import AnomalyDetectionError, Cancelled, InputError, OutputError
from .progress import CancelCheck, Progress, ProgressCallback

__all__ = ["parse_cluster", "run_on_ray"]


def parse_cluster(text: str) -> Tuple[Optional[str], Optional[int]]:
    """``--cluster``: ``auto`` (the running cluster), ``ray://HOST:PORT`` (Ray Client), ``local`` or
    ``local:N`` (a Ray on this machine with all or N CPUs). Returns ``(address, local_cpus)``."""
    if text == "auto" or text.startswith("ray://"):
        return text, None
    if text == "local":
        return None, os.cpu_count() or 1
    if text.startswith("local:"):
        try:
            count = int(text.split(":", 1)[1])
        except ValueError:
            count = 0
        if count >= 1:
            return None, count
    raise InputError(f"--cluster {text!r}: give auto, ray://HOST:PORT, local or local:N (N >= 1)")


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--cluster needs Ray: pip install 'anomaly-detection[cluster]' (or pip install ray)") \
            from None
    return ray


class _Worker:
    """One Ray actor: the model loaded once, detections on request (see :func:`run_on_ray`)."""

    def __init__(self, model_path: str, settings: Dict[str, Any], torch_threads: int) -> None:
        import torch

        from .models import load_model
        from .pipeline import DetectionSettings, Detector

        torch.set_num_threads(torch_threads)  # the driver's: the same sums in the same order, the same bits
        model = load_model(model_path)
        self.detector = Detector(model, DetectionSettings.for_model(model, **settings))

    def detect(self, index: int, path: str) -> Tuple[int, Any, Optional[str], float]:
        """``(index, result without its model-space copy, error, seconds)`` for one input."""
        started = time.perf_counter()
        try:
            result = self.detector.detect(path, name=os.path.abspath(path))
        except AnomalyDetectionError as exc:
            return index, None, str(exc), time.perf_counter() - started
        result.prepared, result.slice_maps = None, None  # model-space data: large, not written
        return index, result, None, time.perf_counter() - started


def run_on_ray(batch: Batch, cluster: str, workers: Optional[int] = None,
               progress: Optional[ProgressCallback] = None,
               cancel: Optional[CancelCheck] = None) -> Iterator[CaseOutcome]:
    """Run ``batch`` with its detections on Ray; yields each input's outcome as it is known.

    ``cluster``: see :func:`parse_cluster`; ``workers``: actors to start (default: one per CPU of
    the cluster, one per GPU when the settings ask for CUDA). The summary is written after every
    input, so a killed run resumes on a rerun. A scan that fails is recorded and the others go on;
    a folder that cannot be written stops the run (:class:`~.errors.OutputError`); ``cancel()``
    stops it with :class:`Cancelled`, keeping every set already written.
    """
    ray = _ray()
    import torch

    address, local_cpus = parse_cluster(cluster)
    model = batch.detector.model
    if model.path is None:
        raise InputError("--cluster needs the model as a file the workers can load")
    settings = batch.detector.settings.as_dict()
    started_ray = not ray.is_initialized()
    if started_ray:
        try:
            if address is not None:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=local_cpus, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"--cluster {cluster}: Ray could not start or join it ({detail})") from None
    try:
        gpus = settings["device"] == "cuda" or (settings["device"] == "auto" and torch.cuda.is_available())
        resources = ray.cluster_resources()
        count = workers or max(1, int(resources.get("GPU" if gpus else "CPU", 1)))
        actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(_Worker)
        pool = ray.util.ActorPool([actor.remote(str(Path(model.path).resolve()), settings, torch.get_num_threads())
                                   for _ in range(count)])
        yield from _run(batch, pool, progress, cancel)
    finally:
        if started_ray:
            ray.shutdown()


def _run(batch: Batch, pool, progress: Optional[ProgressCallback],
         cancel: Optional[CancelCheck]) -> Iterator[CaseOutcome]:
    batch.open_output_dir()
    steps = Progress(progress, cancel)
    total = len(batch.outcomes)
    known = 0
    planned: Dict[int, list] = {}
    for index, (path, outcome) in enumerate(zip(batch.inputs, batch.outcomes)):
        present = batch.plan(path, outcome)
        if present is None:  # skipped or refused here: no worker needed
            known += 1
            batch.write_summary()
            yield outcome
        else:
            planned[index] = present
            pool.submit(lambda worker, item: worker.detect.remote(*item), (index, str(path)))
    steps.report(known / total, f"{known} of {total} input(s) known, {len(planned)} on the cluster")
    while pool.has_next():
        if cancel is not None and cancel():
            batch.write_summary(quiet=True)
            raise Cancelled("cancelled; every output set written so far is complete")
        index, result, error, seconds = pool.get_next_unordered()
        outcome = batch.outcomes[index]
        outcome.seconds = round(seconds, 3)
        if error is not None:
            outcome.status, outcome.error = "failed", error
        else:
            try:
                batch.finish(outcome, planned[index], result)
            except OutputError as exc:  # the folder cannot be written: stop, as on one machine
                raise batch.stopped(outcome, exc) from None
        known += 1
        batch.write_summary()
        steps.report(known / total, f"{outcome.case} ({known}/{total})")
        yield outcome
        outcome.result = None  # on disk now: a cohort must not pile its maps up in memory
