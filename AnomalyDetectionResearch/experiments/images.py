"""The 2D-image part of the experiments (Fashion-MNIST): fit an engine network on images, score them.

The networks, training loop and scores are the engine's own (:func:`~AnomalyDetectionLib.training.fit_network`,
:func:`~AnomalyDetectionLib.scoring.score_slices`), so what the reports say about a score is
about the code users run; only the data differ from the brain path (images instead of volumes:
no registration, no intensity normalisation, 28-pixel images zero-padded to 32).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from AnomalyDetectionLib.models import Model, build_model, make_card
from AnomalyDetectionLib.models.networks import kl_divergence, reconstruction_loss
from AnomalyDetectionLib.progress import Progress
from AnomalyDetectionLib.scoring import score_slices
from AnomalyDetectionLib.training import fit_network

from ..data.fashion_mnist import fashion_mnist_available
from .document import ExperimentReport


def fashion_mnist_skipped(report: ExperimentReport) -> bool:
    """True where Fashion-MNIST is not installed: the report says that part was skipped, and why.

    The brain part of an experiment needs only the templates, so a machine without the Debian data
    package still gets a report (with the gap stated) rather than an error.
    """
    if fashion_mnist_available():
        return False
    report.heading("Fashion-MNIST")
    report.text("Fashion-MNIST is not installed here (`scripts/install_datasets.sh`); this part was skipped.")
    report.results["fashion_mnist"] = {"skipped": "Fashion-MNIST not installed"}
    return True


def fit_image_model(
    train_images: np.ndarray,
    val_images: np.ndarray,
    arch: str,
    latent_dim: int,
    beta: float = 1.0,
    channels: Sequence[int] = (16, 32, 64),
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    name: str = "model",
    progress: Optional[Progress] = None,
) -> Model:
    """An engine model (``vae`` or ``ae``) fitted to float32 ``(n, 1, s, s)`` images in [0, 1], no augmentation."""
    size = int(train_images.shape[-1])
    card = make_card(arch=arch, size=size, latent_dim=latent_dim, channels=channels, beta=beta, norm="batch",
                     name=name, description="2D images (Fashion-MNIST), zero-padded to a multiple of 16")
    torch.manual_seed(seed)
    model = build_model(card).to(device)
    best, history = fit_network(model, train_images, val_images, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate, seed=seed, progress=progress)
    model.card["training"] = {"train_images": int(len(train_images)), "validation_images": int(len(val_images)),
                              "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                              "seed": seed, "best_validation_loss": best, "history": history}
    return model


def score_images(model: Model, images: np.ndarray, score: str, params: Optional[Mapping[str, Any]] = None,
                 batch_size: int = 256) -> np.ndarray:
    """Pixel maps of ``score`` for float32 ``(n, 1, s, s)`` images, same shape (the engine's batched scoring).

    The foreground that an uncalibrated ensemble normalises against is the whole image.
    """
    return score_slices(model, images, score, params, batch_size, np.ones(images.shape, dtype=bool))


@torch.no_grad()
def image_terms(model: Model, images: np.ndarray, batch_size: int = 512) -> Dict[str, np.ndarray]:
    """Per-image terms of the negative ELBO with z = mu: ``reconstruction``, ``kl`` (VAE only) and ``elbo``.

    These are the sample-level scores of Zimmerer et al.'s Fashion-MNIST experiment (the loss
    terms of each test image), for a VAE; an AE has the reconstruction term only.
    """
    model.network.eval()
    rec, kl = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(model.device)
        mu, logvar = model.network.encode(x)
        rec.append(reconstruction_loss(x, model.network.decode(mu)).cpu().numpy())
        if logvar is not None:
            kl.append(kl_divergence(mu, logvar).cpu().numpy())
    terms = {"reconstruction": np.concatenate(rec)}
    if kl:
        terms["kl"] = np.concatenate(kl)
        terms["elbo"] = terms["reconstruction"] + model.network.beta * terms["kl"]
    return terms


@torch.no_grad()
def latent_codes(model: Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The encoder's latent means of ``images``, ``(n, latent_dim)``."""
    model.network.eval()
    codes = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(model.device)
        codes.append(model.network.encode(x)[0].cpu().numpy())
    return np.concatenate(codes)


def split_indices(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (first, second) with ``fraction`` of the indices in the second."""
    order = np.random.default_rng(seed).permutation(n)
    cut = n - max(1, int(round(n * fraction)))
    return np.sort(order[:cut]), np.sort(order[cut:])
