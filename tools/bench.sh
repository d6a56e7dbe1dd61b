#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the benchmarks and prints their tables (figures, not assertions).
#   tools/bench.sh [--rounds R] [--idle-seconds S]   (passed to bench/fanout.py)
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR
tools/install-deps.sh
tools/build.sh
python3 bench/fanout.py "$BUILD_DIR" "$@"
