#!/bin/sh
# apt_install.sh "WHAT IS LOST WITHOUT THEM" PACKAGE...: install Debian packages when we can
# (root + apt-get), else say how; never fatal. The one place the setup scripts install from Debian.
consequence="$1"
shift
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $* with apt-get"
    apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1; } \
        || echo "warning: apt-get could not install $*; $consequence"
else
    echo "note: missing Debian packages: $*; install them with 'sudo apt-get install $*' (Debian/Ubuntu)." \
         "Without them: $consequence"
fi
exit 0
