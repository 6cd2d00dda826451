"""Volume nodes <-> SimpleITK images, with exact geometry and without sharing memory.

The engine works on SimpleITK images (LPS physical space); Slicer's volume nodes keep their
geometry in an IJK-to-RAS matrix. Converting through that matrix (not through the image data's
own origin/spacing, which MRML ignores) is what makes every output map lie exactly on the input's
voxels, whatever the scan's orientation, obliquity or voxel size. Arrays are always copied, so
the engine can never change a node behind Slicer's back, and a node updated later never changes
an image the engine still holds.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkOrientedImageData
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy

from AnomalyDetectionLib.errors import InputError

__all__ = [
    "image_to_volume_node", "ijk_to_ras_from_image", "node_array", "oriented_image_like", "same_grid",
    "volume_node_to_image",
]

#: RAS <-> LPS: Slicer's patient coordinates are RAS, ITK's are LPS; the flip is its own inverse.
_FLIP = np.diag([-1.0, -1.0, 1.0])


def _describe(node) -> str:
    """How error messages name a node: its name (as the user sees it) and its ID."""
    if node is None:
        return "input volume"
    return f"volume '{node.GetName()}' ({node.GetID() or 'not in a scene'})"


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _sequence_frames(node) -> int:
    """Number of frames of the sequence whose proxy ``node`` is (0 when it is no sequence proxy).

    A proxy node looks like an ordinary 3D volume but shows one time point of a 4D series; scoring
    it silently would give a map of whichever frame happened to be selected.
    """
    scene = node.GetScene()
    if scene is None:
        return 0
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if node.GetID() and browser.IsProxyNodeID(node.GetID()):
            sequence = browser.GetSequenceNode(node)
            return int(sequence.GetNumberOfDataNodes()) if sequence is not None else 0
    return 0


def _checked_image_data(volume_node):
    """The node's vtkImageData, or :class:`InputError` saying in one line why it cannot be scored."""
    what = _describe(volume_node)
    if volume_node is None:
        raise InputError("no input volume selected")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{what}: a {volume_node.GetClassName()} is not a scalar volume; select a scalar volume")
    if volume_node.IsA("vtkMRMLVectorVolumeNode") or volume_node.IsA("vtkMRMLTensorVolumeNode"):
        raise InputError(f"{what}: a vector/tensor volume ({volume_node.GetClassName()}); a scalar volume is needed")
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetPointData() is None or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"{what}: the node holds no image data (load or compute a volume first)")
    components = image_data.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(
            f"{what}: {components} components per voxel (RGB, vector or a multi-volume with one component "
            "per frame); a single 3D scalar volume is needed"
        )
    frames = _sequence_frames(volume_node)
    if frames > 1:
        raise InputError(
            f"{what}: one frame of a 4D sequence of {frames} volumes; clone the frame you want into its own "
            "volume (Sequences module) and score that"
        )
    dims = image_data.GetDimensions()
    if min(dims) < 1 or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"{what}: the volume is empty (dimensions {tuple(dims)})")
    return image_data


def node_array(volume_node) -> np.ndarray:
    """A *copy* of the node's voxels as a ``(k, j, i)`` numpy array (SimpleITK/numpy order)."""
    image_data = _checked_image_data(volume_node)
    nx, ny, nz = image_data.GetDimensions()
    values = vtk_to_numpy(image_data.GetPointData().GetScalars())
    return np.array(values, copy=True).reshape(nz, ny, nx)


def volume_node_to_image(volume_node) -> sitk.Image:
    """The node's voxels and exact geometry as a SimpleITK image (LPS), sharing no memory with it.

    Spacing, origin and direction come from the node's IJK-to-RAS matrix (flipped to LPS), so an
    oblique, anisotropic or left-handed volume keeps its geometry. A parent transform is *not*
    applied: outputs are placed under the same transform, so they stay aligned with the input.
    Raises :class:`InputError` for no node, no image data, vector/RGB or 4D data and empty volumes.
    """
    array = node_array(volume_node)
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    m = _matrix_to_numpy(ijk_to_ras)
    extent = volume_node.GetImageData().GetExtent()
    start = np.array([extent[0], extent[2], extent[4], 1.0])  # IJK of the first stored voxel (0 for MRML volumes)
    linear = _FLIP @ m[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(m)):
        raise InputError(f"{_describe(volume_node)}: its IJK-to-RAS matrix is degenerate (spacing {tuple(spacing)})")
    if abs(np.linalg.det(linear / spacing)) < 1e-6:  # SimpleITK would refuse it with a bare RuntimeError
        raise InputError(f"{_describe(volume_node)}: its IJK-to-RAS matrix is singular (two axes are parallel)")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in _FLIP @ (m @ start)[:3]))
    image.SetDirection(tuple(float(v) for v in (linear / spacing).ravel()))
    return image


def ijk_to_ras_from_image(image: sitk.Image) -> vtk.vtkMatrix4x4:
    """The IJK-to-RAS matrix of a SimpleITK image's grid: LPS direction x spacing, flipped to RAS."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = _FLIP @ direction @ np.diag(image.GetSpacing())
    m[:3, 3] = _FLIP @ np.array(image.GetOrigin(), dtype=np.float64)
    return _numpy_to_matrix(m)


def _image_data_from_image(image: sitk.Image) -> vtk.vtkImageData:
    """A vtkImageData holding a copy of the image's voxels (origin 0, spacing 1: MRML's convention)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"cannot make a scalar volume node of a {image.GetDimension()}D image with "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    array = sitk.GetArrayFromImage(image)  # already a copy
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    nz, ny, nx = array.shape
    scalars = numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(nx, ny, nz)
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def image_to_volume_node(
    image: sitk.Image,
    scene,
    name: str,
    node: Optional[vtkMRMLScalarVolumeNode] = None,
    label: bool = False,
) -> vtkMRMLScalarVolumeNode:
    """Put ``image`` into ``node`` (updated in place) or into a new volume node added to ``scene``
    (a labelmap volume node if ``label``).

    The IJK-to-RAS matrix is set exactly from the image's geometry, and the voxel type is kept
    (float32 maps stay float32, so thresholds mean the same in Slicer as in the engine).
    """
    image_data = _image_data_from_image(image)
    ijk_to_ras = ijk_to_ras_from_image(image)
    if node is None:
        if scene is None:
            raise InputError(f"cannot create volume '{name}': no scene given")
        node = vtkMRMLLabelMapVolumeNode() if label else vtkMRMLScalarVolumeNode()
        node.SetName(name)
        _set_volume(node, image_data, ijk_to_ras)
        scene.AddNode(node)
        return node
    modified = node.StartModify()
    node.SetName(name)
    _set_volume(node, image_data, ijk_to_ras)
    node.EndModify(modified)
    return node


def _set_volume(node, image_data: vtk.vtkImageData, ijk_to_ras: vtk.vtkMatrix4x4) -> None:
    node.SetIJKToRASMatrix(ijk_to_ras)
    node.SetAndObserveImageData(image_data)


def same_grid(a, b) -> Tuple[bool, str]:
    """Whether two volume nodes share dimensions and IJK-to-RAS matrix (within 1e-6 relative)."""
    da, db = a.GetImageData().GetDimensions(), b.GetImageData().GetDimensions()
    if tuple(da) != tuple(db):
        return False, f"dimensions {tuple(db)} differ from {tuple(da)}"
    ma, mb = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    a.GetIJKToRASMatrix(ma)
    b.GetIJKToRASMatrix(mb)
    na, nb = _matrix_to_numpy(ma), _matrix_to_numpy(mb)
    if not np.allclose(na, nb, rtol=1e-6, atol=1e-6):
        return False, "IJK-to-RAS matrices differ"
    return True, ""


def oriented_image_like(volume_node, scalar_type: int = vtk.VTK_UNSIGNED_CHAR) -> vtkOrientedImageData:
    """An allocated (zero) oriented image on exactly the volume node's voxel grid."""
    image = vtkOrientedImageData()
    image.SetExtent(volume_node.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.AllocateScalars(scalar_type, 1)
    image.GetPointData().GetScalars().Fill(0)
    return image
