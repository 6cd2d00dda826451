"""Normal slices for training: every volume through the same model-space path as detection."""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import Compose

from ..preprocessing import prepare_volume, read_volume
from ..progress import Progress

VolumeInput = Union[sitk.Image, str, "os.PathLike[str]"]


def volume_name(volume: VolumeInput, index: int) -> str:
    return str(volume) if not isinstance(volume, sitk.Image) else f"volume {index + 1}"


def load_volume(volume: VolumeInput) -> sitk.Image:
    return volume if isinstance(volume, sitk.Image) else read_volume(volume)


def extract_slices(
    volumes: Sequence[VolumeInput], card: Mapping[str, Any], progress: Optional[Progress] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Model-space slices of ``volumes`` with at least the card's foreground fraction, and their volume index.

    Near-empty slices (air above the head) would teach the model that blank is normal and swamp
    the anatomy, so they are skipped.
    """
    progress = progress or Progress()
    minimum = float(card.get("min_foreground_fraction", 0.05))
    kept: List[np.ndarray] = []
    owners: List[np.ndarray] = []
    for index, volume in enumerate(volumes):
        progress.report(index / len(volumes), f"reading normal volume {index + 1} of {len(volumes)}")
        prepared = prepare_volume(load_volume(volume), card, volume_name(volume, index))
        keep = prepared.foreground_fraction() >= minimum
        kept.append(prepared.slices[keep])
        owners.append(np.full(int(keep.sum()), index))
    progress.report(1.0, "slices extracted")
    return np.concatenate(kept), np.concatenate(owners)


class SliceDataset(torch.utils.data.Dataset):
    """A stack of ``(n, 1, size, size)`` slices, augmented on access when a transform is given."""

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
