"""Networks and the model file: shapes, round trips, and every way a model file can be wrong."""

from __future__ import annotations

import pytest
import torch

from AnomalyDetectionLib.catalog import resolve_model_path
from AnomalyDetectionLib.errors import ModelError
from AnomalyDetectionLib.models import build_model, load_model, make_card, save_model
from AnomalyDetectionLib.models.model_file import FORMAT, FORMAT_VERSION


@pytest.mark.parametrize("arch", ["vae", "ae"])
@pytest.mark.parametrize("size", [64, 128])
def test_networks_keep_slice_shape(arch: str, size: int) -> None:
    model = build_model(make_card(arch=arch, size=size, channels=(4, 8, 8, 8), latent_dim=8))
    model.network.eval()
    x = torch.rand(3, 1, size, size)
    with torch.no_grad():
        x_hat = model.network.reconstruct(x)
    assert x_hat.shape == x.shape
    assert float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1
    mu, logvar = model.network.encode(x)
    assert mu.shape == (3, 8)
    assert (logvar is None) == (arch == "ae")


def test_size_not_multiple_of_16_is_rejected() -> None:
    with pytest.raises(ModelError, match="multiple of 16"):
        make_card(size=72)


def test_save_load_round_trip_gives_same_outputs(tmp_path) -> None:
    model = build_model(make_card(arch="vae", size=32, channels=(4, 8), latent_dim=4, beta=2.5, name="t"))
    model.network.eval()
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded.network.reconstruct(x), model.network.reconstruct(x))
    assert loaded.card == model.card and loaded.network.beta == 2.5
    assert loaded.path == path


def test_half_precision_file_is_smaller_and_close(tmp_path) -> None:
    model = build_model(make_card(arch="ae", size=32, channels=(8, 16), latent_dim=4))
    model.network.eval()
    full, half = save_model(model, tmp_path / "f.pt"), save_model(model, tmp_path / "h.pt", half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(load_model(half).network.reconstruct(x), model.network.reconstruct(x), atol=2e-2)


def test_not_a_model_file(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ModelError, match="junk.pt: not a model file"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="not an AnomalyDetection model file"):
        load_model(other)


def _payload(card, state):
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "card": card, "state_dict": state}


def test_card_that_does_not_match_the_weights(tmp_path) -> None:
    model = build_model(make_card(arch="vae", size=32, channels=(4, 8), latent_dim=4))
    card = dict(model.card, latent_dim=6)
    path = tmp_path / "mismatch.pt"
    torch.save(_payload(card, model.network.state_dict()), path)
    with pytest.raises(ModelError, match="weights do not match the model card"):
        load_model(path)


@pytest.mark.parametrize("change, message", [
    ({"arch": "gan"}, "architecture 'gan'"),
    ({"size": 40}, "not a multiple of 16"),
    ({"slice_axis": "oblique"}, "slice axis"),
    ({"latent_dim": "big"}, "'latent_dim' has the wrong type"),
])
def test_invalid_cards_are_named(tmp_path, change, message) -> None:
    model = build_model(make_card(arch="ae", size=32, channels=(4, 8), latent_dim=4))
    path = tmp_path / "bad.pt"
    torch.save(_payload(dict(model.card, **change), model.network.state_dict()), path)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_missing_card_key_and_future_format(tmp_path) -> None:
    model = build_model(make_card(arch="ae", size=32, channels=(4, 8), latent_dim=4))
    card = dict(model.card)
    del card["orientation"]
    torch.save(_payload(card, model.network.state_dict()), tmp_path / "a.pt")
    with pytest.raises(ModelError, match="has no 'orientation'"):
        load_model(tmp_path / "a.pt")
    payload = _payload(model.card, model.network.state_dict())
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(ModelError, match="format version"):
        load_model(tmp_path / "b.pt")


def test_unknown_model_name() -> None:
    with pytest.raises(ModelError, match="no such model file or bundled model"):
        resolve_model_path("no-such-model")
