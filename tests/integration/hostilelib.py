# SPDX-License-Identifier: MIT
"""Hostile local users for the attack suite of issue 10 (test_hostile.py,
bench/hostile-rss.py): an unprivileged system user, attacker processes
that run as that user and speak the raw wire protocol, a control client
that returns the agent's JSON as it was sent (64-bit figures exact), and
readings of the daemon's memory and descriptors from /proc.

Every attacker is this file run as a child process:

    hostilelib.py MODE UID GID SOCKET [KEY=VALUE ...]

It raises its descriptor limit to the hard limit and drops to UID/GID
before it connects to anything, then prints one "READY uid=U pid=P" line
and machine-readable lines after it ("DONE {json}" when its work is
done); it then holds its connections until it is killed. Every loop is
bounded in count and in time.

Standard library only, like shrinkdtest.py."""
import errno
import json
import os
import pwd
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shrinkdtest import (ERROR, HELLO, REGISTER, SHRINK, SHRINK_DONE, UNREGISTER, WELCOME,  # noqa: E402
                         MiB, Process, frame, parse_shrink, wire_string)

CONTROL, CONTROL_REPLY = 10, 11
PROTO_CONTROL_MORE = 0x1
PROTO_ERR_STATE, PROTO_ERR_UNKNOWN_ID, PROTO_ERR_LIMIT = 7, 9, 10
U64_MAX = (1 << 64) - 1
HOSTILE_USER = "shrinkd-hostile"
HERE = os.path.abspath(__file__)

# The agent's defaults, as its headers define them (a test that finds
# other figures fails, rather than testing a bound nobody set):
MAX_CLIENTS = 1024                # AGENT_SERVER_CLIENTS_DEFAULT (server.h)
RESERVED_ROOT_CLIENTS = 16        # AGENT_SERVER_ROOT_RESERVED_DEFAULT
MAX_CLIENTS_PER_UID = 32          # AGENT_SERVER_CLIENTS_PER_UID_DEFAULT
HELLO_TIMEOUT_MS = 2000           # AGENT_SERVER_HELLO_TIMEOUT_DEFAULT_MS
OUT_MAX = 4 * MiB                 # AGENT_SERVER_OUT_MAX: queued replies of one non-root peer
OUT_ROOT_MAX = 32 * MiB           # AGENT_SERVER_OUT_ROOT_MAX: ... of one root peer
OUT_NONROOT_MAX = 16 * MiB        # AGENT_SERVER_OUT_NONROOT_MAX: ... of all non-root peers
MAX_SHRINKERS_PER_CLIENT = 1024   # AGENT_REGISTRY_SHRINKERS_PER_CLIENT_DEFAULT (registry.h)
MAX_SHRINKERS_PER_UID = 4096      # AGENT_REGISTRY_SHRINKERS_PER_UID_DEFAULT
MAX_SHRINKERS = 65536             # AGENT_REGISTRY_SHRINKERS_DEFAULT
TRUST_PRIOR = 1 * MiB             # agent_client_trust() (registry.c): (verified + 1 MiB) / (claimed + 1 MiB)
STATUS_LIMIT_DEFAULT = 1000       # AGENT_STATUS_LIMIT_DEFAULT (commands.h)
STATUS_LIMIT_MAX = 10000          # AGENT_STATUS_LIMIT_MAX

# The agent's refusals, as server.c and registry.c word them.
TOO_MANY_FROM_UID = "too many connections from uid %d (max_clients_per_uid=%d)"
NO_HELLO = "no HELLO within %d ms"
NOT_READING = "does not read its replies"      # a debug line of the agent's log, not sent
PER_CLIENT_FULL = "at most %d shrinkers per connection"
PER_UID_FULL = "uid %d has %d shrinkers already (max_shrinkers_per_uid)"
ANOTHER_AGENT = "another shrinkd"              # "... is running (it holds X)" / "... is listening on X"


# ---- the unprivileged user ----

def hostile_user():
    """(uid, gid) of the attackers' user, created as a system user without
    a home or a login shell if it does not exist yet. Needs root."""
    try:
        pw = pwd.getpwnam(HOSTILE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        HOSTILE_USER], check=True, capture_output=True)
        pw = pwd.getpwnam(HOSTILE_USER)
    return pw.pw_uid, pw.pw_gid


def become(uid, gid):
    """Raises the descriptor limit to its hard limit (a user may), then drops
    to @uid/@gid for good."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError("could not drop to uid %d" % uid)


def attacker_argv(mode, uid, gid, sock, **kw):
    """The command line of an attacker child (see the module's docstring)."""
    return ([sys.executable, HERE, mode, str(uid), str(gid), sock]
            + ["%s=%s" % (k, v) for k, v in kw.items()])


class Attacker(Process):
    """An attacker child (MODE as UID/GID on SOCKET), started and READY."""

    def __init__(self, mode, uid, gid, sock, **kw):
        super().__init__(attacker_argv(mode, uid, gid, sock, **kw), name="attacker-" + mode)
        self.wait_line(r"^READY ", 10)

    def result(self, prefix="DONE", timeout=60):
        """The JSON of its first line starting with @prefix."""
        m, _ = self.wait_line(r"^%s " % prefix, timeout)
        return json.loads(m.string.split(" ", 1)[1])


# ---- the daemon seen from /proc ----

def proc_status(pid):
    """/proc/PID/status as {"VmRSS": KiB, "VmHWM": KiB, ...} (the kB fields)."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            v = v.split()
            if len(v) == 2 and v[1] == "kB":
                out[k] = int(v[0])
    return out


def memory_mib(pid):
    """(VmRSS, VmHWM) of @pid in MiB: what it holds now, and the most it
    ever held (the kernel's own peak, which no sampling can miss)."""
    st = proc_status(pid)
    return st["VmRSS"] / 1024.0, st["VmHWM"] / 1024.0


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Sampler:
    """Samples a process's VmRSS and its count of open descriptors every
    @step seconds in a thread: .peak_rss_mib, .peak_fds. The descriptors
    show how many connections the daemon holds at once, which the
    attacker cannot see (an accepted connection that waits for HELLO looks
    like one still in the listen backlog)."""

    def __init__(self, pid, step=0.02):
        import threading
        self.pid, self.step = pid, step
        self.peak_rss_mib = memory_mib(pid)[0]
        self.peak_fds = open_fds(pid)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(self.step):
            try:
                self.peak_rss_mib = max(self.peak_rss_mib, memory_mib(self.pid)[0])
                self.peak_fds = max(self.peak_fds, open_fds(self.pid))
            except (OSError, KeyError):
                return

    def stop(self):
        self._stop.set()
        self._t.join()
        return self


class Flood:
    """The daemon's memory around one flood: VmRSS before, the peak
    (VmHWM, and the sampled VmRSS peak), VmRSS after; and the root status
    latencies measured during it."""

    def __init__(self, name, pid):
        self.name, self.pid = name, pid
        self.rss_before, self.hwm_before = memory_mib(pid)
        reset_hwm(pid)
        self.fds_before = open_fds(pid)
        self.sampler = Sampler(pid)
        self.status_ms = []
        self.rss_after = self.hwm = None

    def root_status(self, sock, timeout=10.0, *args):
        """Runs the real shrinkctl as root; returns (ms, its result)."""
        r, ms = timed_shrinkctl(sock, timeout, "status", *args)
        self.status_ms.append(ms)
        return ms, r

    def end(self, settle_s=0.5):
        """Call after the attacker is gone: VmRSS once the daemon has let
        go of it (it trims its heap soon after large frees)."""
        self.sampler.stop()
        time.sleep(settle_s)
        self.rss_after, self.hwm = memory_mib(self.pid)
        return self

    def line(self):
        return ("rss %s: before VmRSS %.1f MiB (VmHWM %.1f); during: VmHWM %.1f MiB, sampled VmRSS "
                "peak %.1f MiB; after VmRSS %.1f MiB; descriptors %d -> peak %d"
                % (self.name, self.rss_before, self.hwm_before, self.hwm, self.sampler.peak_rss_mib,
                   self.rss_after, self.fds_before, self.sampler.peak_fds))


def reset_hwm(pid):
    """Resets @pid's VmHWM to its VmRSS (clear_refs "5", root), so that the
    peak read after a flood is that flood's; True if it could."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def timed_shrinkctl(sock, timeout, *args):
    """The real shrinkctl binary, as root: (CompletedProcess, milliseconds)."""
    from shrinkdtest import binary
    argv = [binary("agent/shrinkctl"), "--socket", sock, "--timeout", str(int(timeout))] + list(args)
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
    return r, (time.monotonic() - t0) * 1000.0


# ---- the wire ----

def parse_error(body):
    """An ERROR body as (code, ref, text)."""
    code, _, ref, n = struct.unpack_from("<HHIH", body)
    return code, ref, body[10:10 + n].rstrip(b"\0").decode(errors="replace")


def hello_frame(name):
    return frame(HELLO, struct.pack("<HHI", 1, 1, 0) + wire_string(name))


def control_frame(request_id, obj):
    text = json.dumps(obj, separators=(",", ":")).encode()
    return frame(CONTROL, struct.pack("<III", request_id, 0, len(text) + 1) + text + b"\0")


def register_frame(sid, name, priority=50, estimate=None):
    flags = 1 if estimate is not None else 0
    return frame(REGISTER, struct.pack("<IHHQ", sid, priority, flags, estimate or 0) + wire_string(name))


def done_frame(round_id, sid, freed):
    return frame(SHRINK_DONE, struct.pack("<QIIQII", round_id, sid, 0, freed, 1, 0))


# A message a client may send that always gets an ERROR and never closes
# the connection: everything sent before it has been handled when it comes.
BARRIER_ID = 0xFFFFFFFF
BARRIER = frame(UNREGISTER, struct.pack("<II", BARRIER_ID, 0))


def connect(path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    s.connect(path)
    return s


def recv_msg(s, timeout):
    """(type, body) of the next packet; (None, b"") at end of stream; raises
    TimeoutError."""
    r, _, _ = select.select([s], [], [], timeout)
    if not r:
        raise TimeoutError("nothing received in %.1f s" % timeout)
    try:
        data = s.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        # The agent closed with our packet unread (it refused us at
        # accept, before our HELLO came): the reset is reported first,
        # the ERROR it sent before closing is still queued behind it.
        try:
            data = s.recv(65536, socket.MSG_DONTWAIT)
        except OSError:
            return None, b""
    if not data:
        return None, b""
    return data[1], data[8:]


def hello(s, name, timeout=10.0):
    """Says HELLO; returns None on WELCOME, else the refusal as text."""
    try:
        s.sendall(hello_frame(name))
    except (ConnectionResetError, BrokenPipeError):
        pass  # refused at accept: the ERROR may be waiting
    t, body = recv_msg(s, timeout)
    if t == WELCOME:
        return None
    if t == ERROR:
        code, _, text = parse_error(body)
        return "ERROR %d %s" % (code, text)
    return "closed" if t is None else "message type %d" % t


def read_reply(s, rid, timeout):
    """The text of the CONTROL_REPLY to request @rid, its chunks joined.
    Raises on an ERROR, an end of stream or a timeout."""
    chunks = []
    end = time.monotonic() + timeout
    while True:
        t, body = recv_msg(s, max(0.1, end - time.monotonic()))
        if t is None:
            raise ConnectionResetError("the agent closed the control connection")
        if t == ERROR:
            raise RuntimeError("ERROR %d %s" % parse_error(body)[::2])
        if t != CONTROL_REPLY:
            continue
        r_id, flags, n = struct.unpack_from("<III", body)
        if r_id != rid:
            continue
        chunks.append(body[12:12 + n - 1])
        if not flags & PROTO_CONTROL_MORE:
            return b"".join(chunks)


class Control:
    """A control connection (what shrinkctl speaks) that keeps the agent's
    reply text as sent: json.loads() keeps 64-bit integers exact, where
    shrinkctl's JSON output goes through int64."""

    def __init__(self, path, timeout=10.0):
        self.s = connect(path, timeout)
        why = hello(self.s, "hostile-test", timeout)
        if why:
            self.s.close()
            raise ConnectionRefusedError("control connection refused: %s" % why)
        self.next_id = 1

    def call(self, execute, arguments=None, timeout=60.0):
        """Returns (reply object, reply bytes). Raises on an ERROR message."""
        req = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        rid = self.next_id
        self.next_id += 1
        self.s.sendall(control_frame(rid, req))
        text = read_reply(self.s, rid, timeout)
        return json.loads(text), len(text)

    def close(self):
        self.s.close()


def control_call(path, execute, arguments=None, timeout=60.0):
    """One command on a fresh control connection: (reply, bytes)."""
    c = Control(path)
    try:
        return c.call(execute, arguments, timeout)
    finally:
        c.close()


def reason_key(text):
    """An error text without its figures: "too many connections from uid
    999 (...)" counts with the others as "too many connections"."""
    return " ".join(text.split()[:3])


# ---- the attackers (child modes) ----

def out(line):
    print(line, flush=True)


def done(result):
    out("DONE " + json.dumps(result, sort_keys=True))


def hold_forever():
    """Keeps the connections until the test kills us (bounded by the test)."""
    while True:
        time.sleep(3600)


def _opt(kw, key, default, conv=int):
    return conv(kw[key]) if key in kw else default


def _tally(counts, texts, key, text):
    counts[key] = counts.get(key, 0) + 1
    texts.setdefault(key, text)


def attack_nohello(sock, kw):
    """Opens `n` connections and never says HELLO, in three phases.

    1. The burst: n connects at once, then up to `settle_s` for the agent's
       answers; prints HELD with how many were refused (and why) and how
       many are still open, i.e. accepted and waiting for HELLO.
    2. The flood: back to n connections, and every one the agent closes
       is replaced at once, for at most `flood_s` seconds and `max_connects` connects in all,
       until SIGUSR1 (while the test checks that root still gets in).
    3. The watch: no more connects, for at most `watch_s` seconds or until
       the agent closed them all; prints DONE: why each was closed (the
       ERROR's text), how long those closed for want of HELLO had lived,
       how many are still open."""
    n = _opt(kw, "n", 4096)
    settle_s = _opt(kw, "settle_s", 1.0, float)
    flood_s = _opt(kw, "flood_s", 15.0, float)
    max_connects = _opt(kw, "max_connects", 1000000)
    watch_s = _opt(kw, "watch_s", 6.0, float)
    stop = {"t": None}
    signal.signal(signal.SIGUSR1, lambda *_: stop.__setitem__("t", time.monotonic()))

    conns = {}  # fd -> (socket, connect time)
    reasons, texts = {}, {}
    lifetimes = {}  # reason -> [min, max] seconds from connect to close
    connect_errors = {}
    connects = 0
    poller = select.poll()

    def open_one():
        nonlocal connects
        connects += 1
        try:
            s = connect(sock, 2.0)
        except OSError as e:
            k = errno.errorcode.get(e.errno, str(e))
            connect_errors[k] = connect_errors.get(k, 0) + 1
            return False
        s.setblocking(False)
        conns[s.fileno()] = (s, time.monotonic())
        poller.register(s.fileno(), select.POLLIN)
        return True

    def collect(timeout_ms):
        """Handles what the agent sent or closed; returns how many closed."""
        closed = 0
        for fd, _ in poller.poll(timeout_ms):
            s, t_open = conns.pop(fd)
            poller.unregister(fd)
            why, text = "closed", ""
            try:
                data = s.recv(65536)
                if data and data[1] == ERROR:
                    code, _, text = parse_error(data[8:])
                    why = "ERROR %d %s" % (code, reason_key(text))
                elif data:
                    why = "message type %d" % data[1]
            except OSError as e:
                why = errno.errorcode.get(e.errno, str(e))
            s.close()
            _tally(reasons, texts, why, text)
            life = time.monotonic() - t_open
            span = lifetimes.setdefault(why, [life, life])
            span[0], span[1] = min(span[0], life), max(span[1], life)
            closed += 1
        return closed

    t0 = time.monotonic()
    for _ in range(n):
        if not open_one() and connect_errors.get("EMFILE"):
            break
    burst_s = time.monotonic() - t0
    quiet_since = time.monotonic()
    while time.monotonic() - t0 < settle_s:
        if collect(50):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.2:
            break
    out("HELD " + json.dumps({"n": n, "open": len(conns), "burst_s": round(burst_s, 3),
                              "settled_s": round(time.monotonic() - t0, 3),
                              "errors": connect_errors, "reasons": reasons, "texts": texts},
                             sort_keys=True))
    held_reasons = dict(reasons)
    t_flood = time.monotonic()
    last_report = 0.0
    for _ in range(n - len(conns)):  # back to n in flight
        open_one()
    while stop["t"] is None and time.monotonic() - t_flood < flood_s:
        for _ in range(collect(100)):
            if connects < max_connects:
                open_one()
        now = time.monotonic()
        if now - last_report > 0.5:
            last_report = now
            out("STAT open=%d connects=%d flood_s=%.3f" % (len(conns), connects, now - t_flood))
    t_watch = time.monotonic()
    in_watch = {}
    before = dict(reasons)
    while conns and time.monotonic() - t_watch < watch_s:
        collect(100)
    for k, v in reasons.items():
        if v - before.get(k, 0):
            in_watch[k] = v - before.get(k, 0)
    still = [time.monotonic() - t for _, t in conns.values()]
    done({"n": n, "connects": connects, "connect_errors": connect_errors,
          "held_reasons": held_reasons, "reasons": reasons, "texts": texts,
          "lifetimes_s": {k: [round(a, 3), round(b, 3)] for k, (a, b) in lifetimes.items()},
          "watch_reasons": in_watch, "still_open": len(conns),
          "oldest_open_s": round(max(still), 3) if still else None,
          "flood_s": round(t_watch - t_flood, 3), "watched_s": round(time.monotonic() - t_watch, 3)})
    hold_forever()


def attack_shrinkers(sock, kw):
    """Opens up to `conns` connections (stops at the first the agent
    refuses) and registers up to `per_conn` shrinkers on each, `total` at
    most in all, each with estimate `estimate` and priority `priority`.
    Counts the refusals (ERROR code and text by shrinker id): a
    registration that gets no ERROR before the next barrier (one per 32)
    was accepted. It never answers a SHRINK: the agent must not wait for
    it."""
    n_conns = _opt(kw, "conns", MAX_CLIENTS_PER_UID + 1)
    per_conn = _opt(kw, "per_conn", MAX_SHRINKERS_PER_CLIENT + 76)
    total = _opt(kw, "total", 40000)
    estimate = _opt(kw, "estimate", 1 * MiB)
    priority = _opt(kw, "priority", 50)
    t0 = time.monotonic()
    held = []
    result = {"conns": 0, "conn_refused": None, "sent": 0, "accepted": 0, "refused": 0,
              "refused_codes": {}, "refused_texts": {}, "texts": {}, "closed": 0, "other": {},
              "accepted_per_conn": []}

    for c in range(n_conns):
        if result["sent"] >= total:
            break
        try:
            s = connect(sock, 5.0)
            why = hello(s, "hostile-%d" % c)
        except (OSError, TimeoutError) as e:
            why = "connect: %s" % e
        if why:
            result["conn_refused"] = why
            break
        result["conns"] += 1
        held.append(s)
        s.setblocking(True)
        s.settimeout(30.0)
        count = min(per_conn, total - result["sent"])
        refused = set()
        closed = False

        def drain(wait_s):
            """Reads answers up to the barrier's; False after @wait_s."""
            nonlocal closed
            end = time.monotonic() + wait_s
            while True:
                try:
                    t, body = recv_msg(s, max(0.0, end - time.monotonic()))
                except TimeoutError:
                    return False
                if t is None:
                    closed = True
                    return True
                if t == ERROR:
                    code, ref, text = parse_error(body)
                    if ref == BARRIER_ID and code == PROTO_ERR_UNKNOWN_ID:
                        return True
                    refused.add(ref)
                    result["refused_codes"][str(code)] = result["refused_codes"].get(str(code), 0) + 1
                    _tally(result["refused_texts"], result["texts"], reason_key(text), text)
                elif t != SHRINK:
                    result["other"][str(t)] = result["other"].get(str(t), 0) + 1

        for i in range(count):
            try:
                s.sendall(register_frame(i + 1, "h%d-%d" % (c, i), priority, estimate))
            except OSError:
                closed = True
                break
            result["sent"] += 1
            if i % 32 == 31:
                # Wait for the answers to these 32: the agent never blocks on
                # a peer, and an ERROR that does not fit our receive queue is
                # dropped, which would count as accepted.
                s.sendall(BARRIER)
                if not drain(30.0):
                    result["other"]["barrier-timeout"] = result["other"].get("barrier-timeout", 0) + 1
        if not closed:
            try:
                s.sendall(BARRIER)
                if not drain(30.0):
                    result["other"]["barrier-timeout"] = result["other"].get("barrier-timeout", 0) + 1
            except OSError:
                closed = True
        accepted = (count if not closed else 0) - len(refused)
        result["closed"] += closed
        result["refused"] += len(refused)
        result["accepted"] += accepted
        result["accepted_per_conn"].append(accepted)
        if time.monotonic() - t0 > 60:  # bounded in time too
            break
    result["seconds"] = round(time.monotonic() - t0, 3)
    done(result)
    hold_forever()


def attack_readers(sock, kw):
    """`n` connections that say HELLO, then ask status again and again
    and never read a reply. The first registers `shrinkers` shrinkers, so
    that each status reply (the uid's own shrinkers) is large, and reads
    one reply to learn its size; each connection then asks as many as
    make `budget_mib` of replies, `requests` at most: below the agent's
    bound of one peer (OUT_MAX), so that only the bound of all non-root
    peers together (OUT_NONROOT_MAX) can close them. A connection counts
    as closed by the agent when a send fails with EPIPE/ECONNRESET or
    poll() says POLLHUP. At most `seconds` in all."""
    n = _opt(kw, "n", 8)
    n_shrinkers = _opt(kw, "shrinkers", 1000)
    budget = _opt(kw, "budget_mib", 3.5, float) * MiB
    max_requests = _opt(kw, "requests", 400)
    seconds = _opt(kw, "seconds", 30.0, float)
    t0 = time.monotonic()
    conns = []
    refused = {}
    for i in range(n):
        try:
            s = connect(sock, 5.0)
            why = hello(s, "reader-%d" % i)
        except (OSError, TimeoutError) as e:
            why = "connect: %s" % e
        if why:
            refused[why] = refused.get(why, 0) + 1
            continue
        conns.append({"s": s, "sent": 0, "closed": None})
    reply_bytes = 0
    if conns:
        first = conns[0]["s"]
        for i in range(n_shrinkers):
            first.sendall(register_frame(i + 1, "r%d" % i, 50, 1 * MiB))
        first.sendall(BARRIER)
        while True:  # the barrier's ERROR: every REGISTER before it was handled
            t, body = recv_msg(first, 30.0)
            if t is None or (t == ERROR and parse_error(body)[1] == BARRIER_ID):
                break
        first.sendall(control_frame(1, {"execute": "status", "arguments": {"limit": STATUS_LIMIT_MAX}}))
        reply_bytes = len(read_reply(first, 1, 30.0))
    requests = max(1, min(max_requests, int(budget // max(reply_bytes, 1))))
    for c in conns:
        c["s"].setblocking(False)
    out("READERS open=%d refused=%s reply_bytes=%d requests=%d"
        % (len(conns), json.dumps(refused), reply_bytes, requests))
    rid = 1
    poller = select.poll()
    for c in conns:
        poller.register(c["s"].fileno(), select.POLLOUT)
    by_fd = {c["s"].fileno(): c for c in conns}
    request = {"execute": "status", "arguments": {"limit": STATUS_LIMIT_MAX}}

    def mark_closed(c, why):
        if c["closed"] is None:
            c["closed"] = (why, round(time.monotonic() - t0, 3))
            poller.unregister(c["s"].fileno())

    while time.monotonic() - t0 < seconds:
        live = [c for c in conns if c["closed"] is None and c["sent"] < requests]
        if not live:
            break
        for fd, ev in poller.poll(100):
            c = by_fd[fd]
            if c["closed"] is not None:
                continue
            if ev & (select.POLLHUP | select.POLLERR):
                mark_closed(c, "hup")
                continue
            if c["sent"] >= requests:
                continue
            rid += 1
            try:
                c["s"].send(control_frame(rid, request))
                c["sent"] += 1
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError) as e:
                mark_closed(c, type(e).__name__)
    sending_s = time.monotonic() - t0
    # The agent may close them a little later: look for a few seconds more.
    end = time.monotonic() + 3.0
    while time.monotonic() < end and any(c["closed"] is None for c in conns):
        for c in conns:
            if c["closed"] is None:
                p = select.poll()
                p.register(c["s"].fileno(), 0)
                if any(ev & select.POLLHUP for _, ev in p.poll(0)):
                    mark_closed(c, "hup")
        time.sleep(0.05)
    done({"n": n, "open": len(conns), "refused": refused, "reply_bytes": reply_bytes,
          "requests_each": requests,
          "asked_bytes_each": requests * reply_bytes,
          "sent": sum(c["sent"] for c in conns),
          "closed": sum(c["closed"] is not None for c in conns),
          "closed_how": sorted({c["closed"][0] for c in conns if c["closed"]}),
          "closed_at_s": sorted(c["closed"][1] for c in conns if c["closed"]),
          "sending_s": round(sending_s, 3)})
    hold_forever()


def attack_liar(sock, kw):
    """One shrinker (`priority`, `estimate`, none if estimate=none) that
    frees nothing and answers each SHRINK claiming `answers` bytes: a
    comma-separated list, the k-th value for the k-th round it is asked
    in, the last for every later round; `delay_ms` before each answer
    (so that another shrinker's answer comes first). Prints every request
    and answer."""
    priority = _opt(kw, "priority", 100)
    est = kw.get("estimate", str(1 << 56))
    estimate = None if est == "none" else int(est)
    answers = [int(v) for v in kw.get("answers", str(U64_MAX)).split(",")]
    delay_s = _opt(kw, "delay_ms", 0, int) / 1000.0
    s = connect(sock, 5.0)
    why = hello(s, kw.get("name", "liar"))
    if why:
        out("REFUSED %s" % why)
        hold_forever()
    s.sendall(register_frame(1, kw.get("name", "liar"), priority, estimate))
    out("REGISTERED pid=%d" % os.getpid())
    rounds = []
    while True:
        t, body = recv_msg(s, 3600)
        if t is None:
            out("CLOSED")
            hold_forever()
        if t == ERROR:
            out("ERROR %d %d %s" % parse_error(body))
            continue
        if t != SHRINK:
            continue
        req = parse_shrink(body)
        if req["round_id"] not in rounds:
            rounds.append(req["round_id"])
        freed = answers[min(len(rounds), len(answers)) - 1]
        if delay_s:
            time.sleep(delay_s)
        s.sendall(done_frame(req["round_id"], req["id"], freed))
        req["answered"] = freed
        out("ANSWERED " + json.dumps(req, sort_keys=True))


MODES = {"nohello": attack_nohello, "shrinkers": attack_shrinkers, "readers": attack_readers,
         "liar": attack_liar}


def main(argv):
    if len(argv) < 5 or argv[1] not in MODES:
        sys.exit("usage: hostilelib.py %s UID GID SOCKET [KEY=VALUE ...]" % "|".join(MODES))
    mode, uid, gid, sock = argv[1], int(argv[2]), int(argv[3]), argv[4]
    kw = dict(a.split("=", 1) for a in argv[5:])
    become(uid, gid)
    out("READY uid=%d pid=%d nofile=%d" % (os.getuid(), os.getpid(),
                                           resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    MODES[mode](sock, kw)


if __name__ == "__main__":
    main(sys.argv)
