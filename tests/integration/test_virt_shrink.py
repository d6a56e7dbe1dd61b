# SPDX-License-Identifier: MIT
"""virt-shrink end to end, without a VM: the real binary against a fake QMP
server (a balloon that moves at a set rate, or stalls) and a fake shrinkd
channel agent (fake_channel_agent.py, speaking docs/channel-protocol.md),
and over libvirt's in-process test driver (test:///FILE) with the fake
agent on the domain's channel socket. Standard library only.

The binary comes from $SHRINKD_BUILD_DIR/host-tools/virt-shrink."""
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_channel_agent import EventLog, FakeChannelAgent, FakeUnixServer  # noqa: E402

BUILD = os.environ.get("SHRINKD_BUILD_DIR",
                       os.path.join(os.path.dirname(__file__), "..", "..", "build"))
VIRT_SHRINK = os.path.join(BUILD, "host-tools", "virt-shrink")
MiB = 1 << 20
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2, 64
EXIT_CANCELLED, EXIT_TIMEOUT = 3, 4


class FakeQmp(FakeUnixServer):
    """QEMU's QMP socket, one client at a time, with a balloon that moves
    towards its target at `rate` bytes/s and cannot inflate below
    `stall_at` (memory the guest's applications hold), and an outgoing
    migration (migrate, query-migrate, migrate_cancel,
    migrate-set-parameters) as QEMU reports it: "setup" for `mig_setup`
    seconds, then "active" with ram.transferred growing at `mig_rate`
    bytes/s (at most max-bandwidth) until the guest's memory is sent, then
    "completed" with a downtime of `mig_downtime` ms. Misbehaviours:

      mig_converges   False: 64 MiB always remain (only a cancel ends it)
      mig_fail_after  seconds of "active" after which it is "failed"
      mig_start_error (class, desc): the answer to migrate
    """

    def __init__(self, path, base=1024 * MiB, events=None):
        self.base = base
        self.actual = float(base)
        self.target = base
        self.rate = 4096 * MiB
        self.stall_at = None
        self.status = "running"
        self.events = True
        self.mig = None  # the migration: {"uri", "t0", "cancel_at", "final"}
        self.mig_rate = 2048 * MiB
        self.mig_setup = 0.1
        self.mig_downtime = 37
        self.mig_converges = True
        self.mig_fail_after = None
        self.mig_start_error = None
        self.parameters = {}
        # (seq, command, arguments), recorded once read; seq from the EventLog
        # shared with the fake agent, so the two can be ordered.
        self.log = []
        self.log_times = []  # the monotonic time each of .log was read
        self._t = time.monotonic()
        super().__init__(path, events)

    def commands(self):
        with self._lock:
            return [c for _, c, _ in self.log]

    def when(self, command):
        """The seqs at which `command` was received."""
        with self._lock:
            return [s for s, c, _ in self.log if c == command]

    def times(self, command):
        """The monotonic times at which `command` was received (one thread
        reads and stamps them all, so they are in order)."""
        with self._lock:
            return [t for t, (_, c, _) in zip(self.log_times, self.log) if c == command]

    def set_target(self, value):
        with self._lock:
            self._advance()
            self.target = value

    def _advance(self):
        now = time.monotonic()
        step = self.rate * (now - self._t)
        self._t = now
        if self.actual > self.target:
            floor = max(self.target, self.stall_at or 0)
            self.actual = max(floor, self.actual - step) if self.actual > floor else self.actual
        elif self.actual < self.target:
            self.actual = min(self.target, self.actual + step)

    def cancel_migration(self):
        """As another QMP client (libvirt, an operator) would."""
        with self._lock:
            self.mig["cancel_at"] = time.monotonic()

    def _migration(self):
        m = self.mig
        if m is None:
            return {}  # what QEMU answers before any migration
        if "final" in m:
            return m["final"]
        now = time.monotonic()
        t = now - m["t0"]
        setup_ms = int(min(t, self.mig_setup) * 1000)
        rate = min(self.mig_rate, self.parameters.get("max-bandwidth", self.mig_rate))
        sent = int(max(0.0, t - self.mig_setup) * rate)
        remaining = max(0, self.base - sent)
        if not self.mig_converges:
            remaining = max(remaining, 64 * MiB)
        ram = {"transferred": sent, "remaining": remaining, "total": self.base,
               "duplicate": 12, "normal": sent // 4096, "normal-bytes": sent // 4096 * 4096,
               "dirty-sync-count": 1, "page-size": 4096, "mbps": rate * 8 / 1e6}
        info = {"status": "active", "total-time": int(t * 1000), "setup-time": setup_ms,
                "expected-downtime": 300, "ram": ram}
        if m["cancel_at"] is not None:
            if now - m["cancel_at"] < 0.1:
                info["status"] = "cancelling"
                return info
            m["final"] = dict(info, status="cancelled")
            del m["final"]["expected-downtime"]
        elif t < self.mig_setup:
            return {"status": "setup", "total-time": int(t * 1000), "expected-downtime": 300,
                    "ram": dict(ram, transferred=0, remaining=self.base)}
        elif self.mig_fail_after is not None and t - self.mig_setup >= self.mig_fail_after:
            m["final"] = {"status": "failed", "total-time": int(t * 1000),
                          "error-desc": "Unable to write to socket: Connection reset by peer"}
        elif remaining == 0:
            done = dict(info, status="completed", downtime=self.mig_downtime)
            # Pages dirtied while it ran were sent again.
            done["ram"] = dict(ram, transferred=self.base + 3 * MiB, remaining=0)
            del done["expected-downtime"]
            m["final"] = done
            self.status = "postmigrate"
        return m.get("final", info)

    def _send(self, conn, obj):
        conn.sendall(json.dumps(obj).encode() + b"\r\n")

    def _client(self, conn):
        conn.settimeout(0.1)
        self._send(conn, {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}},
                                  "capabilities": ["oob"]}})
        negotiated = False
        buf = b""
        while not self._stop:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                req = json.loads(line)
                cmd, args, rid = req.get("execute"), req.get("arguments", {}), req.get("id")
                with self._lock:
                    self.log.append((self.events_log.record(), cmd, args))
                    self.log_times.append(time.monotonic())
                    self._advance()
                    ret = self._command(cmd, args, negotiated)
                if cmd == "qmp_capabilities":
                    negotiated = True
                if self.events:
                    self._send(conn, {"event": "BALLOON_CHANGE", "data": {"actual": int(self.actual)},
                                      "timestamp": {"seconds": 1, "microseconds": 2}})
                if rid is not None:
                    ret["id"] = rid
                self._send(conn, ret)

    def _command(self, cmd, args, negotiated):
        if not negotiated and cmd != "qmp_capabilities":
            return {"error": {"class": "CommandNotFound",
                              "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
        if cmd == "qmp_capabilities":
            return {"return": {}}
        if cmd == "query-balloon":
            return {"return": {"actual": int(self.actual) // 4096 * 4096}}
        if cmd == "balloon":
            self.target = min(int(args["value"]), self.base)
            return {"return": {}}
        if cmd == "query-status":
            return {"return": {"status": self.status, "singlestep": False,
                               "running": self.status == "running"}}
        if cmd == "query-memory-size-summary":
            return {"return": {"base-memory": self.base}}
        if cmd == "migrate-set-parameters":
            self.parameters.update(args)
            return {"return": {}}
        if cmd == "migrate":
            if self.mig_start_error:
                klass, desc = self.mig_start_error
                return {"error": {"class": klass, "desc": desc}}
            if self.mig and "final" not in self.mig:
                return {"error": {"class": "GenericError",
                                  "desc": "There's a migration process in progress"}}
            self.mig = {"uri": args["uri"], "t0": time.monotonic(), "cancel_at": None}
            return {"return": {}}
        if cmd == "query-migrate":
            return {"return": self._migration()}
        if cmd == "migrate_cancel":
            if self.mig and "final" not in self.mig and self.mig["cancel_at"] is None:
                self.mig["cancel_at"] = time.monotonic()
            return {"return": {}}
        return {"error": {"class": "CommandNotFound", "desc": "The command %s has not been found" % cmd}}


def run(args, timeout=30, **kw):
    t0 = time.monotonic()
    p = subprocess.run([VIRT_SHRINK] + args, capture_output=True, text=True, timeout=timeout, **kw)
    p.elapsed = time.monotonic() - t0
    return p


class Base(unittest.TestCase):
    def setUp(self):
        if not os.access(VIRT_SHRINK, os.X_OK):
            self.fail("not built: %s (set SHRINKD_BUILD_DIR)" % VIRT_SHRINK)
        self.dir = tempfile.mkdtemp(prefix="vs-test-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.chan_path = os.path.join(self.dir, "chan.sock")
        # One event log for both fakes: it orders the agent's answers
        # against the QMP commands virt-shrink sent after reading them.
        self.event_log = EventLog()
        self.qmp = FakeQmp(self.qmp_path, events=self.event_log)
        self.agent = FakeChannelAgent(self.chan_path, events=self.event_log)

    def tearDown(self):
        self.qmp.close()
        self.agent.close()
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)

    def vs(self, *args, channel=True, **kw):
        base = ["--qmp", self.qmp_path]
        if channel:
            base += ["--channel", channel if isinstance(channel, str) else self.chan_path]
        return run(base + list(args), **kw)

    def assertExit(self, p, code):
        self.assertEqual(p.returncode, code, "exit %d, wanted %d\nstdout:\n%s\nstderr:\n%s"
                         % (p.returncode, code, p.stdout, p.stderr))


class CommandLine(unittest.TestCase):
    def test_help_and_version(self):
        p = run(["--help"])
        self.assertEqual(p.returncode, 0)
        for word in ("setmem DOMAIN SIZE", "status DOMAIN", "watch DOMAIN", "--qmp", "--channel",
                     "--no-agent", "KiB", "Exit status", "64", "migrate DOMAIN DESTURI",
                     "prepare-migration DOMAIN", "shrinkd-prepare-migration", "--bandwidth",
                     "--migrateuri", "--persistent", "--undefinesource", "--xml", "--fraction",
                     "3   migrate: cancelled", "4   migrate: not completed at --timeout"):
            self.assertIn(word, p.stdout)
        p = run(["--version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"^virt-shrink \d+\.\d+\.\d+ \(libvirt \d+\.\d+\.\d+\)")

    def test_usage_errors(self):
        for args, why in [([], "no command"), (["frobnicate", "d"], "unknown command"),
                          (["setmem", "d"], "needs a SIZE"), (["status"], "needs a DOMAIN"),
                          (["setmem", "d", "12X"], "invalid size"), (["setmem", "d", "0"], "zero"),
                          (["--bogus", "status", "d"], "unknown option"),
                          (["status", "d", "extra"], "unexpected argument"),
                          (["-c", "test:///default", "--qmp", "/x", "status"], "exclude"),
                          (["--channel", "/x", "status", "d"], "goes with --qmp"),
                          (["status", "d", "--deadline", "5"], "goes with setmem"),
                          (["setmem", "d", "1G", "--deadline", "x"], "--deadline"),
                          (["setmem", "d", "1G", "--timeout", "-1"], "--timeout"),
                          (["setmem", "d", "1G", "--no-agent", "--require-agent"], "exclude"),
                          (["watch", "d", "--json"], "--json"),
                          (["setmem", "d", "1G", "--timeout"], "needs a value")]:
            p = run(args)
            self.assertEqual(p.returncode, EXIT_USAGE, (args, p.stderr))
            self.assertIn(why, p.stderr, args)
            self.assertIn("Try 'virt-shrink --help'", p.stderr)


class QmpSetmem(Base):
    def test_cooperative_setmem_prepares_before_the_balloon(self):
        p = self.vs("setmem", "384M", "--json")
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "reached")
        self.assertEqual(r["asked_bytes"], 384 * MiB)
        self.assertEqual(r["initial_bytes"], 1024 * MiB)
        self.assertLessEqual(abs(r["reached_bytes"] - 384 * MiB), MiB)
        self.assertEqual(r["max_bytes"], 1024 * MiB)
        self.assertTrue(r["agent"]["used"])
        self.assertTrue(r["agent"]["prepare"]["rounds"])
        for phase in ("prepare", "balloon", "follow", "total"):
            self.assertIsInstance(r["phases_us"][phase], int)
        apps = {a["client"]: a for a in r["applications"]}
        self.assertEqual(set(apps), {"cache-server", "osv-style"})
        self.assertEqual(apps["cache-server"]["shrinkers"], ["lru-cache", "arena"])
        self.assertGreater(apps["cache-server"]["freed_bytes"], 0)
        self.assertEqual(r["warnings"], [])
        # The agent was asked with the new size and the default deadline...
        prepare = [a for _, c, a in self.agent.log if c == "shrinkd-prepare"]
        self.assertEqual(prepare, [{"new_size_bytes": 384 * MiB, "deadline_ms": 4000}])
        # ...after a resync, and answered before the balloon was set.
        self.assertEqual(self.agent.commands()[:2], ["guest-sync-delimited", "shrinkd-prepare"])
        answered = [s for s, c in self.agent.answers if c == "shrinkd-prepare"]
        balloon = self.qmp.when("balloon")
        self.assertEqual(len(balloon), 1)
        self.assertLess(answered[0], balloon[0])
        self.assertEqual(self.qmp.commands()[0], "qmp_capabilities")
        self.assertEqual([a for _, c, a in self.qmp.log if c == "balloon"], [{"value": 384 * MiB}])

    def test_human_report(self):
        self.qmp.rate = 512 * MiB  # about 1.3 s to inflate
        p = self.vs("setmem", "384M", "--deadline", "1500")
        self.assertExit(p, EXIT_OK)
        out = p.stdout
        self.assertIn("QEMU at %s: 1 GiB -> 384 MiB: reached" % self.qmp_path, out)
        self.assertRegex(out, r"prepare +[\d.]+ ms +the guest freed")
        self.assertRegex(out, r"balloon +[\d.]+ ms +set to 384 MiB")
        self.assertRegex(out, r"follow +[\d.]+ ms +arrived")
        self.assertRegex(out, r"101 +cache-server +lru-cache,arena +[\d.]+ MiB +192 MiB")
        self.assertNotIn("\r", out)  # no progress bar when stdout is not a terminal
        self.assertEqual(p.stderr, "")
        self.assertEqual([a["deadline_ms"] for _, c, a in self.agent.log if c == "shrinkd-prepare"], [1500])

    def test_bare_number_is_kib(self):
        p = self.vs("setmem", "393216", "--json")
        self.assertExit(p, EXIT_OK)
        self.assertEqual(json.loads(p.stdout)["asked_bytes"], 384 * MiB)

    def test_balloon_stalls_partial(self):
        self.qmp.stall_at = 700 * MiB
        p = self.vs("setmem", "384M", "--timeout", "1", "--json")
        self.assertExit(p, EXIT_PARTIAL)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "partial")
        self.assertEqual(r["exit_status"], 2)
        self.assertEqual(r["reached_bytes"], 700 * MiB)
        self.assertGreaterEqual(r["phases_us"]["follow"], 1000000)
        self.assertLess(p.elapsed, 5)
        p = self.vs("setmem", "384M", "--timeout", "0.5")
        self.assertExit(p, EXIT_PARTIAL)
        self.assertIn("PARTIAL: the balloon is at 700 MiB", p.stdout)

    def test_growing_does_not_ask_the_agent(self):
        self.qmp.actual, self.qmp.target = 512.0 * MiB, 512 * MiB
        p = self.vs("setmem", "1G", "--json")
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertFalse(r["agent"]["used"])
        self.assertIn("does not shrink", r["agent"]["note"])
        self.assertEqual(self.agent.connections, 0)

    def test_above_maximum_fails_before_anything(self):
        p = self.vs("setmem", "2G")
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("above the maximum memory", p.stderr)
        self.assertEqual(self.qmp.when("balloon"), [])
        self.assertEqual(self.agent.connections, 0)

    def test_paused_guest_warns(self):
        self.qmp.status = "paused"
        self.qmp.rate = 0
        p = self.vs("setmem", "384M", "--timeout", "0.3", "--no-agent")
        self.assertExit(p, EXIT_PARTIAL)
        self.assertIn("is paused", p.stderr)

    def test_verbose_logs_commands_not_guest_answers(self):
        p = self.vs("-v", "setmem", "384M", "--json")
        self.assertExit(p, EXIT_OK)
        self.assertIn('-> 0xFF {"execute":"guest-sync-delimited"', p.stderr)
        self.assertIn("<- shrinkd-prepare answered in", p.stderr)
        self.assertIn('-> {"execute":"balloon","arguments":{"value":402653184}', p.stderr)
        self.assertNotIn("cache-server", p.stderr)  # the guest's text stays out of the log

    def test_no_events_needed_and_events_skipped(self):
        self.qmp.events = False
        self.assertExit(self.vs("setmem", "512M"), EXIT_OK)


class NoAgent(Base):
    def test_missing_channel_socket_reactive_path(self):
        missing = os.path.join(self.dir, "nothing-here.sock")
        p = self.vs("setmem", "384M", channel=missing)
        self.assertExit(p, EXIT_OK)
        self.assertIn("warning: no guest agent: cannot connect to the guest agent channel at %s" % missing,
                      p.stderr)
        self.assertIn("is shrinkd running in the guest?", p.stderr)
        self.assertIn("reactive path", p.stderr)
        self.assertEqual(len(self.qmp.when("balloon")), 1)

    def test_no_channel_option(self):
        p = self.vs("setmem", "384M", "--json", channel=False)
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertFalse(r["agent"]["used"])
        self.assertIn("--channel", r["agent"]["note"])
        self.assertEqual(len(r["warnings"]), 1)

    def test_silent_agent_times_out_quickly(self):
        self.agent.silent = True
        p = self.vs("setmem", "384M", "--agent-timeout", "300")
        self.assertExit(p, EXIT_OK)
        self.assertIn("no answer to guest-sync-delimited within 300 ms", p.stderr)
        self.assertLess(p.elapsed, 3)
        self.assertEqual(len(self.qmp.when("balloon")), 1)

    def test_no_agent_flag_never_connects(self):
        p = self.vs("setmem", "384M", "--no-agent")
        self.assertExit(p, EXIT_OK)
        self.assertEqual(self.agent.connections, 0)
        self.assertEqual(p.stderr, "")
        self.assertIn("not asked (--no-agent)", p.stdout)

    def test_require_agent_fails_and_leaves_the_balloon(self):
        self.agent.silent = True
        p = self.vs("setmem", "384M", "--require-agent", "--agent-timeout", "200")
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("did not prepare (--require-agent)", p.stderr)
        self.assertEqual(self.qmp.when("balloon"), [])

    def test_prepare_error_class_is_reported(self):
        self.agent.prepare_error = ("Busy", "a round is running and the queue is full")
        p = self.vs("setmem", "384M")
        self.assertExit(p, EXIT_OK)
        self.assertIn("could not prepare: a round is running and the queue is full (Busy)",
                      p.stderr)
        self.assertEqual(len(self.qmp.when("balloon")), 1)

    def test_prepare_not_found_on_an_older_agent(self):
        self.agent.prepare_error = ("CommandNotFound", "The command shrinkd-prepare has not been found")
        p = self.vs("setmem", "384M", "--require-agent")
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("(CommandNotFound)", p.stderr)
        self.assertEqual(self.qmp.when("balloon"), [])

    def test_prepare_is_bounded_by_deadline_plus_margin(self):
        self.agent.prepare_delay = 4.0
        p = self.vs("setmem", "384M", "--deadline", "200", "--json")
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertIn("no answer from the guest agent within 2200 ms", r["agent"]["note"])
        self.assertLess(p.elapsed, 3.8)
        self.assertGreaterEqual(r["phases_us"]["prepare"], 2200000)

    def test_agent_closing_the_channel(self):
        self.agent.close_on = "shrinkd-prepare"
        p = self.vs("setmem", "384M")
        self.assertExit(p, EXIT_OK)
        self.assertIn("closed the connection", p.stderr)


class Resync(Base):
    def test_stale_bytes_before_the_sync(self):
        # An earlier client's half answer, junk, and a stale sync answer.
        self.agent.junk_on_connect = (b'{"return": {"half": ' + b"\x00garbage\xff" +
                                      b'{"return": 12345}\n' + b"more junk }}}")
        p = self.vs("setmem", "384M", "--json")
        self.assertExit(p, EXIT_OK)
        self.assertTrue(json.loads(p.stdout)["agent"]["used"])

    def test_status_after_junk(self):
        self.agent.junk_on_connect = b"\xff\xff not json at all {{{{ \xff"
        p = self.vs("status", "--json")
        self.assertExit(p, EXIT_OK)
        self.assertEqual(json.loads(p.stdout)["version"], "0.1.0-fake")


class Status(Base):
    def test_human_table(self):
        self.agent._new_round("hard", 64 * MiB)
        p = self.vs("status")
        self.assertExit(p, EXIT_OK)
        out = p.stdout
        self.assertIn("QEMU at %s: running, balloon 1 GiB of 1 GiB" % self.qmp_path, out)
        self.assertIn("shrinkd 0.1.0-fake in the guest, pid 77, up 1h02m03s", out)
        self.assertRegex(out, r"PID +CLIENT +SHRINKER +PRIO +ESTIMATE")
        self.assertRegex(out, r"101 +cache-server +lru-cache +0 +64 MiB")
        self.assertRegex(out, r"101 +cache-server +arena +10 +-")
        self.assertRegex(out, r"202 +osv-style +osv-heap")
        self.assertRegex(out, r"#1 +hard +host +target +64 MiB")

    def test_json(self):
        p = self.vs("status", "--json")
        self.assertExit(p, EXIT_OK)
        st = json.loads(p.stdout)
        self.assertEqual([c["name"] for c in st["clients"]], ["cache-server", "osv-style"])
        self.assertEqual(st["host_balloon"], {"state": "running", "actual_bytes": 1024 * MiB,
                                              "max_bytes": 1024 * MiB})

    def test_without_agent(self):
        self.agent.silent = True
        p = self.vs("status", "--agent-timeout", "200")
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("balloon 1 GiB", p.stdout)
        self.assertIn("cannot connect to the guest agent channel", p.stderr)
        p = self.vs("status", "--json", "--agent-timeout", "200")
        self.assertExit(p, EXIT_FAILED)
        st = json.loads(p.stdout)
        self.assertIn("no answer to guest-sync-delimited", st["agent_error"])
        self.assertEqual(st["host_balloon"]["actual_bytes"], 1024 * MiB)

    def test_no_agent_flag(self):
        p = self.vs("status", "--no-agent", "--json")
        self.assertExit(p, EXIT_OK)
        self.assertEqual(self.agent.connections, 0)


class Watch(Base):
    def test_lines_per_change_until_interrupted(self):
        self.qmp.rate = 1024 * MiB
        w = subprocess.Popen([VIRT_SHRINK, "--qmp", self.qmp_path, "--channel", self.chan_path,
                              "watch", "--interval", "50"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []

        def wait_for(pattern, timeout=10):
            import re
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                r, _, _ = select.select([w.stdout], [], [], 0.2)
                if r:
                    line = w.stdout.readline()
                    lines.append(line)
                    if re.search(pattern, line):
                        return line
            self.fail("no line matching %r in %r" % (pattern, lines))

        try:
            wait_for(r"^\d\d:\d\d:\d\d\.\d{3} balloon 1 GiB of 1 GiB$")
            wait_for(r"agent: shrinkd 0\.1\.0-fake, 2 clients, 3 shrinkers")
            self.qmp.set_target(768 * MiB)
            wait_for(r"balloon [\d.]+ (MiB|GiB) -> [\d.]+ MiB")
            wait_for(r"balloon [\d.]+ (MiB|GiB) -> 768 MiB$")
            self.agent._new_round("soft", 32 * MiB)
            wait_for(r"round 1 soft host: target 32 MiB, claimed 192 MiB")
            self.agent.silent = True
            wait_for(r"agent: unreachable: .*no answer to guest-sync-delimited")
            self.agent.silent = False
            wait_for(r"agent: shrinkd 0\.1\.0-fake")
            w.send_signal(signal.SIGINT)
            self.assertEqual(w.wait(5), 0)
        finally:
            if w.poll() is None:
                w.kill()
                w.wait()
            w.stdout.close()
            w.stderr.close()

    def test_setmem_reaches_the_agent_while_watching(self):
        # QEMU serves one client per channel socket: the watch must let go
        # between polls. libvirt's test driver leaves QMP free for setmem.
        xml = write_test_node(self.dir, self.chan_path)
        w = subprocess.Popen([VIRT_SHRINK, "-c", "test://" + xml, "watch", "shrinkd-fake",
                              "--interval", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            for _ in range(3):
                p = run(["-c", "test://" + xml, "setmem", "shrinkd-fake", "384M", "--require-agent"])
                self.assertExit(p, EXIT_OK)
        finally:
            w.send_signal(signal.SIGINT)
            w.wait(5)
            w.stdout.close()
            w.stderr.close()


class QmpMigrate(Base):
    """migrate over plain QEMU: the agent's soft round, then QMP migrate,
    followed with query-migrate to its end."""

    def migrate(self, *args, **kw):
        return self.vs("migrate", "tcp:dest:4444", *args, **kw)

    def prepare_args(self):
        return [a for _, c, a in self.agent.log if c == "shrinkd-prepare-migration"]

    def test_soft_round_then_migration_completes(self):
        p = self.migrate("--json")
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "completed")
        self.assertEqual(r["exit_status"], 0)
        self.assertIsNone(r["error"])
        self.assertEqual(r["destination"], "tcp:dest:4444")
        self.assertEqual(r["guest"], self.qmp_path)
        m = r["migration"]
        self.assertEqual(m["status"], "completed")
        self.assertEqual(m["hypervisor_status"], "completed")
        self.assertEqual(m["transferred_bytes"], 1027 * MiB)
        self.assertEqual(m["remaining_bytes"], 0)
        self.assertEqual(m["total_bytes"], 1024 * MiB)
        self.assertEqual(m["rate_bytes_per_s"], 2048 * MiB)
        self.assertEqual(m["downtime_ms"], 37)
        self.assertIsNone(m["expected_downtime_ms"])
        self.assertEqual(m["setup_time_ms"], 100)
        self.assertGreaterEqual(m["total_time_ms"], 600)
        self.assertFalse(m["cancelled_by_us"])
        # The agent was asked once, with the default deadline, and answered
        # before QEMU was told to migrate.
        self.assertEqual(self.prepare_args(), [{"deadline_ms": 3000}])
        self.assertTrue(r["agent"]["used"])
        rounds = r["agent"]["prepare"]["rounds"]
        self.assertEqual([(x["level"], x["reason"]) for x in rounds], [("soft", "migration")])
        answered = [s for s, c in self.agent.answers if c == "shrinkd-prepare-migration"]
        self.assertLess(answered[0], self.qmp.when("migrate")[0])
        self.assertEqual([a for _, c, a in self.qmp.log if c == "migrate"],
                         [{"uri": "tcp:dest:4444"}])
        self.assertNotIn("migrate-set-parameters", self.qmp.commands())
        self.assertNotIn("migrate_cancel", self.qmp.commands())
        self.assertGreaterEqual(self.qmp.commands().count("query-migrate"), 2)
        apps = {a["client"]: a for a in r["applications"]}
        self.assertEqual(set(apps), {"cache-server", "osv-style"})
        self.assertEqual(apps["cache-server"]["freed_bytes"], 96 * MiB)
        self.assertEqual(r["warnings"], [])
        for phase in ("prepare", "migrate", "total"):
            self.assertIsInstance(r["phases_us"][phase], int)
        self.assertEqual(set(r), {"guest", "destination", "result", "exit_status", "error",
                                  "migration", "phases_us", "agent", "applications", "warnings"})

    def test_human_report(self):
        p = self.migrate("--deadline", "1500", "--fraction", "50")
        self.assertExit(p, EXIT_OK)
        out = p.stdout
        self.assertIn("QEMU at %s: migrated to tcp:dest:4444 in " % self.qmp_path, out)
        self.assertRegex(out, r"prepare +[\d.]+ ms +the guest freed 192 MiB \(measured 191 MiB; "
                              r"available 200 MiB -> 392 MiB; 1 round; ready\)")
        self.assertRegex(out, r"migrate +[\d.]+ ms +completed: sent 1\.00 GiB, left 0 B, at "
                              r"2 GiB/s; total \d+ ms, setup 100 ms, downtime 37 ms\n")
        self.assertRegex(out, r"101 +cache-server +lru-cache,arena +[\d.]+ MiB +96 MiB +0 of 2")
        self.assertNotIn("\r", out)  # no progress bar when stdout is not a terminal
        self.assertEqual(p.stderr, "")
        self.assertEqual(self.prepare_args(), [{"deadline_ms": 1500, "fraction_pct": 50}])

    def test_bandwidth_is_set_before_the_migration(self):
        self.qmp.mig_rate = 4096 * MiB
        p = self.migrate("--bandwidth", "512", "--json")
        self.assertExit(p, EXIT_OK)
        cmds = self.qmp.commands()
        self.assertLess(cmds.index("migrate-set-parameters"), cmds.index("migrate"))
        self.assertEqual([a for _, c, a in self.qmp.log if c == "migrate-set-parameters"],
                         [{"max-bandwidth": 512 * MiB}])
        # The fake QEMU obeys it: 1 GiB at 512 MiB/s.
        r = json.loads(p.stdout)
        self.assertEqual(r["migration"]["rate_bytes_per_s"], 512 * MiB)
        self.assertGreaterEqual(r["migration"]["total_time_ms"], 2000)

    def test_agent_absent_the_migration_still_runs(self):
        missing = os.path.join(self.dir, "nothing-here.sock")
        p = self.migrate(channel=missing)
        self.assertExit(p, EXIT_OK)
        self.assertIn("warning: no guest agent: cannot connect to the guest agent channel at %s"
                      % missing, p.stderr)
        self.assertIn("migrating without a soft round first", p.stderr)
        self.assertIn("migrated to tcp:dest:4444", p.stdout)
        self.assertEqual(len(self.qmp.when("migrate")), 1)

    def test_no_channel_option(self):
        p = self.migrate("--json", channel=False)
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertFalse(r["agent"]["used"])
        self.assertIn("--channel", r["agent"]["note"])
        self.assertEqual(len(r["warnings"]), 1)
        self.assertEqual(r["applications"], [])

    def test_silent_agent_is_waited_for_a_bounded_time(self):
        self.agent.silent = True
        p = self.migrate("--agent-timeout", "300")
        self.assertExit(p, EXIT_OK)
        self.assertIn("no answer to guest-sync-delimited within 300 ms", p.stderr)
        self.assertLess(p.elapsed, 4)
        self.assertEqual(len(self.qmp.when("migrate")), 1)

    def test_agent_error_migrates_anyway(self):
        self.agent.migration_error = ("Busy", "a round is running and the queue is full")
        p = self.migrate("--json")
        self.assertExit(p, EXIT_OK)
        self.assertIn("warning: the guest agent could not prepare the migration: a round is "
                      "running and the queue is full (Busy); migrating anyway", p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "completed")
        self.assertIn("(Busy)", r["agent"]["note"])
        self.assertEqual(len(self.qmp.when("migrate")), 1)

    def test_slow_agent_is_bounded_by_deadline_plus_margin(self):
        self.agent.migration_delay = 4.0
        p = self.migrate("--deadline", "200", "--json")
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertIn("no answer from the guest agent within 2200 ms", r["agent"]["note"])
        self.assertGreaterEqual(r["phases_us"]["prepare"], 2200000)
        self.assertLess(p.elapsed, 3.9)

    def test_require_agent(self):
        # An agent without the command (an older shrinkd): nothing migrates.
        self.agent.migration_error = ("CommandNotFound",
                                      "The command shrinkd-prepare-migration has not been found")
        p = self.migrate("--require-agent", "--json")
        self.assertExit(p, EXIT_FAILED)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "failed")
        self.assertIsNone(r["migration"])
        self.assertIn("did not prepare the migration (--require-agent)", p.stderr)
        self.assertIn("(CommandNotFound)", p.stderr)
        self.assertEqual(self.qmp.when("migrate"), [])
        # No agent at all: the same.
        self.agent.silent = True
        p = self.migrate("--require-agent", "--agent-timeout", "200")
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("did not prepare the migration (--require-agent)", p.stderr)
        self.assertEqual(self.qmp.when("migrate"), [])
        # With one, it migrates.
        self.agent.silent = False
        self.agent.migration_error = None
        self.assertExit(self.migrate("--require-agent"), EXIT_OK)

    def test_no_agent_flag_never_connects(self):
        p = self.migrate("--no-agent")
        self.assertExit(p, EXIT_OK)
        self.assertEqual(self.agent.connections, 0)
        self.assertEqual(p.stderr, "")
        self.assertIn("not asked (--no-agent)", p.stdout)

    def test_migration_fails(self):
        self.qmp.mig_fail_after = 0.2
        p = self.migrate("--json")
        self.assertExit(p, EXIT_FAILED)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "failed")
        self.assertEqual(r["exit_status"], 1)
        self.assertEqual(r["migration"]["status"], "failed")
        self.assertEqual(r["migration"]["error"],
                         "Unable to write to socket: Connection reset by peer")
        self.assertIn("virt-shrink: the migration failed: Unable to write to socket: Connection "
                      "reset by peer", p.stderr)
        self.assertNotIn("migrate_cancel", self.qmp.commands())
        p = self.migrate()
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("migration to tcp:dest:4444 FAILED after", p.stdout)

    def test_start_refused(self):
        self.qmp.mig_start_error = ("GenericError", "Failed to connect socket: Connection refused")
        p = self.migrate()
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("virt-shrink: cannot start the migration: QMP migrate: Failed to connect "
                      "socket: Connection refused (GenericError)", p.stderr)
        self.assertIn("not started", p.stdout)
        self.assertNotIn("query-migrate", self.qmp.commands())

    def test_timeout_cancels(self):
        self.qmp.mig_converges = False
        p = self.migrate("--timeout", "0.5", "--json")
        self.assertExit(p, EXIT_TIMEOUT)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "timeout")
        self.assertEqual(r["exit_status"], 4)
        self.assertEqual(r["migration"]["status"], "cancelled")
        self.assertTrue(r["migration"]["cancelled_by_us"])
        self.assertIn("not done after 0.5 s (--timeout) and was cancelled", p.stderr)
        cancel = self.qmp.times("migrate_cancel")
        self.assertEqual(len(cancel), 1)
        self.assertAlmostEqual(cancel[0] - self.qmp.times("migrate")[0], 0.5, delta=0.25)
        self.assertLess(p.elapsed, 4)

    def test_interrupt_cancels(self):
        self.qmp.mig_converges = False
        w = subprocess.Popen([VIRT_SHRINK, "--qmp", self.qmp_path, "--channel", self.chan_path,
                              "migrate", "tcp:dest:4444", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.wait_for_queries(2)
            w.send_signal(signal.SIGINT)
            out, err = w.communicate(timeout=10)
        finally:
            if w.poll() is None:
                w.kill()
                w.communicate()
        self.assertEqual(w.returncode, EXIT_CANCELLED, err)
        self.assertEqual(len(self.qmp.when("migrate_cancel")), 1)
        r = json.loads(out)
        self.assertEqual(r["result"], "cancelled")
        self.assertTrue(r["migration"]["cancelled_by_us"])
        self.assertIn("interrupted: the migration was cancelled", err)

    def test_cancelled_by_another_client(self):
        self.qmp.mig_converges = False
        w = subprocess.Popen([VIRT_SHRINK, "--qmp", self.qmp_path, "migrate", "tcp:dest:4444"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.wait_for_queries(2)
            self.qmp.cancel_migration()
            out, err = w.communicate(timeout=10)
        finally:
            if w.poll() is None:
                w.kill()
                w.communicate()
        self.assertEqual(w.returncode, EXIT_CANCELLED, err)
        self.assertEqual(self.qmp.when("migrate_cancel"), [])
        self.assertIn("CANCELLED after", out)
        self.assertIn("cancelled (not by virt-shrink)", err)

    def wait_for_queries(self, n, timeout=10):
        end = time.monotonic() + timeout
        while len(self.qmp.when("query-migrate")) < n:
            self.assertLess(time.monotonic(), end, "no query-migrate")
            time.sleep(0.02)

    def test_progress_bar_on_a_terminal(self):
        self.qmp.mig_rate = 1024 * MiB
        text = run_on_pty([VIRT_SHRINK, "--qmp", self.qmp_path, "--channel", self.chan_path,
                           "migrate", "tcp:dest:4444"])
        self.assertIn("\r[", text)
        self.assertRegex(text, r"\[#*-*\] +\d+%  sent [\d.]+ [KMG]?i?B, left [\d.]+ [KMG]?i?B, "
                               r"[\d.]+ [KMG]?i?B/s  [\d.]+ s  active")
        self.assertIn("100%", text)
        self.assertIn("migrated to tcp:dest:4444", text)

    def test_usage_errors(self):
        for args, why in [(["migrate"], "migrate needs a URI"),
                          (["migrate", "tcp:x:1", "extra"], "unexpected argument"),
                          (["migrate", "tcp:x:1", "--xml", "f"], "--xml goes with libvirt"),
                          (["migrate", "tcp:x:1", "--migrateuri", "tcp://x"], "goes with libvirt"),
                          (["migrate", "tcp:x:1", "--persistent"], "goes with libvirt"),
                          (["migrate", "tcp:x:1", "--undefinesource"], "goes with libvirt"),
                          (["migrate", "tcp:x:1", "--bandwidth", "0"], "--bandwidth"),
                          (["migrate", "tcp:x:1", "--fraction", "101"], "--fraction"),
                          (["migrate", "tcp:x:1", "--interval", "100"], "--interval goes with watch"),
                          (["migrate", "tcp:x:1", "--no-agent", "--require-agent"], "exclude"),
                          (["setmem", "1G", "--bandwidth", "10"], "--bandwidth goes with migrate"),
                          (["setmem", "1G", "--fraction", "10"], "--fraction goes with migrate"),
                          (["prepare-migration", "--no-agent"], "--no-agent goes with"),
                          (["prepare-migration", "--timeout", "3"], "--timeout goes with"),
                          (["prepare-migration", "x"], "unexpected argument")]:
            p = self.vs(*args)
            self.assertExit(p, EXIT_USAGE)
            self.assertIn(why, p.stderr, args)
        self.assertEqual(self.qmp.connections, 0)
        self.assertEqual(self.agent.connections, 0)


class PrepareMigration(Base):
    def test_json(self):
        p = self.vs("prepare-migration", "--json", "--fraction", "25")
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "prepared")
        self.assertEqual(r["exit_status"], 0)
        self.assertTrue(r["agent"]["used"])
        prep = r["agent"]["prepare"]
        self.assertEqual(prep["target_bytes"], 48 * MiB)
        self.assertTrue(prep["ready"])
        self.assertEqual(len(prep["rounds"]), 1)
        self.assertEqual(set(r["phases_us"]), {"prepare", "total"})
        self.assertNotIn("migration", r)
        self.assertNotIn("destination", r)
        self.assertEqual(len(r["applications"]), 2)
        self.assertEqual([a for _, c, a in self.agent.log if c == "shrinkd-prepare-migration"],
                         [{"deadline_ms": 3000, "fraction_pct": 25}])
        # Nothing was migrated.
        self.assertNotIn("migrate", self.qmp.commands())

    def test_human_report(self):
        p = self.vs("prepare-migration")
        self.assertExit(p, EXIT_OK)
        self.assertIn("QEMU at %s: the guest agent prepared for a migration in" % self.qmp_path,
                      p.stdout)
        self.assertRegex(p.stdout, r"prepare +[\d.]+ ms +the guest freed 192 MiB")
        self.assertRegex(p.stdout, r"202 +osv-style +osv-heap")
        self.assertEqual(p.stderr, "")

    def test_without_agent(self):
        self.agent.silent = True
        p = self.vs("prepare-migration", "--agent-timeout", "200")
        self.assertExit(p, EXIT_FAILED)
        self.assertEqual(p.stdout, "")
        self.assertIn("virt-shrink: the guest agent did not prepare the migration: cannot connect "
                      "to the guest agent channel", p.stderr)
        p = self.vs("prepare-migration", "--json", channel=False)
        self.assertExit(p, EXIT_FAILED)
        r = json.loads(p.stdout)
        self.assertEqual(r["result"], "failed")
        self.assertIn("--channel", r["agent"]["note"])

    def test_agent_error(self):
        self.agent.migration_error = ("InvalidParameter", "argument 'fraction_pct' must be 1..100")
        p = self.vs("prepare-migration")
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("argument 'fraction_pct' must be 1..100 (InvalidParameter)", p.stderr)


def run_on_pty(argv):
    """Runs @argv with its stdout on a terminal; returns what it wrote
    there, after checking that it exited 0."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    while True:
        try:
            r, _, _ = select.select([master], [], [], 10)
            if not r:
                break
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    rc = p.wait(10)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert rc == 0, (rc, err)
    return out.decode()


def write_test_node(directory, channel_path, name="shrinkd-fake"):
    """A libvirt test-driver node file: one running domain of 1 GiB with our
    channel on @channel_path."""
    path = os.path.join(directory, "node.xml")
    with open(path, "w") as f:
        f.write("""<node>
  <domain type='test'>
    <name>%s</name>
    <uuid>6f1b7c2e-5d3a-4c1e-9b8f-2a4d6e8f0a1c</uuid>
    <memory unit='MiB'>1024</memory>
    <currentMemory unit='MiB'>1024</currentMemory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <channel type='unix'>
        <source mode='bind' path='%s'/>
        <target type='virtio' name='org.qemu.guest_agent.0'/>
      </channel>
      <channel type='unix'>
        <source mode='bind' path='%s'/>
        <target type='virtio' name='org.shrinkd.agent.0'/>
      </channel>
      <memballoon model='virtio'/>
    </devices>
  </domain>
</node>
""" % (name, os.path.join(directory, "qga.sock"), channel_path))
    return path


class LibvirtTestDriver(Base):
    """The libvirt backend through libvirt's in-process test driver: the
    domain lookup (name, ID, UUID), the channel path from the live XML,
    virDomainSetMemoryFlags and virDomainMemoryStats."""

    def setUp(self):
        super().setUp()
        self.uri = "test://" + write_test_node(self.dir, self.chan_path)

    def test_setmem_by_name_id_and_uuid(self):
        for i, dom in enumerate(["shrinkd-fake", "1", "6f1b7c2e-5d3a-4c1e-9b8f-2a4d6e8f0a1c"]):
            p = run(["-c", self.uri, "setmem", dom, str(512 - 64 * i) + "M", "--json"])
            self.assertExit(p, EXIT_OK)
            r = json.loads(p.stdout)
            self.assertEqual(r["guest"], "shrinkd-fake")
            self.assertTrue(r["agent"]["used"], r)
            self.assertEqual(r["reached_bytes"], (512 - 64 * i) * MiB)
        self.assertEqual([a["new_size_bytes"] for _, c, a in self.agent.log if c == "shrinkd-prepare"],
                         [512 * MiB, 448 * MiB, 384 * MiB])

    def test_default_uri_from_environment(self):
        env = dict(os.environ, LIBVIRT_DEFAULT_URI=self.uri)
        p = run(["status", "shrinkd-fake"], env=env)
        self.assertExit(p, EXIT_OK)
        self.assertIn("domain 'shrinkd-fake': running, balloon 1 GiB of 1 GiB", p.stdout)
        self.assertRegex(p.stdout, r"202 +osv-style +osv-heap")

    def test_unknown_domain(self):
        p = run(["-c", self.uri, "setmem", "nope", "1G"])
        self.assertExit(p, EXIT_FAILED)
        self.assertEqual(p.stderr, "virt-shrink: domain 'nope' not found\n")

    def test_bad_uri(self):
        p = run(["-c", "bogus:///nothing", "status", "x"])
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("cannot connect to the hypervisor at 'bogus:///nothing'", p.stderr)

    def test_domain_without_our_channel(self):
        p = run(["-c", "test:///default", "setmem", "test", "1G", "--json"])
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertIn("no channel org.shrinkd.agent.0 in the domain XML", r["agent"]["note"])
        self.assertIn("reactive path", p.stderr)

    def test_above_maximum(self):
        p = run(["-c", self.uri, "setmem", "shrinkd-fake", "2G"])
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("above the maximum memory of domain 'shrinkd-fake'", p.stderr)


class LibvirtMigrate(Base):
    """migrate and prepare-migration over libvirt's test driver: the agent
    from the domain's channel, then virDomainMigrateToURI3 in its thread,
    which the test driver refuses (it has no peer-to-peer migration)."""

    def setUp(self):
        super().setUp()
        self.uri = "test://" + write_test_node(self.dir, self.chan_path)

    def test_prepare_migration(self):
        p = run(["-c", self.uri, "prepare-migration", "shrinkd-fake", "--json"])
        self.assertExit(p, EXIT_OK)
        r = json.loads(p.stdout)
        self.assertEqual(r["guest"], "shrinkd-fake")
        self.assertEqual(r["result"], "prepared")
        self.assertEqual(r["agent"]["prepare"]["rounds"][0]["reason"], "migration")

    def test_migrate_refused_by_the_driver_after_the_soft_round(self):
        p = run(["-c", self.uri, "migrate", "shrinkd-fake", "qemu+ssh://dest/system", "--json",
                 "--bandwidth", "100", "--persistent", "--undefinesource",
                 "--migrateuri", "tcp://10.0.0.2"])
        self.assertExit(p, EXIT_FAILED)
        r = json.loads(p.stdout)
        self.assertTrue(r["agent"]["used"])
        self.assertEqual(r["destination"], "qemu+ssh://dest/system")
        self.assertEqual(r["result"], "failed")
        self.assertEqual(r["migration"]["status"], "failed")
        self.assertIn("migration is not supported", r["migration"]["error"])
        self.assertIn("virt-shrink: the migration failed: ", p.stderr)
        self.assertIn("migration is not supported", p.stderr)
        self.assertEqual([c for c in self.agent.commands() if c.startswith("shrinkd")],
                         ["shrinkd-prepare-migration"])

    def test_xml_file_is_read(self):
        p = run(["-c", self.uri, "migrate", "shrinkd-fake", "qemu:///x", "--no-agent",
                 "--xml", os.path.join(self.dir, "missing.xml")])
        self.assertExit(p, EXIT_FAILED)
        self.assertIn("virt-shrink: --xml: ", p.stderr)
        self.assertIn("missing.xml", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_usage(self):
        p = run(["-c", self.uri, "migrate", "shrinkd-fake"])
        self.assertExit(p, EXIT_USAGE)
        self.assertIn("migrate needs a DESTURI", p.stderr)


class ProgressBar(Base):
    def test_bar_on_a_terminal(self):
        self.qmp.rate = 768 * MiB
        text = run_on_pty([VIRT_SHRINK, "--qmp", self.qmp_path, "--channel", self.chan_path,
                           "setmem", "384M"])
        self.assertIn("\r[", text)
        self.assertRegex(text, r"\[#+-*\] +\d+%  1 GiB -> 384 MiB, now ")
        self.assertIn("100%", text)
        self.assertIn("reached 384 MiB", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
