#!/bin/sh
# SPDX-License-Identifier: MIT
# The README's demo, on Debian 12 as root: installs what is missing, builds
# into ./build, builds the guest image, boots a 1024 MiB QEMU guest running
# shrinkd and the example applications, shrinks it to 384 MiB through QMP
# and prints the timeline. Exits non-zero if the demo fails.
#   tools/demo.sh [--target-mib N]     the VM demo (tools/demo-vm.py)
#   tools/demo.sh --local              the old demo without a VM (tools/demo-local.py)
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR

tools/install-deps.sh
buildlog=${TMPDIR:-/tmp}/shrinkd-demo-build.log
echo "== building into $BUILD_DIR (log: $buildlog)"
if ! tools/build.sh > "$buildlog" 2>&1; then
  tail -n 30 "$buildlog"
  echo "demo FAILED: the build failed"
  exit 1
fi

if [ "${1:-}" = --local ]; then
  shift
  exec python3 tools/demo-local.py "$BUILD_DIR" "$@"
fi
exec python3 tools/demo-vm.py "$BUILD_DIR" "$@"
