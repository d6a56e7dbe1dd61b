#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The VM demo (what `tools/demo.sh` runs): a 1024 MiB QEMU guest runs
shrinkd and the three example applications holding most of its memory; the
host shrinks the guest to 384 MiB through QMP `balloon` (what `virsh setmem`
does) and the demo prints a timeline: when the host asked (t=0), the rounds
shrinkd ran, what each application was asked for at which level and what it
freed, the balloon's progress and when it reached its target, and the QEMU
process's RSS on the host before and after.

usage: demo-vm.py BUILD_DIR [WORKDIR] [--target-mib N]

Times in the guest (the applications' EVENT t_us, shrinkd's started_us)
are the guest's CLOCK_REALTIME, converted to host time with an offset
estimated NTP-style over a virtio-serial port (its uncertainty is printed).
Exits 1 if the balloon does not reach its target, an application dies or
the guest's kernel OOM-kills anything.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "vm"))
import guestlib  # noqa: E402
import vmlib  # noqa: E402
from guestlib import MiB, DEFAULT_APPS  # noqa: E402

GUEST_MIB = 1024


def say(msg=""):
    print(msg, flush=True)


def mib(b):
    return "%.1f MiB" % (b / MiB)


def main():
    ap = argparse.ArgumentParser(description="shrinkd VM demo")
    ap.add_argument("build_dir")
    ap.add_argument("workdir", nargs="?", default=vmlib.default_workdir())
    ap.add_argument("--target-mib", type=int, default=384)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    target = args.target_mib
    workdir = os.path.abspath(args.workdir)

    say("== preparing the guest: kernel (downloaded and unpacked, not installed), initramfs with "
        "shrinkd, shrinkctl, libshrink and the examples")
    t = time.monotonic()
    img = guestlib.prepare(args.build_dir, workdir)
    say("   %s (%.1f s)" % (img, time.monotonic() - t))
    accel, why = vmlib.choose_accel()
    say("== booting a %d MiB guest: 1 vCPU, no swap, %s (%s), virtio-balloon" % (GUEST_MIB, accel, why))
    t = time.monotonic()
    vm = guestlib.boot(workdir, img, "demo")
    ok = True
    with vm:
        g = vm.g
        say("   ready in %.1f s (%s); logs in %s" % (time.monotonic() - t, g.sh("uname -r").out, g.dir))
        say("== starting shrinkd in the guest")
        vm.start_shrinkd("")  # no debug log: it would take pages from a guest that has none
        st = vm.status()
        bal = st.get("balloon")
        if bal:
            say("   balloon source: %s (%s)" % (bal.get("mode"), bal.get("mode_reason")))
        else:
            say("   shrinkd reports no balloon source")
        t = time.monotonic()
        n = vm.touch_free_memory()
        say("== the guest touches %d MiB of its free memory (%.1f s), as a guest that has run for a "
            "while has:\n   the host's RSS can only fall by pages the guest has touched"
            % (n, time.monotonic() - t))
        say("== starting the applications (filling their memory takes a few seconds under TCG)")
        for name, cmd, m in DEFAULT_APPS:
            say("   %-5s %-46s holds %d MiB" % (name, cmd, m))
        ready = vm.start_apps(DEFAULT_APPS)
        mi = vm.port.meminfo()
        say("   all registered after %.1f s; guest MemTotal %d MiB, MemAvailable %d MiB"
            % (max(ready.values()), mi["MemTotal"] // 1024, mi["MemAvailable"] // 1024))
        rss0 = guestlib.qemu_rss_settled(g)
        say("   QEMU process on the host: RSS %d MiB" % (rss0 // 1024))
        clk = vm.port.clock_sync()
        say("   guest clock vs host: offset known to +/- %.2f ms" % (clk.uncertainty * 1e3))
        rounds_before = {r["round_id"] for r in st.get("rounds", [])}

        say()
        say("== host: QMP balloon %d MiB (what `virsh setmem` does): take %d MiB from the guest"
            % (target, GUEST_MIB - target))
        t0 = vm.balloon(target * MiB)
        # Poll query-balloon, noting each quarter of the way and the end.
        progress = []
        want = (GUEST_MIB - target) * MiB
        next_q = 1
        reached_at = None
        actual = GUEST_MIB * MiB
        while time.monotonic() - t0 < args.timeout:
            actual = g.query_balloon()
            now = time.monotonic()
            done = GUEST_MIB * MiB - actual
            while next_q <= 3 and done >= want * next_q / 4:
                progress.append((now, "balloon %d%% inflated (query-balloon actual %s)"
                                 % (25 * next_q, mib(actual))))
                next_q += 1
            if abs(actual - target * MiB) <= MiB:
                reached_at = now
                break
            time.sleep(0.02)
        time.sleep(0.5)
        clk2 = vm.port.clock_sync()
        st = vm.status()
        evs = [e for e in vm.events("shrink") if clk.to_host(e["t_us"]) >= t0 - 0.005]
        rounds = [r for r in guestlib.rounds_of(st) if r["round_id"] not in rounds_before]
        puffs = vm.port.kmsg_matching(r"Out of puff", since_t=t0)
        oom = vm.port.kmsg_matching(r"(?i)killed process|out of memory")

        rows = [(t0, "host", "QMP balloon: target %d MiB" % target)]
        for r in rounds:
            rows.append((clk.to_host(r.get("started_us", 0)), "shrinkd",
                         "round %s %-4s reason %s: wants %s from %d shrinkers" % (
                             r.get("round_id"), r.get("level"), r.get("reason"),
                             mib(r.get("target_bytes", 0)), len(r.get("requests", [])))))
        for e in evs:
            rows.append((clk.to_host(e["t_us"]), e.get("app"),
                         "%-10s %-4s asked %9s freed %9s (holds %s)" % (
                             e.get("shrinker"), e.get("level"), mib(e.get("target", 0)),
                             mib(e.get("freed", 0)), mib(e.get("held", 0)))))
        if puffs:
            rows.append((puffs[0][0], "kernel", "\"%s\" (%d such records)" % (puffs[0][2], len(puffs))))
        rows += [(t_, "host", what) for t_, what in progress]
        if reached_at:
            rows.append((reached_at, "host", "balloon reached %d MiB (query-balloon actual %s)"
                         % (target, mib(actual))))
        rows.sort(key=lambda r: r[0])
        say()
        say("timeline, ms since the host's command (guest times +/- %.2f ms):" % (clk.uncertainty * 1e3))
        for t_, who, what in rows:
            say("  %9.1f  %-8s %s" % ((t_ - t0) * 1e3, who, what))
        say()
        freed = sum(e.get("freed", 0) for e in evs)
        say("summary:")
        by_app = {}
        for e in evs:
            a = by_app.setdefault(e["app"], {"soft": [0, 0, 0], "hard": [0, 0, 0]})
            lv = a.setdefault(e.get("level"), [0, 0, 0])
            lv[0] += 1
            lv[1] += e.get("target", 0)
            lv[2] += e.get("freed", 0)
        for app, lv in sorted(by_app.items()):
            say("  %-5s soft: %d requests, asked %9s, freed %9s | hard: %d requests, asked %9s, "
                "freed %9s" % (app, lv["soft"][0], mib(lv["soft"][1]), mib(lv["soft"][2]),
                               lv["hard"][0], mib(lv["hard"][1]), mib(lv["hard"][2])))
        say("  applications freed %s in all; %d shrinkd rounds (%s)" % (
            mib(freed), len(rounds), ", ".join("%s %s" % (r.get("level"), r.get("reason"))
                                               for r in rounds)))
        if evs:
            say("  first callback reported %.1f ms after the host's command" % (
                (clk.to_host(evs[0]["t_us"]) - t0) * 1e3))
        if reached_at:
            say("  balloon reached %d MiB %.2f s after the host's command" % (target, reached_at - t0))
        else:
            say("  balloon did NOT reach %d MiB within %.0f s: actual %s" % (target, args.timeout,
                                                                          mib(actual)))
            ok = False
        rss1 = guestlib.qemu_rss_settled(g)
        say("  QEMU RSS on the host: %d MiB before, %d MiB after: %d MiB returned to the host "
            "(%d MiB ballooned)" % (rss0 // 1024, rss1 // 1024, (rss0 - rss1) // 1024,
                                   (GUEST_MIB * MiB - actual) // MiB))
        alive = vm.apps_alive()
        say("  applications alive: %s; OOM kills in the guest: %d" % (
            ", ".join("%s %s" % (n, "yes" if a else "NO") for n, a in alive.items()), len(oom)))
        if not all(alive.values()) or oom:
            ok = False
        say("  guest clock drift during the demo: %.3f ms" % ((clk2.offset - clk.offset) * 1e3))
    say()
    say("demo %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except vmlib.BootError as e:
        print("demo FAILED: the guest did not boot: %s" % e, file=sys.stderr)
        sys.exit(1)
