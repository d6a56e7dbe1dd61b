#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Migration benchmark (issue 5): bytes a live migration sends, three ways
in the same run: no shrinkd, shrinkd reactive only (a soft round when it
sees the free-page hint request), and virt-shrink cooperative (the agent's
soft round before the migration starts).

One 1024 MiB QEMU guest (1 vCPU, TCG, free-page-hint=on, its free memory
touched first) with the applications of tests/vm/test_migration.py
(MIGRATION_APPS: ~560 MiB of cold cache in shrink-example-cache, 48 MiB in
the OSv-style example, which frees only on hard requests) migrates to
"exec:cat > /dev/null" at a fixed bandwidth cap (default 128 MiB/s, about
a 1 Gbit/s migration network), resumed with `cont` after each; the
applications are started afresh before each migration. Bytes and times
come from QMP query-migrate (ram.transferred, total-time, downtime).

Prints the medians over the repetitions and the ratios to the no-shrinkd
run. Target: cooperative sends at most 40% of the bytes of the no-shrinkd
run. Figures, not assertions: exits 0 unless the benchmark could not run.

usage: vm-migrate.py BUILD_DIR [WORKDIR] [--reps N] [--bandwidth MIB]
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "vm"))
import guestlib  # noqa: E402
import test_migration as tm  # noqa: E402
import vmlib  # noqa: E402
from guestlib import MiB  # noqa: E402

WAYS = ("no shrinkd", "reactive", "cooperative")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("workdir", nargs="?", default=vmlib.default_workdir())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bandwidth", type=int, default=tm.DEFAULT_BANDWIDTH_MIB)
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    workdir = os.path.abspath(args.workdir)
    img = guestlib.prepare(build, workdir)
    runs = {w: [] for w in WAYS}
    # One guest per repetition: way 1 needs a guest where shrinkd never ran.
    for rep in range(args.reps):
        vm, qmp2 = tm.boot_guest(workdir, img, "migbench")
        with vm:
            vm.touch_free_memory()
            res, _ = tm.three_ways(build, vm, qmp2, args.bandwidth, False)
        for w in WAYS:
            runs[w].append(res[w])
        tm.log("repetition %d done" % (rep + 1))
    print()
    print("migration to exec:cat > /dev/null at %d MiB/s, %d repetitions (medians)"
          % (args.bandwidth, args.reps))
    print("%-12s %10s %10s %10s %14s %10s" % ("way", "MiB sent", "total ms", "downtime",
                                               "bytes ratio", "completed"))
    base = statistics.median(r["bytes"] for r in runs["no shrinkd"])
    for w in WAYS:
        rs = runs[w]
        b = statistics.median(r["bytes"] for r in rs)
        print("%-12s %10.1f %10.0f %10.0f %14.2f %7d/%d" % (
            w, b / MiB, statistics.median(r["total_ms"] for r in rs),
            statistics.median(r["downtime_ms"] for r in rs), b / base if base else 0,
            sum(r["status"] == "completed" for r in rs), len(rs)))
    coop = statistics.median(r["bytes"] for r in runs["cooperative"]) / base if base else 0
    print("cooperative / no shrinkd: %.2f (target <= %.2f: %s)" % (
        coop, tm.RATIO_TARGET, "met" if coop <= tm.RATIO_TARGET else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
