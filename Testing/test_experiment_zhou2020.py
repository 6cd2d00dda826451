"""The zhou2020 experiment (beta sweep, every score, energy projection on brains vs images) in quick mode."""

from __future__ import annotations

import json
import math

import pytest

from AnomalyDetectionResearch.data.fashion_mnist import fashion_mnist_available
from AnomalyDetectionResearch.experiments import run_experiment
from AnomalyDetectionResearch.experiments.zhou2020 import QUICK_BETAS, SCORES, energy_gain, ranking


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    paths = run_experiment("zhou2020", folder, quick=True, device="cpu")
    return folder / "zhou2020", paths, json.loads(paths["json"].read_text())


def test_quick_run_writes_the_report_with_every_beta_and_score(quick_run):
    folder, paths, results = quick_run
    text = paths["markdown"].read_text()
    assert "## How this was run" in text and "## Conclusions" in text and "energy" in text
    for name in ("brain_auroc_vs_beta.png", "brain_auprc_vs_beta.png", "brain_maps.png"):
        assert (folder / name).stat().st_size > 1000, name
    rows = results["brain"]["rows"]
    assert sorted({(r["beta"], r["score"]) for r in rows}) == sorted((b, s) for b in QUICK_BETAS for s in SCORES)
    for row in rows:
        for key in ("voxel_auroc", "voxel_auprc", "best_dice"):
            assert 0.0 <= row[key] <= 1.0, (row, key)
    assert [r["beta"] for r in results["ranking"]] == list(QUICK_BETAS)
    assert all(set(r["brain (voxel AUROC)"].split(" > ")) == set(SCORES) for r in results["ranking"])
    assert 3 <= len(results["summary"]) <= 6


@pytest.mark.skipif(not fashion_mnist_available(), reason="Debian's dataset-fashion-mnist is not installed")
def test_quick_run_compares_energy_projection_on_both_datasets(quick_run):
    folder, _, results = quick_run
    assert (folder / "fmnist_auroc_vs_beta.png").is_file()
    assert len(results["fashion_mnist"]["rows"]) == len(QUICK_BETAS) * len(SCORES)
    for gain in results["energy_gain"]:
        assert -1.0 <= gain["brain AUROC gain"] <= 1.0 and -1.0 <= gain["Fashion-MNIST AUROC gain"] <= 1.0


def test_ranking_and_energy_gain_are_computed_from_the_rows():
    rows = [{"beta": 1.0, "score": "reconstruction", "a": 0.7, "p": 0.2},
            {"beta": 1.0, "score": "energy_projection", "a": 0.75, "p": 0.1},
            {"beta": 1.0, "score": "combi", "a": None, "p": None}]
    assert ranking(rows, "a") == ["energy_projection", "reconstruction", "combi"]
    gain = energy_gain(rows, "a", "p")[1.0]
    assert math.isclose(gain["auroc"], 0.05) and math.isclose(gain["auprc"], -0.1)
