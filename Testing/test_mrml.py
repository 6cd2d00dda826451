"""The Slicer module's MRML side against real MRML nodes (the ``slicer-core`` wheel, no mocks).

Inputs are built with plain VTK and an explicit IJK-to-RAS matrix (oblique, anisotropic), so the
checks do not trust the conversion code they test. The model is an untrained tiny VAE: these
tests are about geometry, nodes and bookkeeping, not detection quality.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy  # noqa: E402

from AnomalyDetectionLib import Cancelled, Detector, InputError, ModelError  # noqa: E402
from AnomalyDetectionLib.cli import main as cli_main  # noqa: E402
from AnomalyDetectionLib.models import build_model, make_card, save_model  # noqa: E402
from AnomalyDetectionMRML import (  # noqa: E402
    evaluate_nodes,
    foreground_node,
    image_to_volume_node,
    node_array,
    process,
    process_folder,
    same_grid,
    threshold_range,
    update_segmentation,
    volume_node_to_image,
)

SHAPE = (24, 32, 28)  # (k, j, i): 28 x 32 x 24 voxels
SPACING = (1.1, 0.9, 2.3)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    card = make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6, name="tiny")
    # Small components are removed from the mask: the Slicer segment must follow the same rule.
    card["postprocessing"] = {"smoothing": "none", "min_component_voxels": 4}
    return save_model(build_model(card), tmp_path_factory.mktemp("model") / "tiny.pt")


def run(volume, model, outputs=None, extra_scores=(), with_reconstruction=False, progress=None, cancel=None,
        **choices):
    """``process`` with a detector of ``model`` on the CPU (``choices``: its settings)."""
    detector = Detector(model, device="cpu", **choices)
    return process(volume, detector, outputs=outputs, extra_scores=extra_scores,
                   with_reconstruction=with_reconstruction, progress=progress, cancel=cancel)


def engine_mask(map_node, threshold: float, min_component_voxels: int = 4) -> np.ndarray:
    """The engine's mask rule, written out here: map >= threshold inside the foreground, small
    connected components (face connectivity, as SimpleITK's default) removed."""
    from scipy import ndimage

    inside = array_of(foreground_node(map_node)) > 0
    flagged = (array_of(map_node) >= np.float32(threshold)) & inside
    labels, count = ndimage.label(flagged)
    sizes = ndimage.sum(flagged, labels, range(1, count + 1))
    return np.isin(labels, [i + 1 for i, s in enumerate(sizes) if s >= min_component_voxels])


def phantom(seed: int = 0) -> np.ndarray:
    """An ellipsoidal 'body' with noise and one bright spot, float32, shape ``SHAPE``."""
    k, j, i = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    body = ((i - 14) / 11) ** 2 + ((j - 16) / 13) ** 2 + ((k - 12) / 10) ** 2 < 1
    spot = ((i - 17) / 3) ** 2 + ((j - 13) / 3) ** 2 + ((k - 12) / 2) ** 2 < 1
    noise = np.random.default_rng(seed).normal(0, 4, SHAPE)
    return (body * 100.0 + spot * 80.0 + noise).astype(np.float32)


def oblique_matrix() -> np.ndarray:
    """IJK-to-RAS: a rotation about an oblique axis times anisotropic spacing, plus an offset."""
    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    angle = 0.5
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    m = np.eye(4)
    m[:3, :3] = rotation @ np.diag(SPACING)
    m[:3, 3] = (12.5, -30.25, 41.0)
    return m


def to_vtk_matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(m[r, c]))
    return matrix


def matrix_of(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_of(node) -> np.ndarray:
    dims = node.GetImageData().GetDimensions()
    return vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).reshape(dims[::-1])


def add_volume(scene, array: np.ndarray, name: str = "scan", cls=None, components: int = 1):
    """A volume node built directly with VTK (not with the code under test)."""
    node = (cls or slicer.vtkMRMLScalarVolumeNode)()
    node.SetName(name)
    node.SetIJKToRASMatrix(to_vtk_matrix(oblique_matrix()))
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_to_vtk(np.ascontiguousarray(array).reshape(-1, components), deep=True)
    image.GetPointData().SetScalars(scalars)
    node.SetAndObserveImageData(image)
    scene.AddNode(node)
    return node


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def volume(scene):
    return add_volume(scene, phantom())


def export_segment(segmentation_node, segment_id: str, reference_node) -> np.ndarray:
    """The segment as an array on the reference's grid, through Slicer's own export (a labelmap node)."""
    scene = reference_node.GetScene()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(labelmap)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation_node, ids, labelmap, reference_node)
    assert labelmap.GetImageData().GetDimensions() == reference_node.GetImageData().GetDimensions()
    np.testing.assert_allclose(matrix_of(labelmap), matrix_of(reference_node), atol=1e-9)
    values = array_of(labelmap).copy() > 0
    added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    for node in added:
        if node.GetID() not in before:  # the labelmap and the display node the export gave it
            scene.RemoveNode(node)
    return values


# -------------------------------------------------------------------------------------- geometry


def test_node_to_image_geometry_and_copy(volume, scene):
    image = volume_node_to_image(volume)
    m = oblique_matrix()
    flip = np.diag([-1.0, -1.0, 1.0])
    assert image.GetSize() == (SHAPE[2], SHAPE[1], SHAPE[0])
    np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-12)
    np.testing.assert_allclose(image.GetOrigin(), flip @ m[:3, 3], atol=1e-12)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)) @ np.diag(SPACING), flip @ m[:3, :3],
                               atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), array_of(volume))
    # a copy: changing the image leaves the node alone
    image[0, 0, 0] = 12345.0
    assert array_of(volume)[0, 0, 0] != 12345.0

    back = image_to_volume_node(image, scene, "back")
    np.testing.assert_allclose(matrix_of(back), m, atol=1e-12)
    assert back.GetImageData().GetScalarType() == vtk.VTK_FLOAT
    assert back.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()


# ------------------------------------------------------------------------------------- detection


def test_process_outputs_on_input_grid(volume, scene, model_path):
    before_array, before_matrix = array_of(volume).copy(), matrix_of(volume)
    progress = []
    outputs = run(volume, model_path, progress=lambda f, m: progress.append(f))

    map_node = outputs.map_node
    assert map_node.GetName() == "scan anomaly map"
    assert map_node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    np.testing.assert_array_equal(matrix_of(map_node), matrix_of(volume))
    assert map_node.GetImageData().GetScalarType() == vtk.VTK_FLOAT
    assert map_node.GetDisplayNode() is not None and map_node.GetDisplayNode().GetColorNodeID()
    assert progress and progress[-1] == pytest.approx(1.0)

    # the scored region is a labelmap on the input grid that the map references (saved with the scene)
    foreground = outputs.foreground_node
    assert foreground.IsA("vtkMRMLLabelMapVolumeNode") and foreground_node(map_node) is foreground
    np.testing.assert_array_equal(matrix_of(foreground), matrix_of(volume))
    assert 0 < array_of(foreground).sum() < array_of(foreground).size

    # the segmentation is the engine's mask: thresholded inside the foreground, small components gone
    threshold = outputs.report["threshold"]
    segmentation = outputs.segmentation_node
    assert segmentation.GetName() == "scan anomalies"
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Anomaly")
    expected = engine_mask(map_node, threshold)
    assert expected.any() and not np.array_equal(expected, array_of(map_node) >= np.float32(threshold))
    np.testing.assert_array_equal(export_segment(segmentation, segment_id, map_node), expected)

    # the input is untouched
    np.testing.assert_array_equal(array_of(volume), before_array)
    np.testing.assert_array_equal(matrix_of(volume), before_matrix)


def test_slicer_segment_is_the_mask_detect_writes(volume, scene, model_path, tmp_path):
    """Slicer and the command line, same input, model and threshold: the same voxels, one for one."""
    path = tmp_path / "scan.nrrd"
    sitk.WriteImage(volume_node_to_image(volume), str(path))
    values = array_of(run(volume, model_path).map_node)
    threshold = float(np.percentile(values[values > 0], 97))
    assert cli_main(["detect", str(path), "-o", str(tmp_path / "out"), "--model", str(model_path), "--device", "cpu",
                     "--threshold", repr(threshold), "-q"]) == 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "scan_mask.nii.gz"))) > 0
    outputs = run(volume, model_path, threshold=threshold)
    segmentation = outputs.segmentation_node
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Anomaly")
    shown = export_segment(segmentation, segment_id, outputs.map_node)
    assert written.any() and written.sum() < written.size
    np.testing.assert_array_equal(shown, written)
    # and after moving the slider away and back, still the file's voxels
    update_segmentation(outputs.map_node, threshold * 2.0, segmentation)
    update_segmentation(outputs.map_node, threshold, segmentation)
    np.testing.assert_array_equal(export_segment(segmentation, segment_id, outputs.map_node), written)


def test_no_background_voxel_at_the_slider_minimum(volume, scene, model_path):
    outputs = run(volume, model_path)
    low, high = threshold_range(outputs.map_node)
    inside = array_of(outputs.foreground_node) > 0
    values = array_of(outputs.map_node)
    assert low == pytest.approx(values[inside].min()) and high == pytest.approx(values[inside].max())
    segmentation = outputs.segmentation_node
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Anomaly")
    for threshold in (low, low - 1.0, 0.0):
        update_segmentation(outputs.map_node, threshold, segmentation)
        marked = export_segment(segmentation, segment_id, outputs.map_node)
        assert not (marked & ~inside).any(), f"background marked at threshold {threshold}"
        np.testing.assert_array_equal(marked, engine_mask(outputs.map_node, threshold))


def test_threshold_change_updates_same_segment(volume, scene, model_path):
    outputs = run(volume, model_path)
    segmentation = outputs.segmentation_node
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Anomaly")
    count = scene.GetNumberOfNodes()
    values = array_of(outputs.map_node)
    for threshold in (float(np.percentile(values[values > 0], 50)), float(np.percentile(values[values > 0], 90))):
        again = update_segmentation(outputs.map_node, threshold, segmentation)
        assert again is segmentation
        assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
        assert segmentation.GetSegmentation().GetSegmentIdBySegmentName("Anomaly") == segment_id
        np.testing.assert_array_equal(export_segment(segmentation, segment_id, outputs.map_node),
                                      engine_mask(outputs.map_node, threshold))
    assert scene.GetNumberOfNodes() == count


def test_dice_against_reference_segmentation(volume, scene, model_path):
    outputs = run(volume, model_path)
    values = array_of(outputs.map_node).copy()
    # reference: a box on the input grid, imported through Slicer's segmentation logic
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[9:15, 10:17, 14:21] = 1
    labelmap = add_volume(scene, truth, "truth", cls=slicer.vtkMRMLLabelMapVolumeNode)
    reference = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(reference)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, reference)
    segment_id = reference.GetSegmentation().GetNthSegmentID(0)

    threshold = float(np.percentile(values[values > 0], 80))
    table, chart, results = evaluate_nodes(outputs.map_node, reference, segment_id, threshold, mask=False)
    predicted = values >= np.float32(threshold)
    by_hand = 2.0 * np.count_nonzero(predicted & (truth > 0)) / (np.count_nonzero(predicted) + np.count_nonzero(truth))
    assert results["dice"] == pytest.approx(by_hand, abs=1e-12)
    voxel_ml = np.prod(SPACING) / 1000.0
    assert results["reference_volume_ml"] == pytest.approx(truth.sum() * voxel_ml)
    assert results["detected_volume_ml"] == pytest.approx(predicted.sum() * voxel_ml)
    assert results["best_dice"] >= results["dice"] - 1e-12
    assert 0.0 <= results["voxel_auroc"] <= 1.0 and 0.0 <= results["voxel_auprc"] <= 1.0
    assert table.GetNumberOfRows() == 7
    assert table.GetTable().GetValue(0, 1).ToDouble() == pytest.approx(by_hand)
    series = chart.GetNthPlotSeriesNode(0)
    curve = series.GetTableNode()
    assert curve.GetNumberOfRows() > 10 and series.GetYColumnName() == "Dice"

    count = scene.GetNumberOfNodes()
    table2, chart2, results2 = evaluate_nodes(outputs.map_node, reference, segment_id, threshold * 1.1, table, chart,
                                              mask=False)
    assert (table2, chart2) == (table, chart) and chart.GetNthPlotSeriesNode(0) is series
    assert scene.GetNumberOfNodes() == count
    assert results2["threshold"] == pytest.approx(threshold * 1.1)

    # by default restricted to the foreground the detection scored, as the demo evaluates inside the brain
    inside = array_of(outputs.foreground_node) > 0
    _, _, masked = evaluate_nodes(outputs.map_node, reference, segment_id, threshold, table, chart)
    p, t = predicted[inside], truth[inside] > 0
    assert masked["dice"] == pytest.approx(2.0 * np.count_nonzero(p & t) / (p.sum() + t.sum()), abs=1e-12)
    assert scene.GetNumberOfNodes() == count


def read_mrb(path):
    """A new scene read from a Slicer data bundle (a bare MRML scene needs a cache manager for it)."""
    scene = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(path.parent / "cache"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)
    assert scene.ReadFromMRB(str(path))
    return scene


def test_save_reload_evaluate_gives_the_same_numbers(volume, scene, model_path, tmp_path):
    """Everything Evaluate and the threshold need is in the scene: a reloaded bundle gives the same metrics."""
    outputs = run(volume, model_path)
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[9:15, 10:17, 14:21] = 1
    labelmap = add_volume(scene, truth, "truth", cls=slicer.vtkMRMLLabelMapVolumeNode)
    reference = slicer.vtkMRMLSegmentationNode()
    reference.SetName("reference")
    scene.AddNode(reference)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, reference)
    segment_id = reference.GetSegmentation().GetNthSegmentID(0)
    threshold = float(outputs.report["threshold"])
    _, _, before = evaluate_nodes(outputs.map_node, reference, segment_id, threshold)
    low_before = threshold_range(outputs.map_node)

    bundle = tmp_path / "scene.mrb"
    assert scene.WriteToMRB(str(bundle))
    reloaded = read_mrb(bundle)
    map_node = reloaded.GetFirstNodeByName("scan anomaly map")
    reference_again = reloaded.GetFirstNodeByName("reference")
    assert map_node is not None and reference_again is not None
    assert foreground_node(map_node) is not None and foreground_node(map_node).GetName() == "scan foreground"
    _, _, after = evaluate_nodes(map_node, reference_again, reference_again.GetSegmentation().GetNthSegmentID(0),
                                 threshold)
    assert after == pytest.approx(before, nan_ok=True)
    assert threshold_range(map_node) == pytest.approx(low_before)
    segmentation = reloaded.GetFirstNodeByName("scan anomalies")
    update_segmentation(map_node, low_before[0], segmentation)  # the slider's minimum, after reloading
    marked = export_segment(segmentation, segmentation.GetSegmentation().GetSegmentIdBySegmentName("Anomaly"),
                            map_node)
    assert not (marked & ~(array_of(foreground_node(map_node)) > 0)).any()


def test_second_run_reuses_output_nodes(volume, scene, model_path):
    first = run(volume, model_path, score="combi", extra_scores=("reconstruction",), with_reconstruction=True)
    assert first.score_nodes["reconstruction"].GetName() == "scan reconstruction"
    rebuilt = first.reconstruction_node
    assert rebuilt.GetName() == "scan reconstruction" and same_grid(volume, rebuilt)[0]
    assert rebuilt is not first.score_nodes["reconstruction"]
    assert 0.0 <= node_array(rebuilt).min() and node_array(rebuilt).max() <= 1.0 and node_array(rebuilt).max() > 0
    count = scene.GetNumberOfNodes()
    second = run(volume, model_path, score="combi", threshold=0.0123, outputs=first,
                 extra_scores=("reconstruction",), with_reconstruction=True)
    assert scene.GetNumberOfNodes() == count
    assert second.map_node is first.map_node and second.segmentation_node is first.segmentation_node
    assert second.foreground_node is first.foreground_node
    assert second.score_nodes["reconstruction"] is first.score_nodes["reconstruction"]
    assert second.reconstruction_node is rebuilt
    assert second.segmentation_node.GetSegmentation().GetNumberOfSegments() == 1
    assert second.report["threshold"] == pytest.approx(0.0123)


# ------------------------------------------------------------------------------------ bad inputs


def fingerprint(node) -> tuple:
    """What must not change on an input node: its voxels (checksum), IJK-to-RAS and parent transform."""
    import hashlib

    image = node.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    voxels = hashlib.sha256(np.ascontiguousarray(vtk_to_numpy(scalars)).tobytes()).hexdigest() if scalars else None
    return voxels, matrix_of(node).tobytes(), node.GetTransformNodeID(), node.GetName()


def scene_state(scene) -> list:
    """The scene's node IDs with each node's class and name: a failed detection must leave it so."""
    return [(n.GetID(), n.GetClassName(), n.GetName()) for n in (scene.GetNthNode(i)
                                                                 for i in range(scene.GetNumberOfNodes()))]


def test_bad_inputs_raise_and_leave_no_node(volume, scene, model_path, tmp_path, monkeypatch):
    """Every error path that reaches ``process`` (bad node, bad model, bad settings, engine refusal,
    cancel at any point, a failure while the output nodes are made) raises, adds no node, and leaves
    every input node as it was: voxel checksum, IJK-to-RAS and parent transform compared before and after."""
    import importlib

    process_module = importlib.import_module("AnomalyDetectionMRML.process")  # the package exports process()

    empty = slicer.vtkMRMLScalarVolumeNode()
    empty.SetName("nothing loaded")
    scene.AddNode(empty)
    rgb = add_volume(scene, np.zeros(SHAPE + (3,), dtype=np.uint8), "colour photo",
                     cls=slicer.vtkMRMLVectorVolumeNode, components=3)
    with_nan = phantom()
    with_nan[12, 16, 14] = np.nan
    nan_node = add_volume(scene, with_nan, "with NaN")
    sheared = add_volume(scene, phantom(), "sheared")
    shear = oblique_matrix()
    shear[:3, 1] += 0.5 * shear[:3, 0]
    sheared.SetIJKToRASMatrix(to_vtk_matrix(shear))
    singular = add_volume(scene, phantom(), "singular")
    flat = oblique_matrix()
    flat[:3, 1] = flat[:3, 0]
    singular.SetIJKToRASMatrix(to_vtk_matrix(flat))
    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    # a model file whose card does not describe its weights, and one that is cut short
    payload = torch.load(str(model_path), weights_only=True)
    payload["card"]["latent_dim"] = 7
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, str(mismatched))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model_path.read_bytes()[:2000])

    # the proxy of a 4D sequence: a 3D volume node that shows one of several frames
    sequence = slicer.vtkMRMLSequenceNode()
    scene.AddNode(sequence)
    for t in range(2):
        frame = slicer.vtkMRMLScalarVolumeNode()
        frame.SetAndObserveImageData(volume.GetImageData())
        sequence.SetDataNodeAtValue(frame, str(t))
    browser = slicer.vtkMRMLSequenceBrowserNode()
    scene.AddNode(browser)
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = add_volume(scene, phantom(), "dynamic")
    browser.AddProxyNode(proxy, sequence, False)

    inputs = [volume, empty, rgb, nan_node, sheared, singular, proxy]
    before = [fingerprint(node) for node in inputs]
    state = scene_state(scene)

    def cancel_after(calls: int):
        count = {"n": 0}

        def cancel() -> bool:
            count["n"] += 1
            return count["n"] > calls
        return cancel

    def failing_segment(*args, **kwargs):
        raise RuntimeError("injected failure while the segmentation is made")

    with pytest.raises(InputError, match="dynamic.*4D sequence of 2"):
        run(proxy, model_path)
    with pytest.raises(InputError, match="nothing loaded.*no image data"):
        run(empty, model_path)
    with pytest.raises(InputError, match="colour photo"):
        run(rgb, model_path)
    with pytest.raises(InputError, match="no input volume"):
        run(None, model_path)
    with pytest.raises(InputError, match="with NaN: 1 voxels are NaN or Inf"):
        run(nan_node, model_path)
    with pytest.raises(InputError, match="sheared.*not orthonormal"):
        run(sheared, model_path)
    with pytest.raises(InputError, match="singular.*singular"):
        run(singular, model_path)
    with pytest.raises(ModelError, match="do not match the model card"):
        run(volume, mismatched)
    with pytest.raises(ModelError, match="truncated.pt: not a model file"):
        run(volume, truncated)
    with pytest.raises(ModelError, match="unknown score"):
        run(volume, model_path, score="magic")
    with pytest.raises(Cancelled):
        run(volume, model_path, cancel=lambda: True)
    for calls in range(1, 9):  # at each of the 9 checks of this run: preparing, scoring, the extra score, ...
        with pytest.raises(Cancelled):
            run(volume, model_path, cancel=cancel_after(calls), extra_scores=("reconstruction",))
    monkeypatch.setattr(process_module, "set_anomaly_segment", failing_segment)
    with pytest.raises(RuntimeError, match="injected failure"):
        run(volume, model_path)
    assert scene_state(scene) == state
    assert [fingerprint(node) for node in inputs] == before


# ----------------------------------------------------------------------------------------- batch


def test_process_folder_writes_maps_and_csv(tmp_path, model_path):
    inputs, truths, out = tmp_path / "in", tmp_path / "truth", tmp_path / "out"
    inputs.mkdir()
    truths.mkdir()
    for case, seed in (("case_a", 1), ("case_b", 2)):
        image = sitk.GetImageFromArray(phantom(seed))
        image.SetSpacing(SPACING)
        sitk.WriteImage(image, str(inputs / f"{case}.nii.gz"))
    truth = sitk.GetImageFromArray((phantom(1) > 150).astype(np.uint8))
    truth.SetSpacing(SPACING)
    sitk.WriteImage(truth, str(truths / "case_a_seg.nii.gz"))
    (inputs / "broken.nii.gz").write_bytes(b"not an image")

    csv_path = process_folder(inputs, out, Detector(model_path, device="cpu"), truth_dir=truths)
    rows = {row["case"]: row for row in csv.DictReader(open(csv_path, encoding="utf-8"))}
    assert set(rows) == {"broken", "case_a", "case_b"}
    assert "cannot be read" in rows["broken"]["error"] and not rows["broken"]["threshold"]
    for case in ("case_a", "case_b"):
        assert not rows[case]["error"]
        for suffix in ("_anomaly.nii.gz", "_mask.nii.gz", "_foreground.nii.gz", "_report.json"):
            assert (out / f"{case}{suffix}").is_file()
        assert float(rows[case]["anomalous_volume_ml"]) >= 0.0 and rows[case]["model"] == "tiny"
    assert 0.0 <= float(rows["case_a"]["dice"]) <= 1.0 and float(rows["case_a"]["voxel_auroc"]) > 0.0
    assert rows["case_b"]["dice"] == "" and rows["case_b"]["truth"] == ""
    assert not (out / "broken_anomaly.nii.gz").exists()


def test_process_folder_keeps_same_named_inputs_apart_and_resumes(tmp_path, model_path):
    """``scan.nii.gz`` and ``scan.nrrd`` of one folder get two output sets; a second call skips both
    (the batch runner's resume), and the inputs are left byte for byte."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name, seed in (("scan.nii.gz", 1), ("scan.nrrd", 2)):
        image = sitk.GetImageFromArray(phantom(seed))
        image.SetSpacing(SPACING)
        sitk.WriteImage(image, str(inputs / name))
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    detector = Detector(model_path, device="cpu")
    rows = list(csv.DictReader(open(process_folder(inputs, out, detector), encoding="utf-8")))
    assert [(r["case"], r["status"]) for r in rows] == [("scan_nii_gz", "done"), ("scan_nrrd", "done")]
    for case in ("scan_nii_gz", "scan_nrrd"):
        for suffix in ("_anomaly.nii.gz", "_mask.nii.gz", "_foreground.nii.gz", "_report.json"):
            assert (out / f"{case}{suffix}").is_file()
    assert (out / "anomaly_detection_run.json").is_file()
    rows = list(csv.DictReader(open(process_folder(inputs, out, detector), encoding="utf-8")))
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before


def test_a_labelmap_becomes_a_reference_segmentation_with_one_segment_per_label():
    """The sample's truth (and any uploaded labelmap) enters the scene as a segmentation whose
    segments hold exactly the labelled voxels; the temporary labelmap node does not stay."""
    from AnomalyDetectionMRML import labelmap_to_segmentation, segment_to_image

    scene = slicer.vtkMRMLScene()
    scan = image_to_volume_node(sitk.GetImageFromArray(phantom()), scene, "scan")
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[5:9, 10:14, 6:11] = 1
    labels[15:17, 20:22, 18:20] = 2
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(volume_node_to_image(scan))
    nodes_before = scene.GetNumberOfNodes()
    segmentation = labelmap_to_segmentation(label_image, scene, "truth", scan)
    assert scene.GetNumberOfNodes() == nodes_before + 2  # the segmentation and its display node
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    for index, label in enumerate((1, 2)):
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(index)
        truth = sitk.GetArrayFromImage(segment_to_image(segmentation, segment_id, scan))
        assert np.array_equal(truth > 0, labels == label)
    with pytest.raises(InputError, match="no labelled voxels"):
        labelmap_to_segmentation(sitk.Image(4, 4, 4, sitk.sitkUInt8), scene, "empty")
    assert scene.GetNumberOfNodes() == nodes_before + 2


def test_a_shown_map_changes_colour_table_and_window_on_request():
    """The web page's colour menu and window slider: the choices exist in the scene, and a change
    reaches the map's display node (and nothing else)."""
    from AnomalyDetectionMRML import heat_colour_choices, set_map_display, show_anomaly_map

    scene = slicer.vtkMRMLScene()
    map_node = image_to_volume_node(sitk.GetImageFromArray(phantom()), scene, "map")
    show_anomaly_map(map_node)
    choices = heat_colour_choices(scene)
    assert "Anomaly heat" in choices and all(scene.GetNodeByID(i) is not None for i in choices.values())
    assert heat_colour_choices(scene) == choices  # the own table is added once
    display = map_node.GetDisplayNode()
    threshold_before = display.GetLowerThreshold()
    set_map_display(map_node, choices["Anomaly heat"], (0.2, 0.9))
    assert display.GetColorNodeID() == choices["Anomaly heat"]
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.2, 0.9))
    assert display.GetLowerThreshold() == threshold_before
