"""Write the shipped sample scan that ``make demo`` (and the Slicer module) run the bundled model on.

Why a shipped file rather than one generated at run time: a user's first run should be exactly
what they would do with their own scan, ``detect`` on a file, and the Slicer module offers the
same file as sample data. Anyone can regenerate it byte for byte from the offline anatomy with
this script (Colin27 from Debian's ``mricron-data`` must be installed; ``make setup`` does it).

The sample is Colin27 *with skull* as a new generated subject (random head pose, shape, bias
field, contrast and noise; ``data.population``) in LAS voxel order at 1.2 mm, with a tumour-like
lesion (necrotic core, enhancing rim, oedema, mass effect) inserted: nothing about it is in the
models' template space. Its subject seed is the last of the benchmark split, which the benchmark
itself never reaches and training never sees. Intensities are stored as int16 (x10), the way a
scanner writes integers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

from AnomalyDetectionLib.preprocessing import write_image_atomic
from AnomalyDetectionResearch.data.cases import CaseSpec, SubjectSpec
from AnomalyDetectionResearch.data.population import SPLIT_SEEDS, make_case

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "AnomalyDetection" / "Resources" / "Samples"
SAMPLE_NAME = "brain_t1_tumour"
SAMPLE_SPEC = CaseSpec(
    SubjectSpec("benchmark", SPLIT_SEEDS["benchmark"][-1], "colin27_ch2", True, "LAS", (1.2, 1.2, 1.2)),
    "tumour",
    lesion_seed=2,
)
INTENSITY_SCALE = 10.0


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=SAMPLES_DIR)
    args = parser.parse_args(argv)
    case = make_case(SAMPLE_SPEC)
    values = np.round(sitk.GetArrayFromImage(case.image) * INTENSITY_SCALE)
    scan = sitk.GetImageFromArray(np.clip(values, 0, np.iinfo(np.int16).max).astype(np.int16))
    scan.CopyInformation(case.image)
    scan_path = args.output_dir / f"{SAMPLE_NAME}.nrrd"
    truth_path = args.output_dir / f"{SAMPLE_NAME}_truth.nrrd"
    write_image_atomic(scan, scan_path)
    write_image_atomic(case.truth, truth_path)
    lesion_ml = float(sitk.GetArrayViewFromImage(case.truth).sum()) * float(np.prod(case.image.GetSpacing())) / 1000
    print(f"wrote {scan_path} ({case.spec.name}, {scan.GetSize()} voxels of {scan.GetSpacing()} mm) "
          f"and {truth_path} (lesion {lesion_ml:.1f} mL)")


if __name__ == "__main__":
    main()
