"""Scores: shapes, batching that changes nothing, the math of combi/ensemble, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AnomalyDetectionLib.errors import Cancelled, ModelError
from AnomalyDetectionLib.models import build_model, make_card
from AnomalyDetectionLib.progress import Progress
from AnomalyDetectionLib.scoring import SCORES, score_slices, score_statistics, scores_for


def score_batch(model, x: torch.Tensor, score: str, **params) -> torch.Tensor:
    """One batch through the engine's stack scorer: ``x`` as one batch, tensor in and out."""
    return torch.from_numpy(score_slices(model, x.numpy(), score, params, batch_size=len(x)))


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = build_model(make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6))
    model.network.eval()
    return model


@pytest.fixture(scope="module")
def ae():
    torch.manual_seed(0)
    model = build_model(make_card(arch="ae", size=32, channels=(4, 8, 8), latent_dim=6))
    model.network.eval()
    return model


@pytest.fixture(scope="module")
def slices() -> np.ndarray:
    return np.random.default_rng(0).random((7, 1, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("score", SCORES)
def test_every_score_maps_a_batch_to_its_shape(vae, slices, score) -> None:
    out = score_batch(vae, torch.from_numpy(slices), score)
    assert out.shape == slices.shape
    assert torch.isfinite(out).all()
    if score != "ensemble":
        assert float(out.min()) >= 0 and float(out.max()) > 0


@pytest.mark.parametrize("score, params", [
    ("reconstruction", {}), ("ssim_residual", {}), ("kl_grad", {}), ("elbo_grad", {}), ("combi", {}),
    # a few steps: float rounding differs between batch sizes and iterating amplifies it
    ("energy_projection", {"steps": 3}),
])
def test_batched_equals_one_slice_at_a_time(vae, slices, score, params) -> None:
    """The gradient of the summed objective is each slice's own gradient: no cross-talk in a batch."""
    batched = score_slices(vae, slices, score, params, batch_size=7)
    single = score_slices(vae, slices, score, params, batch_size=1)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6)


def test_combi_is_reconstruction_times_kl_gradient(vae, slices) -> None:
    x = torch.from_numpy(slices)
    expected = score_batch(vae, x, "reconstruction") * score_batch(vae, x, "kl_grad")
    torch.testing.assert_close(score_batch(vae, x, "combi"), expected)


def test_kl_gradient_matches_finite_differences(vae) -> None:
    from AnomalyDetectionLib.models import kl_divergence

    x = torch.rand(1, 1, 32, 32, dtype=torch.float32)
    gradient = score_batch(vae, x, "kl_grad", sigma=0.0)  # the raw gradient, not smoothed
    index = torch.argmax(gradient)
    step = 1e-2
    bumped = x.clone().view(-1)
    bumped[index] += step
    with torch.no_grad():
        kl = lambda t: float(kl_divergence(*vae.network.encode(t.view(1, 1, 32, 32))))  # noqa: E731
        numeric = (kl(bumped) - kl(x)) / step
    assert abs(numeric) == pytest.approx(float(gradient.view(-1)[index]), rel=0.1)


def test_gradient_scores_are_smoothed_by_the_cards_sigma(vae, slices) -> None:
    from monai.networks.layers import GaussianFilter

    x = torch.from_numpy(slices)
    sigma = vae.card["gradient_sigma_px"]
    assert sigma == pytest.approx(3.0 * vae.card["size"] / 64)  # Zimmerer et al.'s 3 px at 64 px
    raw = score_batch(vae, x, "kl_grad", sigma=0.0)
    smoothed = score_batch(vae, x, "kl_grad")
    torch.testing.assert_close(smoothed, GaussianFilter(2, sigma)(raw))
    assert float(smoothed.max()) < float(raw.max())  # speckle spread out
    rec = score_batch(vae, x, "reconstruction")
    torch.testing.assert_close(score_batch(vae, x, "combi"), rec * smoothed, rtol=1e-4, atol=1e-7)
    card = dict(vae.card)
    del card["gradient_sigma_px"]  # a card from before smoothing: maps as they were calibrated
    old = type(vae)(card=card, network=vae.network)
    torch.testing.assert_close(score_batch(old, x, "kl_grad"), raw)
    with pytest.raises(ModelError, match="takes no parameter"):
        score_batch(vae, x, "reconstruction", sigma=2.0)


def _ssim_by_hand(a: np.ndarray, b: np.ndarray, sigma: float, mode: str = "nearest") -> np.ndarray:
    """Wang et al.'s SSIM map with a Gaussian window, written out with scipy (population variances)."""
    from scipy.ndimage import gaussian_filter

    radius = round(3.5 * sigma)
    blur = lambda t: gaussian_filter(t.astype(np.float64), sigma, truncate=radius / sigma, mode=mode)  # noqa: E731
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


class _Blur(torch.nn.Module):
    """A stand-in 'model' whose reconstruction is a 5-pixel box blur: smooth like a real decoder."""

    is_variational = False

    def center(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def test_ssim_residual_is_one_minus_local_ssim() -> None:
    from AnomalyDetectionLib.scoring import ssim_residual

    rng = np.random.default_rng(3)
    x = np.zeros((1, 1, 64, 64), dtype=np.float32)
    x[..., 8:56, 8:56] = 0.6
    x[..., 36:44, 36:44] += 0.3 * rng.random((8, 8)).astype(np.float32)  # texture the blur cannot keep
    network = _Blur()
    out = ssim_residual(network, torch.from_numpy(x), window_sigma=1.5).numpy()
    assert out.shape == x.shape
    x_hat = network.reconstruct(torch.from_numpy(x)).numpy()
    expected = 1.0 - _ssim_by_hand(x_hat[0, 0], x[0, 0], 1.5)
    # float32 variances (E[x^2] - E[x]^2) against float64 ones: agreement to a few 1e-4; beyond the
    # slice the edge values repeat, as in scipy's 'nearest' mode
    np.testing.assert_allclose(out[0, 0], np.clip(expected, 0, None), atol=1e-3)
    # the default window scales with the slice: 6 px per 128 px, so a 16-px slice works too
    default = ssim_residual(network, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(default, ssim_residual(network, torch.from_numpy(x), window_sigma=3.0).numpy())
    assert ssim_residual(network, torch.from_numpy(x[..., :16, :16])).shape == (1, 1, 16, 16)
    # The textured patch is the structure the reconstruction lost; flat regions and background are not.
    # (the flat square and the background are beyond the window's reach of any edge: 2 + 5 pixels)
    assert out[0, 0, 38:42, 38:42].mean() > 0.3
    assert float(out[0, 0, 18:22, 18:22].max()) < 1e-4 and float(out[0, 0, :1, :1].max()) < 1e-6
    identity = type("Identity", (_Blur,), {"reconstruct": lambda self, t: t})()
    assert float(ssim_residual(identity, torch.from_numpy(x)).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="window_sigma"):
        ssim_residual(network, torch.from_numpy(x), window_sigma=0.0)


def test_energy_projection_without_steps_changes_nothing(vae, slices) -> None:
    out = score_batch(vae, torch.from_numpy(slices), "energy_projection", steps=0)
    assert float(out.abs().max()) == 0.0


def test_autoencoder_refuses_variational_scores(ae, slices) -> None:
    assert scores_for(ae) == ["reconstruction", "ssim_residual", "energy_projection", "ensemble", "intensity"]
    for score in ("kl_grad", "elbo_grad", "combi"):
        with pytest.raises(ModelError, match="needs a VAE"):
            score_batch(ae, torch.from_numpy(slices), score)
    assert score_batch(ae, torch.from_numpy(slices), "ensemble").shape == slices.shape


def test_unknown_score_and_parameter(vae, slices) -> None:
    x = torch.from_numpy(slices)
    with pytest.raises(ModelError, match="unknown score"):
        score_batch(vae, x, "magic")
    with pytest.raises(ModelError, match="takes no parameter steps"):
        score_batch(vae, x, "combi", steps=3)
    with pytest.raises(ModelError, match="no ensemble member"):
        score_batch(vae, x, "ensemble", bogus=1)


def test_calibrated_ensemble_does_not_depend_on_the_batch(vae, slices) -> None:
    """With normal statistics in the card, a slice's ensemble score is the same in any batch."""
    members = ("reconstruction", "kl_grad", "combi")
    stats = {m: score_statistics(score_slices(vae, slices, m)) for m in members}
    vae.card["calibration"] = {"stats": stats}
    try:
        whole = score_slices(vae, slices, "ensemble", batch_size=7)
        first_alone = score_batch(vae, torch.from_numpy(slices[:1]), "ensemble").numpy()
        np.testing.assert_allclose(first_alone, whole[:1], atol=1e-5)
        assert 0.0 <= whole.min() and whole.max() <= 1.0
    finally:
        vae.card["calibration"] = {}


def test_reconstruction_samples_average_several_decodings(vae, slices) -> None:
    x = torch.from_numpy(slices)
    torch.manual_seed(1)
    sampled = score_batch(vae, x, "reconstruction", samples=4)
    mean = score_batch(vae, x, "reconstruction")
    assert not torch.equal(sampled, mean)
    assert torch.corrcoef(torch.stack([sampled.flatten(), mean.flatten()]))[0, 1] > 0.5


def test_progress_reports_and_cancel_stops(vae, slices) -> None:
    seen = []
    score_slices(vae, slices, "reconstruction", batch_size=2, progress=Progress(lambda f, m: seen.append(f)))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 4
    with pytest.raises(Cancelled):
        score_slices(vae, slices, "reconstruction", batch_size=2, progress=Progress(cancel=lambda: True))


def test_ensemble_reuses_member_maps_it_is_given(ae, slices) -> None:
    """Given its members' maps, the ensemble combines them exactly as if it had computed them."""
    members = {m: score_slices(ae, slices, m) for m in ("reconstruction", "energy_projection")}
    fresh = score_slices(ae, slices, "ensemble")
    reused = score_slices(ae, slices, "ensemble", member_maps=members)
    assert np.allclose(fresh, reused, atol=1e-6)
    # Reuse means no member runs again: a member map of zeros changes the result.
    zeroed = score_slices(ae, slices, "ensemble", member_maps={**members, "reconstruction": np.zeros_like(slices)})
    assert not np.allclose(fresh, zeroed)


def test_intensity_yardstick_is_the_plain_rule(vae, ae, slices) -> None:
    """|x - median| / (1.4826 MAD) over the stack's foreground, by hand; no network, no parameters."""
    foreground = np.zeros(slices.shape, dtype=bool)
    foreground[:, :, 4:28, 4:28] = True
    inside = slices[foreground]
    median = np.median(inside)
    mad = 1.4826 * np.median(np.abs(inside - median))
    for model in (vae, ae):
        out = score_slices(model, slices, "intensity", foreground=foreground)
        np.testing.assert_allclose(out[foreground], np.abs(inside - median) / mad, rtol=1e-5)
        assert not out[~foreground].any()
    with pytest.raises(ModelError, match="takes no parameter"):
        score_slices(vae, slices, "intensity", {"sigma": 1.0})
    with pytest.raises(ModelError, match="yardstick"):
        score_slices(vae, slices, "ensemble", {"members": ["reconstruction", "intensity"]})
    assert "intensity" in scores_for(vae) and "intensity" in scores_for(ae)
