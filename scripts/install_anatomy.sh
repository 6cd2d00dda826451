#!/bin/sh
# Colin27 (with and without skull) comes from Debian's mricron-data package; the MNI152 template
# comes inside the nilearn wheel. Install the Debian package when we can (root + apt-get); say how
# otherwise. Not fatal: everything falls back to MNI152 where Colin27 is missing.
TEMPLATES=/usr/share/mricron/templates
[ -f "$TEMPLATES/ch2.nii.gz" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing mricron-data (Colin27 templates) with apt-get"
    apt-get install -y -q mricron-data >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mricron-data >/dev/null 2>&1; } \
        || echo "warning: apt-get could not install mricron-data; Colin27 cases will be skipped"
else
    echo "note: Colin27 templates missing ($TEMPLATES); install them with 'sudo apt-get install mricron-data'" \
         "(Debian/Ubuntu). Without them, subjects are made from MNI152 only and Colin27 tests are skipped."
fi
exit 0
