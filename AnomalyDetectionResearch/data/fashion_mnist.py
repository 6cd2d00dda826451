"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, the data of Zimmerer et al.'s first experiment.

The package installs the original IDX files (``/usr/share/datasets/fashion-mnist``); the project's
setup installs it where it can (``scripts/install_datasets.sh``). ``ANOMALY_DETECTION_FASHION_MNIST``
points elsewhere (a folder with the same four ``*-ubyte.gz`` files). Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from AnomalyDetectionLib.errors import InputError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "ANOMALY_DETECTION_FASHION_MNIST"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(ENV_VAR, str(DEFAULT_DIR)))


def fashion_mnist_available() -> bool:
    folder = fashion_mnist_dir()
    return all((folder / name).is_file() for pair in _FILES.values() for name in pair)


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    header = np.frombuffer(data[:4 + 4 * dims], dtype=">i4")
    if int(header[0]) != magic:
        raise InputError(f"{path}: not an IDX file of the expected kind (magic {int(header[0])}, wanted {magic})")
    shape = tuple(int(v) for v in header[1:])
    values = np.frombuffer(data[4 + 4 * dims:], dtype=np.uint8)
    if values.size != int(np.prod(shape)):
        raise InputError(f"{path}: truncated ({values.size} values for shape {shape})")
    return values.reshape(shape)


def load_fashion_mnist(split: str = "train", folder: Optional[Path] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (n, 28, 28), labels uint8 (n,))`` of the ``train`` (60 000) or ``test`` (10 000) split."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; choose train or test")
    folder = Path(folder) if folder is not None else fashion_mnist_dir()
    images_name, labels_name = _FILES[split]
    if not (folder / images_name).is_file():
        raise InputError(f"{folder / images_name}: Fashion-MNIST is missing; install it with "
                         f"'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or set {ENV_VAR}")
    images = _read_idx(folder / images_name, 2051, 3)
    labels = _read_idx(folder / labels_name, 2049, 1)
    if len(images) != len(labels):
        raise InputError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return images, labels


def as_slices(images: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 ``(n, 28, 28)`` images -> float32 ``(n, 1, size, size)`` in [0, 1], zero-padded around the centre.

    The engine's networks halve the image four times, so they take multiples of 16; padding keeps
    every pixel (resizing would blur the anomalies' edges).
    """
    n, h, w = images.shape
    if size < max(h, w):
        raise ValueError(f"slice size {size} is smaller than the {h}x{w} images")
    out = np.zeros((n, 1, size, size), dtype=np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    out[:, 0, top:top + h, left:left + w] = images.astype(np.float32) / 255.0
    return out


def paste_anomalies(
    normal: np.ndarray,
    donors: np.ndarray,
    seed: int = 0,
    patch_range: Tuple[int, int] = (8, 14),
    min_change: int = 26,
) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-level anomalies for Fashion-MNIST: a square of a ``donors`` image pasted into each ``normal`` image.

    For each normal image (uint8 ``(n, 28, 28)``), a side in ``patch_range`` (inclusive) and a
    position overlapping the garment are drawn, and the same square of a random donor image (of
    the held-out class) replaces it. The truth is the pasted pixels whose value changed by at
    least ``min_change`` grey levels (about 10 %), since pixels the paste left (almost) as they
    were cannot be found by any detector. Returns ``(images uint8, truth uint8)``, same shape.
    """
    rng = np.random.default_rng(seed)
    images = normal.copy()
    truth = np.zeros(normal.shape, dtype=np.uint8)
    n, h, w = normal.shape
    for i in range(n):
        side = int(rng.integers(patch_range[0], patch_range[1] + 1))
        rows, cols = np.nonzero(normal[i] > 0)
        if rows.size:  # centre the square on a pixel of the garment, kept inside the image
            k = int(rng.integers(rows.size))
            top = int(np.clip(rows[k] - side // 2, 0, h - side))
            left = int(np.clip(cols[k] - side // 2, 0, w - side))
        else:
            top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        donor = donors[int(rng.integers(len(donors)))]
        window = (slice(top, top + side), slice(left, left + side))
        changed = np.abs(donor[window].astype(np.int16) - normal[i][window].astype(np.int16)) >= min_change
        images[i][window] = donor[window]
        truth[i][window] = changed.astype(np.uint8)
    return images, truth
