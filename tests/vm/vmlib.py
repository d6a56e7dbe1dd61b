# SPDX-License-Identifier: MIT
"""Host-side harness for the shrinkd VM tests (Python standard library only).

A Guest is one QEMU process booting the Debian cloud kernel (fetch-kernel.sh)
and the busybox initramfs (mkinitramfs.py), with

* the serial console on QEMU's stdin/stdout, driven as a shell (Guest.sh);
* a QMP socket (Guest.qmp, a QMP client with timestamped event capture);
* a virtio-balloon device (Guest.balloon, query_balloon, wait_balloon);
* optional virtio-serial ports whose host side is a unix socket
  (Guest.port_path, Guest.connect_port), e.g. org.shrinkd.agent.0.

Typical use:

    from vmlib import Guest, MiB
    with Guest(workdir, name="smoke", mem_mib=1024) as g:
        g.wait_ready()
        print(g.sh("uname -r").out)
        g.balloon(512 * MiB)
        print(g.wait_balloon(512 * MiB, timeout=60))

Every guest gets its own directory WORKDIR/NAME/ with serial.log (console
lines with time since QEMU started), qmp.log (every QMP message and event),
qemu.stderr, cmdline.txt and the unix sockets (qmp.sock, port0.sock, ...).

Accelerator: TCG unless KVM really works (kvm_usable()); override with
SHRINKD_VM_ACCEL=tcg|kvm. The work directory defaults to $SHRINKD_VM_WORKDIR
or <repository>/vm-work.
"""

import atexit
import base64
import collections
import ctypes
import glob
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time

MiB = 1 << 20
KiB = 1 << 10

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

AGENT_PORT = "org.shrinkd.agent.0"
READY_RE = r"^GUEST-READY uptime=([0-9.]+)"
UNIX_PATH_MAX = 107          # sun_path is 108 bytes including the NUL


class BootError(RuntimeError):
    """The guest did not reach GUEST-READY (or QEMU exited)."""


class QMPError(RuntimeError):
    """QMP answered a command with an error."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get("class")
        self.desc = error.get("desc")
        super().__init__("%s: %s: %s" % (command, self.error_class, self.desc))


ShellResult = collections.namedtuple("ShellResult", "rc lines")
ShellResult.out = property(lambda self: "\n".join(self.lines))
ShellResult.__doc__ = "Result of Guest.sh: exit status and output lines (\\r stripped)."

BalloonWait = collections.namedtuple("BalloonWait", "reached actual elapsed")
BalloonWait.__doc__ = ("Result of Guest.wait_balloon: whether actual came within the tolerance "
                       "of the target, the last actual (bytes), and seconds waited.")


# ------------------------------------------------------------------ helpers

def default_workdir():
    return os.environ.get("SHRINKD_VM_WORKDIR") or os.path.join(REPO, "vm-work")


def find_kernel(workdir):
    """Path of the vmlinuz unpacked by fetch-kernel.sh into WORKDIR/kernel."""
    found = sorted(glob.glob(os.path.join(workdir, "kernel", "boot", "vmlinuz-*")))
    if not found:
        raise FileNotFoundError("no kernel in %s/kernel: run tests/vm/fetch-kernel.sh %s"
                                % (workdir, workdir))
    return found[-1]


def kernel_release(vmlinuz):
    """'6.1.0-56-cloud-amd64' for .../vmlinuz-6.1.0-56-cloud-amd64."""
    return os.path.basename(vmlinuz)[len("vmlinuz-"):]


def kvm_usable():
    """(usable, reason). KVM counts only if it can run a stock kernel: the CPU
    has vmx/svm, /dev/kvm is read-writable, and it is not kvm_pvm (the
    paravirtual KVM some cloud hosts expose, on which stock kernels hang)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm missing or not accessible"
    if os.path.isdir("/sys/module/kvm_pvm"):
        return False, "/dev/kvm is kvm_pvm (stock kernels do not boot on it)"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return False, "CPU has no vmx/svm"
    return True, "vmx/svm present and /dev/kvm usable"


def choose_accel():
    """(accel, reason): SHRINKD_VM_ACCEL if set, else kvm when kvm_usable(), else tcg."""
    forced = os.environ.get("SHRINKD_VM_ACCEL")
    if forced:
        return forced, "SHRINKD_VM_ACCEL=%s" % forced
    ok, why = kvm_usable()
    return ("kvm" if ok else "tcg"), why


def qemu_version(binary="qemu-system-x86_64"):
    out = subprocess.run([binary, "--version"], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    return out.splitlines()[0] if out else "?"


def rss_kib(pid):
    """VmRSS of a process in KiB (None if gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _die_with_parent():
    """preexec_fn: QEMU gets SIGKILL if the test process dies (PR_SET_PDEATHSIG).
    Linux sends it when the *thread* that started QEMU exits: create guests
    from the main thread, or from a thread that outlives them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)
    except Exception:
        pass


# ------------------------------------------------------------------ QMP

class QMP:
    """A QMP client on a unix socket.

    A reader thread receives everything; replies are matched to commands by
    id, events are stored with the monotonic time they arrived:
    events is a list of (t, {"event": NAME, "data": ..., "timestamp": ...})."""

    def __init__(self, path, timeout=10.0, log=None):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.log = log
        self._log_lock = threading.Lock()
        self.events = []
        self._replies = {}
        self._next_id = 0
        self._cv = threading.Condition()
        self._closed = False
        self._send_lock = threading.Lock()
        self._rfile = self.sock.makefile("rb")
        self.greeting = json.loads(self._rfile.readline())
        self._log("<", self.greeting)
        self._thread = threading.Thread(target=self._reader, name="qmp-reader", daemon=True)
        self._thread.start()
        self.cmd("qmp_capabilities")

    def _log(self, direction, msg):
        if self.log:
            with self._log_lock:
                try:
                    self.log.write("%.6f %s %s\n" % (time.monotonic(), direction, json.dumps(msg)))
                    self.log.flush()
                except ValueError:      # log closed by Guest.close()
                    pass

    def _reader(self):
        try:
            for raw in self._rfile:
                msg = json.loads(raw)
                t = time.monotonic()
                self._log("<", msg)
                with self._cv:
                    if "event" in msg:
                        self.events.append((t, msg))
                    elif "id" in msg:
                        self._replies[msg["id"]] = msg
                    self._cv.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cv:
                self._closed = True
                self._cv.notify_all()

    def cmd(self, name, args=None, timeout=30.0, **kwargs):
        """Run a QMP command and return its "return" value; raise QMPError on
        an error reply. Arguments come from the args dict (for names with
        dashes) and/or keyword arguments."""
        arguments = dict(args or {}, **kwargs)
        with self._cv:
            self._next_id += 1
            cid = self._next_id
        msg = {"execute": name, "id": cid}
        if arguments:
            msg["arguments"] = arguments
        self._log(">", msg)
        with self._send_lock:
            self.sock.sendall((json.dumps(msg) + "\n").encode())
        deadline = time.monotonic() + timeout
        with self._cv:
            while cid not in self._replies:
                if self._closed:
                    raise ConnectionError("QMP connection closed during %s" % name)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("QMP %s: no reply in %.1f s" % (name, timeout))
                self._cv.wait(left)
            reply = self._replies.pop(cid)
        if "error" in reply:
            raise QMPError(name, reply["error"])
        return reply.get("return")

    def mark(self):
        """Current position in events, for wait_event(since=...)."""
        with self._cv:
            return len(self.events)

    def wait_event(self, name, timeout=30.0, since=0):
        """First event called name at index >= since: (t, event). TimeoutError if none."""
        deadline = time.monotonic() + timeout
        i = since
        with self._cv:
            while True:
                while i < len(self.events):
                    t, ev = self.events[i]
                    i += 1
                    if ev["event"] == name:
                        return t, ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise TimeoutError("no QMP event %s within %.1f s" % (name, timeout))
                self._cv.wait(left)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# ------------------------------------------------------------------ Guest

_live_guests = set()


@atexit.register
def _kill_leftovers():
    for g in list(_live_guests):
        g.close()


class Guest:
    """One QEMU guest. Boots on construction (unless start=False); use as a
    context manager or call close().

    workdir        work directory (kernel/, initrd.img, and per-guest NAME/)
    name           short name: the per-guest directory and the log prefix
    mem_mib, smp   guest RAM and vCPUs (default 1024 MiB, 1 vCPU)
    accel          "tcg" or "kvm"; default choose_accel()
    kernel, initrd default find_kernel(workdir) and WORKDIR/initrd.img
    balloon        add a virtio-balloon-pci device (id balloon0)
    deflate_on_oom, free_page_hint, free_page_reporting
                   balloon features (free_page_hint adds an iothread)
    balloon_opts   more ",key=value" options for the balloon device
    ports          names of virtio-serial ports, each backed by a unix socket
                   server WORKDIR/NAME/portN.sock (QEMU listens, no wait)
    append         extra kernel command line
    extra_args     extra QEMU arguments
    """

    def __init__(self, workdir=None, name="g", mem_mib=1024, smp=1, accel=None,
                 kernel=None, initrd=None, balloon=True, deflate_on_oom=False,
                 free_page_hint=False, free_page_reporting=False, balloon_opts="",
                 ports=(AGENT_PORT,), append="", extra_args=(), start=True):
        self.workdir = os.path.abspath(workdir or default_workdir())
        self.name = name
        self.mem_mib = mem_mib
        self.kernel = kernel or find_kernel(self.workdir)
        self.initrd = initrd or os.path.join(self.workdir, "initrd.img")
        if not os.path.exists(self.initrd):
            raise FileNotFoundError("no initramfs %s: run tests/vm/mkinitramfs.py" % self.initrd)
        if accel:
            self.accel, self.accel_reason = accel, "requested"
        else:
            self.accel, self.accel_reason = choose_accel()
        self.ports = list(ports)

        self.dir = os.path.join(self.workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self._sockdir_tmp = None
        sockdir = self.dir
        if len(os.path.join(sockdir, "port00.sock")) > UNIX_PATH_MAX - 8:
            # Too long for sun_path: use a short private directory instead.
            self._sockdir_tmp = tempfile.mkdtemp(prefix="svm-")
            sockdir = self._sockdir_tmp
        self.qmp_path = os.path.join(sockdir, "qmp.sock")
        self._port_paths = {p: os.path.join(sockdir, "port%d.sock" % i)
                            for i, p in enumerate(self.ports)}
        for p in [self.qmp_path] + list(self._port_paths.values()):
            if os.path.lexists(p):
                os.unlink(p)

        dev = "virtio-balloon-pci,id=balloon0"
        extra = []
        if deflate_on_oom:
            dev += ",deflate-on-oom=on"
        if free_page_reporting:
            dev += ",free-page-reporting=on"
        if free_page_hint:
            dev += ",free-page-hint=on,iothread=balloon-io"
            extra += ["-object", "iothread,id=balloon-io"]
        if balloon_opts:
            dev += "," + balloon_opts.lstrip(",")

        cmdline = "console=ttyS0 panic=-1 quiet shrinkvm.batch=1 shrinkvm.ports=%d %s" % (
            len(self.ports), append)
        argv = ["qemu-system-x86_64", "-accel", self.accel, "-machine", "pc",
                "-smp", str(smp), "-m", str(mem_mib),
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", "stdio",
                "-kernel", self.kernel, "-initrd", self.initrd,
                "-append", cmdline.strip(),
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        if self.accel == "kvm":
            argv += ["-cpu", "host"]
        if balloon:
            argv += ["-device", dev] + extra
        if self.ports:
            argv += ["-device", "virtio-serial-pci,id=vser0"]
            for i, p in enumerate(self.ports):
                argv += ["-chardev", "socket,id=port%d,path=%s,server=on,wait=off"
                         % (i, self._port_paths[p]),
                         "-device", "virtserialport,bus=vser0.0,chardev=port%d,name=%s" % (i, p)]
        self.argv = argv + list(extra_args)

        self.lines = []              # [(monotonic time, line)] from the console
        self._cv = threading.Condition()
        self._token = secrets.token_hex(3)
        self._n = 0
        self._qmp = None
        self.proc = None
        self.t_start = None
        self.t_ready = None
        self.guest_uptime_at_ready = None
        if start:
            self.start()

    # -------------------------------------------------------------- process

    def start(self):
        """Start QEMU (the constructor does this unless start=False)."""
        with open(os.path.join(self.dir, "cmdline.txt"), "w") as f:
            f.write(" ".join(_shell_quote(a) for a in self.argv) + "\n")
        self._serial_log = open(os.path.join(self.dir, "serial.log"), "w")
        self._qmp_log = open(os.path.join(self.dir, "qmp.log"), "w")
        self._stderr = open(os.path.join(self.dir, "qemu.stderr"), "w")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, preexec_fn=_die_with_parent)
        _live_guests.add(self)
        self._reader_thread = threading.Thread(target=self._reader, name="serial-" + self.name,
                                               daemon=True)
        self._reader_thread.start()

    def _reader(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
            t = time.monotonic()
            with self._cv:
                self.lines.append((t, line))
                self._cv.notify_all()
            self._serial_log.write("%9.3f %s\n" % (t - self.t_start, line))
            self._serial_log.flush()
        with self._cv:
            self._cv.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=120.0):
        """Wait for the GUEST-READY marker; return seconds since QEMU started.
        Raises BootError (with the console tail and QEMU's stderr) otherwise."""
        try:
            t, line, _ = self.wait_for(READY_RE, timeout, since=0)
        except TimeoutError:
            raise BootError("%s: no GUEST-READY within %.0f s%s" % (self.name, timeout, self._why()))
        self.t_ready = t
        self.guest_uptime_at_ready = float(re.search(READY_RE, line).group(1))
        return t - self.t_start

    def _why(self):
        parts = []
        if not self.alive() and self.proc is not None:
            parts.append("QEMU exited with status %s" % self.proc.poll())
        try:
            err = open(os.path.join(self.dir, "qemu.stderr")).read().strip()
            if err:
                parts.append("qemu stderr:\n" + err[-2000:])
        except OSError:
            pass
        with self._cv:
            tail = [l for _, l in self.lines[-15:]]
        if tail:
            parts.append("console tail:\n" + "\n".join(tail))
        return ("\n" + "\n".join(parts)) if parts else ""

    def close(self):
        """Kill QEMU and release sockets and logs. Safe to call twice."""
        _live_guests.discard(self)
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            self._reader_thread.join(5)
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        for f in (getattr(self, "_serial_log", None), getattr(self, "_qmp_log", None),
                  getattr(self, "_stderr", None)):
            if f:
                f.close()
        for p in [self.qmp_path] + list(self._port_paths.values()):
            if os.path.lexists(p):
                os.unlink(p)
        if self._sockdir_tmp:
            shutil.rmtree(self._sockdir_tmp, ignore_errors=True)
            self._sockdir_tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def qemu_rss_kib(self):
        """Resident set size of the QEMU process on the host, in KiB."""
        return rss_kib(self.proc.pid)

    # -------------------------------------------------------------- console

    def mark(self):
        """Current position in the console lines (for wait_for/lines_since)."""
        with self._cv:
            return len(self.lines)

    def lines_since(self, mark):
        with self._cv:
            return [l for _, l in self.lines[mark:]]

    def wait_for(self, pattern, timeout=60.0, since=None):
        """Wait for a console line matching the regex pattern, looking at lines
        from index since (default: from now on). Returns (t, line, next_index).
        Raises TimeoutError, also early if QEMU exits."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cv:
            i = len(self.lines) if since is None else since
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    i += 1
                    if rx.search(line):
                        return t, line, i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%s: no console line matching %r within %.1f s"
                                       % (self.name, pattern, timeout))
                if self.proc.poll() is not None and not self._reader_thread.is_alive():
                    raise TimeoutError("%s: QEMU exited (status %s) while waiting for %r"
                                       % (self.name, self.proc.poll(), pattern))
                self._cv.wait(min(left, 0.5))

    def send(self, text):
        """Write raw text to the console (a newline is appended). The guest's
        tty takes lines of at most 4095 characters."""
        data = (text + "\n").encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def sh(self, cmd, timeout=60.0, check=False, stdin_null=True):
        """Run cmd in the guest shell; return ShellResult(rc, lines).

        The command runs in the shell's own context (cd and variables persist)
        with stdin from /dev/null (unless stdin_null=False), stdout and stderr
        both on the console. Its output is what appears between a begin and an
        end marker, so lines written meanwhile by background jobs to the
        console would be mixed in: redirect their output elsewhere. Kernel
        messages are kept off the console by /init (dmesg -n 1).
        If cmd ends the shell (exit N, a syntax error), rc is the shell's exit
        status and the next command runs in a fresh shell, back in / with no
        variables set.
        With check=True a non-zero exit status raises RuntimeError."""
        with self._cv:
            self._n += 1
            n = self._n
        begin = "@@%s-B%d" % (self._token, n)
        end_rx = re.compile(r"@@%s-E%d rc=(\d+)$" % (self._token, n))
        body = "{ %s\n}%s" % (cmd, " </dev/null" if stdin_null else "")
        script = "echo %s\n%s\necho \"@@%s-E%d rc=$?\"" % (begin, body, self._token, n)
        if any(len(l) > 4000 for l in script.split("\n")):
            raise ValueError("command line longer than the guest tty's line limit")
        start = self.mark()
        self.send(script)
        deadline = time.monotonic() + timeout
        # find the begin marker, then the end marker
        _, _, i = self.wait_for(r"(^|[^ ])%s$" % re.escape(begin), timeout, since=start)
        out = []
        exited = None
        with self._cv:
            while True:
                while i < len(self.lines):
                    line = self.lines[i][1]
                    i += 1
                    m = end_rx.search(line)
                    if m:
                        if m.start() > 0 and exited is None:   # output without a final newline
                            out.append(line[:m.start()])
                        res = ShellResult(int(m.group(1)) if exited is None else exited, out)
                        if check and res.rc != 0:
                            raise RuntimeError("guest command failed (rc=%d): %s\n%s"
                                               % (res.rc, cmd, res.out))
                        return res
                    m = re.match(r"SHELL-EXITED rc=(\d+)$", line)
                    if m and exited is None:
                        # The shell died inside cmd (exit, syntax error); /init
                        # started a new one, which runs the rest of our script.
                        exited = int(m.group(1))
                    if exited is None:
                        out.append(line)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%s: command did not finish within %.1f s: %s\n%s"
                                       % (self.name, timeout, cmd, "\n".join(out[-10:])))
                if self.proc.poll() is not None and not self._reader_thread.is_alive():
                    raise TimeoutError("%s: QEMU exited during: %s" % (self.name, cmd))
                self._cv.wait(min(left, 0.5))

    def run(self, cmd, timeout=60.0):
        """sh(cmd, check=True).lines: output lines, raising on failure."""
        return self.sh(cmd, timeout, check=True).lines

    def write_file(self, path, data, mode=0o644, timeout=60.0):
        """Create a guest file with the given content (str or bytes), through
        the console in base64 chunks. Meant for small files (configs,
        scripts); programs belong in the initramfs."""
        if isinstance(data, str):
            data = data.encode()
        b64 = base64.b64encode(data).decode()
        tmp = path + ".b64"
        self.run(": > %s" % _shell_quote(tmp), timeout)
        for i in range(0, len(b64), 3000):
            self.run("echo %s >> %s" % (b64[i:i + 3000], _shell_quote(tmp)), timeout)
        self.run("base64 -d %s > %s && rm %s && chmod %o %s" % (
            _shell_quote(tmp), _shell_quote(path), _shell_quote(tmp), mode, _shell_quote(path)),
            timeout)

    def read_file(self, path, timeout=60.0):
        """Bytes of a guest file (through base64 on the console)."""
        lines = self.run("base64 %s" % _shell_quote(path), timeout)
        return base64.b64decode("".join(lines))

    def fetch_dir(self, path, dest, timeout=120.0):
        """Copy a guest directory tree into the host directory dest (created;
        existing files are overwritten), through tar and base64 on the console."""
        tmp = "/tmp/.fetch-%s" % self._token
        self.run("tar -C %s -cf %s.tar . && base64 %s.tar > %s.b64 && rm %s.tar"
                 % (_shell_quote(path), tmp, tmp, tmp, tmp), timeout)
        lines = self.run("cat %s.b64; rm %s.b64" % (tmp, tmp), timeout)
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode("".join(lines)))) as tf:
            for member in tf.getmembers():
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise ValueError("unsafe path in guest tar: %s" % member.name)
            tf.extractall(dest)

    # -------------------------------------------------------------- QMP

    @property
    def qmp(self):
        """The QMP client, connected on first use."""
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path, log=self._qmp_log)
        return self._qmp

    def balloon(self, target_bytes):
        """Set the balloon target: the guest's memory size the host wants (QMP
        `balloon`, what `virsh setmem` does). Returns when QEMU accepted it."""
        self.qmp.cmd("balloon", value=int(target_bytes))

    def query_balloon(self):
        """The guest's current memory size as seen by QEMU (bytes): guest RAM
        minus the pages in the balloon (QMP query-balloon "actual")."""
        return self.qmp.cmd("query-balloon")["actual"]

    def wait_balloon(self, target_bytes, timeout=60.0, tolerance=MiB, interval=0.05):
        """Poll query-balloon until |actual - target| <= tolerance or timeout.
        Returns BalloonWait(reached, actual, elapsed); never raises on timeout
        (a stalled balloon is a result some tests expect)."""
        t0 = time.monotonic()
        while True:
            actual = self.query_balloon()
            elapsed = time.monotonic() - t0
            if abs(actual - target_bytes) <= tolerance:
                return BalloonWait(True, actual, elapsed)
            if elapsed >= timeout:
                return BalloonWait(False, actual, elapsed)
            time.sleep(interval)

    def balloon_stats(self, poll_interval=2, wait=True):
        """Guest memory statistics from the balloon's stats queue (what
        `virsh dommemstat` shows): enables polling and returns the
        guest-stats QOM property (waits one interval for fresh numbers)."""
        path = "/machine/peripheral/balloon0"
        self.qmp.cmd("qom-set", path=path, property="guest-stats-polling-interval",
                     value=poll_interval)
        if wait:
            time.sleep(poll_interval + 0.5)
        return self.qmp.cmd("qom-get", path=path, property="guest-stats")

    # -------------------------------------------------------------- ports

    def port_path(self, name=AGENT_PORT):
        """Host-side unix socket of a virtio-serial port."""
        return self._port_paths[name]

    def connect_port(self, name=AGENT_PORT, timeout=10.0):
        """Connect to the host side of a virtio-serial port; returns a socket
        (blocking, with the given timeout set). One host client at a time."""
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.port_path(name))
                s.settimeout(timeout)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def _shell_quote(s):
    if re.match(r"^[A-Za-z0-9_./:=,@+-]+$", s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"
