#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs every test of shrinkd on a Debian 12 machine, as root:
# installs what is missing, builds (warnings are errors), runs the unit and
# integration tests (meson test), then the VM tests under QEMU, and ends with
# one line "N passed, M failed". Exits non-zero if anything failed or if the
# VM tests did not run.
#   tools/test.sh               everything
#   SKIP_VM=1 tools/test.sh     no VM tests (the summary says so; exit 1 in CI)
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR

tools/install-deps.sh || exit 1
MESON_ARGS="${MESON_ARGS:--Dwerror=true}" tools/build.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failed_names=""

# meson test: one result per test program (each CUnit suite or Python test file).
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 1
log="$BUILD_DIR/meson-logs/testlog.json"
if [ -f "$log" ]; then
  counts=$(python3 - "$log" <<'PY'
import json, sys
ok = bad = 0; names = []
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") in ("OK", "EXPECTEDFAIL"): ok += 1
    else: bad += 1; names.append(t.get("name"))
print(ok, bad, " ".join(names))
PY
)
  set -- $counts
  passed=$((passed + $1))
  failed=$((failed + $2))
  shift 2
  [ $# -gt 0 ] && failed_names="$failed_names $*"
else
  failed=$((failed + 1)); failed_names="$failed_names meson-test"
fi

# The unit and integration suites again under AddressSanitizer and UBSan:
# the real daemon under real traffic, misbehaving peers included. ASan's
# allocator keeps what malloc_trim would return, so the tests of memory
# given back skip their RSS checks there, saying so
# (SHRINKD_TEST_SANITIZED); they run above in the plain build.
SAN_DIR="$BUILD_DIR-sanitize"
if BUILD_DIR="$SAN_DIR" MESON_ARGS="-Db_sanitize=address,undefined -Db_lundef=false" tools/build.sh; then
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     meson test -C "$SAN_DIR" --suite unit --print-errorlogs --num-processes 1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failed_names="$failed_names unit-under-sanitizers"
  fi
  # Leaks are the unit suites' to find; here a memory error aborts the
  # daemon, and the test that talks to it fails.
  if SHRINKD_TEST_SANITIZED=1 ASAN_OPTIONS=detect_leaks=0 \
     UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     meson test -C "$SAN_DIR" --suite integration --print-errorlogs --num-processes 1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failed_names="$failed_names integration-under-sanitizers"
  fi
else
  failed=$((failed + 1)); failed_names="$failed_names sanitizer-build"
fi

# VM tests: real QEMU guests. They must run; a skip is a failure in CI.
if [ "${SKIP_VM:-0}" = 1 ]; then
  echo "tests: VM tests NOT run (SKIP_VM=1)"
  [ "${CI:-}" = true ] && { failed=$((failed + 1)); failed_names="$failed_names vm-skipped"; }
elif [ -x tests/vm/run-vm-tests.sh ]; then
  if tests/vm/run-vm-tests.sh "$ROOT/$BUILD_DIR"; then
    vm=$(cat "$BUILD_DIR/vm-results" 2>/dev/null || echo "0 1")
  else
    vm=$(cat "$BUILD_DIR/vm-results" 2>/dev/null || echo "0 1")
  fi
  set -- $vm
  passed=$((passed + $1)); failed=$((failed + $2))
  [ "$2" != 0 ] && failed_names="$failed_names vm"
  [ "$1" = 0 ] && [ "$2" = 0 ] && { failed=$((failed + 1)); failed_names="$failed_names vm-ran-nothing"; }
else
  echo "tests: tests/vm/run-vm-tests.sh is missing: VM tests did not run"
  failed=$((failed + 1)); failed_names="$failed_names vm-missing"
fi

[ -n "$failed_names" ] && echo "tests: failed:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
