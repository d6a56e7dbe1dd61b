#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The local demo: shrinkd on a temporary socket, the three example
applications, a soft round then a hard round, and what each application
was asked and freed. No VM; `tools/demo.sh` runs the VM demo.

usage: demo-local.py BUILD_DIR"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import shrinkdtest  # noqa: E402
from shrinkdtest import Agent, MiB, Process, registered_pids, rss_kib, shrinkctl, wait_until  # noqa: E402


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    shrinkdtest.BUILD = build
    d = tempfile.mkdtemp(prefix="shrinkd-demo-")
    sock = os.path.join(d, "shrinkd.sock")
    env = dict(os.environ, SHRINKD_SOCKET=sock)
    print("== starting shrinkd on %s" % sock)
    agent = Agent(sock)
    apps = []
    try:
        for name, mib in (("shrink-example-cache", 192), ("shrink-example-osv", 96), ("shrink-example-cxx", 64)):
            p = Process([os.path.join(build, "examples", name), "--mib", str(mib)], env=env, name=name)
            p.wait_line("^READY", 60)
            apps.append(p)
            print("== started %-22s pid %-7d holding %d MiB (RSS %d MiB)"
                  % (name, p.pid, mib, rss_kib(p.pid) // 1024))
        wait_until(lambda: {a.pid for a in apps} <= registered_pids(sock), 10, 0.05, "registration")
        print("\n== shrinkctl status")
        print(shrinkctl(sock, "status").stdout)
        before = {a.pid: rss_kib(a.pid) for a in apps}
        print("== shrinkctl shrink 64M            (soft: free what is cheap)")
        print(shrinkctl(sock, "shrink", "64M").stdout)
        print("== shrinkctl shrink 160M --hard    (soft first, then hard for the rest)")
        print(shrinkctl(sock, "shrink", "160M", "--hard").stdout)
        time.sleep(0.2)
        print("== what each application saw")
        for a in apps:
            for ev in a.events("shrink"):
                print("   %-22s %-5s %-10s asked %7.1f MiB  freed %7.1f MiB"
                      % (a.name, ev.get("level"), ev.get("shrinker", ""), int(ev["target"]) / MiB,
                         int(ev["freed"]) / MiB))
        print("\n== resident memory of each application (VmRSS)")
        for a in apps:
            print("   %-22s %6d MiB -> %6d MiB" % (a.name, before[a.pid] // 1024, rss_kib(a.pid) // 1024))
    finally:
        for a in apps:
            a.stop()
        agent.stop()


if __name__ == "__main__":
    main()
