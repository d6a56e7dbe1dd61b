#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The daemon's memory and root's latency under the hostile floods of
issue 10 (the attackers of tests/integration/hostilelib.py, the floods of
test_hostile.py), against a baseline with no flood measured in the same
run.

Each row is a fresh shrinkd (default settings) with one real client (the
cache example, root, 64 MiB): VmRSS before the flood, its peak (VmHWM,
reset when the flood starts) and VmRSS after the attacker is gone; the
median of root `shrinkctl status` times during the flood, and the time of
one hard round (1000 ms deadline) during it. Ratios are against the
baseline row. The no-HELLO flood runs twice: from one process, and from
three of the same user (a daemon that keeps up with one attacker may not
keep up with three). Figures, not assertions (test_hostile.py asserts the
bounds). Needs root: the attackers run as an unprivileged user it creates.

usage: hostile-rss.py BUILD_DIR [--status N]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import shrinkdtest  # noqa: E402
from shrinkdtest import Agent, Process, binary, registered_pids, wait_until  # noqa: E402
import hostilelib as hl  # noqa: E402

HARD_DEADLINE_MS = 1000
HARD_TIMEOUT_S = 6  # a round the flood holds back is reported as "> 6000"


class Run:
    """One fresh daemon, its real client, and the figures of one flood."""

    def __init__(self, name, n_status):
        self.name, self.n_status = name, n_status
        self.dir = tempfile.mkdtemp(prefix="shrinkd-bench-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "shrinkd.sock")
        self.agent = Agent(self.sock, ("--balloon=off", "--psi-trigger=off"), verbose=False)
        self.cache = Process([binary("examples/shrink-example-cache"), "--mib", "64", "--hot-mib", "64"],
                             env=dict(os.environ, SHRINKD_SOCKET=self.sock), name="cache")
        self.cache.wait_line(r"^READY ", 30)
        wait_until(lambda: self.cache.pid in registered_pids(self.sock), 10, 0.05, "the cache")
        self.flood = None
        self.hard_ms = None
        self.tried = self.accepted = "-"

    def begin(self):
        self.flood = hl.Flood(self.name, self.agent.pid)

    def measure(self):
        """Root's status, n times, and one hard round, while the flood runs."""
        for _ in range(self.n_status):
            self.flood.root_status(self.sock, 10)
            time.sleep(0.05)
        r, ms = None, None
        try:
            r, ms = hl.timed_shrinkctl(self.sock, HARD_TIMEOUT_S, "shrink", "16M", "--hard",
                                       "--deadline", str(HARD_DEADLINE_MS), "--json")
        except Exception:  # subprocess.TimeoutExpired: the flood held the round back
            ms = None
        self.hard_ms = ms if r is not None and r.returncode in (0, 5) else None

    def finish(self):
        self.flood.end()
        self.cache.stop(signal.SIGKILL)
        self.agent.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self


def baseline(n_status, uid, gid):
    run = Run("baseline (no flood)", n_status)
    run.begin()
    run.measure()
    return run.finish()


def nohello(n_status, uid, gid, procs=1):
    """4096 connections without HELLO, each refused one replaced at once,
    from @procs processes of the one user (splitting the 4096)."""
    run = Run("no-HELLO flood" + (" x%d" % procs if procs > 1 else ""), n_status)
    run.begin()
    atts = [hl.Attacker("nohello", uid, gid, run.sock, n=4096 // procs, flood_s=HARD_TIMEOUT_S + 6)
            for _ in range(procs)]
    held = [a.result("HELD", 20) for a in atts]
    run.measure()
    for a in atts:
        os.kill(a.pid, signal.SIGUSR1)
    res = [a.result("DONE", 30) for a in atts]
    for a in atts:
        a.stop(signal.SIGKILL)
    run.tried = "%d connects" % sum(r["connects"] for r in res)
    run.accepted = "%d at once" % sum(h["open"] for h in held)
    return run.finish()


def nohello3(n_status, uid, gid):
    return nohello(n_status, uid, gid, 3)


def shrinkers(n_status, uid, gid):
    run = Run("shrinker flood", n_status)
    run.begin()
    att = hl.Attacker("shrinkers", uid, gid, run.sock)
    res = att.result("DONE", 120)
    run.measure()  # while it holds them
    att.stop(signal.SIGKILL)
    wait_until(lambda: len(registered_pids(run.sock)) == 1, 10, 0.1, "the flood's shrinkers to go")
    run.tried = "%d conns, %d shrinkers" % (res["conns"] + (res["conn_refused"] is not None), res["sent"])
    run.accepted = "%d conns, %d shrinkers" % (res["conns"], res["accepted"])
    return run.finish()


def readers(n_status, uid, gid):
    run = Run("non-reading readers", n_status)
    run.begin()
    att = hl.Attacker("readers", uid, gid, run.sock, n=8, shrinkers=1000, budget_mib=3.5)
    att.wait_line(r"^READERS ", 30)
    run.measure()  # while they send, and then while the kept ones hold their queues
    res = att.result("DONE", 60)
    att.stop(signal.SIGKILL)
    run.tried = "%d conns, %.1f MiB of replies" % (res["open"], res["open"] * res["asked_bytes_each"] / hl.MiB)
    run.accepted = "%d kept, %d closed" % (res["open"] - res["closed"], res["closed"])
    return run.finish()


def liar(n_status, uid, gid):
    run = Run("lying shrinker", n_status)
    run.begin()
    att = hl.Attacker("liar", uid, gid, run.sock, priority=100, estimate=1 << 56, answers=hl.U64_MAX)
    att.wait_line(r"^REGISTERED ", 10)
    wait_until(lambda: att.pid in registered_pids(run.sock), 10, 0.05, "the liar")
    run.measure()
    att.stop(signal.SIGKILL)
    run.tried, run.accepted = "1 shrinker", "1 shrinker"
    return run.finish()


def ms(v):
    return "> %d" % (HARD_TIMEOUT_S * 1000) if v is None else "%.0f" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--status", type=int, default=5, help="root status calls per flood")
    args = ap.parse_args()
    shrinkdtest.BUILD = args.build
    if os.geteuid() != 0:
        print("SKIP: needs root to create the unprivileged user")
        return 77
    uid, gid = hl.hostile_user()
    rows = [f(args.status, uid, gid) for f in (baseline, nohello, nohello3, shrinkers, readers, liar)]
    base = rows[0]
    base_hwm = base.flood.hwm
    base_status = statistics.median(base.flood.status_ms)
    head = ("flood", "attempted", "accepted", "RSS before", "peak", "after", "status ms", "hard round ms",
            "peak/base", "status/base")
    table = [head]
    for r in rows:
        st = statistics.median(r.flood.status_ms)
        table.append((r.name, r.tried, r.accepted, "%.1f" % r.flood.rss_before, "%.1f" % r.flood.hwm,
                      "%.1f" % r.flood.rss_after, "%.0f (max %.0f)" % (st, max(r.flood.status_ms)),
                      ms(r.hard_ms), "%.2f" % (r.flood.hwm / base_hwm), "%.2f" % (st / base_status)))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print("shrinkd under hostile floods (RSS in MiB; peak = VmHWM during the flood; status = root "
          "shrinkctl status, median of %d)" % args.status)
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(json.dumps({r.name: {"rss_before_mib": round(r.flood.rss_before, 2), "hwm_mib": round(r.flood.hwm, 2),
                               "rss_after_mib": round(r.flood.rss_after, 2),
                               "status_ms": [round(v, 1) for v in r.flood.status_ms],
                               "hard_round_ms": None if r.hard_ms is None else round(r.hard_ms, 1)}
                      for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
