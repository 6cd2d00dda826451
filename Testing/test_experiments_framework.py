"""The experiments' shared parts: report writing, Fashion-MNIST loading, pasted-patch anomalies, the command."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from AnomalyDetectionLib.cli import build_parser
from AnomalyDetectionLib.errors import InputError
from AnomalyDetectionResearch.cli import EXPERIMENT_NAMES
from AnomalyDetectionResearch.data.fashion_mnist import (
    as_slices,
    fashion_mnist_available,
    load_fashion_mnist,
    paste_anomalies,
)
from AnomalyDetectionResearch.experiments import EXPERIMENTS, run_experiment
from AnomalyDetectionResearch.experiments.document import ExperimentReport, markdown_table


def test_markdown_table_formats_numbers_and_missing_values():
    table = markdown_table([{"score": "combi", "auroc": 0.91234, "auprc": math.nan, "n": 3, "ok": None}],
                           digits=2)
    lines = table.splitlines()
    assert lines[0] == "| score | auroc | auprc | n | ok |"
    assert lines[2] == "| combi | 0.91 | – | 3 | – |"


def test_report_writes_markdown_html_and_strict_json(tmp_path):
    report = ExperimentReport("demo", "A demo report")
    report.text("Some *text*.")
    report.table([{"beta": 1.0, "auroc": 0.75}, {"beta": 10.0, "auroc": float("nan")}], caption="Sweep")
    report.results["sweep"] = [{"beta": 1.0, "auroc": 0.75}, {"beta": 10.0, "auroc": float("nan")}]
    paths = report.write(tmp_path)
    markdown_text = paths["markdown"].read_text()
    assert markdown_text.startswith("# A demo report")
    assert "| 10.000 | – |" in markdown_text
    html = paths["html"].read_text()
    assert "<table>" in html and "<em>text</em>" in html
    results = json.loads(paths["json"].read_text())  # strict JSON: NaN became null
    assert results["sweep"][1]["auroc"] is None and results["experiment"] == "demo"


def test_missing_fashion_mnist_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", folder=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", folder=tmp_path)


def test_an_experiment_without_fashion_mnist_says_that_part_was_skipped(tmp_path, monkeypatch):
    from AnomalyDetectionResearch.data.fashion_mnist import ENV_VAR
    from AnomalyDetectionResearch.experiments.images import fashion_mnist_skipped

    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # an empty folder: the data set is not there
    report = ExperimentReport("demo", "A demo report")
    assert fashion_mnist_skipped(report)
    assert report.results["fashion_mnist"] == {"skipped": "Fashion-MNIST not installed"}
    markdown_text = report.write(tmp_path / "report")["markdown"].read_text()
    assert "## Fashion-MNIST" in markdown_text and "install_datasets.sh" in markdown_text
    monkeypatch.delenv(ENV_VAR)
    if fashion_mnist_available():  # with the real data set (the project's setup installs it) nothing is skipped
        clean = ExperimentReport("demo", "A demo report")
        assert not fashion_mnist_skipped(clean) and "fashion_mnist" not in clean.results


def test_a_file_that_is_not_idx_is_refused(tmp_path):
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(np.array([1234, 1, 28, 28], dtype=">i4").tobytes() + bytes(784))
    with pytest.raises(InputError, match="not an IDX file"):
        load_fashion_mnist("test", folder=tmp_path)


@pytest.mark.skipif(not fashion_mnist_available(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_test_split_loads():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert sorted(np.unique(labels).tolist()) == list(range(10))
    assert np.bincount(labels).tolist() == [1000] * 10


def test_as_slices_pads_without_changing_pixels():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    slices = as_slices(images, 32)
    assert slices.shape == (3, 1, 32, 32) and slices.dtype == np.float32
    np.testing.assert_allclose(slices[:, 0, 2:30, 2:30] * 255.0, images, atol=1e-4)
    assert slices[:, 0, :2].max() == 0 and slices[:, 0, :, 30:].max() == 0
    with pytest.raises(ValueError):
        as_slices(images, 16)


def test_pasted_anomalies_change_only_the_square_and_the_truth_is_what_changed():
    rng = np.random.default_rng(1)
    normal = np.zeros((20, 28, 28), dtype=np.uint8)
    normal[:, 6:22, 8:20] = 200  # a "garment"
    donors = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    images, truth = paste_anomalies(normal, donors, seed=3, patch_range=(8, 12), min_change=26)
    again, _ = paste_anomalies(normal, donors, seed=3, patch_range=(8, 12), min_change=26)
    np.testing.assert_array_equal(images, again)
    for i in range(len(normal)):
        changed = images[i] != normal[i]
        rows, cols = np.nonzero(changed)
        assert rows.max() - rows.min() < 12 and cols.max() - cols.min() < 12  # inside one square
        assert truth[i].any()
        difference = np.abs(images[i].astype(int) - normal[i].astype(int))
        assert (difference[truth[i] > 0] >= 26).all()
        assert not (truth[i] > 0)[~changed].any()


def test_experiment_command_and_registry_agree():
    assert tuple(EXPERIMENTS) == EXPERIMENT_NAMES
    args = build_parser().parse_args(["experiment", "zhou2020", "--quick", "--seed", "3"])
    assert (args.name, args.quick, args.seed, args.output_dir) == ("zhou2020", True, 3, "reports")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["experiment", "nobody2000"])
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiment("nobody2000")
