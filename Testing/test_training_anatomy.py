"""Extra training anatomy (issue 14's "more varied normal anatomy" lever): opt-in, disjoint from the
held-out and validation heads, and made into subjects the population way.

The default population is what the bundled models were trained on, so these tests pin it as well.
Tests that need the heads skip where ``make setup`` has not fetched them
(``scripts/fetch_training_anatomy.sh``); one subject per head costs a dense deformation at 1 mm,
a few seconds each.
"""

from __future__ import annotations

import importlib
import runpy
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.preprocessing.anatomy import ANATOMY
from AnomalyDetectionResearch.data import SPLIT_SEEDS, available_anatomy, make_subject, population
from AnomalyDetectionResearch.data.held_out import (
    HELD_OUT,
    TRAINING,
    VALIDATION,
    available_held_out,
    available_training,
    available_validation,
    load_held_out,
)
from AnomalyDetectionResearch.data.synthetic import SYNTHETIC_ANATOMY

# The package exports the function ``population``, which hides the module of the same name.
population_module = importlib.import_module("AnomalyDetectionResearch.data.population")

ROOT = Path(__file__).resolve().parents[1]
HEADS = available_training()
needs_heads = pytest.mark.skipif(not HEADS,
                                 reason="no extra training anatomy on this machine ('make setup' fetches it)")
HAS_COLIN = {"colin27_ch2", "colin27_ch2bet"} <= set(available_anatomy())


def test_training_heads_are_neither_validation_nor_held_out_anatomy() -> None:
    training = set(TRAINING)
    assert training and not training & set(HELD_OUT) and not training & set(VALIDATION)
    assert not training & set(ANATOMY) and not training & set(population_module._TEMPLATES)
    # Nor do they come from the packages the held-out and validation heads are read out of.
    for source in TRAINING.values():
        assert not any(other.package.split(" (")[0] == source.package.split(" (")[0]
                       for other in list(HELD_OUT.values()) + list(VALIDATION.values()))
    # And the evaluation splits never draw on them, whatever is on this machine.
    assert not set(available_held_out()) & training and not set(available_validation()) & training


def test_the_default_population_is_the_bundled_models_one() -> None:
    """Without the flag nothing changes: the same specs as ``extra_anatomy=False``, over the
    templates only, and (with Colin27 installed) the very subjects the bundled models trained on."""
    for split in ("train", "calibration"):
        plain = population(split, 30)
        assert population(split, 30, extra_anatomy=False) == plain
        assert {s.anatomy for s in plain} <= set(population_module.population_anatomy())
    if HAS_COLIN:
        first = [(s.anatomy, s.skull, s.orientation, s.spacing) for s in population("train", 6)]
        assert first == [
            ("mni152_t1", False, "LPS", (1.0, 1.0, 1.0)),
            ("colin27_ch2bet", False, "RAS", (1.2, 1.2, 1.2)),
            ("colin27_ch2", True, "LAS", (0.9, 0.9, 2.0)),
            ("mni152_t1", False, "PIR", (1.0, 1.0, 1.5)),
            ("colin27_ch2bet", False, "ASL", (1.5, 1.5, 1.5)),
            ("colin27_ch2", True, "LPS", (1.2, 1.2, 1.2)),
        ]


def test_extra_anatomy_is_for_training_and_calibration_only() -> None:
    for split in ("benchmark", "held_out", "validation", "clinical"):
        with pytest.raises(ValueError, match="training"):
            population(split, 2, extra_anatomy=True)


@needs_heads
def test_extra_anatomy_cycles_over_the_templates_then_the_fetched_heads() -> None:
    templates = population_module.population_anatomy()
    cycle = templates + HEADS
    assert population_module.training_anatomy(True) == cycle
    plain = population("train", 30)
    extra = population("train", 30, extra_anatomy=True)
    assert [s.anatomy for s in extra] == [cycle[i % len(cycle)] for i in range(30)]
    assert set(HEADS) <= {s.anatomy for s in extra}
    # The cycle starts where the plain one does, and seeds, orientations and voxel sizes stay
    # those of the plain population, index by index.
    assert extra[:len(templates)] == plain[:len(templates)]
    assert [(s.seed, s.orientation, s.spacing) for s in extra] == [(s.seed, s.orientation, s.spacing) for s in plain]
    # An extra head keeps its skull in every other cycle only (the templates: one head in three).
    assert [s.skull for s in extra if s.anatomy in TRAINING] == [
        (i // len(cycle)) % 2 == 0 for i in range(30) if cycle[i % len(cycle)] in TRAINING]
    assert population("train", 12, extra_anatomy=True) == extra[:12]  # asking for more only appends
    # With synthetic individuals too, those stay where they were and the rest cycle over the heads.
    mixed = population("train", 30, synthetic_fraction=0.25, extra_anatomy=True)
    synthetic = population("train", 30, synthetic_fraction=0.25)
    assert [s.anatomy == SYNTHETIC_ANATOMY for s in mixed] == [s.anatomy == SYNTHETIC_ANATOMY for s in synthetic]
    real = [s.anatomy for s in mixed if s.anatomy != SYNTHETIC_ANATOMY]
    assert real == [cycle[i % len(cycle)] for i in range(len(real))]
    # Calibration may take them when asked; its seeds are its own.
    calibration = population("calibration", len(cycle), extra_anatomy=True)
    assert [s.anatomy for s in calibration] == list(cycle)
    assert all(s.seed in SPLIT_SEEDS["calibration"] for s in calibration)


@needs_heads
@pytest.mark.parametrize("name", HEADS)
def test_each_head_is_a_plausible_t1_head_with_its_brain_mask(name: str) -> None:
    image, brain = load_held_out(name)
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    pixels, inside = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(brain) > 0
    assert 1.2 < inside.sum() / 1e6 < 2.2  # litres of brain at 1 mm
    white = np.percentile(pixels[inside], 90)
    assert np.percentile(pixels[inside], 5) < 0.6 * white  # CSF well below white matter: T1 contrast
    # With skull: plenty of bright head outside the brain mask.
    assert (pixels[~inside] > 0.3 * white).sum() > 0.5 * inside.sum()


@needs_heads
@pytest.mark.parametrize("name", HEADS)
def test_a_subject_from_each_head_is_a_sane_normal_subject(name: str) -> None:
    specs = [s for s in population("train", 30, extra_anatomy=True) if s.anatomy == name]
    spec = specs[0]
    subject = make_subject(spec)
    stripped = make_subject(next(s for s in specs if not s.skull))
    outside = sitk.GetArrayFromImage(stripped.image)[sitk.GetArrayFromImage(stripped.brain) == 0]
    assert np.percentile(outside, 99) < 0.5 * np.median(sitk.GetArrayFromImage(stripped.image)[
        sitk.GetArrayFromImage(stripped.brain) > 0])  # without its skull: nothing bright outside the brain
    assert subject.image.GetSpacing() == pytest.approx(spec.spacing)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(subject.image.GetDirection()) \
        == spec.orientation
    assert subject.brain.GetSize() == subject.image.GetSize()
    pixels, inside = sitk.GetArrayFromImage(subject.image), sitk.GetArrayFromImage(subject.brain) > 0
    assert np.isfinite(pixels).all()
    millilitres = inside.sum() * np.prod(subject.image.GetSpacing()) / 1e3
    assert 1000 < millilitres < 2400
    assert np.median(pixels[inside]) > 0


def test_the_training_script_takes_the_flag_and_names_the_heads_on_the_card() -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "train_bundled_models.py"), run_name="recipe")
    assert script["parse_args"]([]).extra_anatomy is False
    assert script["parse_args"](["--extra-anatomy"]).extra_anatomy is True
    note = script["extra_anatomy_note"]
    assert note([]) == ""
    assert "fsaverage_t1" in note(["fsaverage_t1", "washu_711_2c_t1"]) and "FreeSurfer" in note(["fsaverage_t1"])
