"""The shipped brain models and sample scan: they load, are calibrated, and find the sample's tumour.

These run the real bundled VAE on the real shipped sample (a skull-on T1 in its own pose, voxel
order and voxel size): registration, template-space scoring and the map back on the input grid,
exactly as ``anomaly-detection detect scan.nrrd`` does with no ``--model``.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib import detect, evaluate, load_model
from AnomalyDetectionLib.cli import main as cli_main
from AnomalyDetectionLib.models import bundled_model_paths
from AnomalyDetectionLib.models.model_file import DEFAULT_MODEL
from AnomalyDetectionLib.preprocessing import read_volume
from AnomalyDetectionLib.scoring import scores_for
from AnomalyDetectionResearch.data import available_anatomy

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "AnomalyDetection" / "Resources" / "Samples" / "brain_t1_tumour.nrrd"
SAMPLE_TRUTH = ROOT / "AnomalyDetection" / "Resources" / "Samples" / "brain_t1_tumour_truth.nrrd"
BUNDLED = ("brain_t1_vae", "brain_t1_ae")
#: The training script's default scores (the one recipe): the validation rule's choice.
RECIPE_DEFAULTS = runpy.run_path(str(ROOT / "scripts" / "train_bundled_models.py"), run_name="recipe")[
    "BUNDLED_DEFAULT_SCORES"]
SHIPPED_SCORE = RECIPE_DEFAULTS[DEFAULT_MODEL]


@pytest.fixture(scope="module")
def sample_result():
    return detect(str(SAMPLE), DEFAULT_MODEL, device="cpu")


def test_the_vae_and_the_entropy_constrained_ae_ship() -> None:
    assert sorted(p.stem for p in bundled_model_paths()) == sorted(BUNDLED)
    assert DEFAULT_MODEL == "brain_t1_ae"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_cards_load_and_every_score_is_calibrated(name) -> None:
    model = load_model(name)
    card = model.card
    assert card["template"]["name"] == "mni152_t1"
    assert card["calibration"]["n_volumes"] >= 8
    for score in scores_for(model):
        assert np.isfinite(model.thresholds[score]) and model.thresholds[score] > 0, score
    assert card["default_score"] == RECIPE_DEFAULTS[name]
    # The JSON copy beside the weights is the card itself, so it can be read without torch.
    shipped = json.loads(model.path.with_suffix(".card.json").read_text())
    assert shipped == json.loads(json.dumps(card))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_cards_carry_the_post_processing_the_training_script_writes(name) -> None:
    """The shipped cards are what ``scripts/train_bundled_models.py`` (the one recipe) writes: its
    default per-scan map normalisation, and thresholds calibrated with exactly that post-processing."""
    from AnomalyDetectionLib.postprocessing import postprocessing_settings, same_postprocessing

    script = runpy.run_path(str(ROOT / "scripts" / "train_bundled_models.py"), run_name="recipe")
    recipe = script["parse_args"]([])
    card = load_model(name).card
    assert card["postprocessing"]["normalisation"] == recipe.map_normalisation == "scan"
    assert same_postprocessing(card["calibration"]["postprocessing"], postprocessing_settings(card))


def test_the_shipped_defaults_are_the_validation_rules_choice() -> None:
    """The default model's default score is what the written rule picks on the committed validation
    report, and each bundled model's is what the rule picks among that model's scores alone."""
    from AnomalyDetectionResearch.selection import choose_default, report_from_folder

    report = report_from_folder(ROOT / "reports" / "validation", target_fp_rate=0.005)
    choice = choose_default(report)
    assert (choice["model"], choice["score"]) == (DEFAULT_MODEL, SHIPPED_SCORE)
    for name in BUNDLED:
        own = {part: [r for r in report[part] if r["model"] == name or r["score"] == "intensity"]
               for part in ("summary", "by_type", "by_anatomy")}
        assert choose_default({**report, **own})["score"] == RECIPE_DEFAULTS[name] == load_model(name).card[
            "default_score"]


def test_the_ae_latent_size_comes_from_the_documented_rule() -> None:
    card = load_model("brain_t1_ae").card
    rule = card["training"]["latent_rule"]
    assert card["latent_dim"] == rule["latent_dim"] <= 64
    assert rule["explained"] >= 0.9


@pytest.mark.skipif(not {"mni152_t1", "colin27_ch2"} <= set(available_anatomy()), reason="needs the offline templates")
def test_the_recipe_runs_end_to_end_and_leaves_only_the_bundled_files(tmp_path) -> None:
    """``make models`` in miniature (a few subjects, one epoch, a narrow 2.5D AE): the one recipe writes the
    fp16 model and its card, the card says how it was made, and nothing of training is left beside them."""
    script = runpy.run_path(str(ROOT / "scripts" / "train_bundled_models.py"), run_name="recipe")
    argv = ["--quick", "--models", "ae", "--channels", "8", "16", "--workers", "0", "--device", "cpu",
            "--context-slices", "1", "--output-dir", str(tmp_path)]
    assert script["main"](argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain_t1_ae.card.json", "brain_t1_ae.pt"]
    model = load_model(tmp_path / "brain_t1_ae.pt")
    assert model.context_slices == 1 and model.card["channels"] == [8, 16]
    assert model.card["default_score"] == RECIPE_DEFAULTS["brain_t1_ae"]
    assert model.card["training"]["recipe"] == "scripts/train_bundled_models.py " + " ".join(argv)
    assert set(model.thresholds) == set(scores_for(model))
    assert json.loads((tmp_path / "brain_t1_ae.card.json").read_text()) == model.card


def test_default_model_on_the_sample_puts_its_map_on_the_input_grid(sample_result) -> None:
    scan = read_volume(SAMPLE)
    for image in (sample_result.anomaly_map, sample_result.mask):
        assert image.GetSize() == scan.GetSize()
        assert np.allclose(image.GetSpacing(), scan.GetSpacing())
        assert np.allclose(image.GetOrigin(), scan.GetOrigin())
        assert np.allclose(image.GetDirection(), scan.GetDirection())
    report = sample_result.report
    assert report["model"] == DEFAULT_MODEL and report["score"] == SHIPPED_SCORE
    assert report["threshold_source"] == "calibrated"
    assert report["registration"]["brain_overlap"] > 0.9
    assert not report["warnings"]


@pytest.mark.parametrize("model, score, min_auroc, min_dice",
                         [("brain_t1_ae", "reconstruction", 0.92, 0.3), ("brain_t1_ae", "ssim_residual", 0.96, 0.55),
                          ("brain_t1_vae", "elbo_grad", 0.97, 0.4), ("brain_t1_vae", "combi", 0.93, 0.1),
                          ("brain_t1_vae", "reconstruction", 0.97, 0.5)])
def test_the_bundled_models_find_the_sample_tumour(sample_result, model, score, min_auroc, min_dice) -> None:
    """Bounds a little under what the shipped models give (README demo table, 2026-12-07: AE reconstruction
    AUROC 0.935, Dice 0.381; AE ssim_residual 0.977, 0.650; VAE elbo_grad 0.993, 0.542; VAE combi 0.961,
    0.148; VAE reconstruction 0.986, 0.618): a retrained model that does clearly worse fails here."""
    if (model, score) == (sample_result.report["model"], sample_result.report["score"]):
        result = sample_result
    else:  # same scan and template: reuse its preparation, as the demo does
        result = detect(str(SAMPLE), model, score=score, device="cpu", reuse=sample_result.prepared)
    truth = read_volume(SAMPLE_TRUTH, allow_constant=True)
    metrics = evaluate([result.anomaly_map], [truth], [result.foreground],
                       thresholds=[result.report["threshold"]])["cases"][0]
    assert metrics["voxel_auroc"] > min_auroc
    assert metrics["dice"] > min_dice
    inside = sitk.GetArrayViewFromImage(result.mask)[sitk.GetArrayViewFromImage(truth) > 0]
    outside = sitk.GetArrayViewFromImage(result.mask)[sitk.GetArrayViewFromImage(truth) == 0]
    assert inside.mean() > 10 * outside.mean()  # flagged far more often in the tumour than elsewhere


def test_detect_without_model_uses_the_default_model(tmp_path, capsys) -> None:
    assert cli_main(["detect", str(SAMPLE), "--output-dir", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    report = json.loads((tmp_path / "brain_t1_tumour_report.json").read_text())
    assert report["model"] == DEFAULT_MODEL and report["score"] == SHIPPED_SCORE
    assert (tmp_path / "brain_t1_tumour_anomaly.nii.gz").exists()
    assert (tmp_path / "brain_t1_tumour_mask.nii.gz").exists()
    assert cli_main(["models"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in BUNDLED)


@pytest.mark.skipif("colin27_ch2" not in available_anatomy(), reason="Colin27 (mricron-data) not installed")
def test_the_shipped_sample_is_reproducible(tmp_path) -> None:
    make_sample = runpy.run_path(str(ROOT / "scripts" / "make_sample.py"))["main"]
    make_sample(["--output-dir", str(tmp_path)])
    for name in (SAMPLE.name, SAMPLE_TRUTH.name):
        regenerated = read_volume(tmp_path / name, allow_constant=True)
        shipped = read_volume(SAMPLE.parent / name, allow_constant=True)
        assert np.array_equal(sitk.GetArrayViewFromImage(regenerated), sitk.GetArrayViewFromImage(shipped))
        assert np.allclose(regenerated.GetOrigin(), shipped.GetOrigin())
        assert np.allclose(regenerated.GetDirection(), shipped.GetDirection())


def test_quick_benchmark_of_the_bundled_models(tmp_path, capsys) -> None:
    """``anomaly-detection benchmark --quick``: 6 generated cases (skull on and off, several voxel
    orders) through registration and every bundled model and score, about a minute on a CPU."""
    out = tmp_path / "bench"
    assert cli_main(["benchmark", "--quick", "--output-dir", str(out), "--device", "cpu", "-q"]) == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert report["n_cases"] == 6 and report["case_counts"]["normal"] == 2
    rows = {(r["model"], r["score"]): r for r in report["summary"]}
    for name in BUNDLED:
        for score in scores_for(load_model(name)):
            if score != "intensity" or name == DEFAULT_MODEL:  # no network: runs once, under the first model
                assert (name, score) in rows, (name, score)
    assert rows[DEFAULT_MODEL, "intensity"]["calibrated"]  # the yardstick, calibrated like the others
    assert not [w for r in report["cases"] for w in r["warnings"]]  # every registration looked normal
    # Calibrated for 0.5 %: every score within 2x of it on both normal cases, but the AE ensemble
    # (1.14 % measured 2026-12-02 with the per-scan normalisation: these 2 mm voxels are coarser
    # than any calibration subject's, and the ensemble's rank-normalised map is the most spread).
    ensemble = ("brain_t1_ae", "ensemble")
    assert all(r["fp_rate"] <= 0.01 for r in report["summary"] if (r["model"], r["score"]) != ensemble)
    assert rows[ensemble]["fp_rate"] <= 0.015
    for key in (("brain_t1_vae", "reconstruction"), ("brain_t1_ae", "energy_projection"), ("brain_t1_ae", "ensemble")):
        assert rows[key]["voxel_auroc"] > 0.9, key
    # The per-scan normalisation takes the scan-level offset out of the map, and with it some of the
    # sample score's information: the ensemble's sample AUROC fell from 1.0 to 0.75 here (README).
    for key in (("brain_t1_vae", "reconstruction"), ("brain_t1_ae", "energy_projection")):
        assert rows[key]["sample_auroc"] >= 0.9, key
    assert f"Targets ({DEFAULT_MODEL}, {SHIPPED_SCORE})" in capsys.readouterr().out
