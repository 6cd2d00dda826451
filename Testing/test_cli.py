"""The anomaly-detection command end to end on small volumes in a temporary folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AnomalyDetectionLib import load_model
from AnomalyDetectionLib.cli import main
from AnomalyDetectionLib.preprocessing import write_image_atomic
from AnomalyDetectionLib.preprocessing.io import expand_inputs


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory, lesion_case, normal_volumes):
    """Input folder: a lesion case, a normal case and their truths; plus one broken file elsewhere."""
    folder = tmp_path_factory.mktemp("cases")
    image, truth = lesion_case
    write_image_atomic(image, folder / "images" / "lesion.nrrd")
    write_image_atomic(truth, folder / "truth" / "lesion_seg.nii.gz")
    write_image_atomic(normal_volumes[4], folder / "images" / "normal.nii.gz")
    empty = sitk.Image(normal_volumes[4].GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(normal_volumes[4])
    write_image_atomic(empty, folder / "truth" / "normal_seg.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    return folder


def test_detect_then_evaluate(tiny_vae, case_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["detect", str(case_dir / "images"), "--model", str(tiny_vae.path), "--output-dir", str(out),
                 "--device", "cpu", "--batch-size", "8", "-q"])
    assert code == 0
    for stem in ("lesion", "normal"):
        anomaly = sitk.ReadImage(str(out / f"{stem}_anomaly.nii.gz"))
        mask = sitk.ReadImage(str(out / f"{stem}_mask.nii.gz"))
        foreground = sitk.ReadImage(str(out / f"{stem}_foreground.nii.gz"))
        source = sitk.ReadImage(str(next((case_dir / "images").glob(f"{stem}.*"))))
        assert anomaly.GetPixelID() == sitk.sitkFloat32 and mask.GetPixelID() == sitk.sitkUInt8
        assert anomaly.GetSize() == source.GetSize() == foreground.GetSize()
        inside = sitk.GetArrayViewFromImage(foreground) > 0
        assert inside.any() and not sitk.GetArrayViewFromImage(anomaly)[~inside].any()  # map is 0 outside
        np.testing.assert_allclose(anomaly.GetOrigin(), source.GetOrigin(), atol=1e-4)
        report = json.loads((out / f"{stem}_report.json").read_text())
        assert report["score"] == "elbo_grad" and report["threshold_source"] == "calibrated"
        assert {"prepare_s", "score_s", "total_s"} <= set(report["timings"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert "lesion: elbo_grad sample score" in capsys.readouterr().out

    report_path = tmp_path / "eval" / "report.json"
    code = main(["evaluate", "--maps", str(out), "--truth", str(case_dir / "truth"), "--output", str(report_path),
                 "-q"])
    assert code == 0
    report = json.loads(report_path.read_text())
    cases = {c["case"]: c for c in report["cases"]}
    assert set(cases) == {"lesion", "normal"}
    assert cases["lesion"]["voxel_auroc"] > 0.85 and cases["lesion"]["dice"] is not None
    summary = report["summary"]
    assert (summary["n_abnormal"], summary["n_normal"]) == (1, 1)
    assert summary["sample_auroc"] in (0.0, 1.0)  # one lesion case vs one normal case: ranked one way or the other
    for stem in ("lesion", "normal"):  # the detection's own sample score, not one recomputed from the written map
        written = json.loads((out / f"{stem}_report.json").read_text())["sample_score"]
        assert cases[stem]["sample_score"] == pytest.approx(written)
    assert summary["false_positive_rate"] == pytest.approx(cases["normal"]["detected_fraction"])
    with open(report_path.with_suffix(".csv")) as handle:
        assert len(list(csv.DictReader(handle))) == 2
    in_foreground = tmp_path / "eval" / "in_foreground.json"  # --mask = the maps folder: detect's foregrounds
    assert main(["evaluate", "--maps", str(out), "--truth", str(case_dir / "truth"), "--mask", str(out),
                 "--output", str(in_foreground), "-q"]) == 0
    inside = {c["case"]: c for c in json.loads(in_foreground.read_text())["cases"]}
    assert 0.5 < inside["lesion"]["voxel_auroc"] <= cases["lesion"]["voxel_auroc"]  # no free background
    with open(report_path.with_name("report_curves.csv")) as handle:  # curves of the lesion case only
        assert {row["case"] for row in csv.DictReader(handle)} == {"lesion"}
    assert report_path.with_name("report_curves.png").stat().st_size > 0
    assert "report_curves.png" in capsys.readouterr().out


def test_detect_goes_on_past_a_bad_input(tiny_vae, case_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["detect", str(case_dir / "broken.nii.gz"), str(case_dir / "images" / "normal.nii.gz"),
                 str(case_dir / "missing.nii.gz"), "--model", str(tiny_vae.path), "--output-dir", str(out), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "broken.nii.gz: cannot be read as an image" in err
    assert "missing.nii.gz: no such file" in err and "2 of 3 input(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["anomaly_detection_run.csv", "anomaly_detection_run.json",
                                                     "normal_anomaly.nii.gz", "normal_foreground.nii.gz",
                                                     "normal_mask.nii.gz", "normal_report.json"]
    summary = json.loads((out / "anomaly_detection_run.json").read_text())
    assert [c["status"] for c in summary["cases"]] == ["failed", "done", "failed"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "nowhere.pt"], "nowhere.pt: no such model file"),
    (["--score", "kl_grad", "--param", "steps=3"], "takes no parameter steps"),
    (["--threshold", "high"], "'high' is neither 'auto' nor a number"),
])
def test_user_errors_are_one_line_with_exit_code_2(tiny_vae, case_dir, tmp_path, capsys, argv, message) -> None:
    args = ["detect", str(case_dir / "images"), "--output-dir", str(tmp_path / "o"), "-q", "--model",
            str(tiny_vae.path)] + argv
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cuda_request_without_cuda(tiny_vae, case_dir, tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["detect", str(case_dir / "images"), "--model", str(tiny_vae.path), "--output-dir",
                 str(tmp_path / "o"), "--device", "cuda", "-q"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_train_and_list_models(normal_volumes, tmp_path, capsys) -> None:
    for i, volume in enumerate(normal_volumes[:3]):
        write_image_atomic(volume, tmp_path / "normal" / f"n{i}.nii.gz")
    model_path = tmp_path / "cli.pt"
    code = main(["train", str(tmp_path / "normal" / "*.nii.gz"), "--output", str(model_path), "--arch", "ae",
                 "--latent", "8", "--size", "32", "--channels", "8,16", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "-q"])
    assert code == 0 and model_path.exists()
    assert "calibrated thresholds: reconstruction" in capsys.readouterr().out
    assert main(["models", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "cli" in out and "ae  latent 8" in out and "default score reconstruction" in out

    recalibrated = tmp_path / "recalibrated.pt"
    assert main(["calibrate", str(model_path), str(tmp_path / "normal" / "n2.nii.gz"), "--percentile", "99",
                 "--output", str(recalibrated), "--device", "cpu", "-q"]) == 0
    calibration = load_model(recalibrated).card["calibration"]
    assert calibration["percentile"] == 99.0 and calibration["n_volumes"] == 1
    assert set(calibration["thresholds"]) == {
        "reconstruction", "ssim_residual", "energy_projection", "ensemble", "intensity"}
    assert load_model(model_path).card["calibration"]["percentile"] == 99.5  # the original is untouched


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "anomaly-detection"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("anomaly-detection ")


def test_expand_inputs(tmp_path) -> None:
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "b.nrrd").write_bytes(b"")
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "x.dcm").write_bytes(b"")
    assert expand_inputs([str(tmp_path)]) == [tmp_path / "a.nii.gz", tmp_path / "b.nrrd"]
    assert expand_inputs([str(dicom)]) == [dicom]
    assert expand_inputs([str(tmp_path / "*.nrrd")]) == [tmp_path / "b.nrrd"]
    assert expand_inputs([str(tmp_path / "none*.nii")]) == [tmp_path / "none*.nii"]
