"""Volumes on a torch device, and SimpleITK's linear / nearest resampling done there.

Why: on a GPU the resampling into and out of template space and the smoothing are a large share
of a scan's time when SimpleITK does them on the CPU. These functions give what
``sitk.Resample`` gives (same grids, same physical-space conventions, same rule for points
outside the moving image: a point within half a voxel of the image's edge takes the edge value,
one further out the default) with ``torch.nn.functional.grid_sample``, so
:mod:`.model_space` can switch between them by device and every output still sits exactly on
its reference grid (the geometry is copied from the reference, only the voxels are computed).

Transforms are 4x4 homogeneous matrices in LPS millimetres mapping *reference* points to
*moving* points, the direction ``sitk.Resample`` uses; :func:`affine_matrix` reads one from a
SimpleITK matrix-offset transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter

from ..errors import InputError

#: Reference voxels resampled per chunk: bounds the memory of the sampling grid (12 bytes a voxel).
CHUNK_VOXELS = 8_000_000


def index_to_physical(image: sitk.Image) -> np.ndarray:
    """4x4 matrix taking a homogeneous (x, y, z) voxel index of ``image`` to LPS millimetres."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64))
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous matrix of a matrix-offset ``transform`` (affine, rigid, similarity)."""
    try:
        downcast = transform.Downcast()
        matrix = np.asarray(downcast.GetMatrix(), dtype=np.float64).reshape(3, 3)
        translation = np.asarray(downcast.GetTranslation(), dtype=np.float64)
        center = np.asarray(downcast.GetCenter(), dtype=np.float64)
    except (AttributeError, RuntimeError, TypeError):
        raise InputError(f"a {transform.GetName()} cannot be applied on the device: only matrix-offset "
                         "(affine) transforms can") from None
    homogeneous = np.eye(4)
    homogeneous[:3, :3] = matrix
    homogeneous[:3, 3] = translation + center - matrix @ center
    return homogeneous


@dataclass
class DeviceVolume:
    """A volume's voxels as a ``(1, 1, z, y, x)`` float32 tensor with its grid (size in x, y, z order)."""

    values: torch.Tensor
    index_to_physical: np.ndarray
    size: Tuple[int, int, int]

    @classmethod
    def from_image(cls, image: sitk.Image, device: torch.device) -> DeviceVolume:
        array = sitk.GetArrayViewFromImage(image)
        values = torch.from_numpy(np.array(array, dtype=np.float32)).to(device)  # a copy: the view is read-only
        return cls(values[None, None], index_to_physical(image), tuple(int(n) for n in image.GetSize()))

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.index_to_physical[:3, :3], axis=0)

    def physical_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_physical)

    def to_image(self, dtype: Optional[np.dtype] = None) -> sitk.Image:
        """The volume as a SimpleITK image on its grid (direction and origin from the matrix)."""
        array = self.values[0, 0].cpu().numpy()
        image = sitk.GetImageFromArray(array.astype(dtype) if dtype is not None else array)
        spacing = self.spacing
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(self.index_to_physical[:3, 3].tolist())
        image.SetDirection((self.index_to_physical[:3, :3] / spacing).ravel().tolist())
        return image


def normalised_grid(index: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(x, y, z) voxel indices -> ``grid_sample``'s coordinates (``align_corners=True``: -1 and 1
    are the centres of the first and last voxels)."""
    extent = torch.as_tensor([max(int(n) - 1, 1) for n in size], dtype=index.dtype, device=index.device)
    return 2.0 * index / extent - 1.0


def inside(index: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Whether each continuous (x, y, z) index lies within half a voxel of ``size``'s grid (ITK's rule)."""
    upper = torch.as_tensor([int(n) - 0.5 for n in size], dtype=index.dtype, device=index.device)
    return ((index >= -0.5) & (index <= upper)).all(dim=-1)


def sample(volume: torch.Tensor, index: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Values of the channels of ``volume`` ``(1, C, z, y, x)`` at continuous (x, y, z) ``index``
    ``(..., 3)``: shape ``(C, ...)``. Edge values hold up to half a voxel outside (the caller masks
    the rest with :func:`inside`)."""
    shape = index.shape[:-1]
    grid = normalised_grid(index.reshape(1, -1, 1, 1, 3), size)
    values = F.grid_sample(volume, grid, mode=mode, padding_mode="border", align_corners=True)
    return values.reshape(volume.shape[1], *shape)


def _mapped_indices(reference: sitk.Image, moving_size: Sequence[int], chain: np.ndarray,
                    device: torch.device) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """``(first z, last z + 1, continuous moving (x, y, z) indices)`` of ``reference``'s voxels in
    slabs of about :data:`CHUNK_VOXELS`, through ``chain`` (reference index -> moving index, 4x4)."""
    matrix = torch.as_tensor(chain[:3, :3], dtype=torch.float64, device=device)
    offset = torch.as_tensor(chain[:3, 3], dtype=torch.float64, device=device)
    nx, ny, nz = (int(n) for n in reference.GetSize())
    xs = torch.arange(nx, dtype=torch.float64, device=device)
    ys = torch.arange(ny, dtype=torch.float64, device=device)
    per_slab = max(1, CHUNK_VOXELS // max(nx * ny, 1))
    for start in range(0, nz, per_slab):
        zs = torch.arange(start, min(start + per_slab, nz), dtype=torch.float64, device=device)
        grid_z, grid_y, grid_x = torch.meshgrid(zs, ys, xs, indexing="ij")
        points = torch.stack((grid_x, grid_y, grid_z), dim=-1)
        yield start, start + len(zs), (points @ matrix.T + offset).to(torch.float32)


def _chain(moving: np.ndarray, reference: sitk.Image, transform: np.ndarray) -> np.ndarray:
    """Reference voxel index -> moving voxel index through ``transform`` (reference mm -> moving mm)."""
    return np.linalg.inv(moving) @ np.asarray(transform, dtype=np.float64) @ index_to_physical(reference)


def resample(moving: DeviceVolume, reference: sitk.Image, transform: np.ndarray, nearest: bool = False,
             default: float = 0.0) -> torch.Tensor:
    """``moving`` on ``reference``'s grid through ``transform`` (reference -> moving mm, 4x4):
    a ``(z, y, x)`` float32 tensor on ``moving``'s device, as ``sitk.Resample`` with a linear (or
    nearest-neighbour) interpolator and ``default`` outside ``moving``'s grid would give."""
    device = moving.device
    nx, ny, nz = (int(n) for n in reference.GetSize())
    out = torch.empty((nz, ny, nx), dtype=torch.float32, device=device)
    fill = torch.as_tensor(float(default), device=device)
    chain = _chain(moving.index_to_physical, reference, transform)
    for start, stop, index in _mapped_indices(reference, moving.size, chain, device):
        values = sample(moving.values, index, moving.size, "nearest" if nearest else "bilinear")[0]
        out[start:stop] = torch.where(inside(index, moving.size), values, fill)
    return out


def field_of_view_on_device(image: sitk.Image, reference: sitk.Image, transform: np.ndarray,
                            device: torch.device) -> np.ndarray:
    """Boolean ``(z, y, x)`` array on ``reference``'s grid: the voxels ``transform`` maps inside
    ``image``'s grid (as :func:`~.resampling.field_of_view_on_template`)."""
    size = tuple(int(n) for n in image.GetSize())
    nx, ny, nz = (int(n) for n in reference.GetSize())
    out = torch.empty((nz, ny, nx), dtype=torch.bool, device=device)
    for start, stop, index in _mapped_indices(reference, size, _chain(index_to_physical(image), reference, transform),
                                              device):
        out[start:stop] = inside(index, size)
    return out.cpu().numpy()


def resample_image(image: sitk.Image, reference: sitk.Image, transform: np.ndarray, device: torch.device,
                   nearest: bool = False, default: float = 0.0, pixel_type: Optional[int] = None) -> sitk.Image:
    """:func:`resample` from SimpleITK image to SimpleITK image: ``reference``'s exact grid, float32
    unless ``pixel_type`` (e.g. ``sitk.sitkUInt8`` for a nearest-neighbour label) says otherwise."""
    values = resample(DeviceVolume.from_image(image, device), reference, transform, nearest, default)
    array = values.cpu().numpy()
    out = sitk.GetImageFromArray(array)
    if pixel_type is not None:
        out = sitk.Cast(out, pixel_type)
    out.CopyInformation(reference)
    return out


def gaussian_smooth(values: torch.Tensor, sigma_mm: Sequence[float], spacing: Sequence[float]) -> torch.Tensor:
    """``values`` ``(1, C, z, y, x)`` smoothed by a Gaussian of ``sigma_mm`` per (x, y, z) axis
    (MONAI's separable filter, truncated at 4 sigma); axes with a zero sigma are left alone."""
    sigmas = [float(s) / float(d) for s, d in zip(sigma_mm, spacing)][::-1]  # z, y, x voxels
    if not any(s > 0 for s in sigmas):
        return values
    return GaussianFilter(3, [max(s, 1e-6) if s > 0 else 1e-6 for s in sigmas]).to(values.device)(values)


def median_smooth(values: torch.Tensor, radius: int) -> torch.Tensor:
    """``values`` ``(z, y, x)`` through a median of ``(2 radius + 1)^3`` voxels, edges replicated (as
    ``sitk.Median``), in slabs so the neighbourhood copies stay within :data:`CHUNK_VOXELS` per slab."""
    if radius < 1:
        return values
    width = 2 * radius + 1
    nz, ny, nx = values.shape
    per_slab = max(1, 4 * CHUNK_VOXELS // (width ** 3 * max(nx * ny, 1)))
    padded = F.pad(values[None, None], (radius,) * 6, mode="replicate")[0, 0]
    out = torch.empty_like(values)
    for start in range(0, nz, per_slab):
        stop = min(start + per_slab, nz)
        block = padded[start:stop + 2 * radius].unfold(0, width, 1).unfold(1, width, 1).unfold(2, width, 1)
        out[start:stop] = block.reshape(stop - start, ny, nx, -1).median(dim=-1).values
    return out
