# SPDX-License-Identifier: MIT
"""Harness for the integration tests: the real shrinkd on a temporary
socket, real example programs, shrinkctl, and a raw protocol client for
misbehaving peers (hung, garbage, killed). Standard library only.

Binaries come from the build directory named by $SHRINKD_BUILD_DIR."""
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

BUILD = os.environ.get("SHRINKD_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
MiB = 1 << 20


def binary(rel):
    path = os.path.join(BUILD, rel)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError("not built: %s (set SHRINKD_BUILD_DIR)" % path)
    return path


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def wait_until(pred, timeout, step=0.02, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError("timed out after %.1f s waiting for %s" % (timeout, what))


class Process:
    """A child whose stdout lines are collected by a thread."""

    def __init__(self, argv, env=None, name=None, preexec_fn=None):
        self.name = name or os.path.basename(argv[0])
        self.lines = []
        self.cv = threading.Condition()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                  preexec_fn=preexec_fn)
        self.pid = self.p.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_line(self, pattern, timeout=10, start=0):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cv:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    i += 1
                    if m:
                        return m, i
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and i >= len(self.lines)):
                    raise TimeoutError("%s: no line matching %r (last lines: %s)"
                                       % (self.name, pattern, self.lines[-5:]))
                self.cv.wait(min(left, 0.2))

    def events(self, kind=None):
        with self.cv:
            out = []
            for line in self.lines:
                if not line.startswith("EVENT "):
                    continue
                ev = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
                if kind is None or ev.get("kind") == kind:
                    out.append(ev)
            return out

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class Agent(Process):
    def __init__(self, sock, extra=(), verbose=True):
        self.sock = sock
        argv = [binary("agent/shrinkd"), "--socket", sock] + (["--verbose"] if verbose else []) + list(extra)
        super().__init__(argv, name="shrinkd")
        wait_until(lambda: os.path.exists(sock) or not self.alive(), 10, what="shrinkd socket")
        if not self.alive():
            raise RuntimeError("shrinkd exited: %s" % self.lines[-10:])


SHRINKCTL_SHORT = 5  # shrinkctl's exit status: the round ran but claimed less than its target


def shrinkctl(sock, *args, check=True, preexec_fn=None, timeout=30, ok=(0,)):
    """Runs shrinkctl against @sock; raises unless it exited with a status in
    @ok (or not @check)."""
    argv = [binary("agent/shrinkctl"), "--socket", sock] + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)
    if check and r.returncode not in ok:
        raise AssertionError("shrinkctl %s failed (%d): %s %s" % (args, r.returncode, r.stdout, r.stderr))
    return r


def status(sock):
    return json.loads(shrinkctl(sock, "status", "--json").stdout)


def shrink(sock, size, hard=False, deadline_ms=None):
    """Runs one round; returns its report, whether or not it met its target."""
    args = ["shrink", str(size), "--json"]
    if hard:
        args.append("--hard")
    if deadline_ms:
        args += ["--deadline", str(deadline_ms)]
    return json.loads(shrinkctl(sock, *args, ok=(0, SHRINKCTL_SHORT)).stdout)


def registered_pids(sock):
    return {c["pid"] for c in status(sock)["clients"] if c["shrinkers"]}


SANITIZED = os.environ.get("SHRINKD_TEST_SANITIZED") == "1"


def skip_if_sanitized(test):
    """For a test of memory given back: under AddressSanitizer freed memory
    stays in its quarantine and malloc_trim() has nothing to give back, so
    RSS cannot fall. tools/test.sh runs these in the plain build too."""
    return unittest.skipIf(SANITIZED, "RSS under AddressSanitizer says nothing about memory given "
                           "back (its allocator keeps freed memory); run in the plain build")(test)


class Fixture(unittest.TestCase):
    """Each test gets its own directory, socket and agent."""

    # The core alone: no round may come from this machine's own memory
    # pressure (PSI) while a test counts rounds. The sources have their own
    # tests (unit tests on fixtures, the VM tests).
    agent_args = ("--balloon=off", "--psi-trigger=off")

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="shrinkd-it-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "shrinkd.sock")
        self.env = dict(os.environ, SHRINKD_SOCKET=self.sock)
        self.procs = []
        self.agent = Agent(self.sock, self.agent_args)

    def tearDown(self):
        for p in self.procs:
            p.stop(signal.SIGKILL)
        rc = self.agent.stop()
        if self._outcome_failed():
            print("\n--- shrinkd log (last 40 lines) ---")
            print("\n".join(self.agent.lines[-40:]))
        shutil.rmtree(self.dir, ignore_errors=True)

    def _outcome_failed(self):
        res = getattr(self, "_outcome", None)
        errs = getattr(getattr(res, "result", None), "errors", []) + getattr(getattr(res, "result", None), "failures", [])
        return any(t is self for t, _ in errs)

    def start_example(self, name, *args, env=None):
        p = Process([binary("examples/" + name)] + list(args), env=env or self.env, name=name)
        self.procs.append(p)
        p.wait_line(r"^READY ", 30)
        return p

    def shrinkctl(self, *args, **kw):
        return shrinkctl(self.sock, *args, **kw)

    def status(self):
        return status(self.sock)

    def shrink(self, size, hard=False, deadline_ms=None):
        return shrink(self.sock, size, hard, deadline_ms)

    def shrinkers_of(self, pid, status=None):
        status = status or self.status()
        for c in status["clients"]:
            if c["pid"] == pid:
                return c["shrinkers"]
        return []

    def wait_registered(self, pid, count=1, timeout=10):
        return wait_until(lambda: len(self.shrinkers_of(pid)) >= count, timeout, 0.05,
                          "pid %d to register %d shrinker(s)" % (pid, count))


# ---- a raw protocol client, for peers that misbehave on purpose ----

HELLO, WELCOME, REGISTER, UNREGISTER, ESTIMATE, SHRINK, SHRINK_DONE, RELIEF, ERROR = range(1, 10)


def frame(mtype, body, version=1):
    return struct.pack("<BBHI", version, mtype, 0, 8 + len(body)) + body


def wire_string(s):
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


class RawClient:
    def __init__(self, path, name="raw"):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.connect(path)
        self.s.send(frame(HELLO, struct.pack("<HHI", 1, 1, 0) + wire_string(name)))
        t, body = self.recv(5)
        assert t == WELCOME, "expected WELCOME, got %d" % t

    def register(self, sid, name, priority=50, estimate=None):
        flags = 1 if estimate is not None else 0
        self.s.send(frame(REGISTER, struct.pack("<IHHQ", sid, priority, flags, estimate or 0) + wire_string(name)))

    def recv(self, timeout):
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            raise TimeoutError("raw client: nothing received")
        data = self.s.recv(65536)
        if not data:
            return None, b""
        return data[1], data[8:]

    def answer(self, round_id, sid, freed):
        self.s.send(frame(SHRINK_DONE, struct.pack("<QIIQII", round_id, sid, 0, freed, 1, 0)))

    def close(self):
        self.s.close()


def parse_shrink(body):
    round_id, sid, level, reason, _, target, deadline, _ = struct.unpack("<QIBBHQII", body)
    return dict(round_id=round_id, id=sid, level=level, reason=reason, target=target, deadline_ms=deadline)


def _sleeper(path):
    """Child mode: registers one shrinker, announces each SHRINK on stdout
    and never answers, as a client stuck in its callback would."""
    c = RawClient(path, "sleeper")
    c.register(1, "stuck", estimate=64 * MiB)
    print("READY pid=%d" % os.getpid(), flush=True)
    while True:
        t, body = c.recv(3600)
        if t is None:
            return
        if t == SHRINK:
            print("GOT-SHRINK %s" % json.dumps(parse_shrink(body)), flush=True)


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "sleeper":
        _sleeper(sys.argv[2])
    else:
        sys.exit("usage: shrinkdtest.py sleeper SOCKET")
