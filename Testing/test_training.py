"""Training: deterministic, resumable, split by volume, and calibrated on held-out normal data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AnomalyDetectionLib import Cancelled, ModelError, detect, load_model, train
from AnomalyDetectionLib.scoring import scores_for
from AnomalyDetectionLib.training import checkpoint_path, split_volumes
from conftest import TINY, array

QUICK = dict(TINY, size=32, channels=(8, 16), latent_dim=8, epochs=2)


def weights(model) -> list:
    return [t.clone() for t in model.network.state_dict().values()]


def test_split_is_by_volume_and_seeded() -> None:
    train_idx, val_idx = split_volumes(10, 0.2, seed=3)
    assert len(val_idx) == 2 and not set(train_idx) & set(val_idx)
    assert sorted(train_idx + val_idx) == list(range(10))
    assert split_volumes(10, 0.2, seed=3) == (train_idx, val_idx)
    assert split_volumes(1, 0.2, seed=3) == ([0], [])


def test_same_seed_same_model(normal_volumes) -> None:
    first = train(normal_volumes[:3], None, **QUICK)
    second = train(normal_volumes[:3], None, **QUICK)
    for a, b in zip(weights(first), weights(second)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = train(normal_volumes[:3], None, **dict(QUICK, seed=1))
    assert any(not torch.equal(a, b) for a, b in zip(weights(first), weights(other)))


def test_cancelled_run_resumes_to_the_same_model(normal_volumes, tmp_path) -> None:
    reference = train(normal_volumes[:3], tmp_path / "reference.pt", **QUICK)
    output = tmp_path / "resumed.pt"
    messages = []

    def stop_in_second_epoch() -> bool:
        return any(m.startswith("epoch 2/") for m in messages)

    with pytest.raises(Cancelled):
        train(normal_volumes[:3], output, progress=lambda f, m: messages.append(m), cancel=stop_in_second_epoch,
              **QUICK)
    assert checkpoint_path(output).exists() and not output.exists()  # no half-made model file
    resumed = train(normal_volumes[:3], output, resume=True, **QUICK)
    for a, b in zip(weights(reference), weights(resumed)):
        torch.testing.assert_close(a, b)
    assert not checkpoint_path(output).exists()
    assert [h["epoch"] for h in resumed.card["training"]["history"]] == [1, 2]


def test_card_records_training_and_calibration(tiny_vae) -> None:
    card = load_model(tiny_vae.path).card
    training = card["training"]
    assert len(training["history"]) == training["epochs"] == 25
    assert not set(training["volumes"]) & set(training["validation_volumes"])
    assert training["validation_volumes"] and training["train_slices"] > 50
    calibration = card["calibration"]
    assert calibration["source"] == "held-out validation volumes"
    assert set(calibration["thresholds"]) == set(scores_for(tiny_vae))
    assert calibration["percentile"] == 99.5
    # the per-scan answer: every calibration volume's sample score, per score
    assert set(calibration["sample_scores"]) == set(scores_for(tiny_vae))
    assert all(len(v) == calibration["n_volumes"] for v in calibration["sample_scores"].values())
    history = [h["val_loss"] for h in training["history"]]
    assert training["best_validation_loss"] == min(history) and history[-1] < history[0]


def _false_positive_rate(model, volume, score: str) -> float:
    result = detect(volume, model, score=score, device="cpu")
    return float(array(result.mask)[array(result.foreground) > 0].mean())


@pytest.mark.parametrize("score", ["reconstruction", "combi", "ensemble", "intensity"])
def test_calibrated_threshold_sets_the_false_positive_rate_on_normal_data(tiny_vae, normal_volumes, score) -> None:
    """0.5 % of the calibration volume's voxels exceed its 99.5th-percentile threshold through ``detect``
    (same pipeline as calibration); an unseen normal subject stays within a few per cent."""
    _, validation = split_volumes(4, 0.2, seed=0)  # how tiny_vae split its four volumes
    assert _false_positive_rate(tiny_vae, normal_volumes[validation[0]], score) == pytest.approx(0.005, abs=0.002)
    assert _false_positive_rate(tiny_vae, normal_volumes[4], score) < 0.05


def test_bad_training_requests(normal_volumes) -> None:
    with pytest.raises(ValueError, match="at least one normal volume"):
        train([], None)
    with pytest.raises(ValueError, match="epochs"):
        train(normal_volumes[:1], None, epochs=0)
    with pytest.raises(ModelError, match="multiple of 16"):
        train(normal_volumes[:1], None, size=40, epochs=1)


def test_single_volume_trains_and_says_how_it_was_calibrated(normal_volumes) -> None:
    model = train(normal_volumes[:1], None, **dict(QUICK, epochs=1))
    assert model.card["calibration"]["source"].startswith("the training volume")
    assert np.isfinite(list(model.thresholds.values())).all()


def test_sample_percentile_places_a_scan_among_the_calibration_normals(tiny_vae, normal_volumes, lesion_case) -> None:
    normals = sorted(tiny_vae.card["calibration"]["sample_scores"]["reconstruction"])
    lesion = detect(lesion_case[0], tiny_vae, score="reconstruction", device="cpu").report
    assert lesion["sample_normals"] == len(normals)
    expected = 100.0 * sum(v < lesion["sample_score"] for v in normals) / len(normals)
    assert lesion["sample_percentile"] == pytest.approx(expected)
    # other post-processing than calibrated: no percentile, rather than a wrong one
    other = detect(lesion_case[0], tiny_vae, score="reconstruction", device="cpu",
                   postprocessing={"smoothing": "none"}).report
    assert other["sample_percentile"] is None


def test_the_sample_score_is_taken_before_the_per_scan_normalisation(tiny_vae, lesion_case) -> None:
    """The per-scan normalisation measures voxels against the scan's own typical voxel, which takes
    out the scan-wide excess a whole-scan answer needs: the sample score is the top 1 % of the map
    before it (chosen on the validation set), whatever the map's normalisation."""
    from AnomalyDetectionLib.pipeline import foreground_values
    from AnomalyDetectionLib.postprocessing import sample_score

    normalised = detect(lesion_case[0], tiny_vae, score="reconstruction", device="cpu",
                        postprocessing={"normalisation": "scan"})
    plain = detect(lesion_case[0], tiny_vae, score="reconstruction", device="cpu", reuse=normalised.prepared,
                   postprocessing={"normalisation": "none"})
    expected = sample_score(foreground_values(plain.anomaly_map, plain.foreground))
    assert normalised.report["sample_score"] == pytest.approx(expected, rel=1e-6)
    assert plain.report["sample_score"] == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(sample_score(foreground_values(normalised.anomaly_map, normalised.foreground)))


def test_normals_calibrated_under_another_sample_score_rule_give_no_percentile(tiny_vae, lesion_case) -> None:
    from AnomalyDetectionLib import Detector

    detector = Detector(tiny_vae, score="reconstruction", device="cpu")
    assert detector.sample_percentile(1e9)["sample_percentile"] == 100.0
    calibration = tiny_vae.card["calibration"]
    rule = calibration.pop("sample_score_rule")
    try:
        assert detector.sample_percentile(1e9)["sample_percentile"] is None
    finally:
        calibration["sample_score_rule"] = rule


def test_coarse_noise_is_smooth_seeded_and_stays_inside_the_brain() -> None:
    from AnomalyDetectionLib.training import coarse_noise, denoising_settings

    clean = torch.zeros(2, 1, 64, 64)
    clean[:, :, 8:56, 8:56] = 0.5
    noisy = coarse_noise(clean, 0.2, 8, torch.Generator().manual_seed(0))
    again = coarse_noise(clean, 0.2, 8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy, again, rtol=0, atol=0)
    added = (noisy - clean)[:, :, 8:56, 8:56]
    assert float((noisy - clean)[clean == 0].abs().max()) == 0.0  # background untouched
    assert 0.08 < float(added.std()) < 0.3  # about the asked std (bilinear upsampling shrinks it a little)
    # coarse: neighbouring pixels carry nearly the same noise, unlike white noise
    neighbours = torch.corrcoef(torch.stack([added[..., :, :-1].flatten(), added[..., :, 1:].flatten()]))[0, 1]
    assert float(neighbours) > 0.95
    assert not torch.equal(noisy[0], noisy[1])  # each slice its own draw
    assert denoising_settings() == {"std": 0.2, "grid_px": 16}
    with pytest.raises(ValueError, match="unknown denoising"):
        denoising_settings({"sigma": 1.0})
    with pytest.raises(ValueError, match="positive"):
        denoising_settings({"std": 0.0})


def test_denoising_training_learns_the_clean_slice_and_says_so(normal_volumes, tmp_path) -> None:
    """The loss compares the decoding of a corrupted slice with the clean one: a different model
    from plain training with the same seed, recorded in the card, and a resume refuses a mismatch."""
    from AnomalyDetectionLib.models import negative_elbo

    settings = dict(QUICK, arch="ae", epochs=2)
    plain = train(normal_volumes[:3], None, **settings)
    denoiser = train(normal_volumes[:3], tmp_path / "dae.pt", denoising={"std": 0.2, "grid_px": 4}, **settings)
    assert plain.card["training"]["denoising"] is None
    assert load_model(tmp_path / "dae.pt").card["training"]["denoising"] == {"std": 0.2, "grid_px": 4}
    assert any(not torch.equal(a, b) for a, b in zip(weights(plain), weights(denoiser)))
    x = torch.rand(2, 1, 32, 32)
    target = torch.zeros_like(x)
    with torch.no_grad():
        towards_target = negative_elbo(denoiser.network, x, sample=False, target=target)
        expected = denoiser.network.reconstruct(x).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(towards_target, expected)

    output = tmp_path / "resume.pt"
    with pytest.raises(Cancelled):
        train(normal_volumes[:3], output, cancel=lambda: checkpoint_path(output).exists(), **settings)
    with pytest.raises(ModelError, match="denoising"):
        train(normal_volumes[:3], output, resume=True, denoising={}, **settings)
    # nor does it go on with other data, another seed or another learning rate than the stopped run's
    with pytest.raises(ModelError, match="description"):
        train(normal_volumes[:3], output, resume=True, description="other volumes", **settings)
    with pytest.raises(ModelError, match="seed, learning_rate"):
        train(normal_volumes[:3], output, resume=True, **dict(settings, seed=1, learning_rate=1e-4))
    assert len(train(normal_volumes[:3], output, resume=True, **settings).card["training"]["history"]) == 2
