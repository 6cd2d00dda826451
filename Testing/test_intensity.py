"""Intensity normalisation: the normal range fills [0, upper_value] and brighter lesions stay brighter."""

from __future__ import annotations

import numpy as np
import pytest

from AnomalyDetectionLib.errors import InputError, ModelError
from AnomalyDetectionLib.models import make_card
from AnomalyDetectionLib.models.model_file import DEFAULT_UPPER_VALUE, validate_card
from AnomalyDetectionLib.preprocessing import normalise_intensity


@pytest.fixture()
def brain() -> np.ndarray:
    """A 'white matter' block (100) with grey matter (60), a hyper-intense lesion (150) and air (0)."""
    volume = np.zeros((10, 20, 20), dtype=np.float32)
    volume[:, 2:18, 2:18] = 60.0
    volume[:, 5:15, 5:15] = 100.0
    volume[4:6, 9:11, 9:11] = 150.0
    return volume


def test_headroom_keeps_a_hyperintense_lesion_brighter_than_white_matter(brain) -> None:
    foreground = brain > 0
    clipped = normalise_intensity(brain, foreground, (1.0, 99.0), upper_value=1.0)
    with_headroom = normalise_intensity(brain, foreground, (1.0, 99.0), upper_value=0.8)
    assert clipped[5, 10, 10] == clipped[5, 7, 7] == 1.0  # without headroom lesion == white matter
    assert with_headroom[5, 7, 7] == pytest.approx(0.8)
    assert with_headroom[5, 10, 10] == 1.0 > with_headroom[5, 7, 7]
    assert with_headroom[2, 3, 3] == pytest.approx(0.0) and (with_headroom[~foreground] == 0).all()


def test_new_cards_have_headroom_and_old_cards_keep_their_meaning() -> None:
    card = make_card()
    assert card["intensity"]["upper_value"] == DEFAULT_UPPER_VALUE < 1.0
    old = make_card()
    del old["intensity"]["upper_value"]
    validate_card(old)  # a card written before the key existed is still valid (and means 1.0)
    old["intensity"]["upper_value"] = 1.5
    with pytest.raises(ModelError, match="upper_value"):
        validate_card(old)


def test_a_foreground_without_spread_is_refused(brain) -> None:
    with pytest.raises(InputError, match="no spread"):
        normalise_intensity(np.full_like(brain, 5.0), brain > 0)
