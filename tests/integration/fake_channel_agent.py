# SPDX-License-Identifier: MIT
"""A fake shrinkd channel agent: the guest end of org.shrinkd.agent.0 as
docs/channel-protocol.md describes it, listening on a unix socket the way
QEMU's "-chardev socket,server=on" (and libvirt's channel) does, one client
at a time. Standard library only.

It answers guest-sync-delimited (0xFF, then the id), guest-sync,
guest-ping, guest-info, shrinkd-status, shrinkd-prepare, shrinkd-shrink and
shrinkd-prepare-migration, with the protocol's typed errors for unknown
commands and bad arguments. Misbehaviours for the tests are switched on by
attributes:

  silent            accept connections, never answer anything
  junk_on_connect   bytes written to each new client before anything else
                    (e.g. a stale 0xFF + answer meant for an earlier client)
  prepare_delay     seconds to wait before answering shrinkd-prepare
  prepare_error     (class, desc): answer shrinkd-prepare with this error
  migration_delay   seconds to wait before answering shrinkd-prepare-migration
  migration_error   (class, desc): answer shrinkd-prepare-migration with this
  close_on          command name: close the connection instead of answering
  freed_per_app     what each fake application "frees" in a round

Every command received is recorded in .log as (seq, name, arguments),
after it was read; every answer in .answers as (seq, name), *before* it is
written, so that nothing the host does in reaction to it can be recorded
with a smaller seq. seq comes from an EventLog, which the tests share with
the other fakes (the fake QMP) to order events across them: a clock read
after the I/O cannot do that (the other side may act, and record, first).

As a program:  python3 fake_channel_agent.py SOCKET [--silent]
"""
import json
import os
import socket
import sys
import threading
import time

MiB = 1 << 20

# The fake guest's applications: (pid, client, [shrinker names]).
APPS = [
    (101, "cache-server", ["lru-cache", "arena"]),
    (202, "osv-style", ["osv-heap"]),
]
# The sum of the shrinkers' estimates, what shrinkd-prepare-migration's
# fraction_pct is a share of.
ESTIMATES_BYTES = 3 * 64 * MiB


def round_report(round_id, level, target, freed_per_app, reason="host"):
    requests = []
    for pid, client, shrinkers in APPS:
        share = freed_per_app // len(shrinkers)
        for i, name in enumerate(shrinkers):
            requests.append({
                "pid": pid, "client": client, "shrinker": name, "id": i + 1, "pass": 1,
                "level": level, "asked_bytes": target // 3, "freed_bytes": share,
                "reply_us": 850 + i, "missed": False,
            })
    claimed = sum(r["freed_bytes"] for r in requests)
    return {
        "round_id": round_id, "level": level, "reason": reason, "target_bytes": target,
        "deadline_ms": 4000, "started_us": int(time.monotonic() * 1e6), "duration_us": 2345,
        "fanout_us": 120, "claimed_bytes": claimed, "measured_bytes": claimed - MiB,
        "mem_available_before_bytes": 200 * MiB, "mem_available_after_bytes": 200 * MiB + claimed,
        "requests": requests,
    }


class EventLog:
    """One sequence of events shared by the fakes of a test: record() hands
    out increasing numbers under one lock. To show that A happened before
    the host did B, record A before the write that lets the host act on it
    and B after the read that received it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0

    def record(self):
        with self._lock:
            seq = self._next
            self._next += 1
            return seq


class FakeUnixServer:
    """A stream socket at @path served by a thread, one client at a time;
    subclasses answer in _client(conn). Subclasses set their own state
    before calling this __init__, which starts serving."""

    def __init__(self, path, events=None):
        self.path = path
        self.events_log = events if events is not None else EventLog()
        self.connections = 0
        self._stop = False
        self._lock = threading.Lock()
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self._stop = True
        self.thread.join(5)
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    self._client(conn)
                except OSError:
                    pass  # the client went away mid-answer: serve the next one

    def _client(self, conn):
        raise NotImplementedError


class FakeChannelAgent(FakeUnixServer):
    def __init__(self, path, events=None):
        self.silent = False
        self.junk_on_connect = b""
        self.prepare_delay = 0.0
        self.prepare_error = None
        self.migration_delay = 0.0
        self.migration_error = None
        self.close_on = None
        self.freed_per_app = 96 * MiB
        self.mem_total = 1024 * MiB
        self.mem_free = 100 * MiB
        self.log = []
        self.answers = []
        self.connections = 0
        self.rounds = []
        self._next_round = 1
        super().__init__(path, events)

    def commands(self):
        with self._lock:
            return [name for _, name, _ in self.log]

    # ---- serving ----

    def _client(self, conn):
        conn.settimeout(0.1)
        if self.junk_on_connect:
            conn.sendall(self.junk_on_connect)
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
            # 0xFF from the host: drop whatever partial input we hold.
            if b"\xff" in buf:
                buf = buf[buf.rindex(b"\xff") + 1:]
            while True:
                text = buf.lstrip(b" \t\r\n").decode("utf-8", "surrogateescape")
                if not text:
                    buf = b""
                    break
                try:
                    obj, end = json.JSONDecoder().raw_decode(text)
                except json.JSONDecodeError as e:
                    if e.pos >= len(text) - 1 and text.startswith("{"):
                        buf = text.encode("utf-8", "surrogateescape")
                        break  # incomplete: wait for more
                    # Malformed: an error, and input is dropped until the next 0xFF.
                    self._send(conn, {"error": {"class": "GenericError", "desc": "malformed JSON"}}, None)
                    buf = b""
                    break
                buf = text[end:].encode("utf-8", "surrogateescape")
                if not self._handle(conn, obj):
                    return

    def _send(self, conn, obj, name, prefix=b""):
        # Recorded before the write: once written, the host may act on it.
        with self._lock:
            self.answers.append((self.events_log.record(), name))
        conn.sendall(prefix + json.dumps(obj).encode() + b"\n")

    def _handle(self, conn, req):
        """Answers one request. Returns False to drop the connection."""
        name = req.get("execute") if isinstance(req, dict) else None
        args = req.get("arguments", {}) if isinstance(req, dict) else {}
        with self._lock:
            self.log.append((self.events_log.record(), name, args))
        if self.silent:
            return True
        if name == self.close_on:
            return False
        if not isinstance(name, str) or not isinstance(args, dict):
            self._send(conn, {"error": {"class": "GenericError", "desc": "not a command"}}, name)
            return True
        handler = getattr(self, "_cmd_" + name.replace("-", "_"), None)
        if handler is None:
            self._send(conn, {"error": {"class": "CommandNotFound",
                                        "desc": "The command %s has not been found" % name}}, name)
            return True
        try:
            ret, prefix = handler(args)
        except ValueError as e:
            self._send(conn, {"error": {"class": "InvalidParameter", "desc": str(e)}}, name)
            return True
        if isinstance(ret, dict) and "error" in ret and len(ret) == 1:
            self._send(conn, ret, name)
        else:
            self._send(conn, {"return": ret}, name, prefix)
        return True

    # ---- commands ----

    @staticmethod
    def _int_arg(args, key, required=False, default=None):
        if key not in args:
            if required:
                raise ValueError("missing argument '%s'" % key)
            return default
        v = args[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("argument '%s' must be a non-negative integer" % key)
        return v

    def _cmd_guest_sync_delimited(self, args):
        return self._int_arg(args, "id", required=True), b"\xff"

    def _cmd_guest_sync(self, args):
        return self._int_arg(args, "id", required=True), b""

    def _cmd_guest_ping(self, args):
        return {}, b""

    def _cmd_guest_info(self, args):
        names = ["guest-sync-delimited", "guest-sync", "guest-ping", "guest-info",
                 "shrinkd-status", "shrinkd-shrink", "shrinkd-prepare",
                 "shrinkd-prepare-migration"]
        return {"version": "0.1.0-fake", "supported_commands": [
            {"name": n, "enabled": True, "success-response": True} for n in names]}, b""

    def status(self):
        clients = []
        for pid, client, shrinkers in APPS:
            clients.append({"pid": pid, "uid": 0, "name": client, "shrinkers": [
                {"id": i + 1, "name": s, "priority": 10 * i, "estimate_bytes": 64 * MiB if i == 0 else None,
                 "asked": len(self.rounds), "asked_bytes": 32 * MiB, "freed_bytes": 30 * MiB,
                 "misses": 0, "consecutive_misses": 0, "skipped_in_soft": False,
                 "last_reply_us": 900}
                for i, s in enumerate(shrinkers)]})
        return {
            "version": "0.1.0-fake", "pid": 77, "uptime_ms": 3723000,
            "memory": {"mem_total_bytes": self.mem_total, "mem_available_bytes": 300 * MiB,
                       "mem_free_bytes": self.mem_free},
            "clients": clients, "rounds": list(self.rounds),
            "totals": {"rounds": len(self.rounds),
                       "claimed_bytes": sum(r["claimed_bytes"] for r in self.rounds),
                       "measured_bytes": sum(r["measured_bytes"] for r in self.rounds)},
        }

    def _cmd_shrinkd_status(self, args):
        return self.status(), b""

    def _new_round(self, level, target, reason="host"):
        r = round_report(self._next_round, level, target, self.freed_per_app, reason)
        self._next_round += 1
        self.rounds.append(r)
        return r

    def _cmd_shrinkd_shrink(self, args):
        target = self._int_arg(args, "target_bytes", required=True)
        level = args.get("level", "soft")
        if level not in ("soft", "hard"):
            raise ValueError("level must be soft or hard")
        return self._new_round(level, target), b""

    def _cmd_shrinkd_prepare(self, args):
        new_size = self._int_arg(args, "new_size_bytes", required=True)
        self._int_arg(args, "deadline_ms", default=4000)
        unknown = set(args) - {"new_size_bytes", "deadline_ms"}
        if unknown:
            raise ValueError("unknown argument '%s'" % sorted(unknown)[0])
        if self.prepare_delay:
            time.sleep(self.prepare_delay)
        if self.prepare_error:
            klass, desc = self.prepare_error
            return {"error": {"class": klass, "desc": desc}}, b""
        needed = max(0, self.mem_total - new_size - self.mem_free)
        rounds = [self._new_round("soft", needed)]
        freed = rounds[0]["claimed_bytes"]
        if freed < needed:
            rounds.append(self._new_round("hard", needed - freed))
            freed += rounds[-1]["claimed_bytes"]
        return {"current_size_bytes": self.mem_total, "new_size_bytes": new_size,
                "needed_bytes": needed, "free_bytes": self.mem_free, "freed_bytes": freed,
                "ready": freed >= needed, "rounds": rounds}, b""

    def _cmd_shrinkd_prepare_migration(self, args):
        # As the agent does (docs/channel-protocol.md): one soft round, reason
        # "migration", for fraction_pct % of the shrinkers' estimates.
        deadline = self._int_arg(args, "deadline_ms", default=3000)
        pct = self._int_arg(args, "fraction_pct", default=100)
        if not 1 <= deadline <= 600000:
            raise ValueError("argument 'deadline_ms' must be between 1 and 600000")
        if not 1 <= pct <= 100:
            raise ValueError("argument 'fraction_pct' must be between 1 and 100")
        unknown = set(args) - {"deadline_ms", "fraction_pct"}
        if unknown:
            raise ValueError("unknown argument '%s'" % sorted(unknown)[0])
        if self.migration_delay:
            time.sleep(self.migration_delay)
        if self.migration_error:
            klass, desc = self.migration_error
            return {"error": {"class": klass, "desc": desc}}, b""
        target = -(-ESTIMATES_BYTES * pct // 100)
        r = self._new_round("soft", target, reason="migration")
        return {"freed_bytes": r["claimed_bytes"], "measured_bytes": r["measured_bytes"],
                "mem_available_before_bytes": r["mem_available_before_bytes"],
                "mem_available_after_bytes": r["mem_available_after_bytes"],
                "target_bytes": target, "ready": True, "rounds": [r]}, b""


def main():
    if len(sys.argv) < 2:
        print("usage: fake_channel_agent.py SOCKET [--silent]", file=sys.stderr)
        return 64
    agent = FakeChannelAgent(sys.argv[1])
    agent.silent = "--silent" in sys.argv
    print("fake channel agent on", sys.argv[1], flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
