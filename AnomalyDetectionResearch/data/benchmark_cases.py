"""The fixed, seeded benchmark: which cases it holds and generating them one at a time.

Design:

* **Native space.** Every case is a generated subject in its own native space (voxel size,
  orientation, head pose, skull or not; see :mod:`.population`) with the anomaly painted in at
  1 mm before resampling. A detector is thus scored on what a user would give it, not on images
  already on its template grid, and the truth is exact to the voxel of the native grid.
* **Disjoint seeds.** All subjects come from the ``"benchmark"`` split, whose seeds no training or
  calibration subject uses, and each case has a subject of its own, so no two cases (normal or
  not) share an anatomy draw. Lesion seeds (:data:`LESION_SEED_OFFSET` + the subject's seed) lie
  outside every split's range, so an anomaly never repeats a subject's random stream either.
* **Coverage.** 40 lesion cases (10 ``hyper_blob``, the reference lesion, and 6 of each other
  type) and 20 normal cases, from which a false-positive rate and a case-level AUROC can be
  estimated. Case ``k`` of the list sorted by kind goes to subject ``7 k mod 60``: 7 is prime to
  60, so every subject is used exactly once, and because the subjects' templates cycle with
  period 3 and their orientations with period 5, any 3 consecutive cases of a kind cover all
  templates (skull on and off) and any 5 all orientations. The list itself is in subject order,
  so kinds are interleaved and a truncated run still sees several of them.
* **Quick set.** ``quick=True`` is for runs in CI time: the first case of ``hyper_blob``,
  ``tumour``, ``noise_patch`` and ``hypo_blob`` and two normal cases (the first one, and the first
  one on another template) of the full set, each forced to 2 mm isotropic voxels (no axis of the
  full set is coarser), so that detection is fast (generation still happens at 1 mm and
  costs a few seconds per case).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .cases import BenchmarkCase, CaseSpec
from .held_out import available_held_out, available_validation, held_out_dir
from .lesions import LESION_TYPES
from .population import make_case, population

#: Number of lesion cases per type in the full benchmark.
LESION_COUNTS: Dict[str, int] = {
    "hyper_blob": 10,
    "hypo_blob": 6,
    "tumour": 6,
    "noise_patch": 6,
    "copied_patch": 6,
    "intensity_shift": 6,
}

#: Number of normal (lesion-free) cases in the full benchmark.
NORMAL_COUNT = 20

#: A case's lesion seed is its subject's seed plus this, outside every split's seed range.
LESION_SEED_OFFSET = 100000

#: Step through the subjects when assigning kinds; prime to the number of cases, see the module docstring.
_STRIDE = 7

#: The kinds of the quick set, in order; ``None`` is a normal case.
QUICK_KINDS: Tuple[Optional[str], ...] = ("hyper_blob", "tumour", "noise_patch", "hypo_blob", None, None)

#: Voxel size of the quick set (mm).
QUICK_SPACING: Tuple[float, float, float] = (2.0, 2.0, 2.0)


def benchmark_case_specs(quick: bool = False) -> List[CaseSpec]:
    """The benchmark's case specs, in subject order: 60 (40 lesion, 20 normal), or 6 with ``quick``."""
    missing = set(LESION_TYPES) - set(LESION_COUNTS)
    if missing:  # a new lesion type must be given a share of the benchmark
        raise RuntimeError(f"lesion types without benchmark cases: {', '.join(sorted(missing))}")
    kinds: List[Optional[str]] = [kind for kind, count in LESION_COUNTS.items() for _ in range(count)]
    kinds += [None] * NORMAL_COUNT
    subjects = population("benchmark", len(kinds))
    by_subject: List[Optional[CaseSpec]] = [None] * len(kinds)
    for k, kind in enumerate(kinds):
        subject = subjects[(_STRIDE * k) % len(kinds)]
        seed = 0 if kind is None else LESION_SEED_OFFSET + subject.seed
        by_subject[(_STRIDE * k) % len(kinds)] = CaseSpec(subject, kind, seed)
    specs = [spec for spec in by_subject if spec is not None]
    assert len(specs) == len(kinds)  # the stride is prime to the number of cases
    return _quick(specs) if quick else specs


def _quick(specs: List[CaseSpec]) -> List[CaseSpec]:
    """The first case of each of :data:`QUICK_KINDS` from ``specs``, at :data:`QUICK_SPACING`."""
    chosen: List[CaseSpec] = []
    for kind in QUICK_KINDS:
        candidates = [s for s in specs if s.lesion == kind and s not in chosen]
        # A second case of a kind takes another template where there is one (skull on and off).
        used = {c.subject.anatomy for c in chosen if c.lesion == kind}
        chosen.append(next((s for s in candidates if s.subject.anatomy not in used), candidates[0]))
    return [
        dataclasses.replace(spec, subject=dataclasses.replace(spec.subject, spacing=QUICK_SPACING))
        for spec in sorted(chosen, key=lambda s: s.subject.seed)
    ]


#: Kinds of the held-out set, for every held-out head: two normal cases (``None``) and each lesion type.
HELD_OUT_KINDS: Tuple[Optional[str], ...] = (None, None, "hyper_blob", "hypo_blob", "tumour", "intensity_shift",
                                             "copied_patch", "noise_patch")


def held_out_case_specs() -> List[CaseSpec]:
    """The held-out-anatomy benchmark: :data:`HELD_OUT_KINDS` on every held-out head on this machine.

    Subjects come from the ``held_out`` split (real individuals and a template that no shipped
    model trains or calibrates on, see :mod:`.held_out`); case ``k`` is subject ``k``, whose head
    cycles, so every head gets every kind, and the list interleaves heads and kinds.
    """
    return _head_case_specs("held_out", HELD_OUT_KINDS, len(available_held_out()))


def _head_case_specs(split: str, kinds_per_head: Sequence[Optional[str]], heads: int) -> List[CaseSpec]:
    """``kinds_per_head`` on each of the ``heads`` heads of ``split``, subject ``k`` for case ``k``."""
    if not heads:
        raise ValueError(f"no {split.replace('_', '-')} anatomy on this machine ({held_out_dir()}): "
                         "'make setup' fetches it")
    kinds = [kind for kind in kinds_per_head for _ in range(heads)]
    subjects = population(split, len(kinds))
    return [CaseSpec(subject, kind, 0 if kind is None else LESION_SEED_OFFSET + subject.seed)
            for subject, kind in zip(subjects, kinds)]


#: Kinds of the clinical set, for every held-out head: two normal cases and the lesions a
#: post-contrast clinical scan is taken for.
CLINICAL_KINDS: Tuple[Optional[str], ...] = (None, None, "tumour", "hyper_blob", "hypo_blob")


def clinical_case_specs() -> List[CaseSpec]:
    """The clinical set: :data:`CLINICAL_KINDS` on every held-out head, each in the clinical acquisition
    of :mod:`.clinical` (0.8 x 0.8 x 6.5 mm axial slices, vertex and skull base left out, contrast
    enhancement of dura and cortical veins), subjects from the ``clinical`` split, laid out as
    :func:`held_out_case_specs`. Evaluation only, like the held-out set."""
    return _head_case_specs("clinical", CLINICAL_KINDS, len(available_held_out()))


#: Kinds of the validation set, for every validation head: four normal cases (per-person false
#: positives need more than two) and each lesion type.
VALIDATION_KINDS: Tuple[Optional[str], ...] = (None, None, None, None) + HELD_OUT_KINDS[2:]


def validation_case_specs() -> List[CaseSpec]:
    """The validation set, on which the shipped default is chosen: :data:`VALIDATION_KINDS` on every
    validation head (templates disjoint from training, calibration and both benchmarks, see
    :mod:`.held_out`), subjects from the ``validation`` split, laid out as :func:`held_out_case_specs`."""
    return _head_case_specs("validation", VALIDATION_KINDS, len(available_validation()))


def iter_benchmark_cases(specs: Iterable[CaseSpec]) -> Iterator[BenchmarkCase]:
    """The cases of ``specs``, each generated only when asked for, so the set never sits in memory."""
    for spec in specs:
        yield make_case(spec)
