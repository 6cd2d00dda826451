"""Bad inputs and faults, as a researcher batch-processing a cohort meets them (issue 15).

Four groups, each case one test (``pytest Testing/test_faults.py -v`` is the README's reliability
table): **files** (broken, empty, looping, unreadable, ambiguous DICOM), **geometry** (grids and
voxel types), **models** (broken or hostile model files) and **faults** (kill, full or read-only
disk, CUDA out of memory). A refused input must end in one line on stderr naming the file and
the problem, exit code 2, no output of that input (not even a temporary file), the input file
unchanged, and the other inputs of the batch processed. An unusual but valid input must come out
on its own grid with finite values.

The files and geometry cases run as one ``detect`` batch (one good scan last), so the whole
suite costs a few seconds. The model is an untrained tiny VAE: these tests are about what
happens to files, not about detection quality.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AnomalyDetectionLib import Detector, DeviceError
from AnomalyDetectionLib.cli import main
from AnomalyDetectionLib.device import CUDA_OUT_OF_MEMORY, with_memory_fallback
from AnomalyDetectionLib.models import build_model, make_card, save_model
from AnomalyDetectionLib.models.model_file import FORMAT, FORMAT_VERSION
from AnomalyDetectionLib.preprocessing import file_checks

SHAPE = (12, 20, 18)  # z, y, x


def phantom(shape=SHAPE, seed: int = 0, dtype=np.float32, low: float = 0.0, high: float = 200.0) -> np.ndarray:
    """An ellipsoidal body with noise between ``low`` and ``high``, in ``dtype``."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x ** 2 + y ** 2 + z ** 2) < 0.8
    noise = np.random.default_rng(seed).random(shape)
    values = low + (high - low) * np.clip(0.7 * body + 0.3 * noise, 0, 1)
    return values.astype(dtype)


def image_of(array: np.ndarray, spacing=(1.2, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((4.0, -3.0, 7.5))
    return image


def sha256(path: Path) -> str:
    """Checksum of a file, or of every file of a folder (DICOM series)."""
    digest = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for item in files:
        if item.is_symlink():
            digest.update(os.readlink(item).encode())
        else:
            digest.update(item.read_bytes())
    return digest.hexdigest()


def nrrd(path: Path, fields: str, data: bytes = None, sizes: str = "18 20 12") -> Path:
    """A hand-written NRRD file: the tests state the header instead of trusting a writer."""
    data = phantom().tobytes() if data is None else data
    header = f"NRRD0004\ntype: float\ndimension: 3\nsizes: {sizes}\nendian: little\nencoding: raw\n{fields}\n\n"
    path.write_bytes(header.encode() + data)
    return path


def dicom_series(folder: Path, uids=("1.2.3.4",), skip: Tuple[int, ...] = ()) -> Path:
    """Slices of a series per ``uid`` (six slices 2 mm apart each), leaving out the slice numbers in ``skip``."""
    folder.mkdir()
    array = (phantom((6, 16, 18)) * 5).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for series, uid in enumerate(uids):
        for k in range(array.shape[0]):
            if k in skip:
                continue
            slice_image = sitk.GetImageFromArray(array[k:k + 1])
            slice_image.SetSpacing((0.8, 0.8, 2.0))
            for tag, value in {"0010|0010": "Test^Patient", "0020|000d": "1.2.3", "0020|000e": uid,
                               "0020|0032": f"0\\0\\{2.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
                               "0020|0013": str(k + 1), "0008|0060": "MR"}.items():
                slice_image.SetMetaData(tag, value)
            writer.SetFileName(str(folder / f"s{series}_{k:03d}.dcm"))
            writer.Execute(slice_image)
    return folder


def nifti_without_geometry(path: Path, pixdim_x: float) -> Path:
    """A NIfTI-1 file whose only geometry is ``pixdim`` (qform and sform codes 0), ``pixdim[1]`` set."""
    plain = path.with_suffix(".tmp.nii")
    sitk.WriteImage(image_of(phantom()), str(plain))
    header = bytearray(plain.read_bytes())
    plain.unlink()
    header[80:84] = struct.pack("<f", pixdim_x)
    header[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code
    path.write_bytes(bytes(header))
    return path


def truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    return target


# ------------------------------------------------------------------------------------ the cases

#: name -> (what the error line must say), for inputs that must be refused.
REFUSED: Dict[str, Dict[str, str]] = {
    "files": {
        "truncated.nii.gz": "truncated or corrupt NIfTI data",
        "truncated.nii": "truncated or corrupt NIfTI data",
        "truncated.nrrd": "cannot be read as an image ([nrrd]",
        "corrupt.nii.gz": "cannot be read as an image (no reader recognises its content)",
        "empty.nii.gz": "empty file (0 bytes)",
        "text.nrrd": "cannot be read as an image (no reader recognises its content)",
        "loop.nii.gz": "symbolic link loop",
        "dangling.nii.gz": "broken symbolic link",
        "two_series": "holds 2 DICOM series (1.2.3.4 (6 files); 1.2.3.5 (6 files))",
        "missing_slice": "missing or unevenly spaced slices",
        "nan.nii.gz": "1 voxels are NaN or Inf",
        "inf.nii.gz": "1 voxels are NaN or Inf",
        "nan.nrrd": "1 voxels are NaN or Inf",
        "nan.mha": "1 voxels are NaN or Inf",
    },
    "geometry": {
        "sheared.nrrd": "direction matrix is not orthonormal",
        "singular.nrrd": "singular direction matrix",
        "zero_spacing.nrrd": "zero or negative voxel spacing",
        "zero_spacing.mha": "zero or negative voxel spacing",
        "zero_pixdim.nii": "in the NIfTI header has a zero",
        "huge.nrrd": "would need about",
        "complex.nii.gz": "complex-valued voxels",
        "float64_beyond_float32.nrrd": "do not fit the float32",
        "single_slice.nii.gz": "empty or a single slice",
    },
}

#: name -> array written as a volume that must be processed (unusual but valid).
INTEGER_LIMITS = {
    "uint8_limits": (np.uint8, 0, 255), "int8_limits": (np.int8, -128, 127),
    "int16_limits": (np.int16, -32768, 32767), "uint16_limits": (np.uint16, 0, 65535),
    "int32_limits": (np.int32, -2 ** 31, 2 ** 31 - 1), "uint32_limits": (np.uint32, 0, 2 ** 32 - 1),
    "int64_limits": (np.int64, -2 ** 63, 2 ** 63 - 1), "uint64_limits": (np.uint64, 0, 2 ** 64 - 1),
    "float64": (np.float64, -1e3, 1e3),
}
PROCESSED = ["two_voxels_thick_z.nii.gz", "two_voxels_thick_x.nrrd", "negative_spacing.nrrd",
             *[f"{name}.nrrd" for name in INTEGER_LIMITS], "good.nii.gz"]


def write_cases(folder: Path) -> List[Path]:
    """Every file and geometry case in ``folder``, in batch order (the good scan last)."""
    folder.mkdir()
    good = image_of(phantom())
    sitk.WriteImage(good, str(folder / "good.nii.gz"))
    sitk.WriteImage(good, str(folder / "plain.nii"))
    sitk.WriteImage(good, str(folder / "gzipped.nrrd"), True)
    truncated(folder / "good.nii.gz", folder / "truncated.nii.gz")
    truncated(folder / "plain.nii", folder / "truncated.nii")
    truncated(folder / "gzipped.nrrd", folder / "truncated.nrrd")
    corrupt = bytearray((folder / "good.nii.gz").read_bytes())
    corrupt[10:60] = bytes(50)
    (folder / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    (folder / "plain.nii").unlink()
    (folder / "gzipped.nrrd").unlink()
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "text.nrrd").write_text("these are my notes, not an image\n")
    os.symlink("loop_b.nii.gz", folder / "loop.nii.gz")
    os.symlink("loop.nii.gz", folder / "loop_b.nii.gz")
    os.symlink("nowhere.nii.gz", folder / "dangling.nii.gz")
    dicom_series(folder / "two_series", uids=("1.2.3.4", "1.2.3.5"))
    dicom_series(folder / "missing_slice", skip=(3,))
    for name, bad in (("nan.nii.gz", np.nan), ("inf.nii.gz", np.inf), ("nan.nrrd", np.nan), ("nan.mha", np.nan)):
        array = phantom()
        array[6, 10, 9] = bad
        sitk.WriteImage(image_of(array), str(folder / name))
    space = "space: left-posterior-superior\nspace origin: (0,0,0)\n"
    nrrd(folder / "sheared.nrrd", space + "space directions: (1,0,0) (0.5,1,0) (0,0,1)")
    nrrd(folder / "singular.nrrd", space + "space directions: (1,0,0) (1,0,0) (0,0,1)")
    nrrd(folder / "zero_spacing.nrrd", space + "space directions: (0,0,0) (0,1,0) (0,0,1)")
    nrrd(folder / "negative_spacing.nrrd", "spacings: -1.5 1 2")
    (folder / "zero_spacing.mha").write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 18 20 12\nElementType = MET_FLOAT\nElementSpacing = 0 1 1\n"
        b"ElementDataFile = LOCAL\n" + phantom().tobytes())
    nifti_without_geometry(folder / "zero_pixdim.nii", 0.0)
    nrrd(folder / "huge.nrrd", "", sizes="100000 100000 20000")  # a header promising 2e14 voxels
    complex_image = sitk.GetImageFromArray((phantom() + 1j * phantom(seed=1)).astype(np.complex64))
    sitk.WriteImage(complex_image, str(folder / "complex.nii.gz"))
    beyond = phantom(dtype=np.float64)
    beyond[6, 10, 9] = 1e300
    sitk.WriteImage(image_of(beyond), str(folder / "float64_beyond_float32.nrrd"))
    sitk.WriteImage(image_of(phantom((1, 20, 18))), str(folder / "single_slice.nii.gz"))
    sitk.WriteImage(image_of(phantom((2, 20, 18))), str(folder / "two_voxels_thick_z.nii.gz"))
    sitk.WriteImage(image_of(phantom((12, 20, 2))), str(folder / "two_voxels_thick_x.nrrd"))
    for name, (dtype, low, high) in INTEGER_LIMITS.items():
        values = float(low) + phantom(dtype=np.float64, low=0.0, high=1.0) * (float(high) - float(low))
        typed = np.clip(values, float(low), np.nextafter(float(high), -np.inf)).astype(dtype)
        typed.flat[0], typed.flat[-1] = low, high  # the exact limits (float64 cannot hold 2**63 - 1)
        sitk.WriteImage(image_of(typed), str(folder / f"{name}.nrrd"))
    order = [*REFUSED["files"], *REFUSED["geometry"], *PROCESSED]
    return [folder / name for name in order]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    card = make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6, name="tiny")
    return save_model(build_model(card), tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, model_path):
    """All file and geometry cases in one ``detect`` batch: exit code, error lines, outputs, checksums."""
    root = tmp_path_factory.mktemp("bad")
    inputs = write_cases(root / "in")
    before = {path.name: sha256(path) for path in inputs if path.name not in ("loop.nii.gz",)}
    out = root / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["detect", *map(str, inputs), "--model", str(model_path), "--output-dir", str(out),
                     "--device", "cpu", "-q"])
    errors = [line for line in err.getvalue().splitlines() if line.startswith("anomaly-detection: error: ")]
    summary = json.loads((out / "anomaly_detection_run.json").read_text())
    return {"code": code, "errors": errors, "stderr": err.getvalue(), "out": out, "inputs": inputs,
            "before": before, "summary": {Path(c["input"]).name: c for c in summary["cases"]}}


def _cases(group: str) -> List[Tuple[str, str]]:
    return list(REFUSED[group].items())


def check_refused(batch_run, name: str, message: str) -> None:
    lines = [line for line in batch_run["errors"] if f"/{name}:" in line]
    assert len(lines) == 1, f"{name}: expected one error line, got {lines}"
    assert message in lines[0], lines[0]
    assert batch_run["code"] == 2
    stem = batch_run["summary"][name]["case"]
    assert batch_run["summary"][name]["status"] == "failed"
    assert not [p for p in batch_run["out"].iterdir() if p.name.startswith((stem + "_", "." + stem + "_"))]
    if name in batch_run["before"]:
        assert sha256(batch_run["inputs"][0].parent / name) == batch_run["before"][name], "input modified"


@pytest.mark.parametrize("name, message", _cases("files"))
def test_files(batch_run, name, message) -> None:
    check_refused(batch_run, name, message)


@pytest.mark.parametrize("name, message", _cases("geometry"))
def test_geometry_refused(batch_run, name, message) -> None:
    check_refused(batch_run, name, message)


def test_huge_volume_is_refused_before_reading(batch_run) -> None:
    """The header alone decides: the file holds 17 kB, the error says the memory it would need."""
    line = next(line for line in batch_run["errors"] if "/huge.nrrd:" in line)
    assert "100000 x 100000 x 20000 voxels would need about" in line and "TiB of memory" in line


@pytest.mark.parametrize("name", PROCESSED)
def test_geometry_processed(batch_run, name) -> None:
    """Unusual but valid grids and voxel types: outputs on the input's exact grid, finite, input unchanged."""
    case = batch_run["summary"][name]
    assert case["status"] == "done", case
    source = sitk.ReadImage(str(batch_run["inputs"][0].parent / name))
    anomaly = sitk.ReadImage(case["map"])
    assert anomaly.GetSize() == source.GetSize()
    np.testing.assert_allclose(anomaly.GetSpacing(), source.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(anomaly.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(anomaly.GetDirection(), source.GetDirection(), atol=1e-6)
    values = sitk.GetArrayFromImage(anomaly)
    assert np.isfinite(values).all() and (values >= 0).all()
    assert sitk.GetArrayFromImage(sitk.ReadImage(case["foreground"])).any()
    assert sha256(batch_run["inputs"][0].parent / name) == batch_run["before"][name]


def test_batch_goes_on_and_leaves_no_temporary_file(batch_run) -> None:
    refused = sum(len(group) for group in REFUSED.values())
    assert len(batch_run["errors"]) == refused
    assert f"{refused} of {refused + len(PROCESSED)} input(s) failed" in batch_run["stderr"]
    assert not [p for p in batch_run["out"].iterdir() if p.name.startswith(".")]
    stems = {case["case"] for case in batch_run["summary"].values()}
    others = [line for line in batch_run["stderr"].splitlines() if not line.startswith("anomaly-detection: ")
              and line.split(":")[0] not in stems]
    assert not others, f"stray lines on stderr: {others}"


def test_negative_spacing_moves_into_the_direction(batch_run) -> None:
    """ITK reads ``spacings: -1.5`` as spacing 1.5 with the axis flipped: the geometry is kept, not dropped."""
    anomaly = sitk.ReadImage(batch_run["summary"]["negative_spacing.nrrd"]["map"])
    assert anomaly.GetSpacing()[0] == pytest.approx(1.5) and anomaly.GetDirection()[0] == pytest.approx(-1.0)


def test_unreadable_file(tmp_path, model_path, monkeypatch, capsys) -> None:
    """A file the process may not read. As root ``chmod 000`` does not stop reading, so the refusal of
    ``open`` is injected there; as another user the permission is real."""
    scan = tmp_path / "locked.nii.gz"
    sitk.WriteImage(image_of(phantom()), str(scan))
    before = sha256(scan)
    if os.geteuid() == 0:
        real_open = open

        def refusing_open(path, *args, **kwargs):
            if Path(path) == scan:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(file_checks, "open", refusing_open, raising=False)
    else:
        scan.chmod(0)
    try:
        code = main(["detect", str(scan), "--model", str(model_path), "--output-dir", str(tmp_path / "out"), "-q",
                     "--device", "cpu"])
    finally:
        scan.chmod(0o644)
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(err) == 1 and f"{scan}: permission denied" in err[0]
    assert sha256(scan) == before and not list((tmp_path / "out").glob("locked*"))


# ----------------------------------------------------------------------------------------- models


def _payload(model, card=None) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "card": card or model.card,
            "state_dict": model.network.state_dict()}


class _WouldWriteMarker:
    """Unpickling this calls ``open(marker, "w")``: the marker file proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model_case(kind: str, folder: Path) -> Path:
    model = build_model(make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6, name="m"))
    path = folder / f"{kind}.pt"
    if kind == "truncated":
        save_model(model, path)
        truncated(path, path)
    elif kind == "newer_format":
        torch.save(dict(_payload(model), format_version=FORMAT_VERSION + 1), path)
    elif kind == "weights_not_matching_card":
        torch.save(_payload(model, dict(model.card, latent_dim=7)), path)
    elif kind == "other_slice_size":
        torch.save(_payload(model, dict(model.card, size=64)), path)  # weights of a 32-px network
    return path


MODEL_CASES = {
    "truncated": "not a model file",
    "code_in_pickle": "refused: it holds Python objects",
    "newer_format": f"model format version {FORMAT_VERSION + 1} is not supported",
    "weights_not_matching_card": "weights do not match the model card",
    "other_slice_size": "weights do not match the model card",
}


@pytest.mark.parametrize("kind", list(MODEL_CASES))
def test_models(kind, tmp_path, capsys) -> None:
    marker = tmp_path / "code_ran.marker"
    if kind == "code_in_pickle":
        path = tmp_path / "code_in_pickle.pt"
        model = build_model(make_card(arch="vae", size=32, channels=(4, 8, 8), latent_dim=6))
        torch.save(dict(_payload(model), card=dict(model.card, description=_WouldWriteMarker(marker))), path)
        torch.load(str(path), weights_only=False)  # proof: an unsafe load runs the code
        assert marker.exists()
        marker.unlink()
    else:
        path = _model_case(kind, tmp_path)
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(image_of(phantom()), str(scan))
    before = sha256(scan), sha256(path)
    code = main(["detect", str(scan), "--model", str(path), "--output-dir", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{path}: " in err[0] and MODEL_CASES[kind] in err[0], err
    assert not marker.exists(), "the model file ran code"
    assert not (tmp_path / "out").exists() and (sha256(scan), sha256(path)) == before


# ----------------------------------------------------------------------------------------- faults

KILLER = textwrap.dedent("""
    import os, signal, sys
    import SimpleITK as sitk
    from AnomalyDetectionLib.cli import main
    calls = {"n": 0}
    real_write = sitk.WriteImage
    def write_then_die(image, path, *args):
        calls["n"] += 1
        real_write(image, path, *args)
        if calls["n"] == int(os.environ["KILL_AT_WRITE"]):
            with open(path, "r+b") as handle:  # half of the file is on disk when the power goes
                handle.truncate(os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    sitk.WriteImage = write_then_die
    sys.exit(main(sys.argv[1:]))
""")


def _scans(folder: Path, count: int) -> List[Path]:
    paths = []
    for i in range(count):
        path = folder / f"patient{i:02d}" / "T1.nii.gz"  # a cohort laid out as folders of same-named scans
        path.parent.mkdir(parents=True)
        sitk.WriteImage(image_of(phantom(seed=i)), str(path))
        paths.append(path)
    return paths


def _complete_sets(out: Path) -> List[str]:
    """Stems whose four outputs are all there and readable (a broken file raises)."""
    stems = []
    for report in sorted(out.glob("*_report.json")):
        stem = report.name[: -len("_report.json")]
        json.loads(report.read_text())
        for suffix in ("_anomaly.nii.gz", "_mask.nii.gz", "_foreground.nii.gz"):
            sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{stem}{suffix}")))
        stems.append(stem)
    return stems


def test_sigkill_mid_batch_then_rerun_completes(tmp_path, model_path, capsys) -> None:
    """Killed while writing the second scan's mask (half the file on disk): no output file is partial,
    the first scan's set is whole, and a rerun keeps it, clears the leftover and completes the batch."""
    scans = _scans(tmp_path / "in", 3)
    out = tmp_path / "out"
    args = ["detect", *map(str, scans), "--model", str(model_path), "--output-dir", str(out), "--device", "cpu", "-q"]
    env = dict(os.environ, KILL_AT_WRITE="5")  # writes 1-3: first scan's images; 4: second's map; 5: its mask
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _complete_sets(out) == ["patient00_T1"]
    finals = [p for p in out.iterdir() if not p.name.startswith(".")]
    for path in finals:  # every file under a final name is whole
        if path.name.endswith(".nii.gz"):
            sitk.ReadImage(str(path))
    leftovers = [p for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers, "the kill should have left the half-written temporary file"
    first_map = (out / "patient00_T1_anomaly.nii.gz").stat().st_mtime_ns

    assert main(args) == 0
    captured = capsys.readouterr()
    assert "patient00_T1: skipped" in captured.out and "interrupted run" in captured.err
    assert _complete_sets(out) == ["patient00_T1", "patient01_T1", "patient02_T1"]
    assert (out / "patient00_T1_anomaly.nii.gz").stat().st_mtime_ns == first_map, "a complete set was redone"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = json.loads((out / "anomaly_detection_run.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 1, "failed": 0, "not run": 0}


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_disk_full_or_read_only_mid_batch_stops_cleanly(tmp_path, model_path, monkeypatch, capsys, code, words):
    """The writer fails (injected ``OSError`` after half a file is written) on the second scan's mask:
    the run stops with one line, the first set stays whole, nothing of the second remains."""
    scans = _scans(tmp_path / "in", 3)
    out = tmp_path / "out"
    real_write, calls = sitk.WriteImage, {"n": 0}

    def failing_write(image, path, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            Path(path).write_bytes(b"\x1f\x8b half")
            raise OSError(code, os.strerror(code), path)
        return real_write(image, path, *args)

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    assert main(["detect", *map(str, scans), "--model", str(model_path), "--output-dir", str(out), "--device",
                 "cpu", "-q"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and words in err[0] and "patient01_T1" in err[0]
    assert "stopped after 1 of 3 input(s)" in err[0]
    assert _complete_sets(out) == ["patient00_T1"]
    assert not list(out.glob("patient01*")) and not list(out.glob("patient02*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = json.loads((out / "anomaly_detection_run.json").read_text())
    assert [c["status"] for c in summary["cases"]] == ["done", "failed", "not run"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder; the injected EROFS above "
                                              "stands in for it")
def test_read_only_output_folder_is_refused_up_front(tmp_path, model_path, capsys) -> None:
    scans = _scans(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["detect", *map(str, scans), "--model", str(model_path), "--output-dir", str(out), "-q"]) == 2
    finally:
        out.chmod(0o755)
    assert "cannot write into the output folder" in capsys.readouterr().err and not list(out.iterdir())


def test_cuda_out_of_memory_falls_back_to_smaller_batches(model_path, monkeypatch) -> None:
    """Injected: the score runs out of CUDA memory above 4 slices a batch. The detection retries at
    16, 8, 4, says so in the report, and gives the same map as a run at batch size 4."""
    from AnomalyDetectionLib.scoring import stack

    image = image_of(phantom())
    reference = Detector(model_path, device="cpu", batch_size=4).detect(image)
    score = reference.report["score"]  # the model's default
    real = stack.SLICE_SCORES[score]

    @functools.wraps(real)  # the score's parameters (its smoothing sigma) are read from its signature
    def hungry(network, batch, **params):
        if batch.shape[0] > 4:
            raise CUDA_OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(network, batch, **params)

    monkeypatch.setitem(stack.SLICE_SCORES, score, hungry)
    result = Detector(model_path, device="cpu", batch_size=32).detect(image)
    assert result.report["batch_size"] == 4
    assert [w for w in result.report["warnings"] if "out of memory" in w] == [
        f"'{score}' score: out of memory on cpu at batch size {b}; retried at {b // 2}" for b in (32, 16, 8)]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.anomaly_map),
                                  sitk.GetArrayFromImage(reference.anomaly_map))


def test_cuda_out_of_memory_at_batch_size_one_moves_to_the_cpu() -> None:
    """The last step of the fallback, with a CUDA device that runs out of memory at every size (the
    device is only named: nothing is put on it, so this runs without a GPU)."""
    moves = []

    def run(batch_size):
        if not moves:
            raise CUDA_OUT_OF_MEMORY("injected")
        return f"ran at {batch_size}"

    value, where = with_memory_fallback(run, 4, torch.device("cuda:0"), moves.append, "score")
    assert value == "ran at 4" and where.device == "cpu" and where.batch_size == 4
    assert moves == [torch.device("cpu")]
    assert where.warnings[-1] == ("score: out of memory on cuda:0 even at batch size 1; ran on the CPU at batch "
                                  "size 4 instead")
    assert len(where.warnings) == 3  # 4 -> 2 -> 1 -> CPU

    def never(batch_size):
        raise CUDA_OUT_OF_MEMORY("injected")

    with pytest.raises(DeviceError, match="out of memory even at batch size 1 on the CPU"):
        with_memory_fallback(never, 2, torch.device("cpu"), moves.append, "score")
