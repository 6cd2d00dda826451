"""The zimmerer2019 experiment (VAE loss terms and pixel scores on Fashion-MNIST and brains) in quick mode."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from AnomalyDetectionResearch.experiments import run_experiment
from AnomalyDetectionResearch.experiments.zimmerer2019 import (
    PIXEL_SCORES,
    SAMPLE_TERMS,
    beta_to_scaling,
    image_region,
    ranking_metrics,
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    paths = run_experiment("zimmerer2019", folder, quick=True, device="cpu")
    return folder / "zimmerer2019", paths, json.loads(paths["json"].read_text())


def _in_unit(value):
    return value is not None and not math.isnan(value) and 0.0 <= value <= 1.0


def test_quick_run_writes_report_figures_and_summary(quick_run):
    folder, paths, results = quick_run
    for key in ("markdown", "html", "json"):
        assert paths[key].is_file()
    names = ["brain_maps.png", "auroc_per_score.png"]
    if "skipped" not in results["fashion_mnist"]:
        names += ["fmnist_beta_sweep.png", "fmnist_per_class_auroc.png", "fmnist_maps.png"]
    for name in names:
        assert (folder / name).stat().st_size > 1000, name
    text = paths["markdown"].read_text()
    for heading in ("## How this was run", "## Brain MRI (C)", "## The paper's numbers", "## Conclusions"):
        assert heading in text
    assert 3 <= len(results["summary"]) <= 6
    assert all({"finding", "paper", "ours"} <= set(row) for row in results["summary"])


def test_brain_has_every_score_with_metrics_in_range(quick_run):
    _, _, results = quick_run
    brain = results["brain"]
    assert [r["score"] for r in brain["summary"]] == list(PIXEL_SCORES)
    for row in brain["summary"]:
        for key in ("voxel_auroc", "voxel_auprc", "best_dice"):
            assert _in_unit(row[key]), (row["score"], key, row[key])
        assert row["dice"] is None or 0.0 <= row["dice"] <= 1.0
    assert brain["by_type"], "no per-lesion-type rows"
    for row in brain["by_type"]:
        assert row["n"] >= 1
        for score in PIXEL_SCORES:
            assert _in_unit(row[f"{score}_voxel_auroc"]), (row["lesion_type"], score)


def test_fashion_mnist_tables_cover_classes_terms_and_sweep(quick_run):
    _, paths, results = quick_run
    fashion = results["fashion_mnist"]
    if "skipped" in fashion:
        assert "Fashion-MNIST is not installed" in paths["markdown"].read_text()
        return
    classes = fashion["protocol"]["classes"]
    assert [r["class"] for r in fashion["sample_level"]] == classes
    assert [r["class"] for r in fashion["pixel_level"]] == classes
    for row in fashion["sample_level"]:
        for term in SAMPLE_TERMS:
            assert _in_unit(row[f"{term}_auroc"]) and _in_unit(row[f"{term}_auprc"])
        # the ELBO is the sum of the two terms (beta-weighted), so its mean lies above the reconstruction's
        assert row["elbo_normal_mean"] >= row["reconstruction_normal_mean"]
    for row in fashion["pixel_level"] + fashion["pixel_raw_gradients"]:
        for key, value in row.items():
            if key.endswith(("_auroc", "_auprc")):
                assert _in_unit(value), (row["class"], key)
    betas = sorted(fashion["protocol"]["sweep_betas"])
    assert [r["beta"] for r in fashion["beta_sweep_means"]] == betas
    assert len(fashion["beta_sweep"]) == len(betas) * len(fashion["protocol"]["sweep_classes"])
    assert all(abs(r["scaling"] - 2.0 / r["beta"]) < 1e-12 for r in fashion["beta_sweep"])


def test_beta_to_scaling_matches_the_authors_default():
    assert beta_to_scaling(2.0) == 1.0  # the script's default input scaling 1, decoder std 1
    assert beta_to_scaling(0.5) == 4.0


def test_ranking_metrics_and_region():
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    found = ranking_metrics(scores, np.array([False, False, True, True]))
    assert found == {"auroc": 1.0, "auprc": 1.0}
    inverted = ranking_metrics(-scores, np.array([False, False, True, True]))
    assert inverted["auroc"] == 0.0
    region = image_region((2, 1, 32, 32))
    assert region.sum() == 2 * 28 * 28 and not region[..., :2, :].any() and region[..., 2:30, 2:30].all()
