#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Smoke test of the VM harness: can we boot the guest and drive its balloon?

    tests/vm/run-smoke.py [WORKDIR] [--initrd FILE] [--timeout-boot S]

Prepares what is missing (host packages via setup-host.sh, the kernel via
fetch-kernel.sh, the guest tools via build-tools.sh, an initramfs with them
via mkinitramfs.py, WORKDIR/smoke.img), boots a 1024 MiB guest and checks:
the kernel release, /proc/meminfo, PSI, /dev/kmsg and tracefs, the balloon
(virtio device, PCI function, config space read from userspace, QMP), the
virtio-serial port org.shrinkd.agent.0 in both directions, a dynamically
linked GLib/json-glib program, then balloons to 512 MiB and back through QMP
and checks that query-balloon's actual reaches each target and that the guest
sees it. Prints timings and "N passed, M failed"; exits 1 if anything failed.
A guest that does not boot is a failure, never a skip.

WORKDIR defaults to $SHRINKD_VM_WORKDIR or <repository>/vm-work.
"""

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmlib  # noqa: E402
from vmlib import MiB, AGENT_PORT  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = time.monotonic()


def log(msg):
    print("[%7.3f] %s" % (time.monotonic() - T0, msg), flush=True)


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        detail = " | ".join(str(detail).splitlines())
        log("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""))
        return ok


def timed(label, argv, timings):
    t = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.PIPE, universal_newlines=True)
    timings[label] = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit("%s failed (exit %d)" % (" ".join(argv), r.returncode))
    return r.stdout.split()


def meminfo(g, key):
    for line in g.run("cat /proc/meminfo"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def vmstat(g, key):
    for line in g.run("cat /proc/vmstat"):
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return None


def balloon_cfg(g):
    """num_pages and actual as balloon-cfg reads them from config space."""
    r = g.sh("balloon-cfg")
    m = re.search(r"num_pages=(\d+) actual=(\d+)", r.out)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def main():
    ap = argparse.ArgumentParser(description="VM harness smoke test")
    ap.add_argument("workdir", nargs="?", default=vmlib.default_workdir())
    ap.add_argument("--initrd", help="boot this initramfs instead of building WORKDIR/smoke.img "
                    "(it must contain balloon-cfg)")
    ap.add_argument("--timeout-boot", type=float, default=120.0)
    args = ap.parse_args()
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    c = Checks()
    timings = {}

    # ---- preparation
    timed("setup-host", [os.path.join(HERE, "setup-host.sh")], timings)
    kernel = timed("fetch-kernel", [os.path.join(HERE, "fetch-kernel.sh"), workdir], timings)[-1]
    release = vmlib.kernel_release(kernel)
    if args.initrd:
        initrd, have_dyncheck = os.path.abspath(args.initrd), False
    else:
        tools = timed("build-tools", [os.path.join(HERE, "build-tools.sh"), workdir], timings)
        initrd = os.path.join(workdir, "smoke.img")
        argv = [sys.executable, os.path.join(HERE, "mkinitramfs.py"), workdir, "-o", initrd]
        for t in tools:
            argv += ["--bin", t]
        timed("mkinitramfs", argv, timings)
        have_dyncheck = any(t.endswith("/dyncheck") for t in tools)
    log("kernel %s, initramfs %s, %s" % (release, initrd, vmlib.qemu_version()))

    # ---- boot
    g = vmlib.Guest(workdir, name="smoke", mem_mib=1024, initrd=initrd, ports=[AGENT_PORT])
    try:
        log("accel %s (%s)" % (g.accel, g.accel_reason))
        try:
            timings["boot-to-ready"] = g.wait_ready(args.timeout_boot)
            c.check("boot", True, "GUEST-READY after %.2f s (guest uptime %.2f s)"
                    % (timings["boot-to-ready"], g.guest_uptime_at_ready))
        except vmlib.BootError as e:
            c.check("boot", False, str(e))
            return finish(c, timings)
        t = time.monotonic()
        r = g.sh("uname -r")
        timings["first-command"] = time.monotonic() - t
        c.check("uname -r", r.rc == 0 and r.lines == [release], "%r" % r.out)

        # ---- /proc, /dev/kmsg, tracefs
        total = meminfo(g, "MemTotal")
        c.check("meminfo MemTotal", total is not None and 900 * 1024 < total <= 1024 * 1024,
                "%s kB" % total)
        r = g.sh("cat /proc/pressure/memory")
        c.check("PSI /proc/pressure/memory", r.rc == 0 and r.out.startswith("some avg10="), r.out)
        r = g.sh("dd if=/dev/kmsg bs=8192 count=1 2>/dev/null")
        c.check("/dev/kmsg readable", r.rc == 0 and re.match(r"^\d+,\d+,\d+,", r.out), r.out[:80])
        r = g.sh("test -w /sys/kernel/tracing/kprobe_events")
        c.check("tracefs kprobe_events", r.rc == 0)

        # ---- balloon device
        r = g.sh("for d in /sys/bus/virtio/devices/*; do "
                 "echo $(cat $d/device) $(basename $(readlink $d/driver)); done")
        c.check("virtio balloon device bound", "0x0005 virtio_balloon" in r.lines, r.out)
        r = g.sh("grep -l 0x1af4 /sys/bus/pci/devices/*/vendor | "
                 "while read f; do cat ${f%/vendor}/device; done")
        c.check("balloon PCI function", any(x in r.lines for x in ("0x1002", "0x1045")), r.out)
        c.check("config space before", balloon_cfg(g) == (0, 0), "num_pages, actual = %s, %s"
                % balloon_cfg(g))
        actual = g.query_balloon()
        c.check("query-balloon", actual == 1024 * MiB, "actual %d MiB" % (actual // MiB))

        # ---- virtio-serial port
        port = "/dev/virtio-ports/" + AGENT_PORT
        r = g.sh("test -c $(readlink -f %s) && readlink %s" % (port, port))
        c.check("virtio port " + AGENT_PORT, r.rc == 0, r.out)
        s = g.connect_port(AGENT_PORT)
        try:
            time.sleep(0.2)     # let the guest see the host side open
            g.run("echo from-guest > %s" % port)
            got = s.recv(100)
            c.check("port guest->host", got == b"from-guest\n", repr(got))
            m = g.mark()
            g.send("head -n 1 %s > /tmp/got </dev/null; echo PORT-GOT=$(cat /tmp/got)" % port)
            time.sleep(0.3)
            s.sendall(b"from-host\n")
            _, line, _ = g.wait_for(r"^PORT-GOT=", 20, since=m)
            c.check("port host->guest", line == "PORT-GOT=from-host", line)
        finally:
            s.close()

        if have_dyncheck:
            r = g.sh("dyncheck")
            c.check("dynamically linked GLib program", "DYNCHECK-OK" in r.out, r.out)

        # ---- balloon 1024 -> 512 -> 1024 MiB
        rss0 = g.qemu_rss_kib()
        inflate0 = vmstat(g, "balloon_inflate")
        t = time.monotonic()
        g.balloon(512 * MiB)
        w = g.wait_balloon(512 * MiB, timeout=60)
        timings["inflate-512MiB"] = time.monotonic() - t
        c.check("inflate to 512 MiB", w.reached, "actual %d MiB after %.2f s"
                % (w.actual // MiB, w.elapsed))
        total2 = meminfo(g, "MemTotal")
        c.check("guest MemTotal fell by 512 MiB", total2 is not None and total - total2 == 512 * 1024,
                "%s -> %s kB" % (total, total2))
        c.check("vmstat balloon_inflate", vmstat(g, "balloon_inflate") - inflate0 == 131072)
        c.check("config space inflated", balloon_cfg(g) == (131072, 131072),
                "num_pages, actual = %s, %s" % balloon_cfg(g))
        rss1 = g.qemu_rss_kib()

        t = time.monotonic()
        g.balloon(1024 * MiB)
        w = g.wait_balloon(1024 * MiB, timeout=60)
        timings["deflate-1024MiB"] = time.monotonic() - t
        c.check("deflate to 1024 MiB", w.reached, "actual %d MiB after %.2f s"
                % (w.actual // MiB, w.elapsed))
        c.check("guest MemTotal back", meminfo(g, "MemTotal") == total)
        c.check("config space deflated", balloon_cfg(g) == (0, 0),
                "num_pages, actual = %s, %s" % balloon_cfg(g))
        log("QEMU RSS: %d MiB before inflate, %d MiB inflated, %d MiB after deflate "
            "(an idle guest has touched little, so little to give back)"
            % (rss0 // 1024, rss1 // 1024, g.qemu_rss_kib() // 1024))
    except Exception as e:   # a harness error is a failure, never a skip
        c.check("harness", False, "%s: %s" % (type(e).__name__, e))
    finally:
        g.close()
    return finish(c, timings)


def finish(c, timings):
    timings["total"] = time.monotonic() - T0
    log("timings: " + ", ".join("%s %.2f s" % kv for kv in timings.items()))
    print("%d passed, %d failed" % (c.passed, c.failed), flush=True)
    return 1 if c.failed or not c.passed else 0


if __name__ == "__main__":
    sys.exit(main())
