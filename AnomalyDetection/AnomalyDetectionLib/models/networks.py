"""Slice-wise networks: a (beta-)VAE and a deterministic auto-encoder with a dense bottleneck.

Both are MONAI networks: the VAE is :class:`monai.networks.nets.VarAutoEncoder`; the AE is
MONAI's convolutional :class:`~monai.networks.nets.AutoEncoder` with the same dense bottleneck
of ``latent_dim`` units, so the two differ only in the latent (Gaussian vs deterministic). The
AE with a small, chosen ``latent_dim`` is the entropy-constrained AE of Cai et al. 2024: the
latent size bounds how much information passes, which is what makes anomalies unreconstructable.

Every network exposes the same calls the scores are written against:
``encode(x) -> (mu, logvar or None)``, ``decode(z) -> x_hat``, ``reconstruct(x) -> x_hat`` (the
mean decoding, deterministic in eval mode) and ``center(x)``, the slice that ``x_hat`` decodes.

**Context across slices (2.5D).** With ``context`` > 0 the input of a slice is the slice and its
``context`` neighbours on either side as channels, ``(batch, 2 * context + 1, H, W)``, and the
network decodes the centre slice only: it sees whether a blob continues above and below, which a
single slice cannot tell (a vessel or sulcus crossing the plane from a lesion), while the map stays
one value per voxel of the centre slice. ``context`` 0 is the plain slice-wise model.
"""

from __future__ import annotations

import inspect
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from monai.networks.layers.convutils import calculate_out_shape, same_padding
from monai.networks.nets import AutoEncoder, VarAutoEncoder
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = ("vae", "ae")

# MONAI >= 1.6 (Python >= 3.10) can make VarAutoEncoder.forward return the posterior mean in eval mode; older
# MONAI (all that Python 3.9 gets) has no such argument. The engine never calls forward (it encodes and decodes
# itself, below), so this only keeps ``net(x)`` deterministic where MONAI offers it.
_MEAN_AT_INFERENCE = (
    {"use_mean_at_inference": True} if "use_mean_at_inference" in inspect.signature(VarAutoEncoder).parameters else {}
)


class _SliceNetwork(nn.Module):
    """What both networks share: the input's context slices and the centre slice they decode."""

    context = 0

    def center(self, x: torch.Tensor) -> torch.Tensor:
        """The centre slice ``(batch, 1, H, W)`` of an input with ``context`` neighbours on either side."""
        return x if self.context == 0 else x[:, self.context:self.context + 1]


def _input_channels(context: int) -> int:
    if context < 0:
        raise ValueError(f"context slices must be 0 or more, not {context}")
    return 2 * int(context) + 1


class SliceVAE(_SliceNetwork):
    """Convolutional VAE on ``size`` x ``size`` slices (with ``context`` neighbours); ``beta`` weighs the KL term."""

    is_variational = True

    def __init__(
        self,
        size: int,
        latent_dim: int = 128,
        channels: Sequence[int] = (32, 64, 128, 128),
        beta: float = 1.0,
        norm: str = "instance",
        context: int = 0,
    ) -> None:
        super().__init__()
        self.beta = float(beta)
        self.context = int(context)
        self.net = VarAutoEncoder(
            spatial_dims=2,
            in_shape=(_input_channels(context), size, size),
            out_channels=1,
            latent_size=latent_dim,
            channels=tuple(channels),
            strides=(2,) * len(channels),
            norm=norm,
            use_sigmoid=True,
            **_MEAN_AT_INFERENCE,
        )

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        # As VarAutoEncoder.encode_forward, but reshape: some normalisations leave non-contiguous features.
        features = self.net.intermediate(self.net.encode(x)).reshape(x.shape[0], -1)
        return self.net.mu(features), self.net.logvar(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode_forward(z, use_sigmoid=True)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample_latent(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterisation z = mu + eps * sigma, differentiable in mu and logvar."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class SliceAE(_SliceNetwork):
    """Deterministic convolutional AE with a dense bottleneck of ``latent_dim`` units."""

    is_variational = False
    beta = 0.0

    def __init__(
        self,
        size: int,
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64, 128, 128),
        norm: str = "instance",
        context: int = 0,
    ) -> None:
        super().__init__()
        self.context = int(context)
        strides = (2,) * len(channels)
        self.net = AutoEncoder(
            spatial_dims=2,
            in_channels=_input_channels(context),
            out_channels=1,
            channels=tuple(channels),
            strides=strides,
            norm=norm,
        )
        final = np.asarray((size, size), dtype=int)
        for stride in strides:
            final = calculate_out_shape(final, self.net.kernel_size, stride, same_padding(self.net.kernel_size))
        self.final_shape = (int(channels[-1]), *(int(s) for s in np.atleast_1d(final)))
        flat = int(np.prod(self.final_shape))
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        features = self.net.intermediate(self.net.encode(x)).reshape(x.shape[0], -1)
        return self.to_latent(features), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.from_latent(z)).view(z.shape[0], *self.final_shape)
        return torch.sigmoid(self.net.decode(features))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample, shape ``(batch,)``."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over each slice, shape ``(batch,)`` (a Gaussian log-likelihood up to scale)."""
    return (x - x_hat).pow(2).flatten(1).sum(1)


def negative_elbo(model: nn.Module, x: torch.Tensor, sample: bool, target: Optional[torch.Tensor] = None
                  ) -> torch.Tensor:
    """Per-sample training loss: reconstruction + beta * KL for a VAE, reconstruction for an AE.

    ``sample`` draws z with the reparameterisation trick (training); otherwise z = mu. ``target``
    is what the decoding is compared with (default ``x``): the clean slice when ``x`` is a
    corrupted copy (denoising training); with context slices, the centre slice of either.
    """
    target = model.center(x if target is None else target)
    mu, logvar = model.encode(x)
    if logvar is None:
        return reconstruction_loss(target, model.decode(mu))
    z = model.sample_latent(mu, logvar) if sample else mu
    return reconstruction_loss(target, model.decode(z)) + model.beta * kl_divergence(mu, logvar)


def build_network(arch: str, size: int, latent_dim: int, channels: Sequence[int], beta: float, norm: str,
                  context: int = 0) -> nn.Module:
    """Build the network an architecture name and its hyper-parameters describe."""
    if size % 16 != 0 or size < 16:
        raise ValueError(f"slice size {size} must be a positive multiple of 16")
    if arch == "vae":
        return SliceVAE(size, latent_dim=latent_dim, channels=channels, beta=beta, norm=norm, context=context)
    if arch == "ae":
        return SliceAE(size, latent_dim=latent_dim, channels=channels, norm=norm, context=context)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
