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
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing$missing with apt-get"
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null 2>&1; } \
        || echo "warning: apt-get could not install$missing; the web app's views and the browser tests will not run"
else
    echo "note: missing Debian packages:$missing; install them with 'sudo apt-get install$missing'" \
         "(Debian/Ubuntu). Without them 'anomaly-detection web' cannot render its views and the browser" \
         "tests are skipped."
fi
exit 0
