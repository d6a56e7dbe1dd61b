#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""libvirt benchmark (issue 4): the guest warned first (`virt-shrink
setmem`) against the reactive path (`virsh setmem --live`), on the same
guest under a real libvirt daemon, in the same run.

One private libvirtd (tests/vm/libvirtlib.py) runs a transient 1024 MiB
guest (1 vCPU, TCG, no swap) with shrinkd and the example applications
(~700 MiB, tests/vm/guestlib.DEFAULT_APPS). Each repetition, for each path,
from the same state (applications freshly started, balloon at 1024 MiB):

  cooperative  virt-shrink -c URI setmem DOMAIN 384M: the agent is told the
               new size and its applications free memory, then the balloon
               is set and followed until it holds the target; the time is
               the command's, which returns once the target is reached
  reactive     virsh setmem DOMAIN 393216 --live, then `virsh dommemstat`
               polled every 50 ms until actual is within 1 MiB of the target
  For both: the first application callback and the first ballooned page
  (testport sees /proc/vmstat balloon_inflate change), relative to the
  host's command.

Prints a table of medians (min, max) and the ratio of the convergence times
(cooperative / reactive). Figures, not assertions: exits 0 unless the
benchmark could not run.

usage: vm-libvirt.py BUILD_DIR [WORKDIR] [--reps N]
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "vm"))
import guestlib  # noqa: E402
import libvirtlib  # noqa: E402
import test_libvirt as tl  # noqa: E402
import vmlib  # noqa: E402

log = tl.log


def row(name, values, unit_ms=True):
    vals = [v for v in values if v is not None]
    if not vals:
        return "%-34s %10s" % (name, "n/a")
    f = (lambda v: "%.1f" % (v * 1e3)) if unit_ms else (lambda v: "%.2f" % v)
    return "%-34s %10s  (%s .. %s, n=%d)" % (name, f(statistics.median(vals)), f(min(vals)),
                                           f(max(vals)), len(vals))


def firsts(r):
    first_cb = min((r["clk"].to_host(e["t_us"]) for e in r["first"].values()), default=None)
    return (first_cb - r["t0"] if first_cb else None,
            r["inflate_t"] - r["t0"] if r["inflate_t"] else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("workdir", nargs="?", default=vmlib.default_workdir())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--wait", type=float, default=60.0)
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    workdir = os.path.abspath(args.workdir)
    img = guestlib.prepare(build, workdir)
    res = {"cooperative": [], "reactive": []}
    with libvirtlib.Libvirtd(workdir, "lvbench") as lv:
        with tl.boot_libvirt_guest(lv, workdir, img, "lvbench") as vm:
            clk = tl.setup_guest(vm, log)
            for rep in range(args.reps):
                for path in ("cooperative", "reactive"):
                    if rep or path == "reactive":
                        tl.back_to_full(vm)
                        tl.restart_apps(vm, None)
                    if path == "cooperative":
                        r = tl.cooperative(build, lv, vm, clk, args.wait)
                        r["reached"] = r["rc"] == 0
                    else:
                        r = tl.reactive(vm, clk, args.wait)
                    r["clk"] = clk
                    res[path].append(r)
                    cb, infl = firsts(r)
                    log("rep %d %-11s converged %s in %.2f s; first callback %s, first page "
                        "ballooned %s" % (rep + 1, path, r["reached"], r["seconds"],
                                          "%+.1f ms" % (cb * 1e3) if cb is not None else "-",
                                          "%+.1f ms" % (infl * 1e3) if infl is not None else "-"))
    print()
    print("libvirt: 1024 -> 384 MiB with ~700 MiB held by applications, %d repetitions" % args.reps)
    print("%-34s %10s" % ("", "median ms (min .. max)"))
    for path in ("cooperative", "reactive"):
        rs = res[path]
        print(row("%s: convergence" % path, [r["seconds"] if r["reached"] else None for r in rs]))
        print(row("%s: first callback" % path, [firsts(r)[0] for r in rs]))
        print(row("%s: first page ballooned" % path, [firsts(r)[1] for r in rs]))
        print("%-34s %10s" % ("%s: reached" % path, "%d/%d" % (sum(r["reached"] for r in rs),
                                                              len(rs))))
    co = [r["seconds"] for r in res["cooperative"] if r["reached"]]
    re_ = [r["seconds"] for r in res["reactive"] if r["reached"]]
    if co and re_:
        print("convergence ratio cooperative / reactive: %.2f (medians)"
              % (statistics.median(co) / statistics.median(re_)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
