"""The brain part of the experiments: generated normal subjects, lesion cases, small models, metrics.

Everything goes through the engine's own path (template registration, training with
:func:`~AnomalyDetectionLib.training.train`, scoring and evaluation with
:func:`~AnomalyDetectionResearch.benchmark.run_benchmark`), at a smaller scale than the
bundled models so a sweep of several models fits a 2-core CPU: 3 mm template grid, 64-pixel
slices, narrow networks. Training subjects come from the population's ``train`` split, cases
from the benchmark's subjects, so they never share a subject or augmentation draw.

The data are built once per process and shared by the experiments (``make experiments`` runs
the three in one process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from AnomalyDetectionLib.catalog import DEFAULT_BATCH_SIZE
from AnomalyDetectionLib.evaluation.figures import axial_slices
from AnomalyDetectionLib.models import Model, make_card
from AnomalyDetectionLib.pipeline import Detector
from AnomalyDetectionLib.preprocessing import PreparedVolume
from AnomalyDetectionLib.preprocessing.template import template_entry
from AnomalyDetectionLib.progress import Progress
from AnomalyDetectionLib.training import train

from ..benchmark import run_benchmark
from ..data import benchmark_case_specs, make_case, population
from ..data.cases import BenchmarkCase, CaseSpec
from ..data.generation import prepared_subjects


@dataclass(frozen=True)
class BrainScale:
    """How big the brain part of an experiment is."""

    train_subjects: int
    lesion_cases_per_type: int
    normal_cases: int
    epochs: int
    spacing_mm: float = 3.0
    size: int = 64
    channels: Tuple[int, ...] = (16, 32, 64, 64)
    batch_size: int = 32
    quick_cases: bool = False
    lesion_types: Optional[Tuple[str, ...]] = None  # None: every type


FULL = BrainScale(train_subjects=24, lesion_cases_per_type=2, normal_cases=6, epochs=30)
QUICK = BrainScale(train_subjects=2, lesion_cases_per_type=1, normal_cases=1, epochs=1, spacing_mm=6.0, size=32,
                   channels=(8, 16), quick_cases=True, lesion_types=("hyper_blob", "tumour"))


@dataclass
class BrainData:
    """Prepared training subjects and generated cases, and the card fields every model shares."""

    scale: BrainScale
    space: Dict[str, Any]
    train: List[PreparedVolume]
    cases: List[BenchmarkCase]
    description: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)


_CACHE: Dict[BrainScale, BrainData] = {}


def case_specs(scale: BrainScale) -> List[CaseSpec]:
    """The first ``lesion_cases_per_type`` cases of every lesion type and ``normal_cases`` normal ones."""
    specs = benchmark_case_specs(quick=scale.quick_cases)
    chosen: List[CaseSpec] = []
    counts: Dict[str, int] = {}
    for spec in specs:
        kind = spec.lesion or "normal"
        if spec.lesion is not None and scale.lesion_types is not None and spec.lesion not in scale.lesion_types:
            continue
        limit = scale.normal_cases if spec.lesion is None else scale.lesion_cases_per_type
        if counts.get(kind, 0) < limit:
            counts[kind] = counts.get(kind, 0) + 1
            chosen.append(spec)
    return chosen


def brain_data(scale: BrainScale, workers: int = 0, progress: Optional[Progress] = None) -> BrainData:
    """Training subjects registered to the template, and the lesion/normal cases (built once per process)."""
    if scale in _CACHE:
        return _CACHE[scale]
    steps = progress or Progress()
    template = template_entry(spacing_mm=scale.spacing_mm)
    space = make_card(size=scale.size, channels=scale.channels, norm="batch", template=template)
    train_specs = population("train", scale.train_subjects)
    subjects = prepared_subjects(train_specs, space, workers=workers,
                                 progress=steps.sub(0.0, 0.6).as_callback(), cancel=steps.cancel)
    cases = []
    specs = case_specs(scale)
    part = steps.sub(0.6, 1.0)
    for index, spec in enumerate(specs):
        part.report(index / len(specs), f"case {spec.name}")
        cases.append(make_case(spec))
    kinds = sorted({case.kind for case in cases})
    description = (f"{len(subjects)} generated normal subjects (population split 'train') registered to MNI152 "
                   f"at {scale.spacing_mm:g} mm, {scale.size}-pixel axial slices; {len(cases)} benchmark cases "
                   f"({', '.join(kinds)}) on their native grids, from subjects no model trains on")
    data = BrainData(scale, space, subjects, cases, description,
                     {"size": scale.size, "channels": scale.channels, "norm": "batch", "template": template,
                      "batch_size": scale.batch_size, "epochs": scale.epochs})
    _CACHE[scale] = data
    return data


def train_brain_model(data: BrainData, name: str, arch: str, latent_dim: int, beta: float = 1.0, seed: int = 0,
                      device: str = "auto", epochs: Optional[int] = None, progress: Optional[Progress] = None
                      ) -> Model:
    """One model of a sweep, trained and calibrated on the prepared subjects (a quarter validate)."""
    kwargs = dict(data.model_kwargs)
    if epochs is not None:
        kwargs["epochs"] = epochs
    steps = progress or Progress()
    return train(data.train, None, arch=arch, latent_dim=latent_dim, beta=beta, val_fraction=0.25, seed=seed,
                 device=device, name=name, description=data.description, progress=steps.as_callback(),
                 cancel=steps.cancel, **kwargs)


def evaluate_brain(models: Sequence[Model], data: BrainData, scores: Mapping[str, Sequence[str]],
                   device: str = "auto", progress: Optional[Progress] = None) -> Dict[str, Any]:
    """The benchmark report (summary rows per model x score, per-case rows) of ``models`` on the cases."""
    steps = progress or Progress()
    return run_benchmark(models, data.cases, scores, device=device, batch_size=data.scale.batch_size,
                         progress=steps.as_callback(), cancel=steps.cancel)


def summary_row(report: Mapping[str, Any], model: str, score: str) -> Dict[str, Any]:
    """The summary row of ``model`` x ``score`` in a benchmark report."""
    for row in report["summary"]:
        if row["model"] == model and row["score"] == score:
            return dict(row)
    raise KeyError(f"no summary row for {model} / {score}")


def figure_cases(data: BrainData, count: int = 3) -> List[BenchmarkCase]:
    """The first ``count`` lesion cases of different types (tumour first when there is one)."""
    lesions = [c for c in data.cases if c.kind != "normal"]
    lesions.sort(key=lambda c: c.kind != "tumour")
    chosen: List[BenchmarkCase] = []
    for case in lesions:
        if case.kind not in {c.kind for c in chosen}:
            chosen.append(case)
    return chosen[:count]


def case_maps(case: BenchmarkCase, methods: Sequence[Tuple[str, Model, str]], batch_size: int = DEFAULT_BATCH_SIZE
              ) -> Tuple[np.ndarray, Optional[np.ndarray], Dict[str, np.ndarray]]:
    """The axial slice through the lesion of ``case``: image, truth, and each method's map, on the native grid.

    ``methods`` are ``(label, model, score)``; models sharing a template share one registration.
    """
    prepared: Optional[PreparedVolume] = None
    maps: Dict[str, np.ndarray] = {}
    image_view: Optional[np.ndarray] = None
    truth_view: Optional[np.ndarray] = None
    for label, model, score in methods:
        result = Detector(model, score=score, batch_size=batch_size).detect(case.image, name=case.name,
                                                                            reuse=prepared)
        prepared, anomaly_map = result.prepared, result.anomaly_map
        views, _ = axial_slices(case.image, anomaly_map, None, case.truth)
        maps[label] = np.asarray(views["anomaly_map"], dtype=np.float32)
        image_view, truth_view = views["image"], views["truth"]
    assert image_view is not None
    return np.asarray(image_view), None if truth_view is None else np.asarray(truth_view), maps
