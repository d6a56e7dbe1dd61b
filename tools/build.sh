#!/bin/sh
# SPDX-License-Identifier: MIT
# Configures (once) and builds shrinkd into ./build.
#   BUILD_DIR=DIR MESON_ARGS="-Db_sanitize=address,undefined" tools/build.sh
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  meson setup "$BUILD_DIR" ${MESON_ARGS:-}
fi
meson compile -C "$BUILD_DIR"
