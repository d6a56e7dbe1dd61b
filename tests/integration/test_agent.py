#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""shrinkd with real client processes on a temporary socket: issue 2's
integration acceptance items, one test each."""
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shrinkdtest import (Agent, Fixture, MiB, Process, RawClient, ERROR, binary, registered_pids,
                         skip_if_sanitized,
                         rss_kib, wait_until)


class RoundTests(Fixture):
    def test_osv_style_program_gets_hard_request_and_freed_bytes_are_reported(self):
        osv = self.start_example("shrink-example-osv", "--mib", "64")
        self.wait_registered(osv.pid)
        report = self.shrink("32M", hard=True)
        mine = [r for r in report["requests"] if r["pid"] == osv.pid]
        self.assertTrue(mine, "the OSv-style program was not asked: %s" % report)
        hard = [r for r in mine if r["level"] == "hard"]
        self.assertTrue(hard, "the OSv-style program was never asked hard: %s" % mine)
        freed = sum(r["freed_bytes"] for r in mine)
        self.assertGreater(freed, 0)
        # What the program says it freed is what the agent reports.
        events = osv.wait_line(r"kind=shrink .*level=hard", 5) and osv.events("shrink")
        self.assertEqual(freed, sum(int(e["freed"]) for e in events))
        self.assertEqual(report["claimed_bytes"], sum(r["freed_bytes"] for r in report["requests"]))

    def test_cxx_example_is_called_through_request_memory(self):
        cxx = self.start_example("shrink-example-cxx", "--mib", "32")
        self.wait_registered(cxx.pid, 2)
        report = self.shrink("16M", hard=True)
        self.assertTrue([r for r in report["requests"] if r["pid"] == cxx.pid and r["freed_bytes"] > 0])
        kinds = {e.get("shrinker") for e in cxx.events("shrink")}
        self.assertGreaterEqual(len(kinds), 1, cxx.lines[-10:])

    def test_soft_round_asks_soft_only(self):
        cache = self.start_example("shrink-example-cache", "--mib", "32")
        self.wait_registered(cache.pid)
        report = self.shrink("4M")
        self.assertEqual(report["level"], "soft")
        self.assertTrue(report["requests"])
        self.assertTrue(all(r["level"] == "soft" for r in report["requests"]), report["requests"])

    def test_hung_client_does_not_hold_the_round_past_its_deadline(self):
        cache = self.start_example("shrink-example-cache", "--mib", "32")
        hung = RawClient(self.sock, "hung")
        hung.register(1, "never-answers", estimate=64 * MiB)
        self.wait_registered(cache.pid)
        t0 = time.monotonic()
        report = self.shrink("16M", hard=True, deadline_ms=400)
        took = time.monotonic() - t0
        # 400 ms of deadline; the bound only guards against waiting forever.
        self.assertLess(took, 5.0)
        self.assertLessEqual(report["duration_us"], 400_000 + 300_000)
        theirs = [r for r in report["requests"] if r["pid"] == os.getpid()]
        self.assertTrue(theirs and all(r["missed"] for r in theirs), report["requests"])
        ours = [r for r in report["requests"] if r["pid"] == cache.pid]
        self.assertTrue(ours and sum(r["freed_bytes"] for r in ours) > 0)
        self.assertFalse(any(r["missed"] for r in ours))
        hung.close()

    def test_client_killed_mid_round_leaves_no_registration(self):
        cache = self.start_example("shrink-example-cache", "--mib", "16")
        sleeper = Process([sys.executable, os.path.join(os.path.dirname(__file__), "shrinkdtest.py"),
                           "sleeper", self.sock], name="sleeper")
        self.procs.append(sleeper)
        sleeper.wait_line("^READY", 10)
        self.wait_registered(sleeper.pid)
        self.wait_registered(cache.pid)
        result = {}

        def kill_when_asked():
            sleeper.wait_line("^GOT-SHRINK", 10)
            os.kill(sleeper.pid, signal.SIGKILL)

        import threading
        killer = threading.Thread(target=kill_when_asked)
        killer.start()
        t0 = time.monotonic()
        report = self.shrink("8M", hard=True, deadline_ms=20000)
        took = time.monotonic() - t0
        killer.join()
        # The round stopped waiting for the dead client long before its deadline.
        self.assertLess(took, 10.0)
        status = self.status()
        self.assertEqual(self.shrinkers_of(sleeper.pid, status), [])
        self.assertTrue(self.shrinkers_of(cache.pid, status))

    def test_garbage_client_is_disconnected_and_others_keep_working(self):
        cache = self.start_example("shrink-example-cache", "--mib", "16")
        self.wait_registered(cache.pid)
        bad = RawClient(self.sock, "garbage")
        bad.s.send(b"\x01\xff\x00\x00\x09\x00\x00\x00x")  # unknown type 255
        t, body = bad.recv(5)
        self.assertEqual(t, ERROR)
        t, body = bad.recv(5)
        self.assertIsNone(t, "the garbage client was not disconnected")
        # Raw bytes with no valid header, on a fresh connection.
        import socket as so
        s = so.socket(so.AF_UNIX, so.SOCK_SEQPACKET)
        s.connect(self.sock)
        s.send(os.urandom(3))
        s.settimeout(5)
        while s.recv(65536):
            pass
        s.close()
        bad.close()
        self.assertTrue(self.agent.alive())
        report = self.shrink("4M", hard=True)
        self.assertTrue([r for r in report["requests"] if r["pid"] == cache.pid and r["freed_bytes"] > 0])

    def test_non_root_user_cannot_trigger_a_round(self):
        if os.getuid() != 0:
            self.skipTest("needs root to switch to an unprivileged user (uid 65534)")
        cache = self.start_example("shrink-example-cache", "--mib", "8")
        self.wait_registered(cache.pid)

        def drop():
            os.setgid(65534)
            os.setuid(65534)

        r = self.shrinkctl("shrink", "4M", check=False, preexec_fn=drop)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("ermission", r.stdout + r.stderr)
        self.assertEqual(self.status()["rounds"], [])
        self.assertEqual(cache.events("shrink"), [])
        # Seeing other users' shrinkers is root's too.
        r = self.shrinkctl("status", "--json", check=False, preexec_fn=drop)
        self.assertEqual(r.returncode, 0, r.stderr)
        import json
        self.assertEqual(json.loads(r.stdout)["clients"], [])


class MemoryTests(Fixture):
    @skip_if_sanitized
    def test_cache_rss_falls_by_at_least_80_percent_of_what_it_reports(self):
        cache = self.start_example("shrink-example-cache", "--mib", "128")
        self.wait_registered(cache.pid)
        before = rss_kib(cache.pid) * 1024
        report = self.shrink("96M", hard=True)
        freed = sum(r["freed_bytes"] for r in report["requests"] if r["pid"] == cache.pid)
        after = rss_kib(cache.pid) * 1024
        print("\n    cache: RSS %d -> %d MiB, reported freed %d MiB, RSS fell by %.0f%% of it"
              % (before / MiB, after / MiB, freed / MiB, 100.0 * (before - after) / max(freed, 1)))
        self.assertGreater(freed, 64 * MiB)
        self.assertGreaterEqual(before - after, 0.8 * freed)


CAP_IPC_LOCK = 14
KEPT = 1 << CAP_IPC_LOCK  # what shrinkd keeps after start-up (agent/privileges.c)


def proc_status(pid):
    """The capability masks, NoNewPrivs and VmLck of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                out[key] = int(value.strip(), 16)
            elif key in ("NoNewPrivs", "VmLck"):
                out[key] = int(value.split()[0])
    return out


class RootFixture(Fixture):
    """A Fixture whose tests skip, saying why, when not run as root."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: an unprivileged shrinkd has no capabilities to give up")
        super().setUp()


class PrivilegeTests(RootFixture):
    """Issue 10 item 6: after start-up shrinkd keeps only the capabilities
    it uses (CAP_IPC_LOCK), sets no-new-privs, stays uid 0, says so in its
    status, and still works."""

    def test_daemon_keeps_only_cap_ipc_lock_and_sets_no_new_privs(self):
        mine = proc_status(os.getpid())
        # The socket exists before the drop; an answer comes from the main
        # loop, after it.
        priv = self.status().get("privileges")
        st = proc_status(self.agent.pid)
        print("\n    CapEff before %016x (what shrinkd started with: this test's), after %016x;"
              " CapPrm %016x CapBnd %016x CapInh %016x CapAmb %016x NoNewPrivs %s; status: %s"
              % (mine["CapEff"], st["CapEff"], st["CapPrm"], st["CapBnd"], st["CapInh"],
                 st["CapAmb"], st.get("NoNewPrivs"), priv))
        want = KEPT & mine["CapEff"]
        self.assertEqual(st["CapEff"], want, "CapEff %016x, want %016x" % (st["CapEff"], want))
        self.assertEqual(st["CapPrm"], want, "CapPrm %016x" % st["CapPrm"])
        self.assertEqual(st["CapBnd"], want, "CapBnd %016x" % st["CapBnd"])
        self.assertEqual(st["CapInh"], 0)
        self.assertEqual(st["CapAmb"], 0)
        self.assertEqual(st.get("NoNewPrivs"), 1)
        with open("/proc/%d/status" % self.agent.pid) as f:
            uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
        self.assertEqual(uids, ["0", "0", "0", "0"], "shrinkd stays uid 0")
        # The status says the same.
        self.assertIsInstance(priv, dict, "status has no \"privileges\"")
        self.assertEqual(priv["capabilities"], ["CAP_IPC_LOCK"])
        self.assertIs(priv["no_new_privs"], True)
        self.assertIs(priv["dropped"], True)
        self.assertEqual(int(priv["cap_eff"], 16), st["CapEff"])
        self.assertEqual(int(priv["cap_eff_at_start"], 16), mine["CapEff"])
        out = self.shrinkctl("status").stdout
        self.assertIn("privileges: CAP_IPC_LOCK (no-new-privs; CapEff %016x -> %016x)"
                      % (mine["CapEff"], st["CapEff"]), out)
        # Locked with the kept set (mlockall after the drop), and rounds work.
        # Not under AddressSanitizer (tools/test.sh sets SHRINKD_TEST_SANITIZED):
        # mlockall() cannot lock its terabytes of shadow mappings, and
        # shrinkd says so and runs unlocked.
        if os.environ.get("SHRINKD_TEST_SANITIZED"):
            print("\n    SKIP the VmLck check: sanitizer build (mlockall cannot lock ASan's shadow)")
        else:
            self.assertGreater(st.get("VmLck", 0), 0, "no memory locked")
        cache = self.start_example("shrink-example-cache", "--mib", "8")
        self.wait_registered(cache.pid)
        report = self.shrink("4M", hard=True)
        self.assertTrue([r for r in report["requests"] if r["pid"] == cache.pid and r["freed_bytes"] > 0])


class KeepPrivilegeTests(RootFixture):
    """--keep-privileges, the escape hatch for debugging: nothing dropped,
    and the status says so."""
    agent_args = Fixture.agent_args + ("--keep-privileges",)

    def test_keep_privileges_keeps_every_capability(self):
        mine = proc_status(os.getpid())
        priv = self.status()["privileges"]
        st = proc_status(self.agent.pid)
        self.assertEqual(st["CapEff"], mine["CapEff"])
        self.assertEqual(st.get("NoNewPrivs"), 0)
        self.assertIs(priv["dropped"], False)
        self.assertIs(priv["no_new_privs"], False)
        self.assertEqual(int(priv["cap_eff"], 16), mine["CapEff"])
        self.assertIn("--keep-privileges", priv["reason"])


class RestartTests(unittest.TestCase):
    def test_restart_makes_every_client_register_again_within_2s(self):
        import tempfile, shutil
        d = tempfile.mkdtemp(prefix="shrinkd-it-")
        sock = os.path.join(d, "s.sock")
        env = dict(os.environ, SHRINKD_SOCKET=sock)
        # Clients start before any agent runs: registering early must work.
        apps = [Process([binary("examples/" + n), "--mib", "8"], env=env, name=n)
                for n in ("shrink-example-cache", "shrink-example-osv", "shrink-example-cxx")]
        agent = None
        try:
            for a in apps:
                a.wait_line("^READY", 30)
            agent = Agent(sock)
            want = {a.pid for a in apps}

            def all_registered():
                return want <= registered_pids(sock)

            wait_until(all_registered, 5, 0.05, "first registration")
            agent.stop()
            agent = Agent(sock)
            t0 = time.monotonic()
            wait_until(all_registered, 10, 0.02, "registration after restart")
            took = time.monotonic() - t0
            print("\n    all 3 clients registered again %.0f ms after the new shrinkd listened" % (took * 1000))
            self.assertLess(took, 2.0)
            self.assertTrue(all(a.alive() for a in apps))
        finally:
            for a in apps:
                a.stop(signal.SIGKILL)
            if agent:
                agent.stop()
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
