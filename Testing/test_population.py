"""The generated population and the seeded benchmark: specs, native geometry, skull, truth, reproducibility.

Making a subject costs a dense deformation at 1 mm (several seconds on a small CPU), so the
generating tests share three module-scoped subjects/cases made the real way; everything else works
on specs only or on templates brought down to 3 mm.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import Counter
from typing import Iterator, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionResearch.data import (
    LESION_TYPES,
    SPLIT_SEEDS,
    available_anatomy,
    benchmark_case_specs,
    iter_benchmark_cases,
    load_anatomy,
    make_case,
    make_subject,
    population,
    random_normal_subject,
    resample_isotropic,
)
from AnomalyDetectionResearch.data import benchmark_cases as benchmark_module
from AnomalyDetectionResearch.data.cases import SPLITS, CaseSpec, SubjectSpec

# The package exports the function ``population``, which hides the module of the same name.
population_module = importlib.import_module("AnomalyDetectionResearch.data.population")

HAS_COLIN = {"colin27_ch2", "colin27_ch2bet"} <= set(available_anatomy())
needs_colin = pytest.mark.skipif(not HAS_COLIN, reason="Colin27 (Debian mricron-data) is not installed")


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def orientation(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


def dilate(mask: sitk.Image, radius: int) -> np.ndarray:
    return array(sitk.BinaryDilate(mask, [radius] * 3)) > 0


# ---------------------------------------------------------------- specs only (fast)


def test_population_is_deterministic_and_splits_disjoint() -> None:
    assert set(SPLIT_SEEDS) == set(SPLITS)
    ranges = sorted(SPLIT_SEEDS.values(), key=lambda r: r.start)
    assert all(a.stop <= b.start for a, b in zip(ranges, ranges[1:]))
    for split in SPLITS:
        specs = population(split, 30)
        assert specs == population(split, 30)
        assert population(split, 10) == specs[:10]  # asking for more only appends
        assert [s.seed for s in specs] == list(SPLIT_SEEDS[split])[:30]
        assert all(s.split == split for s in specs)
    seeds = [{s.seed for s in population(split, 200)} for split in SPLITS]
    assert not (seeds[0] & seeds[1] or seeds[0] & seeds[2] or seeds[1] & seeds[2])
    with pytest.raises(ValueError):
        population("test", 3)
    with pytest.raises(ValueError):
        population("train", len(SPLIT_SEEDS["train"]) + 1)


def test_population_varies_template_orientation_and_spacing() -> None:
    specs = population("train", 25)
    assert len({(s.orientation, s.spacing) for s in specs}) == 25  # every pair in 25 subjects
    assert {s.orientation for s in specs[:5]} == set(population_module.ORIENTATIONS)
    assert all(s.skull == (s.anatomy == "colin27_ch2") for s in specs)
    if HAS_COLIN:
        assert {s.anatomy for s in specs[:3]} == {"mni152_t1", "colin27_ch2bet", "colin27_ch2"}


def test_population_falls_back_to_mni_without_colin27(monkeypatch) -> None:
    monkeypatch.setattr(population_module, "available_anatomy", lambda: {"mni152_t1": None})
    specs = population("calibration", 6)
    assert {s.anatomy for s in specs} == {"mni152_t1"}
    assert not any(s.skull for s in specs)


def test_benchmark_specs_cover_every_kind_template_and_geometry() -> None:
    specs = benchmark_case_specs()
    assert specs == benchmark_case_specs()
    kinds = Counter(s.lesion for s in specs)
    assert sum(n for kind, n in kinds.items() if kind is not None) >= 40
    assert kinds[None] >= 20
    assert set(LESION_TYPES) <= set(kinds)
    assert kinds["hyper_blob"] >= 10
    assert all(kinds[kind] >= 5 for kind in LESION_TYPES)

    subjects = [s.subject for s in specs]
    assert len({s.seed for s in subjects}) == len(specs)  # each case its own subject
    assert all(s.split == "benchmark" and s.seed in SPLIT_SEEDS["benchmark"] for s in subjects)
    other = set(SPLIT_SEEDS["train"]) | set(SPLIT_SEEDS["calibration"])
    assert not any(s.seed in other for s in subjects)
    lesion_seeds = [s.lesion_seed for s in specs if s.lesion is not None]
    assert len(set(lesion_seeds)) == len(lesion_seeds)
    assert not any(seed in r for seed in lesion_seeds for r in SPLIT_SEEDS.values())
    assert len({s.orientation for s in subjects}) >= 3
    assert len({s.spacing for s in subjects}) >= 2
    if HAS_COLIN:
        assert {s.skull for s in subjects} == {True, False}
        for kind in list(LESION_TYPES) + [None]:  # every kind is seen with and without skull
            assert {s.subject.skull for s in specs if s.lesion == kind} == {True, False}


def test_quick_benchmark_is_small_coarse_and_from_the_full_set() -> None:
    quick = benchmark_case_specs(quick=True)
    assert Counter(s.lesion for s in quick) == Counter(["hyper_blob", "tumour", "noise_patch", "hypo_blob", None, None])
    assert all(s.subject.spacing == (2.0, 2.0, 2.0) for s in quick)
    full = {(s.subject.seed, s.lesion, s.lesion_seed): s for s in benchmark_case_specs()}
    for spec in quick:
        original = full[(spec.subject.seed, spec.lesion, spec.lesion_seed)]
        assert dataclasses.replace(original.subject, spacing=spec.subject.spacing) == spec.subject
    if HAS_COLIN:
        assert {s.subject.skull for s in quick} == {True, False}


def test_iter_benchmark_cases_generates_lazily(monkeypatch) -> None:
    made = []
    monkeypatch.setattr(benchmark_module, "make_case", lambda spec: made.append(spec) or spec.name)
    specs = benchmark_case_specs(quick=True)
    cases = iter_benchmark_cases(specs)
    assert isinstance(cases, Iterator) and made == []
    assert next(cases) == specs[0].name and made == specs[:1]
    assert list(cases) == [s.name for s in specs[1:]]


@needs_colin
def test_same_seed_gives_the_same_geometry_with_and_without_skull() -> None:
    """A skull subject's brain mask moves exactly as the brain-extracted subject of the same seed."""
    ch2 = load_anatomy("colin27_ch2", spacing_mm=3.0)
    bet = load_anatomy("colin27_ch2bet", spacing_mm=3.0)
    mask = sitk.Cast(bet > 0, sitk.sitkUInt8)
    _, skull_mask = random_normal_subject(ch2, 7, mask=mask, max_rotation_deg=15.0)
    _, bet_mask = random_normal_subject(bet, 7, mask=mask, max_rotation_deg=15.0)
    np.testing.assert_array_equal(array(skull_mask), array(bet_mask))
    _, other_mask = random_normal_subject(bet, 8, mask=mask, max_rotation_deg=15.0)
    assert (array(other_mask) != array(bet_mask)).mean() > 0.005


# ---------------------------------------------------------------- generated subjects (a few seconds each)


@pytest.fixture(scope="module")
def skull_spec() -> SubjectSpec:
    if not HAS_COLIN:
        pytest.skip("Colin27 (Debian mricron-data) is not installed")
    spec = population("benchmark", 3)[2]
    assert spec.anatomy == "colin27_ch2" and spec.skull
    return dataclasses.replace(spec, orientation="LAS", spacing=(1.5, 1.5, 2.5))


@pytest.fixture(scope="module")
def skull_subject(skull_spec):
    return make_subject(skull_spec)


@pytest.fixture(scope="module")
def bet_subject():
    if not HAS_COLIN:
        pytest.skip("Colin27 (Debian mricron-data) is not installed")
    spec = population("train", 2)[1]
    assert spec.anatomy == "colin27_ch2bet" and not spec.skull
    return make_subject(dataclasses.replace(spec, orientation="PIR", spacing=(2.0, 2.0, 3.0)))


@pytest.fixture(scope="module")
def lesion_case(skull_spec):
    return make_case(CaseSpec(skull_spec, "hyper_blob", 123))


def check_native_geometry(subject) -> None:
    spec = subject.spec
    for image in (subject.image, subject.brain):
        assert image.GetSpacing() == pytest.approx(spec.spacing)
        assert orientation(image) == spec.orientation
    assert same_grid(subject.image, subject.brain)
    assert subject.image.GetPixelID() == sitk.sitkFloat32
    assert subject.brain.GetPixelID() == sitk.sitkUInt8
    # Same physical extent as the 1 mm template, to within a voxel per axis.
    template = load_anatomy("colin27_ch2")
    extents = np.sort(np.asarray(subject.image.GetSize()) * np.asarray(subject.image.GetSpacing()))
    expected = np.sort(np.asarray(template.GetSize(), dtype=float))
    assert np.all(np.abs(extents - expected) <= np.max(spec.spacing))


def test_make_subject_is_in_native_geometry(skull_subject, bet_subject) -> None:
    check_native_geometry(skull_subject)
    check_native_geometry(bet_subject)


def test_brain_mask_is_a_plausible_brain_inside_the_head(skull_subject, bet_subject) -> None:
    for subject in (skull_subject, bet_subject):
        brain = array(subject.brain) > 0
        litres = brain.sum() * np.prod(subject.image.GetSpacing()) / 1e6
        assert 1.0 < litres < 2.2
        head = array(sitk.BinaryFillhole(sitk.OtsuThreshold(subject.image, 0, 1))) > 0
        assert (brain & head).sum() > 0.98 * brain.sum()


def test_skull_subject_keeps_skull_and_scalp_outside_the_brain(skull_subject, bet_subject) -> None:
    for subject, with_skull in ((skull_subject, True), (bet_subject, False)):
        image = array(subject.image)
        tissue = np.median(image[array(subject.brain) > 0])
        # Two voxels away from the brain, clear of the partial volume at its border.
        outside = image[~dilate(subject.brain, 2)]
        bright_ml = (outside > 0.3 * tissue).sum() * np.prod(subject.image.GetSpacing()) / 1e3
        if with_skull:
            assert bright_ml > 200
        else:
            assert bright_ml < 5
            assert np.percentile(outside, 99) < 0.05 * tissue


def test_lesion_case_differs_from_its_normal_subject_only_at_the_truth(skull_subject, lesion_case) -> None:
    assert lesion_case.kind == "hyper_blob"
    assert same_grid(lesion_case.image, skull_subject.image)
    assert same_grid(lesion_case.truth, skull_subject.image)
    assert lesion_case.truth.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(array(lesion_case.brain), array(skull_subject.brain))
    truth = array(lesion_case.truth) > 0
    assert truth.sum() > 0
    assert not (truth & ~(array(lesion_case.brain) > 0)).any()  # inside the brain

    change = np.abs(array(lesion_case.image) - array(skull_subject.image))
    near = dilate(lesion_case.truth, 2)
    assert change[near].sum() > 0.8 * change.sum()
    assert change[truth].mean() > 10 * change[~near].mean()
    # The skull and scalp are untouched (up to the resampling blur at the brain's border).
    assert change[~dilate(lesion_case.brain, 2)].max() == 0


@pytest.fixture
def coarse_templates(skull_spec, monkeypatch) -> None:
    """Make subjects from the skull spec's template brought down to 3 mm: the same code path, fast."""
    image, brain = population_module._template(skull_spec.anatomy, skull_spec.skull)
    small = resample_isotropic(image, 3.0)
    small_brain = sitk.Resample(brain, small, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)

    def coarse(anatomy: str, skull: bool):
        assert (anatomy, skull) == (skull_spec.anatomy, skull_spec.skull)
        return sitk.Image(small), sitk.Image(small_brain)

    monkeypatch.setattr(population_module, "_template", coarse)


def test_generation_is_reproducible_and_shared_by_subject_and_case(skull_spec, coarse_templates) -> None:
    """Same spec, same arrays; a normal case is exactly its subject."""
    subject = make_subject(skull_spec)
    again = make_subject(skull_spec)
    normal = make_case(CaseSpec(skull_spec, None))
    assert normal.kind == "normal"
    for other in (again, normal):
        np.testing.assert_array_equal(array(other.image), array(subject.image))
        np.testing.assert_array_equal(array(other.brain), array(subject.brain))
    assert same_grid(normal.truth, normal.image)
    assert not array(normal.truth).any()
    first = make_case(CaseSpec(skull_spec, "noise_patch", 5))
    second = make_case(CaseSpec(skull_spec, "noise_patch", 5))
    np.testing.assert_array_equal(array(first.image), array(second.image))
    np.testing.assert_array_equal(array(first.truth), array(second.truth))
    assert array(first.truth).any()


def test_lesion_never_changes_the_skull(skull_spec, coarse_templates) -> None:
    """A tumour near the surface would push and paint the skull; the case keeps it to the brain.

    On the template's own grid (3 mm, RAS) native resampling is the identity, so what changed
    outside the brain mask would show exactly. (Seed 0 is a tumour whose mass effect reaches the skull.)
    """
    spec = dataclasses.replace(skull_spec, orientation="RAS", spacing=(3.0, 3.0, 3.0))
    normal = make_subject(spec)
    case = make_case(CaseSpec(spec, "tumour", 0))
    brain = array(case.brain) > 0
    truth = array(case.truth) > 0
    assert truth.any() and not (truth & ~brain).any()
    change = np.abs(array(case.image) - array(normal.image))
    tissue = np.median(array(normal.image)[brain])
    assert change[truth].mean() > 0.1 * tissue
    assert change[~brain].max() < 1e-3 * tissue


# ---------------------------------------------------------------- the clinical acquisition


def _ball_head(radius_mm: float = 30.0) -> Tuple[sitk.Image, sitk.Image]:
    """A 1 mm LPS phantom: a bright ball of 'brain' inside a dimmer shell, and the ball as its mask."""
    grid = np.indices((80, 80, 80)).astype(np.float32) - 39.5
    distance = np.sqrt((grid ** 2).sum(axis=0))
    image = np.where(distance < radius_mm, 100.0, np.where(distance < radius_mm + 8, 40.0, 0.0)).astype(np.float32)
    out, mask = sitk.GetImageFromArray(image), sitk.GetImageFromArray((distance < radius_mm).astype(np.uint8))
    return out, mask


def test_contrast_enhancement_lights_the_dura_and_surface_veins_only() -> None:
    from AnomalyDetectionResearch.data.clinical import DURA_SHELL_MM, VESSEL_DEPTH_MM, enhance

    image, brain = _ball_head()
    enhanced = enhance(image, brain, seed=3)
    np.testing.assert_array_equal(array(enhanced), array(enhance(image, brain, seed=3)))  # seeded
    assert not np.array_equal(array(enhanced), array(enhance(image, brain, seed=4)))
    before, after = array(image), array(enhanced)
    assert np.all(after >= before - 1e-4)  # enhancement only brightens
    distance = array(sitk.SignedMaurerDistanceMap(brain, insideIsPositive=False, squaredDistance=False,
                                                  useImageSpacing=True))
    deep, far = distance < -(VESSEL_DEPTH_MM + 2), distance > DURA_SHELL_MM[1] + 2
    np.testing.assert_allclose(after[deep | far], before[deep | far], atol=0.1)  # of 100
    shell = (distance > DURA_SHELL_MM[0]) & (distance <= DURA_SHELL_MM[1])
    assert np.median(after[shell] - before[shell]) > 20  # the dura, brighter than the tissue beside it
    surface = (distance > -VESSEL_DEPTH_MM) & (distance < 0)
    veins = after[surface] > before[surface] + 1
    assert 0.002 < veins.mean() < 0.2  # thin vessels, not a bright rim


def test_coverage_cut_leaves_out_vertex_and_skull_base_but_never_the_lesion() -> None:
    from AnomalyDetectionResearch.data.clinical import cut_coverage

    image, brain = _ball_head()
    image.SetSpacing((1.0, 1.0, 5.0))
    brain.CopyInformation(image)
    truth = sitk.Image(brain.GetSize(), sitk.sitkUInt8)
    truth.CopyInformation(image)
    cut = cut_coverage(image, brain, truth, cut_mm=(15.0, 10.0))
    kept = array(cut[1]).any(axis=(1, 2))
    assert kept[0] and kept[-1]  # brain in the first and the last slice: part of it is outside
    assert array(cut[1]).sum() < array(brain).sum()
    assert all(c.GetSpacing() == image.GetSpacing() for c in cut)
    top = np.nonzero(array(brain).any(axis=(1, 2)))[0][-1]
    truth[40, 40, int(top)] = 1  # a lesion in the brain's top slice
    cut = cut_coverage(image, brain, truth, cut_mm=(15.0, 10.0))
    assert array(cut[2]).sum() == 1
    with pytest.raises(ValueError, match="LPS"):
        cut_coverage(sitk.DICOMOrient(image, "RAS"), sitk.DICOMOrient(brain, "RAS"), sitk.DICOMOrient(truth, "RAS"))


def test_clinical_cases_are_the_held_out_heads_as_a_hospital_scans_them() -> None:
    from AnomalyDetectionResearch.data import HELD_OUT, available_held_out, clinical_case_specs
    from AnomalyDetectionResearch.data.clinical import CLINICAL_SPACING

    if not available_held_out():
        pytest.skip("no held-out anatomy on this machine ('make setup' fetches it)")
    specs = clinical_case_specs()
    heads = available_held_out()
    assert len(specs) == 5 * len(heads) and {s.subject.anatomy for s in specs} == set(heads) <= set(HELD_OUT)
    assert all(s.subject.seed in SPLIT_SEEDS["clinical"] and s.subject.acquisition == "clinical" for s in specs)
    case = make_case(next(s for s in specs if s.lesion == "tumour"))
    assert case.image.GetSpacing() == pytest.approx(CLINICAL_SPACING) and orientation(case.image) == "LPS"
    assert same_grid(case.image, case.truth) and same_grid(case.image, case.brain)
    truth, brain = array(case.truth) > 0, array(case.brain) > 0
    assert truth.any() and not (truth & ~brain).any()
    assert brain[0].any() and brain[-1].any()  # partial coverage: brain in the first and the last slice
