"""Cohorts on Ray (local mode, 2 CPUs): the same files as one machine writes, the same resume rules.

A Ray started here with two CPUs and two actors runs the batch of ``detect --cluster local:2``.
The maps must be bit-identical to ``detect`` without ``--cluster`` (one pipeline, the same
torch threads in the actors as in the driver), the summary must list every input, a bad input
must fail alone, and a rerun must skip what is done and redo only what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("ray")
from AnomalyDetectionLib import InputError  # noqa: E402
from AnomalyDetectionLib.cli import main  # noqa: E402
from AnomalyDetectionLib.cluster import parse_cluster  # noqa: E402
from AnomalyDetectionLib.models import build_model, make_card, save_model  # noqa: E402
from test_batch import scan  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    card = make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6, name="tiny")
    return save_model(build_model(card), tmp_path_factory.mktemp("model") / "tiny.pt")


def detect(model_path, out, inputs, *extra) -> int:
    return main(["detect", *map(str, inputs), "--model", str(model_path), "--output-dir", str(out), "--device", "cpu",
                 "-q", *extra])


def arrays(folder: Path, suffix: str):
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob(f"*{suffix}"))}


def test_a_cohort_on_ray_writes_what_one_machine_writes_and_resumes(tmp_path, model_path, capsys):
    inputs = [scan(tmp_path / "in" / f"p{i}" / "T1.nrrd", i) for i in range(4)]
    bad = tmp_path / "in" / "broken.nrrd"
    bad.write_text("not an image")
    assert detect(model_path, tmp_path / "one", inputs) == 0
    assert detect(model_path, tmp_path / "ray", inputs + [bad], "--cluster", "local:2", "--workers", "2") == 2
    assert "broken.nrrd" in capsys.readouterr().err
    for suffix in ("_anomaly.nii.gz", "_mask.nii.gz", "_foreground.nii.gz"):
        one, ray = arrays(tmp_path / "one", suffix), arrays(tmp_path / "ray", suffix)
        assert one.keys() == ray.keys() and len(one) == 4
        for name in one:
            assert np.array_equal(one[name], ray[name]), f"{name} differs from detect without --cluster"
    for name in (p.name for p in (tmp_path / "one").glob("*_report.json")):
        reports = [json.loads((tmp_path / run / name).read_text()) for run in ("one", "ray")]
        assert reports[0]["sample_score"] == reports[1]["sample_score"]
        assert reports[0]["threshold"] == reports[1]["threshold"]
    summary = json.loads((tmp_path / "ray" / "anomaly_detection_run.json").read_text())
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 1, "not run": 0}
    assert {c["input"] for c in summary["cases"]} == {str(p) for p in inputs + [bad]}
    for case in summary["cases"]:  # the manifest's sample scores are the reports'
        if case["status"] == "done":
            assert case["sample_score"] == json.loads(Path(case["report"]).read_text())["sample_score"]

    # a killed run: one set lost its report; the rerun skips the rest and redoes that one only
    lost = next((tmp_path / "ray").glob("p2_T1_report.json"))
    lost.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("p[013]_T1_*")}
    assert detect(model_path, tmp_path / "ray", inputs, "--cluster", "local:2") == 0
    summary = json.loads((tmp_path / "ray" / "anomaly_detection_run.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 3, "failed": 0, "not run": 0}
    assert all(case["sample_score"] is not None for case in summary["cases"])
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("p[013]_T1_*")}
    assert lost.exists()


@pytest.mark.parametrize("text, parsed", [("auto", ("auto", None)), ("ray://head:10001", ("ray://head:10001", None)),
                                          ("local:3", (None, 3))])
def test_cluster_addresses(text, parsed):
    assert parse_cluster(text) == parsed


@pytest.mark.parametrize("text", ["local:0", "local:x", "slurm", ""])
def test_a_bad_cluster_address_is_one_line(text):
    with pytest.raises(InputError, match="--cluster"):
        parse_cluster(text)


def test_joining_a_cluster_that_is_not_there_is_one_line(tmp_path, model_path, capsys):
    assert detect(model_path, tmp_path / "out", [scan(tmp_path / "a.nrrd", 0)], "--cluster", "auto") == 2
    error = capsys.readouterr().err
    assert "--cluster auto" in error and "Traceback" not in error
