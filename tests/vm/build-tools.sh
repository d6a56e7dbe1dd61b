#!/bin/sh
# SPDX-License-Identifier: MIT
#
# build-tools.sh: compile the guest-side test tools into WORKDIR/tools.
#
#   tests/vm/build-tools.sh WORKDIR      # prints one path per tool built
#
#   hog          static; holds anonymous memory (an uncooperative application)
#   balloon-cfg  static; reads the balloon's device config from userspace
#   forge-puff   static; forges balloon-stall and OOM records in the kernel log
#   dyncheck     dynamic (GLib, GIO, json-glib): proves that dynamically linked
#                programs like shrinkd run in the guest; skipped with a warning
#                if the GLib development files are missing
# Needs gcc and libc6-dev (static libc). Rebuilds only when a source changed.
set -eu
W=${1:?usage: build-tools.sh WORKDIR}
S=$(cd "$(dirname "$0")/tools" && pwd)
mkdir -p "$W/tools"
CFLAGS="-O2 -Wall -Wextra"

build() { # build NAME EXTRA_FLAGS...
    name=$1; shift
    out="$W/tools/$name"
    if [ ! -x "$out" ] || [ -n "$(find "$S/$name.c" -newer "$out")" ]; then
        # shellcheck disable=SC2086
        gcc $CFLAGS -o "$out.tmp" "$S/$name.c" "$@"
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

build hog -static
build balloon-cfg -static
build forge-puff -static
if pkg-config --exists glib-2.0 gio-2.0 gio-unix-2.0 json-glib-1.0 2>/dev/null; then
    # shellcheck disable=SC2046
    build dyncheck $(pkg-config --cflags --libs glib-2.0 gio-2.0 gio-unix-2.0 json-glib-1.0)
else
    echo "build-tools: GLib/json-glib development files missing, dyncheck not built" >&2
fi
