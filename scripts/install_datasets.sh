#!/bin/sh
# Offline data from Debian packages: Colin27 (with and without skull) from mricron-data, and
# Fashion-MNIST (the paper experiments) from dataset-fashion-mnist; the MNI152 template comes
# inside the nilearn wheel. Install the packages when we can (root + apt-get); say how otherwise.
# Not fatal: brains fall back to MNI152 where Colin27 is missing, and only the Fashion-MNIST
# experiment needs Fashion-MNIST.
missing=""
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || missing="$missing mricron-data"
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing with apt-get"
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null 2>&1; } \
        || echo "warning: apt-get could not install$missing; Colin27 cases / the Fashion-MNIST experiment are skipped"
else
    echo "note: missing Debian packages:$missing; install them with 'sudo apt-get install$missing' (Debian/Ubuntu)." \
         "Without mricron-data, subjects are made from MNI152 only; without dataset-fashion-mnist, the" \
         "Fashion-MNIST part of 'anomaly-detection experiment zimmerer2019' cannot run."
fi
exit 0
