#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The host channel (docs/channel-protocol.md) against the real shrinkd, with
real libshrink clients on its local socket. The test plays the host the way
QEMU's "-chardev socket,server=on" does: it listens on a unix socket, and
shrinkd (--channel PATH) connects.

Issue 4's acceptance items for the agent: the bad-input corpus
(tests/data/channel/) gets typed errors while the agent keeps serving its
local clients; a host that never reads, and one that goes away mid-answer,
block nothing; the commands do what the protocol says; a path that appears
later is picked up without polling; a serial line (a pty) works raw."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shrinkdtest import (Agent, Fixture, MiB, RawClient, binary, registered_pids, rss_kib,  # noqa: E402
                         SANITIZED, shrinkctl, wait_until)

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "channel")
SYNC = b"\xff"


def req(name, args=None, **top):
    r = {"execute": name}
    if args is not None:
        r["arguments"] = args
    r.update(top)
    return json.dumps(r).encode() + b"\n"


class Host:
    """The host end of the channel: a listening unix socket."""

    def __init__(self, path):
        self.path = path
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ls.bind(path)
        self.ls.listen(4)
        self.conn = None
        self.buf = b""
        self.next_id = 1000

    def accept(self, timeout=10):
        self.ls.settimeout(timeout)
        conn, _ = self.ls.accept()
        if self.conn:
            self.conn.close()
        self.conn = conn
        self.buf = b""
        return conn

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def send(self, data):
        """Sends @data, reading what comes meanwhile (a host that only
        writes while shrinkd's answers wait for it would deadlock both)."""
        view = memoryview(data)
        while view:
            r, w, _ = select.select([self.conn], [self.conn], [], 30)
            if not r and not w:
                raise TimeoutError("host: shrinkd takes nothing")
            if r:
                got = self.conn.recv(1 << 20)
                if not got:
                    raise EOFError("host: shrinkd closed the channel")
                self.buf += got
            if w:
                view = view[self.conn.send(view):]

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("host: nothing more from shrinkd (buffer %r)" % self.buf[:200])
        r, _, _ = select.select([self.conn], [], [], left)
        if not r:
            raise TimeoutError("host: nothing more from shrinkd (buffer %r)" % self.buf[:200])
        data = self.conn.recv(1 << 20)
        if not data:
            raise EOFError("host: shrinkd closed the channel")
        self.buf += data

    def token(self, timeout=10):
        """The next thing shrinkd wrote: ("0xFF",), ("return", value) or
        ("error", class, desc)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.buf[:1] == SYNC:
                self.buf = self.buf[1:]
                return ("0xFF",)
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                obj = json.loads(line)
                if "return" in obj:
                    return ("return", obj["return"])
                return ("error", obj["error"]["class"], obj["error"]["desc"])
            self._fill(deadline)

    def sync(self, timeout=10):
        """0xFF + guest-sync-delimited; skips everything up to shrinkd's
        0xFF and checks the id (what virt-shrink does)."""
        ident = self.next_id
        self.next_id += 1
        self.send(SYNC + req("guest-sync-delimited", {"id": ident}))
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                self.buf = b""  # nothing before a 0xFF matters
            elif self.buf.find(b"\n", i) >= 0:
                self.buf = self.buf[i + 1:]
                line, self.buf = self.buf.split(b"\n", 1)
                if json.loads(line).get("return") == ident:
                    return
                continue
            else:
                self.buf = self.buf[i:]
            self._fill(deadline)

    def call(self, name, args=None, timeout=10):
        self.send(req(name, args))
        return self.token(timeout)

    def answers_until_marker(self, timeout=30):
        """Sends 0xFF + guest-sync MARKER and returns every token before
        its answer."""
        ident = self.next_id
        self.next_id += 1
        self.send(SYNC + req("guest-sync", {"id": ident}))
        out = []
        while True:
            t = self.token(timeout)
            if t == ("return", ident):
                return out
            out.append(t)


def read_expect(path):
    want = []
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^(\d+)\*(.*)$", line)
        n, item = (int(m.group(1)), m.group(2)) if m else (1, line)
        want += [item] * n
    return want


def matches(token, item):
    if item == "0xFF":
        return token == ("0xFF",)
    if item == "return":
        return token[0] == "return"
    if item.startswith("return="):
        return token[0] == "return" and token[1] == json.loads(item[len("return="):])
    return token[0] == "error" and token[1] == item


def voluntary_switches(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


class ChannelFixture(Fixture):
    """shrinkd with --channel on a socket the test listens on, a libshrink
    example registered, and the host connected."""

    config = None  # lines for [shrinkd]
    example_mib = 64

    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="shrinkd-ch-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "shrinkd.sock")
        self.env = dict(os.environ, SHRINKD_SOCKET=self.sock)
        self.procs = []
        self.chan = os.path.join(self.dir, "host.sock")
        self.host = Host(self.chan)
        # No balloon, PSI or kernel log: nothing but the test wakes shrinkd.
        args = ["--channel", self.chan, "--balloon", "off", "--psi-trigger", "off", "--no-mlock",
                "--kmsg", os.path.join(self.dir, "no-kmsg")]
        if self.config:
            conf = os.path.join(self.dir, "shrinkd.conf")
            with open(conf, "w") as f:
                f.write("[shrinkd]\n" + "\n".join(self.config) + "\n")
            args += ["--config", conf]
        self.agent = Agent(self.sock, args)
        self.host.accept()
        self.host.sync()
        self.cache = self.start_example("shrink-example-cache", "--mib", str(self.example_mib))
        self.wait_registered(self.cache.pid)

    def tearDown(self):
        self.host.close()
        super().tearDown()

    def local_clients_served(self):
        """A local round and status work, and the example is registered."""
        t0 = time.monotonic()
        held = self.shrinkers_of(self.cache.pid)[0]["estimate_bytes"]
        report = self.shrink("64K", deadline_ms=2000)
        self.assertEqual(report["level"], "soft")
        # Asked while it holds something (many rounds can drain its cache).
        if held:
            self.assertIn(self.cache.pid, {r["pid"] for r in report["requests"]}, report)
        self.assertIn(self.cache.pid, registered_pids(self.sock))
        took = time.monotonic() - t0
        self.assertLess(took, 5.0)
        self.assertTrue(self.agent.alive())


class CorpusTests(ChannelFixture):
    def test_corpus_gets_typed_errors_and_local_clients_keep_being_served(self):
        cases = sorted(f[:-3] for f in os.listdir(CORPUS) if f.endswith(".in"))
        self.assertGreaterEqual(len(cases), 20)
        for name in cases:
            with self.subTest(case=name):
                with open(os.path.join(CORPUS, name + ".in"), "rb") as f:
                    data = f.read()
                want = read_expect(os.path.join(CORPUS, name + ".expect"))
                self.host.sync()
                self.host.send(data)
                got = self.host.answers_until_marker()
                ok = len(got) == len(want) and all(matches(t, w) for t, w in zip(got, want))
                self.assertTrue(ok, "%s:\n  got  %s\n  want %s" % (name, [t[:2] for t in got], want))
                self.local_clients_served()
        print("\n    %d corpus cases, each followed by a local round and status" % len(cases))


class CommandTests(ChannelFixture):
    def test_ping_info_sync(self):
        self.assertEqual(self.host.call("guest-ping"), ("return", {}))
        t = self.host.call("guest-info")
        self.assertEqual(t[0], "return")
        names = [c["name"] for c in t[1]["supported_commands"]]
        self.assertEqual(names, ["guest-sync-delimited", "guest-sync", "guest-ping", "guest-info",
                                 "shrinkd-status", "shrinkd-shrink", "shrinkd-prepare",
                                 "shrinkd-prepare-migration"])
        self.assertTrue(all(c["enabled"] and c["success-response"] for c in t[1]["supported_commands"]))
        self.assertEqual(t[1]["version"], self.status()["version"])
        self.assertEqual(self.host.call("guest-sync", {"id": -7}), ("return", -7))
        # guest-sync-delimited: the 0xFF comes first.
        self.host.send(req("guest-sync-delimited", {"id": 5}))
        self.assertEqual(self.host.token(), ("0xFF",))
        self.assertEqual(self.host.token(), ("return", 5))
        # The request's "id" is echoed.
        self.host.send(req("guest-ping", id="x1"))
        line = self.host.buf
        while b"\n" not in line:
            self.host._fill(time.monotonic() + 5)
            line = self.host.buf
        self.assertEqual(json.loads(line.split(b"\n")[0]), {"return": {}, "id": "x1"})
        self.host.buf = b""

    def test_status_is_shrinkctls(self):
        t = self.host.call("shrinkd-status")
        self.assertEqual(t[0], "return")
        local = self.status()
        self.assertEqual(set(t[1]), set(local))
        self.assertEqual([c["pid"] for c in t[1]["clients"]], [c["pid"] for c in local["clients"]])
        self.assertEqual(t[1]["clients"][0]["shrinkers"][0]["name"], local["clients"][0]["shrinkers"][0]["name"])

    def test_shrink_runs_a_host_round(self):
        t = self.host.call("shrinkd-shrink", {"target_bytes": 8 * MiB, "level": "hard", "deadline_ms": 2000})
        self.assertEqual(t[0], "return", t)
        rep = t[1]
        self.assertEqual(rep["reason"], "host")
        self.assertEqual(rep["level"], "hard")
        mine = [r for r in rep["requests"] if r["pid"] == self.cache.pid]
        self.assertTrue(mine and sum(r["freed_bytes"] for r in mine) > 0, rep)
        self.assertIn(rep["round_id"], [r["round_id"] for r in self.status()["rounds"]])

    def test_prepare_frees_what_free_memory_cannot_cover(self):
        st = self.status()
        mem = st["memory"]
        # Ask for a size that free memory beyond the reserve misses by 24 MiB.
        new_size = mem["mem_total_bytes"] - (mem["mem_available_bytes"] - 64 * MiB) - 24 * MiB
        t = self.host.call("shrinkd-prepare", {"new_size_bytes": new_size, "deadline_ms": 3000}, timeout=20)
        self.assertEqual(t[0], "return", t)
        p = t[1]
        for k in ("current_size_bytes", "new_size_bytes", "needed_bytes", "free_bytes", "freed_bytes",
                  "ready", "rounds", "reserve_bytes", "shortfall_bytes"):
            self.assertIn(k, p)
        self.assertEqual(p["new_size_bytes"], new_size)
        self.assertEqual(p["current_size_bytes"], mem["mem_total_bytes"])
        self.assertEqual(p["reserve_bytes"], 64 * MiB)
        # MemAvailable moves a little between the two readings.
        self.assertGreater(p["needed_bytes"], 0)
        self.assertLess(abs(p["needed_bytes"] - 24 * MiB), 64 * MiB)
        self.assertGreaterEqual(len(p["rounds"]), 1)
        self.assertEqual(p["rounds"][0]["level"], "soft")
        self.assertEqual(p["rounds"][0]["reason"], "host")
        self.assertEqual(p["rounds"][0]["target_bytes"], p["needed_bytes"])
        self.assertLessEqual(p["rounds"][0]["deadline_ms"], 1500)
        self.assertEqual(p["freed_bytes"], sum(r["claimed_bytes"] for r in p["rounds"]))
        self.assertEqual(p["ready"], p["shortfall_bytes"] == 0)
        self.assertTrue([r for r in p["rounds"][0]["requests"] if r["pid"] == self.cache.pid])
        if len(p["rounds"]) > 1:
            self.assertEqual(p["rounds"][1]["level"], "hard")
        print("\n    prepare: needed %.1f MiB, freed %.1f MiB in %d round(s), ready=%s"
              % (p["needed_bytes"] / MiB, p["freed_bytes"] / MiB, len(p["rounds"]), p["ready"]))

    def test_prepare_migration_runs_a_soft_migration_round(self):
        # The cache holds 64 MiB; a soft request for a migration frees every
        # cold entry asked for, not just the quarter a pressure round gets.
        estimate = self.shrinkers_of(self.cache.pid)[0]["estimate_bytes"]
        t = self.host.call("shrinkd-prepare-migration", {"deadline_ms": 3000}, timeout=20)
        self.assertEqual(t[0], "return", t)
        p = t[1]
        for k in ("freed_bytes", "measured_bytes", "mem_available_before_bytes",
                  "mem_available_after_bytes", "target_bytes", "ready", "rounds"):
            self.assertIn(k, p)
        self.assertEqual(len(p["rounds"]), 1)
        rep = p["rounds"][0]
        self.assertEqual((rep["level"], rep["reason"]), ("soft", "migration"))
        self.assertEqual(p["target_bytes"], estimate)
        mine = [r for r in rep["requests"] if r["pid"] == self.cache.pid]
        freed = sum(r["freed_bytes"] for r in mine)
        self.assertGreater(freed, self.example_mib * MiB // 4 + MiB, rep)
        self.assertEqual(p["freed_bytes"], rep["claimed_bytes"])
        t = self.host.call("shrinkd-prepare-migration", {"fraction_pct": 0})
        self.assertEqual(t[:2], ("error", "InvalidParameter"), t)
        print("\n    prepare-migration: freed %.1f MiB of %d MiB (soft, reason migration)"
              % (freed / MiB, self.example_mib))

    def test_prepare_with_enough_free_memory_runs_no_round(self):
        rounds_before = len(self.status()["rounds"])
        t = self.host.call("shrinkd-prepare", {"new_size_bytes": 1 << 50})
        self.assertEqual(t[0], "return", t)
        self.assertEqual(t[1]["needed_bytes"], 0)
        self.assertTrue(t[1]["ready"])
        self.assertEqual(t[1]["rounds"], [])
        self.assertEqual(len(self.status()["rounds"]), rounds_before)

    def test_busy_when_the_round_queue_is_full(self):
        hung = RawClient(self.sock, "hung")
        hung.register(1, "never-answers", estimate=64 * MiB)
        wait_until(lambda: os.getpid() in registered_pids(self.sock), 5, what="hung client registered")
        # One round runs (the hung client holds it 3 s) and eight wait: the
        # queue is full when the host asks.
        procs = [subprocess.Popen([binary("agent/shrinkctl"), "--socket", self.sock, "shrink", "1M",
                                   "--deadline", "3000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(9)]
        try:
            time.sleep(1.0)
            t = self.host.call("shrinkd-shrink", {"target_bytes": 1})
            self.assertEqual(t[:2], ("error", "Busy"), t)
            t = self.host.call("shrinkd-prepare", {"new_size_bytes": 0})
            self.assertEqual(t[:2], ("error", "Busy"), t)
            # Status is served while rounds run and wait.
            self.assertEqual(self.host.call("shrinkd-status")[0], "return")
        finally:
            for p in procs:
                p.kill()
                p.wait()
            hung.close()


class HostMisbehaviourTests(ChannelFixture):
    config = ["channel_write_timeout_ms=400", "channel_out_max_kib=64"]

    def test_host_that_never_reads_blocks_nothing_and_memory_stays_bounded(self):
        pid = self.agent.pid
        rss0 = rss_kib(pid)
        stop = threading.Event()
        sent = [0]
        conn = self.host.conn
        conn.setblocking(False)
        flood = req("shrinkd-status") * 64

        def flooder():
            while not stop.is_set():
                try:
                    sent[0] += conn.send(flood)
                except BlockingIOError:
                    time.sleep(0.005)
                except OSError:
                    return

        th = threading.Thread(target=flooder)
        th.start()
        try:
            t_end = time.monotonic() + 4
            worst = 0.0
            n = 0
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                self.local_clients_served()
                worst = max(worst, time.monotonic() - t0)
                n += 1
            rss1 = rss_kib(pid)
        finally:
            stop.set()
            th.join()
        conn.setblocking(True)
        print("\n    never-reading host: %d KiB of requests sent; %d local rounds, worst %.0f ms; "
              "shrinkd RSS %d -> %d KiB" % (sent[0] // 1024, n, worst * 1000, rss0, rss1))
        # shrinkd stops reading while its answers wait: the host's writes
        # block once the socket buffers are full, apart from what each
        # write timeout lets through.
        self.assertGreater(sent[0], 32 * 1024)
        if SANITIZED:
            print("    (RSS bound not checked: AddressSanitizer keeps freed memory in its quarantine)")
        else:
            self.assertLess(rss1 - rss0, 8 * 1024)
        # Answers were dropped, with a debug line saying why.
        self.agent.wait_line(r"dropped: the host read nothing for", 5)
        # The host starts reading again: a resync finds a fresh answer
        # (after the answers to what it had sent before).
        t0 = time.monotonic()
        self.host.sync(timeout=30)
        print("    resynchronised in %.1f s" % (time.monotonic() - t0))
        self.assertEqual(self.host.call("guest-ping"), ("return", {}))

    def test_host_that_disconnects_mid_answer(self):
        # (a) Asks for big answers and goes away without reading.
        self.host.send(req("shrinkd-status") * 200)
        self.host.close()
        self.host.accept()
        self.host.sync()
        self.assertEqual(self.host.call("guest-ping"), ("return", {}))
        # (b) Reads part of an answer, then goes away.
        self.host.send(req("shrinkd-status"))
        self.host.conn.recv(100)
        self.host.close()
        self.host.accept()
        self.host.sync()
        self.local_clients_served()
        # (c) Goes away while its round runs (a hung client holds it): the
        # next host is served at once, and never sees the old answer.
        hung = RawClient(self.sock, "hung")
        hung.register(1, "never-answers", estimate=64 * MiB)
        wait_until(lambda: os.getpid() in registered_pids(self.sock), 5, what="hung client registered")
        self.host.send(req("shrinkd-shrink", {"target_bytes": 4 * MiB, "deadline_ms": 1500}))
        time.sleep(0.2)
        self.host.close()
        self.host.accept()
        t0 = time.monotonic()
        self.host.sync()
        self.assertLess(time.monotonic() - t0, 1.0)
        time.sleep(1.8)  # the old round ends meanwhile
        self.assertEqual(self.host.answers_until_marker(), [])
        hung.close()
        self.local_clients_served()

    def test_half_closed_host_gets_its_answers(self):
        self.host.send(req("guest-ping") + req("guest-sync", {"id": 3}))
        self.host.conn.shutdown(socket.SHUT_WR)
        self.assertEqual(self.host.token(), ("return", {}))
        self.assertEqual(self.host.token(), ("return", 3))
        # Then shrinkd closes and connects again.
        with self.assertRaises(EOFError):
            self.host.token(5)
        self.host.accept()
        self.host.sync()


class IdleTests(ChannelFixture):
    def test_no_wakeups_while_idle(self):
        pid = self.agent.pid
        time.sleep(0.5)
        v0 = voluntary_switches(pid)
        time.sleep(3)
        v1 = voluntary_switches(pid)
        print("\n    idle with a host connected: %d wake-ups in 3 s" % (v1 - v0))
        self.assertLessEqual(v1 - v0, 3)


class PathTests(unittest.TestCase):
    """Transports other than a listening socket that is already there."""

    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="shrinkd-ch-")
        self.sock = os.path.join(self.dir, "shrinkd.sock")
        self.agent = None

    def tearDown(self):
        import shutil
        if self.agent:
            self.agent.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, *args):
        self.agent = Agent(self.sock, ["--balloon", "off", "--psi-trigger", "off", "--no-mlock",
                                       "--kmsg", os.path.join(self.dir, "no-kmsg")] + list(args))

    def test_a_path_that_appears_later_is_picked_up_without_polling(self):
        chan = os.path.join(self.dir, "later", "host.sock")
        self.start("--channel", chan)
        self.agent.wait_line(r"does not exist \(yet\); waiting for it", 5)
        time.sleep(0.5)
        v0 = voluntary_switches(self.agent.pid)
        time.sleep(2)
        v1 = voluntary_switches(self.agent.pid)
        self.assertLessEqual(v1 - v0, 3, "shrinkd polls for a missing channel path")
        os.mkdir(os.path.dirname(chan))
        host = Host(chan)
        t0 = time.monotonic()
        host.accept(5)
        took = time.monotonic() - t0
        host.sync()
        self.assertEqual(host.call("guest-ping"), ("return", {}))
        print("\n    missing path: %d wake-ups in 2 s; connected %.0f ms after it appeared"
              % (v1 - v0, took * 1000))
        self.assertLess(took, 1.0)
        host.close()

    def test_serial_line_is_used_raw(self):
        master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)
        try:
            self.start("--channel", name)
            os.write(master, b"\xff" + req("guest-sync-delimited", {"id": 77}) + req("guest-ping"))
            buf = b""
            end = time.monotonic() + 5
            while buf.count(b"\n") < 2 and time.monotonic() < end:
                r, _, _ = select.select([master], [], [], 0.5)
                if r:
                    buf += os.read(master, 4096)
            # No echo, no CR added: exactly the answers.
            self.assertEqual(buf, b'\xff{"return":77}\n{"return":{}}\n')
        finally:
            os.close(master)

    def test_none_and_vsock_options(self):
        self.start("--channel", "none")
        self.assertTrue(self.agent.alive())
        self.agent.stop()
        r = subprocess.run([binary("agent/shrinkd"), "--socket", self.sock, "--vsock-port", "-3"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = subprocess.run([binary("agent/shrinkd"), "--socket", self.sock, "--channel", "relative/path"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        conf = os.path.join(self.dir, "bad.conf")
        for line in ("channel=relative/path", "channel_out_max_kib=1", "channel_write_timeout_ms=0",
                     "vsock_port=-1"):
            with open(conf, "w") as f:
                f.write("[shrinkd]\n%s\n" % line)
            r = subprocess.run([binary("agent/shrinkd"), "--socket", self.sock, "--config", conf],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 1, line)
            self.assertIn(line.split("=")[0], r.stderr)
        try:
            s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            s.close()
        except (AttributeError, OSError):
            self.skipTest("no AF_VSOCK here")
        # Listening works here; a host end needs a VM (vsock has no loopback
        # on this machine).
        self.start("--channel", "none", "--vsock-port", "47011")
        self.assertTrue(self.agent.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
