"""Generating subjects and bringing them into a model's space, in parallel processes.

Making a subject (a dense deformation at 1 mm) and registering it to the template take a few
seconds each on one core, and the bundled models need dozens of subjects: on a many-core machine
this is the difference between one and ten minutes. Worker processes are spawned, not forked, so
they start with fresh torch / SimpleITK thread pools; results come back in the order of the specs,
so the outcome does not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, TypeVar

import SimpleITK as sitk
import torch

from AnomalyDetectionLib.preprocessing import PreparedVolume, prepare_volume
from AnomalyDetectionLib.progress import CancelCheck, Progress, ProgressCallback

from .cases import SubjectSpec

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def parallel_map(
    function: Callable[[T], R],
    items: Iterable[T],
    workers: int = 0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    what: str = "item",
) -> List[R]:
    """``[function(item) for item in items]`` in ``workers`` spawned processes (0: in this process).

    ``function`` must be a module-level function (it is pickled). Results keep the items' order.
    """
    items = list(items)
    steps = Progress(progress, cancel)
    if workers <= 0 or len(items) < 2:
        results = []
        for index, item in enumerate(items):
            steps.report(index / max(1, len(items)), f"{what} {index + 1} of {len(items)}")
            results.append(function(item))
        steps.report(1.0, f"{len(items)} {what}s done")
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(function, item) for item in items]
        results = []
        for index, future in enumerate(futures):
            try:
                steps.report(index / len(items), f"{what} {index + 1} of {len(items)}")
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
            results.append(future.result())
    steps.report(1.0, f"{len(items)} {what}s done")
    return results


def _prepared_subject(job: Any) -> PreparedVolume:
    from .population import make_subject

    spec, card = job
    subject = make_subject(spec)
    return prepare_volume(subject.image, card, spec.name)


def prepared_subjects(
    specs: Sequence[SubjectSpec],
    card: Mapping[str, Any],
    workers: int = 0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> List[PreparedVolume]:
    """The generated subjects of ``specs``, each prepared for the model space of ``card`` (registered
    to its template if it has one), ready for :func:`~AnomalyDetectionLib.training.train` and
    :func:`~AnomalyDetectionLib.training.calibrate`."""
    return parallel_map(_prepared_subject, [(spec, dict(card)) for spec in specs], workers, progress, cancel,
                        what="subject")
