"""A cohort on a Ray cluster: the batch's rules, with the detections spread over workers.

Why: one machine detects one scan after another; a cohort of tens of thousands needs more. The
batch (:class:`~.batch.Batch`) keeps every rule it has for a single machine: distinct output
names, a rerun skipping what is done and redoing what failed, atomic writes with the report
last, the run summary after every scan (the manifest), a bad scan recorded while the others go
on. Only the detections move, split into the one detector's steps
(:class:`~.pipeline.Detector`): Ray tasks read each scan and, for CPU scoring, prepare it (the CPU
registration); a pool of actors, each holding the model once, score the slices of several scans
in shared batches (:meth:`~.pipeline.Detector.score_many`; on a GPU the actor also registers on
it) and finish each detection (:meth:`~.pipeline.Detector.finish`); the driver writes each result
as it arrives. Tasks read the inputs themselves, so a cluster needs the inputs on a shared path;
the outputs are written where the driver runs.

Ray is an optional extra (``pip install .[cluster]``); importing this module does not import it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

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


#: Scans whose slices one GPU actor call scores in shared batches (when that many are ready). CPU
#: actors take one scan per call: on the CPU a gradient score's last bits depend on the size of the
#: batch a slice was computed in (the tiny test VAE's ``combi``: up to 8e-5), so shared batches would
#: break the promise that a cohort's maps are bit-identical to ``detect``'s, and a batch of 32 slices
#: already keeps a CPU's cores busy.
SCANS_PER_CALL = 4

#: Detectors of this worker process, by model file and settings: a Ray worker runs many tasks and
#: loads a model once (tasks prepare on the CPU, so the model stays there).
_TASK_DETECTORS: Dict[Tuple[str, str], Any] = {}


def _detector(model_path: str, settings: Dict[str, Any], torch_threads: int):
    import json

    import torch

    from .models import load_model
    from .pipeline import DetectionSettings, Detector

    key = (model_path, json.dumps(settings, sort_keys=True))
    if key not in _TASK_DETECTORS:
        torch.set_num_threads(torch_threads)  # the driver's: the same sums in the same order, the same bits
        model = load_model(model_path)
        _TASK_DETECTORS[key] = Detector(model, DetectionSettings.for_model(model, **settings))
    return _TASK_DETECTORS[key]


def _read(model_path: str, settings: Dict[str, Any], torch_threads: int, path: str,
          prepare: bool) -> Tuple[Optional[str], Any]:
    """A Ray task: read one input and (``prepare``: for CPU actors) bring it into model space, with
    the CPU registration. Returns ``(error or None, payload)``, two objects: the driver waits on the
    small first one and hands the second to an actor without fetching it."""
    started = time.perf_counter()
    name = os.path.abspath(path)
    try:
        from .preprocessing import read_volume

        image = read_volume(path)
        timings = {"read_s": time.perf_counter() - started}
        prepared = None
        if prepare:
            cpu = dict(settings, device="cpu")
            prepared = _detector(model_path, cpu, torch_threads).prepare(image, name)
            timings["register_s"] = prepared.registration.seconds if prepared.registration is not None else 0.0
            timings["prepare_s"] = time.perf_counter() - started
    except AnomalyDetectionError as exc:
        return str(exc), None
    return None, {"name": name, "image": image, "prepared": prepared, "timings": timings}


class _Worker:
    """One Ray actor: the model loaded once; scores the slices of several scans in shared batches."""

    def __init__(self, model_path: str, settings: Dict[str, Any], torch_threads: int) -> None:
        self.detector = _detector(model_path, settings, torch_threads)

    def detect_many(self, items: List[Tuple[int, Any]]) -> List[Tuple[int, Any, Optional[str], float]]:
        """``(index, result without its model-space copy, error, seconds)`` for each ``(index, payload
        ref)``: prepared here if the task did not (on this actor's GPU), scored together
        (:meth:`~.pipeline.Detector.score_many`), finished one by one. A scan that fails fails alone."""
        import ray

        detector = self.detector
        payloads = ray.get([ref for _, ref in items])
        ready: List[Tuple[int, Dict[str, Any]]] = []
        out: List[Tuple[int, Any, Optional[str], float]] = []
        for (index, _), payload in zip(items, payloads):
            if payload["prepared"] is None:
                began = time.perf_counter()
                try:
                    payload["prepared"] = detector.prepare(payload["image"], payload["name"])
                except AnomalyDetectionError as exc:
                    out.append((index, None, str(exc), payload["timings"]["read_s"] + time.perf_counter() - began))
                    continue
                registration = payload["prepared"].registration
                payload["timings"]["register_s"] = registration.seconds if registration is not None else 0.0
                payload["timings"]["prepare_s"] = payload["timings"]["read_s"] + time.perf_counter() - began
            ready.append((index, payload))
        began = time.perf_counter()
        try:
            scored = detector.score_many([payload["prepared"] for _, payload in ready])
        except AnomalyDetectionError:  # one scan's trouble must not fail its batch mates: score alone
            scored = [None] * len(ready)
        score_s = (time.perf_counter() - began) / max(len(ready), 1)
        for (index, payload), maps in zip(ready, scored):
            began = time.perf_counter()
            try:
                if maps is None:
                    maps = detector.score_many([payload["prepared"]])[0]
                result = detector.finish(payload["prepared"], maps[0], maps[1],
                                         dict(payload["timings"], score_s=score_s), name=payload["name"])
            except AnomalyDetectionError as exc:
                out.append((index, None, str(exc), payload["timings"]["prepare_s"] + time.perf_counter() - began))
                continue
            result.prepared, result.slice_maps = None, None  # model-space data: large, not written
            out.append((index, result, None, result.report["timings"]["total_s"]))
        return out


def run_on_ray(batch: Batch, cluster: str, workers: Optional[int] = None,
               progress: Optional[ProgressCallback] = None,
               cancel: Optional[CancelCheck] = None) -> Iterator[CaseOutcome]:
    """Run ``batch`` on Ray; yields each input's outcome as it is known.

    Reading (and, with CPU actors, the registration) runs as Ray tasks, one CPU each; scoring runs
    on ``workers`` actors (default: one per GPU when the settings ask for CUDA, where the actor also
    registers on its GPU, and more actors than GPUs share them; else one per four CPUs); a GPU actor
    scores the slices of up to :data:`SCANS_PER_CALL` ready scans in shared batches. ``cluster``: see
    :func:`parse_cluster`.
    The summary is written after every input, so a killed run resumes on a rerun. A scan that fails
    is recorded and the others go on; a folder that cannot be written stops the run
    (:class:`~.errors.OutputError`); ``cancel()`` stops it with :class:`Cancelled`, keeping every set
    already written.
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
        cpus = max(1, int(resources.get("CPU", 1)))
        if gpus:
            count = workers or max(1, int(resources.get("GPU", 1)))
            # More GPU actors than GPUs share them (--workers 4 on one GPU: four registrations in flight,
            # each mostly waiting on kernel launches, fill the card's idle time).
            share, actor_cpus = min(1.0, float(resources.get("GPU", 1)) / count), 0
        else:
            # A CPU scan is ~5 core-seconds of one-threaded registration (a task) to ~2 of scoring and
            # post-processing (an actor): a quarter of the CPUs score, the rest register. On 8 CPUs or
            # more an actor holds its CPU so the tasks do not pile onto it; on fewer, a held CPU would
            # idle most of the time (2 cores: one registration at a time, no faster than no Ray).
            count = workers or max(1, cpus // 4)
            share, actor_cpus = 0, (1 if cpus >= 8 and count < cpus else 0)
        threads = torch.get_num_threads()
        model_path = str(Path(model.path).resolve())
        actor = ray.remote(num_gpus=share, num_cpus=actor_cpus)(_Worker)
        actors = [actor.remote(model_path, settings, threads) for _ in range(count)]
        read = ray.remote(num_cpus=1, num_returns=2, max_retries=0)(_read)

        def submit(path: Path):
            return read.remote(model_path, settings, threads, str(path), not gpus)

        yield from _run(batch, ray, actors, submit, SCANS_PER_CALL if gpus else 1, progress, cancel)
    finally:
        if started_ray:
            ray.shutdown()


def _run(batch: Batch, ray, actors: List[Any], submit, per_call: int, progress: Optional[ProgressCallback],
         cancel: Optional[CancelCheck]) -> Iterator[CaseOutcome]:
    batch.open_output_dir()
    steps = Progress(progress, cancel)
    total = len(batch.outcomes)
    known = 0
    planned: Dict[int, list] = {}
    waiting: List[int] = []
    for index, (path, outcome) in enumerate(zip(batch.inputs, batch.outcomes)):
        present = batch.plan(path, outcome)
        if present is None:  # skipped or refused here: no worker needed
            known += 1
            batch.write_summary()
            yield outcome
        else:
            planned[index] = present
            waiting.append(index)
    steps.report(known / total, f"{known} of {total} input(s) known, {len(planned)} on the cluster")
    window = 2 * per_call * len(actors) + 2  # reads ahead of the actors, not the whole cohort in memory
    reading: Dict[Any, Tuple[int, Any]] = {}  # error ref -> (index, payload ref)
    ready: List[Tuple[int, Any]] = []
    idle = list(actors)
    scoring: Dict[Any, Tuple[Any, List[int]]] = {}  # result ref -> (actor, its scans)
    waiting.reverse()
    while waiting or reading or ready or scoring:
        while waiting and len(reading) + len(ready) < window:
            index = waiting.pop()
            error_ref, payload_ref = submit(batch.inputs[index])
            reading[error_ref] = (index, payload_ref)
        while idle and ready:
            group, ready = ready[:per_call], ready[per_call:]
            actor = idle.pop()
            scoring[actor.detect_many.remote(group)] = (actor, [index for index, _ in group])
        done, _ = ray.wait(list(reading) + list(scoring), num_returns=1, timeout=0.5)
        if cancel is not None and cancel():
            batch.write_summary(quiet=True)
            raise Cancelled("cancelled; every output set written so far is complete")
        for ref in done:
            if ref in reading:
                index, payload_ref = reading.pop(ref)
                try:
                    error = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task's process died (e.g. a crash reading a file)
                    error = f"the Ray task reading it failed ({type(exc).__name__})"
                if error is None:
                    ready.append((index, payload_ref))
                    continue
                results = [(index, None, error, None)]
            else:
                actor, indices = scoring.pop(ref)
                idle.append(actor)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the actor died: its scans failed, the rest go on
                    results = [(index, None, f"the Ray actor scoring it failed ({type(exc).__name__})", None)
                               for index in indices]
            for index, result, error, seconds in results:
                outcome = batch.outcomes[index]
                outcome.seconds = None if seconds is None else round(seconds, 3)
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
