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
from fake_channel_agent import FakeChannelAgent, FakeUnixServer  # noqa: E402

BUILD = os.environ.get("SHRINKD_BUILD_DIR",
                       os.path.join(os.path.dirname(__file__), "..", "..", "build"))
VIRT_SHRINK = os.path.join(BUILD, "host-tools", "virt-shrink")
MiB = 1 << 20
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2, 64


class FakeQmp(FakeUnixServer):
    """QEMU's QMP socket, one client at a time, with a balloon that moves
    towards its target at `rate` bytes/s and cannot inflate below
    `stall_at` (memory the guest's applications hold)."""

    def __init__(self, path, base=1024 * MiB):
        self.base = base
        self.actual = float(base)
        self.target = base
        self.rate = 4096 * MiB
        self.stall_at = None
        self.status = "running"
        self.events = True
        self.log = []  # (monotonic time, command, arguments)
        self._t = time.monotonic()
        super().__init__(path)

    def commands(self):
        with self._lock:
            return [c for _, c, _ in self.log]

    def when(self, command):
        with self._lock:
            return [t for t, c, _ in self.log if c == command]

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
                    self.log.append((time.monotonic(), cmd, args))
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
        self.qmp = FakeQmp(self.qmp_path)
        self.agent = FakeChannelAgent(self.chan_path)

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
                     "--no-agent", "KiB", "Exit status", "64"):
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
                          (["status", "d", "--deadline", "5"], "go with setmem"),
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
        answered = [t for t, c in self.agent.answers if c == "shrinkd-prepare"]
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


class ProgressBar(Base):
    def test_bar_on_a_terminal(self):
        self.qmp.rate = 768 * MiB
        master, slave = pty.openpty()
        p = subprocess.Popen([VIRT_SHRINK, "--qmp", self.qmp_path, "--channel", self.chan_path,
                              "setmem", "384M"], stdout=slave, stderr=subprocess.PIPE)
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
        self.assertEqual(p.wait(10), 0)
        p.stderr.close()
        text = out.decode()
        self.assertIn("\r[", text)
        self.assertRegex(text, r"\[#+-*\] +\d+%  1 GiB -> 384 MiB, now ")
        self.assertIn("100%", text)
        self.assertIn("reached 384 MiB", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
