"""Detection with tiny trained models on real anatomy: lesions outrank normal tissue for every score."""

from __future__ import annotations

import numpy as np
import pytest

from AnomalyDetectionLib import Cancelled, Detector, ModelError, detect, reconstruct
from AnomalyDetectionLib.evaluation import voxel_auroc
from AnomalyDetectionLib.scoring import SCORES
from conftest import array

#: Voxel AUROC of the lesion inside the foreground that each score must reach on the tiny VAE.
MINIMUM_AUROC = {"reconstruction": 0.85, "ssim_residual": 0.85, "kl_grad": 0.65, "elbo_grad": 0.8, "combi": 0.85,
                 "energy_projection": 0.85, "ensemble": 0.85, "intensity": 0.8}


@pytest.mark.parametrize("score", SCORES)
def test_lesion_outranks_normal_tissue(tiny_vae, lesion_case, score) -> None:
    image, truth = lesion_case
    result = detect(image, tiny_vae, score=score, device="cpu")
    auroc = voxel_auroc(array(result.anomaly_map), array(truth), array(result.foreground))
    assert auroc >= MINIMUM_AUROC[score], f"{score}: AUROC {auroc:.3f}"


@pytest.mark.parametrize("score", ["reconstruction", "energy_projection", "ensemble"])
def test_autoencoder_scores_find_the_lesion(tiny_ae, lesion_case, score) -> None:
    image, truth = lesion_case
    result = detect(image, tiny_ae, score=score, device="cpu")
    assert voxel_auroc(array(result.anomaly_map), array(truth), array(result.foreground)) >= 0.85


def test_default_score_calibrated_threshold_and_report(tiny_vae, lesion_case) -> None:
    image, truth = lesion_case
    before = array(image).copy()
    result = detect(image, tiny_vae, device="cpu")
    report = result.report
    assert report["score"] == "elbo_grad" == tiny_vae.card["default_score"]
    assert report["threshold"] == pytest.approx(tiny_vae.thresholds["elbo_grad"])
    assert report["threshold_source"] == "calibrated" and not report["warnings"]
    mask = array(result.mask)
    assert set(np.unique(mask)) <= {0, 1}
    expected = (array(result.anomaly_map) >= report["threshold"]) & (array(result.foreground) > 0)
    np.testing.assert_array_equal(mask, expected.astype(np.uint8))
    assert report["anomalous_voxels"] == int(mask.sum())
    assert mask[array(truth) > 0].mean() > mask[array(truth) == 0].mean()  # the lesion is where the mask is
    assert report["sample_score"] > 0 and report["timings"]["total_s"] > 0
    np.testing.assert_array_equal(array(image), before)


def test_given_threshold_and_uncalibrated_model(tiny_vae, lesion_case) -> None:
    image, _ = lesion_case
    result = detect(image, tiny_vae, score="reconstruction", threshold=0.2, device="cpu")
    assert result.report["threshold"] == 0.2 and result.report["threshold_source"] == "given"
    with pytest.raises(ModelError, match="neither 'auto' nor a number"):
        detect(image, tiny_vae, threshold="high", device="cpu")
    saved = tiny_vae.card["calibration"]
    tiny_vae.card["calibration"] = {}
    try:
        result = detect(image, tiny_vae, score="reconstruction", device="cpu")
    finally:
        tiny_vae.card["calibration"] = saved
    assert result.report["threshold_source"].startswith("volume percentile")
    assert "no calibrated threshold" in result.report["warnings"][0]


def test_postprocessing_override_warns_about_calibration(tiny_vae, lesion_case) -> None:
    image, _ = lesion_case
    result = detect(image, tiny_vae, score="reconstruction", postprocessing={"smoothing": "none"}, device="cpu")
    assert any("calibrated with post-processing" in w for w in result.report["warnings"])


def test_progress_and_cancel(tiny_vae, lesion_case) -> None:
    image, _ = lesion_case
    seen = []
    detect(image, tiny_vae, score="reconstruction", batch_size=4, device="cpu",
           progress=lambda fraction, message: seen.append(fraction))
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) > 5
    with pytest.raises(Cancelled):
        detect(image, tiny_vae, score="reconstruction", device="cpu", cancel=lambda: True)


def test_reconstruction_is_on_the_input_grid_and_matches_the_reconstruction_score(tiny_ae, lesion_case) -> None:
    """x_hat on the input grid: where the model rebuilds normal tissue, |x - x_hat| is the score."""
    image, truth = lesion_case
    rebuilt = reconstruct(image, tiny_ae, device="cpu")
    assert rebuilt.GetSize() == image.GetSize() and rebuilt.GetSpacing() == image.GetSpacing()
    assert rebuilt.GetOrigin() == image.GetOrigin() and rebuilt.GetDirection() == image.GetDirection()
    values = array(rebuilt)
    result = detect(image, tiny_ae, score="reconstruction", device="cpu",
                    postprocessing={"smoothing": "none"})
    inside = array(result.foreground) > 0
    assert values.min() >= 0.0 and values.max() <= 1.0 and values[~inside].max() == 0.0
    assert values[inside].std() > 0.05  # anatomy, not a constant
    # The reconstruction misses the lesion: it differs from the input more there than elsewhere.
    error = array(result.anomaly_map)
    lesion = (array(truth) > 0) & inside
    assert error[lesion].mean() > 2 * error[inside & ~lesion].mean()


def test_reconstruction_can_be_cancelled(tiny_ae, lesion_case) -> None:
    with pytest.raises(Cancelled):
        reconstruct(lesion_case[0], tiny_ae, device="cpu", cancel=lambda: True)


@pytest.mark.parametrize("score", ["reconstruction", "combi", "ensemble", "intensity"])
def test_scans_scored_in_shared_batches_get_the_maps_they_get_alone(tiny_vae, normal_volumes, lesion_case, score):
    """A cohort's GPU worker scores the slices of several scans together (Detector.score_many); each
    scan's maps and detection are those it gets on its own, up to the last bits a slice's batch size
    moves (which is why CPU workers score one scan at a time: there a cohort is bit-identical)."""
    detector = Detector(tiny_vae, score=score, device="cpu", batch_size=7)  # batches straddle the scans
    volumes = [detector.prepare(image, f"scan {i}") for i, image in enumerate([lesion_case[0], *normal_volumes[:2]])]
    together = detector.score_many(volumes)
    assert len(together) == len(volumes)
    for prepared, (maps, run) in zip(volumes, together):
        alone = detector.score(prepared)
        np.testing.assert_allclose(maps, alone, rtol=0, atol=1e-4 * float(alone.max()))
        assert run.device == "cpu" and run.warnings == []
    np.testing.assert_array_equal(detector.score_many(volumes[:1])[0][0], detector.score(volumes[0]))
    alone = detector.detect(lesion_case[0], name="scan 0")
    maps, run = detector.score_many(volumes[:1])[0]
    finished = detector.finish(volumes[0], maps, run, {}, name="scan 0")
    np.testing.assert_array_equal(array(finished.anomaly_map), array(alone.anomaly_map))
    assert finished.report["sample_score"] == alone.report["sample_score"]
    assert finished.report["anomalous_voxels"] == alone.report["anomalous_voxels"]
