"""Tests of the evaluation metrics (against hand-computed values and brute force) and reports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.errors import Cancelled, InputError
from AnomalyDetectionLib.evaluation import (
    best_dice,
    dice,
    dice_curve,
    evaluate,
    evaluate_case,
    mean_curves,
    pair_cases,
    sample_auroc,
    sample_score,
    threshold_curves,
    voxel_auprc,
    voxel_auroc,
    write_report,
)
from AnomalyDetectionLib.evaluation.figures import curves_figure

# ------------------------------------------------------------------------------------------ metrics


def test_auroc_perfect_reversed_and_tied() -> None:
    truth = np.array([0, 0, 1, 1])
    assert voxel_auroc(np.array([0.1, 0.2, 0.8, 0.9]), truth) == 1.0
    assert voxel_auroc(np.array([0.9, 0.8, 0.2, 0.1]), truth) == 0.0
    assert voxel_auroc(np.ones(4), truth) == 0.5
    # 3 of the 4 (positive, negative) pairs are ordered right
    assert voxel_auroc(np.array([0.1, 0.5, 0.4, 0.9]), truth) == pytest.approx(0.75)


def test_auroc_mask_and_single_class() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    truth = np.array([[0, 0], [1, 1]])
    assert voxel_auroc(scores, truth) == 0.5
    # without the misleading top-left voxel the separation is perfect
    assert voxel_auroc(scores, truth, mask=np.array([[0, 1], [1, 1]])) == 1.0
    assert math.isnan(voxel_auroc(scores, np.zeros((2, 2))))
    assert math.isnan(voxel_auroc(scores, truth, mask=np.array([[0, 0], [1, 1]])))  # only lesion inside
    with pytest.raises(ValueError):
        voxel_auroc(scores, truth.ravel())


def test_auprc_known_value() -> None:
    # ranking: pos, neg, pos, neg -> precision at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    truth = np.array([1, 0, 2, 0])  # any value > 0 is lesion
    assert voxel_auprc(scores, truth) == pytest.approx((1 + 2 / 3) / 2)
    assert voxel_auprc(scores, np.array([1, 1, 0, 0])) == pytest.approx(1.0)
    assert math.isnan(voxel_auprc(scores, np.zeros(4)))


def test_dice_by_hand() -> None:
    prediction = np.array([1, 1, 1, 0, 0])
    truth = np.array([0, 1, 1, 1, 0])
    assert dice(prediction, truth) == pytest.approx(2 * 2 / (3 + 3))
    assert dice(prediction, truth, mask=np.array([0, 1, 1, 0, 1])) == 1.0
    assert dice(np.zeros(5), np.zeros(5)) == 1.0
    assert dice(np.zeros(5), truth) == 0.0


def test_best_dice_crafted() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    truth = np.array([1, 1, 0, 1, 0, 0])
    # >=0.9: 2/(1+3)=0.5; >=0.8: 4/5=0.8; >=0.7: 4/6; >=0.6: 6/7 (best); >=0.5: 6/8; >=0.1: 6/9
    value, threshold = best_dice(scores, truth)
    assert value == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.6)
    assert dice(scores >= threshold, truth) == pytest.approx(value)


def test_best_dice_without_lesion_predicts_nothing() -> None:
    scores = np.array([0.2, 0.5, 0.3], dtype=np.float32)
    value, threshold = best_dice(scores, np.zeros(3))
    assert value == 1.0
    assert not (scores >= threshold).any()
    assert all(math.isnan(v) for v in best_dice(scores, np.ones(3), mask=np.zeros(3)))


def _brute_force_best(scores: np.ndarray, truth: np.ndarray) -> float:
    return max(dice(scores >= t, truth) for t in np.unique(scores))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_dice_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random((6, 7, 5)) < 0.2
    # rounded scores give many ties, which the cumulative counts must handle
    scores = np.round(rng.random(truth.shape) + 0.5 * truth, 1).astype(np.float32)
    mask = rng.random(truth.shape) < 0.8
    value, threshold = best_dice(scores, truth, mask)
    assert value == pytest.approx(_brute_force_best(scores[mask], truth[mask]))
    assert dice(scores >= threshold, truth, mask) == pytest.approx(value)


def test_dice_curve_equals_dice_at_each_threshold() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random((5, 8, 8)) < 0.3
    scores = rng.random(truth.shape).astype(np.float32) + truth
    mask = rng.random(truth.shape) < 0.7
    thresholds = np.r_[np.linspace(-0.5, 2.5, 31), scores[mask][:10]]  # incl. exact score values
    curve = dice_curve(scores, truth, thresholds, mask)
    expected = [dice(scores >= t, truth, mask) for t in thresholds]
    np.testing.assert_allclose(curve, expected)
    # above every score the prediction is empty: Dice 0 with a lesion, 1 without
    assert dice_curve(scores, truth, [10.0])[0] == 0.0
    assert dice_curve(scores, np.zeros_like(truth), [10.0])[0] == 1.0


def test_sample_score_by_hand() -> None:
    scores = np.arange(200, dtype=np.float64)  # top 1 % of 200 = 2 voxels: 199 and 198
    assert sample_score(scores) == pytest.approx(198.5)
    assert sample_score(scores, top_fraction=0.1) == pytest.approx(np.mean(np.arange(180, 200)))
    mask = scores < 50  # 50 voxels -> at least one voxel: 49
    assert sample_score(scores, mask) == 49.0
    assert math.isnan(sample_score(scores, np.zeros(200)))
    with pytest.raises(ValueError):
        sample_score(scores, top_fraction=0.0)


def test_sample_auroc() -> None:
    assert sample_auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert sample_auroc([0.1, 0.8, 0.9], [True, False, False]) == 0.0
    assert math.isnan(sample_auroc([0.1, 0.2], [1, 1]))


# -------------------------------------------------------------------------------------- reports

SIZE = 20


def _image(array: np.ndarray, spacing: Tuple[float, float, float] = (1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 0.0))
    return image


def _case(lesion: bool, seed: int) -> Tuple[sitk.Image, sitk.Image]:
    """An anomaly map (noise + a bright cube where the lesion is) and its truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((SIZE,) * 3, dtype=np.uint8)
    if lesion:
        truth[5:10, 5:10, 5:10] = 1
    scores = rng.random(truth.shape).astype(np.float32) * 0.5 + truth
    return _image(scores), _image(truth)


def test_evaluate_case_metrics() -> None:
    anomaly_map, truth = _case(True, 0)
    mask = _image(np.ones((SIZE,) * 3, dtype=np.uint8))  # constant mask is fine
    result = evaluate_case(anomaly_map, truth, mask, threshold=0.75, name="a")
    assert result["case"] == "a"
    assert result["voxel_auroc"] == 1.0
    assert result["voxel_auprc"] == pytest.approx(1.0)
    assert result["dice"] == 1.0
    assert result["best_dice"] == 1.0
    lowest_lesion_score = sitk.GetArrayFromImage(anomaly_map)[sitk.GetArrayFromImage(truth) > 0].min()
    assert result["best_threshold"] == lowest_lesion_score
    assert result["lesion_voxels"] == 125
    assert result["lesion_volume_ml"] == pytest.approx(125 * 2 / 1000)
    assert result["detected_volume_ml"] == pytest.approx(125 * 2 / 1000)
    assert result["is_abnormal"] is True
    assert result["sample_score"] > 1.0  # top 1 % = 80 voxels, all in the lesion


def test_evaluate_case_normal_and_without_threshold() -> None:
    anomaly_map, truth = _case(False, 1)
    result = evaluate_case(anomaly_map, truth)
    assert math.isnan(result["voxel_auroc"]) and math.isnan(result["voxel_auprc"])
    assert result["dice"] is None and result["detected_volume_ml"] is None and result["threshold"] is None
    assert result["is_abnormal"] is False and result["lesion_voxels"] == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda im: sitk.GetImageFromArray(np.zeros((SIZE, SIZE, SIZE + 1), dtype=np.uint8)),
        lambda im: im.SetSpacing((1.0, 1.0, 2.01)),
        lambda im: im.SetOrigin((-10.0, 5.0, 0.5)),
        lambda im: im.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)),
    ],
)
def test_grid_mismatch_raises(change) -> None:
    anomaly_map, truth = _case(True, 2)
    changed = change(truth)
    truth = changed if changed is not None else truth
    with pytest.raises(InputError, match="case7: truth"):
        evaluate_case(anomaly_map, truth, name="case7")
    with pytest.raises(InputError, match="mask"):
        evaluate_case(anomaly_map, _case(True, 2)[1], mask=truth)


def test_grid_within_tolerance_is_accepted() -> None:
    anomaly_map, truth = _case(True, 3)
    truth.SetOrigin((-10.0 + 1e-6, 5.0, 0.0))
    assert evaluate_case(anomaly_map, truth)["voxel_auroc"] == 1.0


def test_evaluate_dataset_summary_and_progress() -> None:
    cases = [_case(True, 4), _case(True, 5), _case(False, 6), _case(False, 7)]
    calls = []
    report = evaluate(
        [c[0] for c in cases],
        [c[1] for c in cases],
        thresholds=[0.75, 0.75, 0.75, 0.45],
        names=["l1", "l2", "n1", "n2"],
        progress=lambda fraction, message: calls.append((fraction, message)),
    )
    summary = report["summary"]
    assert [c["case"] for c in report["cases"]] == ["l1", "l2", "n1", "n2"]
    assert (summary["n_cases"], summary["n_abnormal"], summary["n_normal"]) == (4, 2, 2)
    assert summary["voxel_auroc_mean"] == 1.0 and summary["dice_median"] == 1.0
    assert summary["lesion_volume_ml_mean"] == pytest.approx(125 * 2 / 1000)
    assert summary["sample_auroc"] == 1.0
    # n1: nothing >= 0.75 (noise < 0.5); n2: noise >= 0.45 is about 10 % of voxels
    fraction_n2 = report["cases"][3]["detected_fraction"]
    assert report["cases"][2]["detected_fraction"] == 0.0 and 0.05 < fraction_n2 < 0.15
    assert summary["false_positive_rate"] == pytest.approx(fraction_n2 / 2)
    assert [f for f, _ in calls] == [0.0, 0.25, 0.5, 0.75, 1.0]

    only_lesions = evaluate([c[0] for c in cases[:2]], [c[1] for c in cases[:2]])
    assert math.isnan(only_lesions["summary"]["sample_auroc"])
    assert only_lesions["summary"]["false_positive_rate"] is None
    assert math.isnan(only_lesions["summary"]["dice_mean"])  # no threshold, no Dice


def test_evaluate_checks_lengths_and_cancels() -> None:
    anomaly_map, truth = _case(True, 8)
    with pytest.raises(InputError, match="1 anomaly maps but 2 truths"):
        evaluate([anomaly_map], [truth, truth])
    with pytest.raises(Cancelled):
        evaluate([anomaly_map], [truth], cancel=lambda: True)


def _write_case(folder: Path, truth_dir: Path, stem: str, lesion: bool, seed: int,
                threshold: Optional[float], truth_name: str) -> None:
    anomaly_map, truth = _case(lesion, seed)
    sitk.WriteImage(anomaly_map, str(folder / f"{stem}_anomaly.nii.gz"))
    sitk.WriteImage(_image(np.ones((SIZE,) * 3, dtype=np.uint8)), str(folder / f"{stem}_foreground.nii.gz"))
    # detect's thresholded anomaly mask sits there too; it must never be taken as the evaluation mask
    sitk.WriteImage(_image(np.zeros((SIZE,) * 3, dtype=np.uint8)), str(folder / f"{stem}_mask.nii.gz"))
    if threshold is not None:
        (folder / f"{stem}_report.json").write_text(json.dumps({"threshold": threshold}))
    sitk.WriteImage(truth, str(truth_dir / truth_name))


def test_pair_cases_evaluate_and_write_report(tmp_path: Path) -> None:
    maps, truths = tmp_path / "maps", tmp_path / "truth"
    maps.mkdir()
    truths.mkdir()
    _write_case(maps, truths, "a", True, 9, 0.75, "a_seg.nii.gz")
    _write_case(maps, truths, "a_1", False, 10, None, "a_1_truth.nrrd")  # must not be claimed by "a"
    _write_case(maps, truths, "b", False, 11, 0.45, "b_mask.nii.gz")  # a truth may be called <case>_mask

    pairs = pair_cases(maps, truths, mask_dir=maps)  # detect's foreground masks sit beside the maps
    assert [(p[0], p[2].name, p[3].name, p[4]) for p in pairs] == [
        ("a", "a_seg.nii.gz", "a_foreground.nii.gz", 0.75),
        ("a_1", "a_1_truth.nrrd", "a_1_foreground.nii.gz", None),
        ("b", "b_mask.nii.gz", "b_foreground.nii.gz", 0.45),
    ]
    assert pair_cases(maps, truths)[0][3] is None

    stems, map_paths, truth_paths, mask_paths, thresholds = zip(*pairs)
    report = evaluate(map_paths, truth_paths, mask_paths, thresholds, list(stems), curves=True)
    assert report["cases"][0]["voxel_auroc"] == 1.0  # binary truth file read despite being 0/1
    assert math.isnan(report["cases"][1]["voxel_auroc"])  # empty (constant) truth file accepted
    assert list(report["curves"]) == ["a"]  # only lesion cases have curves; cases keep no curve key
    assert all("curves" not in case for case in report["cases"])

    paths = write_report(report, tmp_path / "out" / "evaluation.json")
    json_path, csv_path = paths["json"], paths["csv"]
    assert csv_path == tmp_path / "out" / "evaluation.csv"
    assert paths["curves_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["curves_csv"].open(newline="") as handle:
        curve_rows = list(csv.DictReader(handle))
    assert {row["case"] for row in curve_rows} == {"a"}
    assert set(curve_rows[0]) == {"case", "threshold", "fpr", "tpr", "precision", "dice"}
    assert max(float(row["dice"]) for row in curve_rows) == pytest.approx(report["cases"][0]["best_dice"])
    text = json_path.read_text()
    assert "curves" not in json.loads(text)
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["cases"][1]["voxel_auroc"] is None and loaded["summary"]["n_cases"] == 3
    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["case", "voxel_auroc", "voxel_auprc"]
    assert [r[0] for r in rows[1:]] == ["a", "a_1", "b"]
    assert rows[2][1] == ""  # NaN AUROC of the normal case is an empty cell


def test_threshold_curves_agree_with_the_exact_metrics() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random((20, 30, 30)) < 0.05
    scores = (rng.normal(size=truth.shape) + 1.5 * truth).astype(np.float32)
    mask = np.ones_like(truth)
    mask[:2] = 0
    curves = threshold_curves(scores, truth, mask, points=400)
    t, s = truth[mask > 0], scores[mask > 0]
    assert curves["fpr"][0] == curves["tpr"][0] == 0.0 and curves["precision"][0] == 1.0  # nothing predicted
    assert curves["tpr"][-1] == 1.0 and curves["fpr"][-1] == 1.0  # the lowest threshold takes every voxel
    assert np.all(np.diff(curves["threshold"]) < 0) and np.all(np.diff(curves["tpr"]) >= 0)
    for i in (1, len(curves["threshold"]) // 2, len(curves["threshold"]) - 1):  # each point is exact
        predicted = s >= np.float32(curves["threshold"][i])
        assert curves["tpr"][i] == np.count_nonzero(predicted & t) / np.count_nonzero(t)
        assert curves["fpr"][i] == np.count_nonzero(predicted & ~t) / np.count_nonzero(~t)
        assert curves["dice"][i] == pytest.approx(dice(predicted, t))
    auc = np.sum(np.diff(curves["fpr"]) * (curves["tpr"][1:] + curves["tpr"][:-1]) / 2)
    assert auc == pytest.approx(voxel_auroc(scores, truth, mask), abs=0.01)
    ap = np.sum(np.diff(curves["tpr"]) * curves["precision"][1:])
    assert ap == pytest.approx(voxel_auprc(scores, truth, mask), abs=0.02)
    assert threshold_curves(scores, np.zeros_like(truth)) is None  # a normal case has no curves


def test_mean_curves_average_cases_on_common_axes() -> None:
    rng = np.random.default_rng(5)
    truth = rng.random(4000) < 0.1
    perfect = threshold_curves(truth + 0.1 * rng.random(truth.size), truth)  # AUROC 1
    chance = threshold_curves(rng.random(truth.size), truth)  # AUROC 0.5
    mean = mean_curves([perfect, chance])
    assert mean["fpr"][0] == mean["tpr"][0] == 0.0 and mean["tpr"][-1] == 1.0
    auc = np.sum(np.diff(mean["fpr"]) * (mean["tpr"][1:] + mean["tpr"][:-1]) / 2)
    assert auc == pytest.approx(0.75, abs=0.03)  # the mean of the two areas
    assert mean["precision"][100] == pytest.approx((1.0 + 0.1) / 2, abs=0.06)  # recall 0.5: perfect 1, chance ~0.1
    assert np.all(np.diff(mean["threshold"]) <= 0) and mean["dice"].max() <= 1.0
    assert mean_curves([perfect])["dice"].max() == pytest.approx(perfect["dice"].max(), abs=0.05)
    with pytest.raises(ValueError, match="at least one curve"):
        mean_curves([])


def test_curves_figure_marks_thresholds_and_handles_many_cases(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    truth = rng.random(5000) < 0.1
    curves = {f"case {i}": threshold_curves(rng.normal(size=truth.size) + i * truth, truth) for i in range(12)}
    few = curves_figure(dict(list(curves.items())[:3]), tmp_path / "few.png", {"case 1": 0.5, "case 2": None})
    many = curves_figure(curves, tmp_path / "many.png")  # beyond the legend's size: drawn unlabelled
    assert few.read_bytes()[:4] == many.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="at least one curve"):
        curves_figure({}, tmp_path / "none.png")


def test_pair_cases_errors(tmp_path: Path) -> None:
    maps, truths = tmp_path / "maps", tmp_path / "truth"
    maps.mkdir()
    truths.mkdir()
    with pytest.raises(InputError, match="no anomaly maps"):
        pair_cases(maps, truths)
    _write_case(maps, truths, "a", True, 12, None, "a_seg.nii.gz")
    _write_case(maps, truths, "c", True, 13, None, "other.nii.gz")
    with pytest.raises(InputError, match="c_anomaly"):
        pair_cases(maps, truths)
    sitk.WriteImage(_case(True, 13)[1], str(truths / "c_seg.nii.gz"))
    sitk.WriteImage(_case(True, 13)[1], str(truths / "c_lesion.nii.gz"))
    with pytest.raises(InputError, match="several truth files"):
        pair_cases(maps, truths)
    (truths / "c_lesion.nii.gz").unlink()
    (maps / "a_report.json").write_text("{not json")
    with pytest.raises(InputError, match="a_report.json"):
        pair_cases(maps, truths)


def test_unreadable_truth_names_file(tmp_path: Path) -> None:
    anomaly_map, _ = _case(True, 14)
    bad = tmp_path / "x_seg.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="x_seg.nii.gz"):
        evaluate([anomaly_map], [bad])
