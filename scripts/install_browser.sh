#!/bin/sh
# The web app's system packages from Debian: offscreen OpenGL through EGL with Mesa's software
# renderer (trame-slicer renders the views without a display or GPU), and Chromium with its
# driver for the browser tests. Installed when we can (root + apt-get); otherwise say how. Not
# fatal: without them the web app cannot render and the browser tests skip, saying why.
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
ls /usr/lib/*/libEGL.so.1 >/dev/null 2>&1 || missing="$missing libegl1"
ls /usr/lib/*/libEGL_mesa.so.0 >/dev/null 2>&1 || missing="$missing libegl-mesa0"
ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || missing="$missing libgl1-mesa-dri"
# shellcheck disable=SC2086
exec "$(dirname "$0")/apt_install.sh" "'anomaly-detection web' cannot render its views and the browser tests \
are skipped." $missing
