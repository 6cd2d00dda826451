"""Synthetic individuals (SynthSeg-style training anatomy): new folding, T1 contrast, reproducible, spread evenly.

One synthetic brain costs a dense fine deformation at 1 mm (several seconds on a small CPU), so
the generating tests share two module-scoped brains.
"""

from __future__ import annotations

import importlib
from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.preprocessing.anatomy import brain_mask, load_anatomy
from AnomalyDetectionResearch.data import make_subject, population
from AnomalyDetectionResearch.data.synthetic import SYNTHETIC_ANATOMY, synthetic_individual

population_module = importlib.import_module("AnomalyDetectionResearch.data.population")


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def two_individuals() -> Tuple[Tuple[sitk.Image, sitk.Image], Tuple[sitk.Image, sitk.Image]]:
    return synthetic_individual(7), synthetic_individual(8)


def test_synthetic_individual_sits_on_the_template_grid_with_a_plausible_brain(two_individuals) -> None:
    template = load_anatomy("mni152_t1")
    for image, brain in two_individuals:
        for out in (image, brain):
            assert out.GetSize() == template.GetSize()
            assert out.GetSpacing() == pytest.approx(template.GetSpacing())
            assert out.GetOrigin() == pytest.approx(template.GetOrigin())
        assert image.GetPixelID() == sitk.sitkFloat32 and brain.GetPixelID() == sitk.sitkUInt8
        litres = array(brain).sum() / 1e6
        assert 1.2 < litres < 2.0
        assert np.isfinite(array(image)).all() and array(image).min() >= 0.0


def test_synthetic_individual_keeps_t1_contrast(two_individuals) -> None:
    """White above grey above CSF, read from the brain's intensity distribution: CSF is about 7 %
    of the hole-filled brain, grey matter about 45 %, white matter the rest."""
    for image, brain in two_individuals:
        values = array(image)[array(brain) > 0]
        csf, grey, white = np.percentile(values, [2, 25, 90])
        assert csf < 0.6 * white  # CSF and ventricles well below white matter
        assert csf < grey < 0.92 * white
        assert 80.0 < white < 130.0  # white matter near 100


def test_synthetic_individuals_fold_differently_from_the_template_and_each_other(two_individuals) -> None:
    (first, brain), (second, _) = two_individuals
    inside = array(brain) > 0
    template = array(load_anatomy("mni152_t1")).astype(np.float64)[inside]
    a, b = array(first).astype(np.float64)[inside], array(second).astype(np.float64)[inside]
    to_template = np.corrcoef(a, template)[0, 1]
    to_each_other = np.corrcoef(a, b)[0, 1]
    assert 0.6 < to_template < 0.97  # a brain, but not the template's
    assert to_each_other < 0.97
    # The folding moved: the brain masks differ by more than a rim of partial volume.
    template_brain = array(sitk.BinaryFillhole(brain_mask("mni152_t1"))) > 0
    assert (inside ^ template_brain).sum() > 0.01 * template_brain.sum()


def test_synthetic_individual_is_reproducible() -> None:
    image, brain = synthetic_individual(3)
    again, again_brain = synthetic_individual(3)
    np.testing.assert_array_equal(array(image), array(again))
    np.testing.assert_array_equal(array(brain), array(again_brain))


def test_population_spreads_the_synthetic_share_evenly_and_keeps_the_rest() -> None:
    plain = population("train", 20)
    mixed = population("train", 20, synthetic_fraction=0.5)
    synthetic = [s for s in mixed if s.anatomy == SYNTHETIC_ANATOMY]
    assert len(synthetic) == 10
    assert [s.anatomy == SYNTHETIC_ANATOMY for s in mixed[:4]] == [False, True, False, True]
    assert not any(s.skull for s in synthetic)
    # Seeds, orientations and voxel sizes are those of the plain population, index by index.
    assert [(s.seed, s.orientation, s.spacing) for s in mixed] == [(s.seed, s.orientation, s.spacing) for s in plain]
    # The template subjects cycle over the templates as the plain population's first ten do.
    templates = [s.anatomy for s in mixed if s.anatomy != SYNTHETIC_ANATOMY]
    assert templates == [s.anatomy for s in plain[:10]]
    assert population("train", 20, synthetic_fraction=0.0) == plain
    assert population("train", 12, synthetic_fraction=0.5) == mixed[:12]  # asking for more only appends
    assert all(s.anatomy == SYNTHETIC_ANATOMY for s in population("train", 5, synthetic_fraction=1.0))


def test_synthetic_individuals_are_for_training_only() -> None:
    with pytest.raises(ValueError, match="real anatomy only"):
        population("validation", 2, synthetic_fraction=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        population("train", 2, synthetic_fraction=1.5)


def test_a_synthetic_subject_is_made_the_population_way() -> None:
    spec = population("train", 2, synthetic_fraction=0.5)[1]
    assert spec.anatomy == SYNTHETIC_ANATOMY
    subject = make_subject(spec)
    assert subject.image.GetSpacing() == pytest.approx(spec.spacing)
    brain = array(subject.brain) > 0
    litres = brain.sum() * np.prod(subject.image.GetSpacing()) / 1e6
    assert 1.0 < litres < 2.2
    assert np.median(array(subject.image)[brain]) > 0
