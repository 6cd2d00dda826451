"""A built wheel, installed into a fresh virtual environment, detects anomalies with its bundled model.

Why: an editable checkout finds the models beside the code, a wheel must carry them; this is what
``pip install .`` gives a user. The wheel is built from this tree and installed without
dependencies into a new venv whose only view of the dependencies (torch, MONAI, ...) is a path
to this test session's site-packages, so nothing is downloaded and the project itself can only
come from the wheel. The command runs from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "AnomalyDetection" / "Resources" / "Samples" / "brain_t1_tumour.nrrd"


def run(command, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                 "--wheel-dir", folder, ROOT], cwd=folder)
    assert built.returncode == 0, built.stderr
    (path,) = folder.glob("anomaly_detection-*.whl")
    return path


def test_wheel_carries_the_bundled_models_the_research_verbs_and_the_web_app(wheel) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("brain_t1_vae", "brain_t1_ae"):
        assert f"AnomalyDetectionLib/resources/Models/{model}.pt" in names
        assert f"AnomalyDetectionLib/resources/Models/{model}.card.json" in names
    assert "AnomalyDetectionMRML/process.py" in names and "AnomalyDetectionResearch/benchmark.py" in names
    assert "AnomalyDetectionWeb/app.py" in names and "AnomalyDetectionWeb/launcher.py" in names
    assert "AnomalyDetectionLib/resources/Samples/brain_t1_tumour.nrrd" in names  # the web app's Load sample
    assert not [n for n in names if n.startswith(("Testing/", "scripts/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "anomaly-detection = AnomalyDetectionLib.cli:main" in text and "AnomalyDetectionResearch.cli" in text
    assert "web = AnomalyDetectionWeb.cli:add_web" in text


def test_installed_wheel_detects_with_its_bundled_default(wheel, tmp_path) -> None:
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=tmp_path).stdout.strip())
    # The dependencies, borrowed: a plain path line (the .pth files inside it, such as this checkout's
    # editable install, are not run), after the venv's own site-packages.
    (purelib / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    where = run([python, "-c", "import AnomalyDetectionLib, AnomalyDetectionLib.catalog as c; "
                 "print(AnomalyDetectionLib.__file__); print(c.bundled_models_dir())"], cwd=tmp_path)
    package_file, models_dir = where.stdout.split()
    assert Path(package_file).is_relative_to(environment) and Path(models_dir).is_relative_to(environment)

    out = tmp_path / "out"
    detected = run([environment / "bin" / "anomaly-detection", "detect", SAMPLE, "--output-dir", out,
                    "--device", "cpu", "-q"], cwd=tmp_path, timeout=600)
    assert detected.returncode == 0, detected.stderr
    report = json.loads((out / "brain_t1_tumour_report.json").read_text())
    assert report["model"] == "brain_t1_ae" and report["threshold_source"] == "calibrated"  # the default
    assert Path(report["model_path"]).is_relative_to(environment)
    for suffix in ("anomaly", "mask", "foreground"):
        assert (out / f"brain_t1_tumour_{suffix}.nii.gz").is_file()
    assert report["anomalous_volume_ml"] > 1.0
