"""The torch-free front door: model lookup (one rule), cards, score names, fast verbs, first-use requirements."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from AnomalyDetectionLib import catalog
from AnomalyDetectionLib.catalog import (
    DEFAULT_MODEL,
    bundled_model_paths,
    default_score,
    read_card_file,
    resolve_model_path,
    scores_for_card,
)
from AnomalyDetectionLib.dependencies import minimum_version, read_requirements, unmet_requirements
from AnomalyDetectionLib.errors import ModelError
from AnomalyDetectionLib.models import load_model
from AnomalyDetectionLib.scoring import scores_for

TORCH_FREE_CHECK = ("import sys; {code}; heavy = [m for m in ('torch', 'monai', 'sklearn', 'nilearn') "
                    "if m in sys.modules]; assert not heavy, heavy")


def python(code: str, cwd: Path = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TORCH_FREE_CHECK.format(code=code)], capture_output=True, text=True,
                          cwd=cwd)


# ------------------------------------------------------------------------------------ model lookup


def test_lookup_rule_file_then_bundled_name(tmp_path, monkeypatch) -> None:
    bundled = {p.stem: p for p in bundled_model_paths()}
    assert list(bundled)[0] == DEFAULT_MODEL
    assert resolve_model_path(None) == bundled[DEFAULT_MODEL] == resolve_model_path("")
    assert resolve_model_path("brain_t1_ae") == bundled["brain_t1_ae"]
    # an existing file wins over a bundled model of the same name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "brain_t1_ae").write_bytes(b"")
    assert resolve_model_path("brain_t1_ae") == Path("brain_t1_ae")
    listed = r"\(bundled: brain_t1_ae, brain_t1_vae"  # the default first
    with pytest.raises(ModelError, match=r"no-such-model: no such model file or bundled model " + listed):
        resolve_model_path("no-such-model")


def test_cards_beside_the_models_are_the_cards_inside_them() -> None:
    for path in bundled_model_paths():
        card = read_card_file(path)
        model = load_model(path)
        assert card == model.card
        assert scores_for_card(card) == scores_for(model)
        assert default_score(card) == card["default_score"]


def test_score_rules_without_a_model() -> None:
    assert scores_for_card({"arch": "vae"}) == list(catalog.SCORES)
    assert scores_for_card({"arch": "ae"}) == [
        "reconstruction", "ssim_residual", "energy_projection", "ensemble", "intensity"]
    assert default_score({"arch": "ae", "default_score": "combi"}) == "reconstruction"  # combi needs a VAE
    assert set(catalog.SCORE_HELP) == set(catalog.SCORES)


def test_unreadable_card_file_is_a_model_error(tmp_path) -> None:
    (tmp_path / "m.card.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable model card"):
        read_card_file(tmp_path / "m.pt")
    assert read_card_file(tmp_path / "other.pt") is None


# ------------------------------------------------------------------------------- fast, torch-free


def test_front_door_imports_no_torch() -> None:
    result = python("import AnomalyDetectionLib, AnomalyDetectionLib.catalog, AnomalyDetectionLib.errors; "
                    "AnomalyDetectionLib.InputError; AnomalyDetectionLib.catalog.bundled_model_paths()")
    assert result.returncode == 0, result.stderr


def cli_without_torch(argv) -> subprocess.CompletedProcess:
    """``anomaly-detection ARGV`` in a fresh interpreter, which fails if it imported torch or MONAI."""
    script = (f"import sys\nfrom AnomalyDetectionLib.cli import main\ntry:\n    code = main({list(argv)!r})\n"
              "except SystemExit as exc:\n    code = exc.code\n"
              "heavy = [m for m in ('torch', 'monai', 'sklearn') if m in sys.modules]\n"
              "assert not heavy, heavy\nsys.exit(code)\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


@pytest.mark.parametrize("argv", [["--help"], ["detect", "--help"], ["models"]])
def test_light_verbs_answer_without_torch(argv) -> None:
    result = cli_without_torch(argv)
    assert result.returncode == 0, result.stderr
    expected = "brain_t1_vae" if argv == ["models"] else "usage: anomaly-detection"
    assert expected in result.stdout


def test_argument_errors_answer_without_torch() -> None:
    result = cli_without_torch(["detect"])
    assert result.returncode == 2, result.stderr
    assert "the following arguments are required" in result.stderr


# ------------------------------------------------------------------------------ first-use install


def test_requirements_checked_by_version_not_presence(tmp_path) -> None:
    installed = np.__version__
    unmet = unmet_requirements(["numpy>=1.0", "numpy>=999.0", "no-such-distribution-xyz>=1.0", "numpy"])
    assert [(u.requirement, u.installed) for u in unmet] == [
        ("numpy>=999.0", installed), ("no-such-distribution-xyz>=1.0", None)]
    assert unmet[0].needs_restart  # numpy is imported here: an upgrade needs a restart
    assert not unmet[1].needs_restart
    assert "installed: " + installed in unmet[0].describe() and "missing" in unmet[1].describe()
    assert minimum_version("torch>=2.0") == "2.0" and minimum_version("tqdm") is None

    path = tmp_path / "requirements.txt"
    path.write_text("# comment\ntorch>=2.0  # first\n\nmonai>=1.3\n")
    assert read_requirements(path) == ["torch>=2.0", "monai>=1.3"]
    path.write_text("torch==2.0\n")
    with pytest.raises(ValueError, match="not 'name' or 'name>=version'"):
        read_requirements(path)
