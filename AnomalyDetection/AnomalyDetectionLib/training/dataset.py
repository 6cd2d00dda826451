"""Normal slices for training: every volume through the same model-space path as detection."""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import Compose

from ..preprocessing import PreparedVolume, prepare_volume, read_volume
from ..progress import Progress

#: A normal volume for training or calibration: an image, a file, or a volume already prepared for
#: the model's space (registering many volumes once and training several models on them is faster).
VolumeInput = Union[sitk.Image, str, "os.PathLike[str]", PreparedVolume]


def volume_name(volume: VolumeInput, index: int) -> str:
    if isinstance(volume, PreparedVolume):
        return volume.name
    return str(volume) if not isinstance(volume, sitk.Image) else f"volume {index + 1}"


def prepared_input(
    volume: VolumeInput, card: Mapping[str, Any], index: int, progress: Optional[Progress] = None
) -> PreparedVolume:
    """``volume`` in the model space of ``card``: prepared now, or checked if it already is."""
    if isinstance(volume, PreparedVolume):
        if not volume.fits(card):
            raise ValueError(f"{volume.name} was prepared for another model space than this model's")
        return volume
    image = volume if isinstance(volume, sitk.Image) else read_volume(volume)
    return prepare_volume(image, card, volume_name(volume, index), progress)


def extract_slices(
    volumes: Sequence[VolumeInput], card: Mapping[str, Any], progress: Optional[Progress] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Model-space slices of ``volumes`` with at least the card's foreground fraction, and their volume index.

    Near-empty slices (air above the head) would teach the model that blank is normal and swamp
    the anatomy, so they are skipped. For a card with context slices each kept slice comes with its
    neighbours as channels (:meth:`~AnomalyDetectionLib.preprocessing.PreparedVolume.network_input`),
    exactly as detection will give them.
    """
    progress = progress or Progress()
    minimum = float(card.get("min_foreground_fraction", 0.05))
    context = int(card.get("context_slices", 0))
    kept: List[np.ndarray] = []
    owners: List[np.ndarray] = []
    for index, volume in enumerate(volumes):
        progress.report(index / len(volumes), f"reading normal volume {index + 1} of {len(volumes)}")
        prepared = prepared_input(volume, card, index, progress.sub(index / len(volumes), (index + 1) / len(volumes)))
        keep = prepared.foreground_fraction() >= minimum
        kept.append(prepared.network_input(keep, context))
        owners.append(np.full(int(keep.sum()), index))
    progress.report(1.0, "slices extracted")
    return np.concatenate(kept), np.concatenate(owners)


class SliceDataset(torch.utils.data.Dataset):
    """A stack of ``(n, c, size, size)`` slices (c: a slice and its context), augmented on access when a
    transform is given (MONAI's transforms move and recolour every channel of an item alike)."""

    def __init__(self, slices: np.ndarray, transform: Optional[Compose] = None) -> None:
        self.slices = slices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = torch.from_numpy(self.slices[index])
        if self.transform is not None:
            item = self.transform(item)
            # MONAI returns a MetaTensor; a plain tensor keeps collation cheap.
            item = item.as_tensor() if hasattr(item, "as_tensor") else torch.as_tensor(item)
        return item.float()
