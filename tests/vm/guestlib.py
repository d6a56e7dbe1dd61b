# SPDX-License-Identifier: MIT
"""Shared helpers for the balloon VM tests, the VM benchmark and the VM demo
(Python standard library only; built on vmlib.py).

    img = prepare(build_dir, workdir)          # kernel, tools, initramfs with shrinkd
    with boot(workdir, img, "t1") as vm:       # Guest + the test port, ready
        vm.start_shrinkd()
        vm.start_apps(DEFAULT_APPS)            # waits for READY of each
        clk = vm.port.clock_sync()             # guest CLOCK_REALTIME vs host monotonic
        t0 = vm.balloon(384 * MiB)             # host monotonic time of the command
        vm.g.wait_balloon(384 * MiB, 60)
        for ev in vm.events():                 # EVENT lines of the applications
            print(clk.to_host(ev["t_us"]) - t0)

What a BalloonVM adds to a vmlib.Guest:

* a second virtio-serial port, org.shrinkd.test.0, served in the guest by
  tools/testport.c (static, memory-locked): clock samples for an NTP-style
  estimate of the guest clock's offset, /proc/meminfo, and every /dev/kmsg
  record forwarded as it is logged. It is started before anything fills the
  guest's memory, so it keeps reporting when a stalled balloon makes every
  fork in the guest call the OOM killer (tests/vm/captured/README.txt);
* shrinkd and the example applications started in the background with their
  output in /tmp (shrinkd.log, app-NAME.log), their EVENT lines parsed;
* `shrinkctl status --json` parsed.
"""

import collections
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vmlib  # noqa: E402
from vmlib import MiB, AGENT_PORT  # noqa: E402,F401

TEST_PORT = "org.shrinkd.test.0"
GUEST_TEST_PORT = "/dev/virtio-ports/" + TEST_PORT

# The applications of the acceptance tests and the demo: about 700 MiB held
# in a 1024 MiB guest. (name, command line, MiB held). The cache frees at
# most a quarter of itself on a soft request and what it is asked on a hard
# one; the OSv-style program frees only on hard requests; the C++ one has a
# request_memory() store (a quarter on soft) and a release_memory() store.
DEFAULT_APPS = (
    ("cache", "shrink-example-cache --mib 400", 400),
    ("osv", "shrink-example-osv --mib 152", 152),
    ("cxx", "shrink-example-cxx --mib 136 --legacy-mib 16", 152),
)


def log_to(prefix=""):
    t0 = time.monotonic()

    def log(msg):
        print("[%7.2f] %s%s" % (time.monotonic() - t0, prefix, msg), flush=True)
    log.t0 = t0
    return log


# ------------------------------------------------------------------ image

def _run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, universal_newlines=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (exit %d)" % (" ".join(argv), r.returncode))
    return r.stdout.split()


def prepare(build_dir, workdir, img_name="balloon.img", setup_host=True):
    """Prepare everything a balloon guest needs and return the initramfs path:
    host packages (setup-host.sh, a no-op when present), the kernel
    (fetch-kernel.sh), the guest tools (build-tools.sh, plus tools/testport.c
    compiled here) and an initramfs holding shrinkd, shrinkctl, the three
    examples and libshrink from build_dir. Raises RuntimeError on failure."""
    build_dir = os.path.abspath(build_dir)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if setup_host:
        _run([os.path.join(HERE, "setup-host.sh")])
    _run([os.path.join(HERE, "fetch-kernel.sh"), workdir])
    tools = _run([os.path.join(HERE, "build-tools.sh"), workdir])
    src = os.path.join(HERE, "tools", "testport.c")
    testport = os.path.join(workdir, "tools", "testport")
    if not os.path.exists(testport) or os.path.getmtime(src) > os.path.getmtime(testport):
        _run(["gcc", "-O2", "-Wall", "-Wextra", "-static", "-o", testport + ".tmp", src])
        os.rename(testport + ".tmp", testport)
    bins = ["agent/shrinkd", "agent/shrinkctl", "examples/shrink-example-cache",
            "examples/shrink-example-osv", "examples/shrink-example-cxx"]
    img = os.path.join(workdir, img_name)
    argv = [sys.executable, os.path.join(HERE, "mkinitramfs.py"), workdir, "-o", img,
            "--lib-dir", os.path.join(build_dir, "libshrink")]
    for b in bins:
        path = os.path.join(build_dir, b)
        if not os.access(path, os.X_OK):
            raise RuntimeError("not built: %s" % path)
        argv += ["--bin", path]
    for t in tools + [testport]:
        if os.path.basename(t) in ("hog", "balloon-cfg", "forge-puff", "testport"):
            argv += ["--bin", t]
    _run(argv, stderr=subprocess.DEVNULL)
    return img


# ------------------------------------------------------------------ test port

Clock = collections.namedtuple("Clock", "offset uncertainty samples rtt_median")
Clock.__doc__ = """Guest CLOCK_REALTIME (seconds) = host time.monotonic() + offset,
within +/- uncertainty (half the smallest round trip of the samples)."""
Clock.to_host = lambda self, t_us: int(t_us) / 1e6 - self.offset
Clock.__str__ = lambda self: ("offset %.6f s +/- %.3f ms (best of %d samples, median round trip "
                              "%.3f ms)" % (self.offset, self.uncertainty * 1e3, self.samples,
                                            self.rtt_median * 1e3))


class TestPort:
    """The host side of org.shrinkd.test.0 (see tools/testport.c)."""

    def __init__(self, guest):
        self.sock = guest.connect_port(TEST_PORT)
        self.sock.settimeout(None)
        self.lines = []          # [(host monotonic, line)]
        self.kmsg = []           # [(host monotonic, guest usec, text)]
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._reader, daemon=True, name="testport")
        self._thread.start()

    def _reader(self):
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                t = time.monotonic()
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    with self._cv:
                        self.lines.append((t, line))
                        if line.startswith("K "):
                            parts = line.split(" ", 2)
                            self.kmsg.append((t, int(parts[1]), parts[2] if len(parts) > 2 else ""))
                        self._cv.notify_all()
        except OSError:
            pass
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def send(self, line):
        self.sock.sendall((line + "\n").encode())

    def wait_line(self, pattern, timeout=10.0, since=0):
        """(t, line, next index) of the first line at index >= since matching pattern."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cv:
            i = since
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    i += 1
                    if rx.search(line):
                        return t, line, i
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError("test port: no line matching %r within %.1f s"
                                       % (pattern, timeout))
                self._cv.wait(left)

    def mark(self):
        with self._cv:
            return len(self.lines)

    def clock_sync(self, samples=15, timeout=5.0):
        """NTP-style estimate of the guest clock: for each sample the host
        notes t1, asks the guest for CLOCK_REALTIME (T), notes t4 when the
        answer arrives; offset = T - (t1 + t4) / 2 with an error of at most
        (t4 - t1) / 2. Keeps the sample with the smallest round trip."""
        best = None
        rtts = []
        for i in range(samples):
            self._n = getattr(self, "_n", 0) + 1
            token = "t%d" % self._n
            m = self.mark()
            t1 = time.monotonic()
            self.send("T " + token)
            t4, line, _ = self.wait_line(r"^T %s " % re.escape(token), timeout, since=m)
            guest_rt = int(line.split()[2]) / 1e6
            rtt = t4 - t1
            rtts.append(rtt)
            if best is None or rtt < best[0]:
                best = (rtt, guest_rt - (t1 + t4) / 2)
            time.sleep(0.01)
        rtts.sort()
        return Clock(best[1], best[0] / 2, samples, rtts[len(rtts) // 2])

    def meminfo(self, timeout=5.0):
        """{'MemTotal': KiB, 'MemFree': KiB, 'MemAvailable': KiB} from the guest,
        read by the memory-locked helper (works in a stalled guest)."""
        self._n = getattr(self, "_n", 0) + 1
        token = "m%d" % self._n
        m = self.mark()
        self.send("M " + token)
        _, line, _ = self.wait_line(r"^M %s " % token, timeout, since=m)
        return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[2:])}

    def arm_inflate_watch(self, timeout=5.0):
        """Arms testport's balloon watch (B): returns a token for
        wait_inflate() once the guest's balloon_inflate count is noted."""
        self._n = getattr(self, "_n", 0) + 1
        token = "b%d" % self._n
        m = self.mark()
        self.send("B " + token)
        self.wait_line(r"^B %s armed " % token, timeout, since=m)
        self._watch_mark = m
        return token

    def wait_inflate(self, token, timeout=60.0):
        """Guest CLOCK_REALTIME (us) at which testport saw balloon_inflate
        change after arm_inflate_watch() returned token, or None."""
        try:
            _, line, _ = self.wait_line(r"^B %s [0-9]+ " % token, timeout,
                                        since=getattr(self, "_watch_mark", 0))
        except TimeoutError:
            return None
        return int(line.split()[2])

    def kmsg_matching(self, pattern, since_t=0.0):
        rx = re.compile(pattern)
        with self._cv:
            return [(t, u, text) for t, u, text in self.kmsg if t >= since_t and rx.search(text)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------ the guest

def parse_kv(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


class BalloonVM:
    """A booted guest with the test port connected and testport running."""

    def __init__(self, guest, port):
        self.g = guest
        self.port = port
        self.apps = {}          # name -> pid
        self.shrinkd_args = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self.port.close()
        self.g.close()

    # ---- shrinkd
    def start_shrinkd(self, args="", log="/tmp/shrinkd.log", wait=True):
        """Start shrinkd as root in the background (its output in log) and wait
        until `shrinkctl status` answers. Returns its pid."""
        self.shrinkd_args = args
        self.g.run("mkdir -p /run/shrinkd; (shrinkd %s > %s 2>&1 & echo $! > /tmp/shrinkd.pid)"
                   % (args, log))
        pid = int(self.g.run("cat /tmp/shrinkd.pid")[0])
        if wait:
            deadline = time.monotonic() + 20
            while True:
                r = self.g.sh("shrinkctl status > /dev/null 2>&1")
                if r.rc == 0:
                    break
                if self.g.sh("kill -0 %d" % pid).rc != 0:
                    raise RuntimeError("shrinkd exited at start:\n" + self.g.sh("cat " + log).out)
                if time.monotonic() > deadline:
                    raise RuntimeError("shrinkd does not answer:\n" + self.g.sh("cat " + log).out)
                time.sleep(0.1)
        return pid

    def status(self):
        """`shrinkctl status --json`, parsed (the "return" object if wrapped)."""
        r = self.g.sh("shrinkctl status --json")
        if r.rc != 0:
            raise RuntimeError("shrinkctl status failed (%d): %s" % (r.rc, r.out))
        st = json.loads(r.out)
        return st.get("return", st) if isinstance(st, dict) else st

    def shrinkd_log(self, log="/tmp/shrinkd.log"):
        return self.g.sh("cat %s" % log).lines

    # ---- applications
    def start_apps(self, apps=DEFAULT_APPS, timeout=240.0, log=None):
        """Start each (name, command, MiB) in the background, output in
        /tmp/app-NAME.log, and wait for all their READY lines. Returns
        {name: seconds until READY}."""
        t0 = time.monotonic()
        for name, cmd, _mib in apps:
            self.g.run("(%s > /tmp/app-%s.log 2>&1 & echo $! > /tmp/app-%s.pid)"
                       % (cmd, name, name))
            self.apps[name] = int(self.g.run("cat /tmp/app-%s.pid" % name)[0])
        ready = {}
        deadline = time.monotonic() + timeout
        while len(ready) < len(apps):
            for name, _cmd, _mib in apps:
                if name in ready:
                    continue
                out = self.g.sh("cat /tmp/app-%s.log" % name).out
                if re.search(r"^READY ", out, re.M):
                    ready[name] = time.monotonic() - t0
                    if log:
                        log("%s ready after %.1f s" % (name, ready[name]))
                elif self.g.sh("kill -0 %d" % self.apps[name]).rc != 0:
                    raise RuntimeError("%s exited before READY:\n%s" % (name, out))
            if time.monotonic() > deadline:
                raise RuntimeError("applications not ready after %.0f s: %s"
                                   % (timeout, sorted(set(a[0] for a in apps) - set(ready))))
            if len(ready) < len(apps):
                time.sleep(0.5)
        return ready

    def touch_free_memory(self, leave_mib=16, timeout=120.0):
        """Make the guest touch (and give back) all but leave_mib of its
        available memory, as a guest that has run for a while has: a fresh
        guest never touched part of its RAM, and the host's RSS can only fall
        by pages that were resident. Returns the MiB touched."""
        avail = self.port.meminfo()["MemAvailable"] // 1024
        n = max(0, avail - leave_mib)
        if n == 0:
            return 0
        self.g.run("(hog %d 64 > /tmp/hog.log 2>&1 & echo $! > /tmp/hog.pid)" % n)
        deadline = time.monotonic() + timeout
        while "HOG-DONE" not in self.g.sh("cat /tmp/hog.log").out:
            if time.monotonic() > deadline:
                raise RuntimeError("hog did not finish: " + self.g.sh("cat /tmp/hog.log").out)
            time.sleep(0.3)
        self.g.run("p=$(cat /tmp/hog.pid); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.05; done")
        return n

    def apps_alive(self):
        """{name: True/False}."""
        return {n: self.g.sh("kill -0 %d" % pid).rc == 0 for n, pid in self.apps.items()}

    def stop_app(self, name):
        """SIGTERM an application and wait for it to exit; its log is kept as
        /tmp/app-NAME.log.N (so events() no longer reads it)."""
        pid = self.apps.pop(name)
        self.g.sh("kill %d 2>/dev/null; while kill -0 %d 2>/dev/null; do sleep 0.05; done; "
                  "n=0; while [ -e /tmp/app-%s.log.$n ]; do n=$((n+1)); done; "
                  "mv /tmp/app-%s.log /tmp/app-%s.log.$n" % (pid, pid, name, name, name))

    def events(self, kind=None, apps=None):
        """EVENT lines of the applications (default: all started and not
        stopped), in guest time order, as dicts (t_us and the numbers
        converted to int)."""
        out = []
        for name in (apps or list(self.apps)):
            for line in self.g.sh("cat /tmp/app-%s.log" % name).lines:
                if line.startswith("EVENT "):
                    ev = parse_kv(line)
                    for k in ("t_us", "target", "freed", "held", "round", "pid"):
                        if k in ev and ev[k].isdigit():
                            ev[k] = int(ev[k])
                    if kind is None or ev.get("kind") == kind:
                        out.append(ev)
        out.sort(key=lambda e: e.get("t_us", 0))
        return out

    def app_log(self, name):
        return self.g.sh("cat /tmp/app-%s.log" % name).lines

    # ---- host side
    def balloon(self, target_bytes):
        """QMP balloon; returns the host monotonic time at which the command
        was sent (the middle of send and acceptance would hide QMP's reply
        latency, which the guest does not wait for)."""
        t = time.monotonic()
        self.g.balloon(target_bytes)
        return t

    def dmesg(self, pattern=None):
        r = self.g.sh("dmesg")
        lines = r.lines
        if pattern:
            rx = re.compile(pattern)
            lines = [l for l in lines if rx.search(l)]
        return lines


def boot(workdir, img, name, timeout=120.0, kmsg=True, guest_class=vmlib.Guest, **guest_kw):
    """Boot a 1024 MiB guest (unless mem_mib says otherwise) with the agent
    port and the test port, start testport in it and return a BalloonVM.
    guest_class(workdir, name=, initrd=, ports=, **guest_kw) makes the guest
    (a libvirtlib.LibvirtGuest takes its Libvirtd first: use
    functools.partial). Raises vmlib.BootError if the guest does not boot."""
    guest_kw.setdefault("mem_mib", 1024)
    g = guest_class(workdir, name=name, initrd=img, ports=(AGENT_PORT, TEST_PORT), **guest_kw)
    try:
        g.wait_ready(timeout)
        port = TestPort(g)
        g.run("(testport %s %s > /tmp/testport.log 2>&1 &)" % (GUEST_TEST_PORT, "-k" if kmsg else ""))
        port.wait_line(r"^TESTPORT-READY", 20)
        return BalloonVM(g, port)
    except BaseException:
        g.close()
        raise


def qemu_rss_settled(g, settle=1.0, step=0.25, timeout=10.0):
    """QEMU's RSS (KiB) once it stops falling by more than 1 MiB per step."""
    time.sleep(settle)
    last = g.qemu_rss_kib()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(step)
        now = g.qemu_rss_kib()
        if abs(now - last) < 1024:
            return now
        last = now
    return last


def qemu_ram_rss_kib(g, mem_mib=1024):
    """Rss (KiB) of QEMU's guest-RAM mapping (the anonymous mapping of
    exactly mem_mib MiB, from /proc/PID/smaps), or None. The process's RSS
    also holds TCG's translation cache, which grows as the guest runs new
    code: this one moves with the guest's pages only."""
    try:
        with open("/proc/%d/smaps" % g.pid) as f:
            size = None
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    a, b = line.split()[0].split("-")
                    size = int(b, 16) - int(a, 16)
                elif line.startswith("Rss:") and size == mem_mib * MiB:
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rounds_of(status, reason=None):
    rounds = status.get("rounds") or []
    if reason:
        rounds = [r for r in rounds if r.get("reason") == reason]
    return sorted(rounds, key=lambda r: (r.get("started_us", 0), r.get("round_id", 0)))
