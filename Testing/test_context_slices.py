"""2.5D context: a slice's neighbours as input channels, built alike in training, detection and cohorts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from AnomalyDetectionLib import Detector, ModelError, load_model, train
from AnomalyDetectionLib.models import build_model, make_card
from AnomalyDetectionLib.preprocessing import with_context
from AnomalyDetectionLib.scoring import score_slices, scores_for
from conftest import array

QUICK = {"size": 32, "channels": (8, 16), "latent_dim": 8, "epochs": 2, "batch_size": 16, "device": "cpu",
         "seed": 0}


def test_context_stacks_the_neighbours_in_order_and_repeats_the_edge_slices() -> None:
    stack = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 1, 2, 2), np.float32)
    two = with_context(stack, 2)
    assert two.shape == (5, 5, 2, 2)
    np.testing.assert_array_equal(two[:, :, 0, 0], [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4],
                                                   [1, 2, 3, 4, 4], [2, 3, 4, 4, 4]])
    chosen = np.array([False, True, False, False, True])
    np.testing.assert_array_equal(with_context(stack, 1, chosen)[:, :, 0, 0], [[0, 1, 2], [3, 4, 4]])
    np.testing.assert_array_equal(with_context(stack, 1, np.array([1, 4])), with_context(stack, 1, chosen))
    # slice-wise models see exactly the plain stack
    np.testing.assert_array_equal(with_context(stack, 0, chosen), stack[chosen])
    with pytest.raises(ValueError, match="0 or more"):
        with_context(stack, -1)


@pytest.mark.parametrize("arch", ["vae", "ae"])
def test_a_context_model_maps_the_centre_slice_and_reads_its_neighbours(arch) -> None:
    torch.manual_seed(0)
    model = build_model(make_card(arch=arch, size=32, channels=(8, 16), latent_dim=8, context_slices=1))
    model.network.eval()
    rng = np.random.default_rng(0)
    volume = rng.random((6, 1, 32, 32)).astype(np.float32)
    changed = volume.copy()
    changed[3] = rng.random((1, 32, 32))  # a neighbour of slice 2 (and 4), not slice 2 itself
    for score in scores_for(model):
        before = score_slices(model, with_context(volume, 1), score, batch_size=4)
        after = score_slices(model, with_context(changed, 1), score, batch_size=4)
        assert before.shape == (6, 1, 32, 32), score
        if score == "intensity":  # the yardstick reads the centre slice's own voxels only
            continue
        assert not np.allclose(before[2], after[2]), f"{score}: the map of slice 2 ignores its neighbour"
        if score != "ensemble":  # uncalibrated, the ensemble ranks each member over the whole stack
            np.testing.assert_array_equal(before[0], after[0], err_msg=f"{score}: slice 0 has no neighbour 3")


def test_a_context_card_is_checked() -> None:
    for bad in (-1, 9, 1.5, True, "1"):
        card = make_card(size=32, channels=(8, 16))
        card["context_slices"] = bad
        with pytest.raises(ModelError, match="context slices"):
            build_model(card)
    legacy = make_card(size=32, channels=(8, 16))
    del legacy["context_slices"]  # cards written before 2.5D: slice-wise
    assert build_model(legacy).context_slices == 0


def test_a_context_model_trains_detects_on_the_input_grid_and_scores_cohorts_alike(
        normal_volumes, lesion_case, tmp_path) -> None:
    path = tmp_path / "context.pt"
    model = train(normal_volumes[:3], path, arch="ae", context_slices=1, **QUICK)
    loaded = load_model(path)
    assert loaded.card["context_slices"] == 1 == loaded.context_slices
    first = next(m for m in loaded.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 3
    for a, b in zip(model.network.state_dict().values(), loaded.network.state_dict().values()):
        torch.testing.assert_close(a, b)

    detector = Detector(loaded, score="reconstruction", device="cpu", batch_size=5)
    image = lesion_case[0]
    result = detector.detect(image, name="lesion")
    for attribute in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(result.anomaly_map, attribute)() == getattr(image, attribute)()
    assert np.isfinite(array(result.anomaly_map)).all()
    # a cohort's shared batches never lend one scan's slices to another as context
    volumes = [detector.prepare(scan, f"scan {i}") for i, scan in enumerate([image, normal_volumes[3]])]
    for prepared, (maps, _) in zip(volumes, detector.score_many(volumes)):
        np.testing.assert_allclose(maps, detector.score(prepared), rtol=0, atol=1e-5)
    reconstruction = detector.reconstruct(image, name="lesion")
    assert reconstruction.GetSize() == image.GetSize()
