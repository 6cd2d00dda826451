#!/bin/sh
# Offline data from Debian packages: Colin27 (with and without skull) from mricron-data, and
# Fashion-MNIST (the paper experiments) from dataset-fashion-mnist; the MNI152 template comes
# inside the nilearn wheel. Install the packages when we can (root + apt-get); say how otherwise.
# Not fatal: brains fall back to MNI152 where Colin27 is missing, and only the Fashion-MNIST
# experiment needs Fashion-MNIST.
missing=""
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || missing="$missing mricron-data"
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
# shellcheck disable=SC2086
exec "$(dirname "$0")/apt_install.sh" "subjects are made from MNI152 only (no Colin27), and the Fashion-MNIST part \
of 'anomaly-detection experiment zimmerer2019' cannot run." $missing
