"""The cai2024 experiment (AE latent-size sweep, latent entropy, normal-data rules) in quick mode, and its helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from AnomalyDetectionResearch.experiments import run_experiment
from AnomalyDetectionResearch.experiments.cai2024 import (
    QUICK_LATENTS,
    VALIDATION_RULE,
    gaussian_rate,
    knee_pick,
    latent_entropy,
    one_se_pick,
    tolerance_pick,
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    paths = run_experiment("cai2024", folder, quick=True, device="cpu")
    return folder / "cai2024", paths, json.loads(paths["json"].read_text())


def _in_unit(value):
    return value is not None and 0.0 <= value <= 1.0


def test_quick_run_writes_report_figures_and_results(quick_run):
    folder, paths, results = quick_run
    for key in ("markdown", "html", "json"):
        assert paths[key].is_file()
    for name in ("brain_auroc.png", "brain_errors.png", "brain_entropy.png", "brain_auroc_vs_entropy.png",
                 "brain_maps.png"):
        assert (folder / name).stat().st_size > 1000, name
    text = paths["markdown"].read_text()
    assert "## How this was run" in text and "## Conclusions" in text and "## The paper's numbers" in text
    assert 3 <= len(results["summary"]) <= 6
    assert all({"finding", "paper", "ours"} <= set(row) for row in results["summary"])


def test_brain_sweep_has_every_size_with_metrics_in_range(quick_run):
    _, _, results = quick_run
    brain = results["brain"]
    sweep = [r for r in brain["sweep"] if r["in_sweep"]]
    assert [r["latent"] for r in sweep] == list(QUICK_LATENTS)
    for row in brain["sweep"]:
        for key in ("voxel_auroc", "voxel_auprc", "best_dice", "pasted_auroc", "pasted_auprc"):
            assert _in_unit(row[key]), (row["latent"], key, row[key])
        assert row["lesion_error"] > 0 and row["healthy_error"] > 0 and row["val_error"] > 0
        assert 0 < row["effective_dim"] <= row["latent"] + 1e-6
        assert row["rate_nats"] > 0
    # the PCA rule's pick was trained and evaluated even when it is not a sweep size
    assert brain["pca_rule"]["latent_dim"] in [r["latent"] for r in brain["sweep"]]


def test_rules_table_has_every_rule_and_an_oracle_that_no_rule_beats(quick_run):
    _, _, results = quick_run
    for part, key in (("brain", "voxel_auroc"), ("fashion_mnist", "pixel_auroc")):
        if "skipped" in results[part]:
            continue
        rules = results[part]["rules"]
        # the brain also has the validation-lesion rule, where setup fetched the validation heads
        with_validation = part == "brain" and bool(results[part].get("validation_cases"))
        assert len(rules) == 6 + with_validation and rules[-1]["rule"].startswith("oracle")
        if with_validation:
            assert rules[-2]["rule"] == VALIDATION_RULE
            assert all(r["validation_auprc_by_type"] for r in results[part]["sweep"])
        sizes = [r["latent"] for r in results[part]["sweep"]]
        for rule in rules[:-1]:
            assert rule["pick"] in sizes
            assert _in_unit(rule[key])
        # every rule except PCA picks from the sweep, where the oracle is best by definition
        assert all(r["gap_auroc"] >= -1e-12 for r in rules[1:-1])


def test_fashion_mnist_part_ran_or_says_why(quick_run):
    _, paths, results = quick_run
    fashion = results["fashion_mnist"]
    if "skipped" in fashion:
        assert "Fashion-MNIST is not installed" in paths["markdown"].read_text()
        return
    assert [r["latent"] for r in fashion["sweep"] if r["in_sweep"]] == list(QUICK_LATENTS)
    for row in fashion["sweep"]:
        assert _in_unit(row["pixel_auroc"]) and _in_unit(row["pixel_auprc"]) and _in_unit(row["sample_auroc"])


def test_latent_entropy_is_scale_free_and_counts_used_directions():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(500, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    wide = np.concatenate([codes, np.zeros((500, 60))], axis=1)  # 60 unused units
    base = latent_entropy(codes)
    assert latent_entropy(codes * 1000.0)["rate_nats"] == pytest.approx(base["rate_nats"], rel=1e-9)
    assert latent_entropy(wide)["rate_nats"] == pytest.approx(base["rate_nats"], rel=1e-6)
    assert latent_entropy(wide)["effective_dim"] == pytest.approx(base["effective_dim"], rel=1e-6)
    more = latent_entropy(rng.normal(size=(500, 16)))
    assert more["rate_nats"] > base["rate_nats"] and 12 < more["effective_dim"] <= 16
    assert gaussian_rate(np.array([1.0]), 1.0) == pytest.approx(0.5 * math.log(2.0))


def test_normal_error_rules_pick_the_bend_and_the_tolerance():
    sizes = [2, 4, 8, 16, 32, 64]
    errors = [1.0, 0.5, 0.2, 0.12, 0.11, 0.105]
    assert knee_pick(sizes, errors) == 8
    assert tolerance_pick(sizes, errors, 0.10) == 32
    assert tolerance_pick(sizes, errors, 1.0) == 8


def test_one_se_rule_takes_the_smallest_latent_tied_with_the_best():
    sizes = [2, 16, 64, 256]
    per_type = [
        {"a": 0.10, "b": 0.20, "c": 0.15},  # clearly behind the best on every type
        {"a": 0.30, "b": 0.26, "c": 0.34},  # behind by 0.01 on average, spread 0.04: a tie
        {"a": 0.29, "b": 0.31, "c": 0.33},  # the best mean
        {"a": 0.28, "b": 0.30, "c": 0.32},
    ]
    assert one_se_pick(sizes, per_type) == 16
    # a consistent lead is no tie: every type 0.05 behind, no spread
    per_type[1] = {k: v - 0.05 for k, v in per_type[2].items()}
    per_type[3] = {k: v - 0.05 for k, v in per_type[2].items()}
    assert one_se_pick(sizes, per_type) == 64
    assert one_se_pick(sizes, [{}, {}, {}, {}]) is None
