#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs every VM test against a build directory and writes "PASSED FAILED"
# (counts of checks) to BUILD_DIR/vm-results for tools/test.sh.
#   tests/vm/run-vm-tests.sh BUILD_DIR [WORKDIR]
# A guest that cannot boot is a failure, never a skip.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD_DIR=${1:?usage: run-vm-tests.sh BUILD_DIR [WORKDIR]}
WORKDIR=${2:-${SHRINKD_VM_WORKDIR:-$HERE/../../vm-work}}
mkdir -p "$WORKDIR"
out="$BUILD_DIR/vm-results"
passed=0
failed=0

run() {
  name=$1
  shift
  echo "== VM test: $name"
  log="$WORKDIR/$name.log"
  "$@" 2>&1 | tee "$log"
  # Each VM test ends with "N passed, M failed"; no such line is a failure.
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$summary" ]; then
    echo "== VM test $name printed no summary: counted as failed"
    failed=$((failed + 1))
    return
  fi
  p=$(echo "$summary" | sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\1/')
  f=$(echo "$summary" | sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\2/')
  passed=$((passed + p))
  failed=$((failed + f))
}

run smoke python3 "$HERE/run-smoke.py" "$WORKDIR"
run balloon python3 "$HERE/test_balloon.py" "$BUILD_DIR" "$WORKDIR"
run migration python3 "$HERE/test_migration.py" "$BUILD_DIR" "$WORKDIR"
run libvirt python3 "$HERE/test_libvirt.py" "$BUILD_DIR" "$WORKDIR"

echo "$passed $failed" > "$out"
echo "VM tests: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
