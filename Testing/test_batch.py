"""Batch safety of ``detect``: one output set per input, nothing overwritten unasked, a summary of the run.

The defect of issue 15: ``detect a/scan.nrrd b/scan.nrrd`` wrote both into ``out/scan_*``, and the
first case's results were silently replaced. The model is an untrained tiny VAE (files are the
subject here, not detection quality).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AnomalyDetectionLib import InputError
from AnomalyDetectionLib.cli import main
from AnomalyDetectionLib.models import build_model, make_card, save_model
from AnomalyDetectionLib.preprocessing.io import DETECTION_OUTPUTS, case_stems, expand_inputs

SUFFIXES = ("_anomaly.nii.gz", "_mask.nii.gz", "_foreground.nii.gz", "_report.json")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    card = make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6, name="tiny")
    return save_model(build_model(card), tmp_path_factory.mktemp("model") / "tiny.pt")


def scan(path: Path, seed: int) -> Path:
    """A small noisy ellipsoid; different seeds give different scans (and maps)."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (10, 18, 16)], indexing="ij")
    array = (100.0 * ((x ** 2 + y ** 2 + z ** 2) < 0.8) + 20 * np.random.default_rng(seed).random(x.shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
    return path


def detect(model_path, out, *inputs, extra=()) -> int:
    return main(["detect", *map(str, inputs), "--model", str(model_path), "--output-dir", str(out), "--device", "cpu",
                 "-q", *extra])


def test_same_file_names_in_different_folders_keep_both(tmp_path, model_path, capsys) -> None:
    a, b = scan(tmp_path / "a" / "scan.nrrd", 1), scan(tmp_path / "b" / "scan.nrrd", 2)
    out = tmp_path / "out"
    assert detect(model_path, out, a, b) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{s}{x}" for s in ("a_scan", "b_scan") for x in SUFFIXES]
                           + ["anomaly_detection_run.csv", "anomaly_detection_run.json"])
    for stem, source in (("a_scan", a), ("b_scan", b)):
        assert json.loads((out / f"{stem}_report.json").read_text())["input"] == str(source.absolute())
    maps = [sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{s}_anomaly.nii.gz"))) for s in ("a_scan", "b_scan")]
    assert not np.array_equal(*maps)
    summary = json.loads((out / "anomaly_detection_run.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0, "not run": 0}
    assert [(c["input"], c["case"], c["status"]) for c in summary["cases"]] == [
        (str(a), "a_scan", "done"), (str(b), "b_scan", "done")]
    for case in summary["cases"]:
        assert {key: Path(case[key]).name for key in DETECTION_OUTPUTS} == {
            key: case["case"] + suffix for key, suffix in zip(DETECTION_OUTPUTS, SUFFIXES)}
    with open(out / "anomaly_detection_run.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["input"], r["map"]) for r in rows] == [(c["input"], c["map"]) for c in summary["cases"]]
    assert "run summary:" in capsys.readouterr().out


def test_rerun_resumes_and_overwrite_redoes(tmp_path, model_path, capsys) -> None:
    inputs = [scan(tmp_path / f"p{i}" / "T1.nii.gz", i) for i in range(2)]
    out = tmp_path / "out"
    assert detect(model_path, out, *inputs) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("p*")}
    capsys.readouterr()
    assert detect(model_path, out, *inputs) == 0  # the same run again: everything is there
    assert "p0_T1: skipped" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("p*")} == stamps
    assert json.loads((out / "anomaly_detection_run.json").read_text())["counts"]["skipped"] == 2
    assert detect(model_path, out, *inputs, extra=["--overwrite"]) == 0
    assert all(p.stat().st_mtime_ns > stamps[p.name] for p in out.glob("p*"))
    assert json.loads((out / "anomaly_detection_run.json").read_text())["counts"]["done"] == 2


def test_another_runs_outputs_are_kept_unless_overwrite(tmp_path, model_path, capsys) -> None:
    """A second run whose input (or settings) differ but whose names coincide fails for that input and
    leaves the first run's files byte for byte; ``--overwrite`` replaces them."""
    out = tmp_path / "out"
    first, second = scan(tmp_path / "a" / "scan.nrrd", 1), scan(tmp_path / "b" / "scan.nrrd", 2)
    assert detect(model_path, out, first) == 0
    before = {p.name: p.read_bytes() for p in out.glob("scan_*")}
    capsys.readouterr()
    third = scan(tmp_path / "c" / "other.nrrd", 3)
    assert detect(model_path, out, second, third) == 2
    err = capsys.readouterr().err.splitlines()
    assert "outputs of another run are there (input differs); --overwrite replaces them" in err[0]
    assert str(out / "scan_*") in err[0]
    assert {p.name: p.read_bytes() for p in out.glob("scan_*")} == before
    assert (out / "other_report.json").is_file()  # the batch went on past the taken name
    assert detect(model_path, out, first, extra=["--threshold", "0.5"]) == 2  # same input, other settings
    assert "(threshold differs)" in capsys.readouterr().err
    assert detect(model_path, out, second, extra=["--overwrite"]) == 0
    report = json.loads((out / "scan_report.json").read_text())
    assert report["input"] == str(second.absolute())
    replaced = {p.name: p.read_bytes() for p in out.glob("scan_*")}
    second.write_bytes(b"no longer an image")  # --overwrite with an input that now fails: the set stays whole
    assert detect(model_path, out, second, extra=["--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in out.glob("scan_*")} == replaced


def test_case_stems_are_distinct_and_stable(tmp_path) -> None:
    paths = [Path("/data/p001/T1.nii.gz"), Path("/data/p002/T1.nii.gz"), Path("/data/p003/other.nrrd")]
    assert case_stems(paths) == ["p001_T1", "p002_T1", "other"]
    assert case_stems(paths[::-1]) == ["other", "p002_T1", "p001_T1"]  # order does not change a name
    assert case_stems([Path("/x/site/a/T1.nii"), Path("/y/site/a/T1.nii")]) == ["x_site_a_T1", "y_site_a_T1"]
    assert case_stems([Path("/d/scan.nrrd"), Path("/d/scan.nii.gz")]) == ["scan_nrrd", "scan_nii_gz"]
    assert case_stems([Path("/d/Scan.nrrd"), Path("/e/scan.nrrd")]) == ["d_Scan", "e_scan"]  # case-insensitive disks
    with pytest.raises(InputError, match="differs only by letter case"):
        case_stems([Path("/d/Scan.nrrd"), Path("/d/scan.nrrd")])
    with pytest.raises(InputError, match="given twice"):
        case_stems([Path("/d/scan.nrrd"), Path("/d/../d/scan.nrrd")])
    (tmp_path / "a.nrrd").write_bytes(b"")
    assert expand_inputs([str(tmp_path / "a.nrrd"), str(tmp_path), str(tmp_path / "*.nrrd")]) == [tmp_path / "a.nrrd"]


def test_cancel_mid_batch_keeps_complete_sets(tmp_path, model_path) -> None:
    """Cancelling (Slicer's Cancel button, through ``processFolder``) stops between scans or inside one:
    the sets already written stay whole, nothing of the cancelled scan remains, the summary says so."""
    from AnomalyDetectionLib import Cancelled, Detector, run_batch

    inputs = [scan(tmp_path / "in" / f"s{i}.nii.gz", i) for i in range(3)]
    out = tmp_path / "out"
    state = {"stop": False}

    def progress(fraction: float, message: str) -> None:
        if fraction > 0.4:  # inside the second scan
            state["stop"] = True

    with pytest.raises(Cancelled):
        run_batch(Detector(model_path, device="cpu"), inputs, out, progress=progress, cancel=lambda: state["stop"])
    assert sorted(p.name for p in out.glob("s*")) == [f"s0{x}" for x in sorted(SUFFIXES)]
    summary = json.loads((out / "anomaly_detection_run.json").read_text())
    assert [c["status"] for c in summary["cases"]] == ["done", "not run", "not run"]
