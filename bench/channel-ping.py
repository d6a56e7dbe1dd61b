#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Host channel round trip (issue 4, acceptance item 5): guest-ping over a
unix stream socket to shrinkd's channel and to qemu-ga, in the same run.

shrinkd connects to a socket the benchmark listens on (--channel PATH, as
to QEMU's chardev socket); qemu-ga listens (-m unix-listen) and the
benchmark connects. After that both are the same kind of connection, and
the same client loop measures both: write {"execute":"guest-ping"} and a
newline, read up to the answer's newline. Pings alternate between the two
agents in blocks, so that a noisy moment of the machine hits both.

Prints a table (median, p90, p99, mean, in microseconds) and the ratio of
the medians (target: shrinkd no slower than qemu-ga, i.e. <= 1.0). The
times include the client's own work (Python), the same for both.

usage: channel-ping.py BUILD_DIR [--pings N] [--warmup N] [--block N] [--qemu-ga PATH]
                                 [--cpu CPU]
  --cpu CPU   pin both agents and the client to CPU (same-CPU round trips)
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PING = b'{"execute":"guest-ping"}\n'


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Conn:
    def __init__(self, sock, name):
        self.s = sock
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self.name = name
        self.buf = b""

    def line(self, timeout=5.0):
        self.s.settimeout(timeout)
        while b"\n" not in self.buf:
            data = self.s.recv(65536)
            if not data:
                raise EOFError("%s closed the connection" % self.name)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def sync(self):
        """0xFF + guest-sync-delimited, then skip to the agent's 0xFF."""
        self.s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                             "arguments": {"id": 4711}}).encode() + b"\n")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            i = self.buf.find(b"\xff")
            if i >= 0 and b"\n" in self.buf[i:]:
                self.buf = self.buf[i + 1:]
                if json.loads(self.line()).get("return") == 4711:
                    self.s.settimeout(None)
                    return
                continue
            self.s.settimeout(1)
            try:
                self.buf += self.s.recv(65536)
            except socket.timeout:
                pass
        raise TimeoutError("%s: no answer to guest-sync-delimited" % self.name)

    def ping(self):
        """One round trip, in microseconds."""
        s = self.s
        t0 = time.perf_counter_ns()
        s.sendall(PING)
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(4096)
        t1 = time.perf_counter_ns()
        if buf not in (b'{"return":{}}\n', b'{"return": {}}\n'):
            raise RuntimeError("%s answered %r" % (self.name, buf))
        return (t1 - t0) / 1000.0


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError("timed out waiting for " + what)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--qemu-ga", default=shutil.which("qemu-ga") or "/usr/bin/qemu-ga")
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args()

    shrinkd_bin = os.path.join(args.build, "agent", "shrinkd")
    if not os.access(shrinkd_bin, os.X_OK):
        sys.exit("channel-ping: %s is not built" % shrinkd_bin)
    if not os.access(args.qemu_ga, os.X_OK):
        sys.exit("channel-ping: no qemu-ga (%s); install qemu-guest-agent (tools/install-deps.sh)"
                 % args.qemu_ga)

    d = tempfile.mkdtemp(prefix="channel-ping-")
    procs = []
    pin = ["taskset", "-c", str(args.cpu)] if args.cpu is not None else []
    try:
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        # shrinkd as it runs in a guest (memory locked, its defaults), but
        # with no balloon and no PSI trigger: nothing else wakes it.
        host_sock = os.path.join(d, "host.sock")
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(host_sock)
        ls.listen(1)
        shrinkd = subprocess.Popen(pin + [shrinkd_bin, "--socket", os.path.join(d, "local.sock"),
                                          "--channel", host_sock, "--balloon", "off",
                                          "--psi-trigger", "off"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(shrinkd)
        ls.settimeout(10)
        c, _ = ls.accept()
        ls.close()
        ours = Conn(c, "shrinkd")

        qga_sock = os.path.join(d, "qga.sock")
        qga = subprocess.Popen(pin + [args.qemu_ga, "-m", "unix-listen", "-p", qga_sock,
                                      "-f", os.path.join(d, "qga.pid"), "-t", d],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(qga)
        wait_for(lambda: os.path.exists(qga_sock) or qga.poll() is not None, 10, "qemu-ga's socket")
        if qga.poll() is not None:
            sys.exit("channel-ping: qemu-ga exited (%d)" % qga.returncode)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(qga_sock)
        theirs = Conn(s, "qemu-ga")

        for conn in (ours, theirs):
            conn.sync()
            for _ in range(args.warmup):
                conn.ping()
        times = {"shrinkd": [], "qemu-ga": []}
        while len(times["shrinkd"]) < args.pings:
            n = min(args.block, args.pings - len(times["shrinkd"]))
            for conn in (ours, theirs):
                times[conn.name] += [conn.ping() for _ in range(n)]

        print("guest-ping round trip over a unix stream socket: %d pings each after %d warm-up, "
              "alternating in blocks of %d%s" % (args.pings, args.warmup, args.block,
                                                  ", all on CPU %d" % args.cpu if args.cpu is not None else ""))
        print("%-9s %9s %9s %9s %9s %9s" % ("agent", "median", "p90", "p99", "mean", "min"))
        for name in ("shrinkd", "qemu-ga"):
            v = times[name]
            print("%-9s %7.1f us %6.1f us %6.1f us %6.1f us %6.1f us"
                  % (name, statistics.median(v), pct(v, 90), pct(v, 99), statistics.mean(v), min(v)))
        ratio = statistics.median(times["shrinkd"]) / statistics.median(times["qemu-ga"])
        ratio99 = pct(times["shrinkd"], 99) / pct(times["qemu-ga"], 99)
        print("shrinkd / qemu-ga: median %.2f, p99 %.2f (target: <= 1.00) -> %s"
              % (ratio, ratio99, "no slower" if ratio <= 1.0 else "SLOWER"))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
