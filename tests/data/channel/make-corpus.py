#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the host channel's bad-input corpus: for each case NAME, NAME.in
(the bytes the host sends) and NAME.expect (the answers the agent must give,
in order, one per line). Run it from anywhere after changing a case; the
files it writes are committed (the two large ones are generated here rather
than written by hand).

.expect lines: "return" (any {"return": ...}), "return=JSON" (that exact
value), an error class ("GenericError", "CommandNotFound",
"InvalidParameter", ...), "0xFF" (the byte that precedes the answer to
guest-sync-delimited), "N*LINE" (LINE N times); "#" starts a comment.

tests/integration/test_channel.py feeds every case to the real shrinkd (the
harness sends a 0xFF after each, so that a case that ends mid-object does
not swallow the next), and fuzz/ starts from these inputs."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
PING = b'{"execute":"guest-ping"}'


def req(name, args=None):
    if args is None:
        return b'{"execute":"%s"}' % name.encode()
    return b'{"execute":"%s","arguments":%s}' % (name.encode(), args)


CASES = {}


def case(name, data, *expect, why=""):
    CASES[name] = (data, expect, why)


case("broken-json", b'{"execute" "guest-ping"}\n' + b'{"execute": "guest-ping",}\n' + b'{"execute":}\n' + PING,
     "GenericError", "GenericError", "GenericError", "return",
     why="malformed but balanced objects: each is refused, the next one is served")
case("mismatched-brackets",
     b'{"execute":"guest-ping"]\n' + PING + b'\n{"execute":["guest-ping"}\n' + PING + b"\xff" + PING,
     "GenericError", "return", "return",
     why="nesting is counted, not matched: ']' closes '{' (the object goes to the parser, which refuses "
         "it); '[' closed by '}' leaves the object open, and it swallows the next request until a 0xFF")
case("unterminated-then-resync", b'{"execute":"guest-ping","arguments":{"x":"never closed' + b"\xff" + PING,
     "return", why="0xFF drops the partial object")
case("string-1mib", req("guest-ping", b'{"pad":"' + b"x" * (1 << 20) + b'"}') + PING,
     "GenericError", "return",
     why="a 1 MiB string: refused at 4 KiB (the string limit), discarded to the end of its object")
case("string-4096-and-4097",
     req("guest-sync", b'{"id":"' + b"s" * 4096 + b'"}') + req("guest-sync", b'{"id":"' + b"s" * 4097 + b'"}') + PING,
     "InvalidParameter", "GenericError", "return",
     why="4096 bytes is within the limit (but an id must be an integer); 4097 is not")
case("nesting-1000", req("guest-ping", b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}") + PING,
     "GenericError", "return", why="1000 levels: refused at 17, discarded to the end of the object")
case("nesting-16-and-17",
     req("guest-ping", b'{"a":' + b"[" * 14 + b"]" * 14 + b"}") + req("guest-ping", b'{"a":' + b"[" * 15 + b"]" * 15 + b"}") + PING,
     "InvalidParameter", "GenericError", "return",
     why="16 levels parse (then 'a' is an unknown argument); 17 do not")
case("object-over-64kib",
     req("guest-ping", b"{" + b",".join(b'"k%d":"%s"' % (i, b"v" * 1000) for i in range(70)) + b"}") + PING,
     "GenericError", "return", why="70 KiB of short strings: over the 64 KiB request limit")
case("unknown-commands",
     req("guest-exec", b'{"path":"/bin/sh"}') + req("guest-shutdown") + req("guest-file-open", b'{"path":"/etc/shadow"}')
     + req("shrinkd-nope") + req("") + req("GUEST-PING"),
     "6*CommandNotFound")
case("wrong-types",
     req("guest-sync", b'{"id":"7"}') + req("guest-sync", b'{"id":1.5}') + req("guest-sync", b'{"id":true}')
     + req("guest-sync", b'{"id":null}') + req("guest-sync", b'{"id":[1]}')
     + req("shrinkd-shrink", b'{"target_bytes":"1M"}') + req("shrinkd-shrink", b'{"target_bytes":1,"level":5}')
     + req("shrinkd-shrink", b'{"target_bytes":1,"level":"medium"}')
     + req("shrinkd-prepare", b'{"new_size_bytes":1.5e9}') + req("shrinkd-prepare", b'{"new_size_bytes":1,"deadline_ms":"1s"}')
     + b'{"execute":"guest-ping","arguments":[]}' + b'{"execute":"guest-ping","arguments":null}'
     + b'{"execute":5}' + b'{"execute":null}',
     "12*InvalidParameter", "2*GenericError")
case("out-of-range",
     req("shrinkd-shrink", b'{"target_bytes":-1}') + req("shrinkd-shrink", b'{"target_bytes":1,"deadline_ms":0}')
     + req("shrinkd-shrink", b'{"target_bytes":1,"deadline_ms":600001}')
     + req("shrinkd-prepare", b'{"new_size_bytes":-5}') + req("shrinkd-prepare", b'{"new_size_bytes":1,"deadline_ms":0}')
     + req("guest-sync", b'{"id":9223372036854775808}') + req("guest-sync", b'{"id":012}')
     + req("guest-sync", b'{"id":1e999}') + b'{"execute":"guest-ping","id":[1,-1e999]}'
     + req("guest-sync", b'{"id":-9223372036854775808}'),
     "5*InvalidParameter", "4*GenericError", "return=-9223372036854775808",
     why="a number a lax parser would wrap, read as octal or as infinity is malformed, not another number")
case("lax-json",
     b'{"execute":"guest-p\\ing"}' + req("guest-ping", b'{"x":"a\tb"}') + req("guest-ping", b'{"x":"\\u12"}')
     + req("guest-ping", b'{"x":"a\nb"}') + PING,
     "4*GenericError", "return",
     why="escapes JSON does not have and raw control characters in strings, which a lax parser would take")
case("missing-arguments",
     req("guest-sync") + req("guest-sync", b"{}") + req("guest-sync-delimited") + req("shrinkd-shrink")
     + req("shrinkd-shrink", b'{"level":"hard"}') + req("shrinkd-prepare") + req("shrinkd-prepare", b'{"deadline_ms":100}')
     + b'{"arguments":{}}',
     "7*InvalidParameter", "GenericError")
case("unknown-arguments",
     req("guest-ping", b'{"x":1}') + req("guest-info", b'{"verbose":true}') + req("shrinkd-status", b'{"all":true}')
     + req("shrinkd-prepare", b'{"new_size_bytes":1,"force":true}')
     + req("shrinkd-shrink", b'{"target_bytes":1,"reason":"manual"}') + req("guest-ping", b'{"\\u0000":1}')
     + b'{"execute":"guest-ping","extra":1}',
     "6*InvalidParameter", "GenericError",
     why="the host's rounds are always reason host; unknown top-level keys are malformed requests")
case("garbage-then-resync",
     b"\x01\x02 garbage \x80\xfe\x7f\x00 more]]]\r\n" + b"\xff" + req("guest-sync-delimited", b'{"id":4242}'),
     "GenericError", "0xFF", "return=4242",
     why="one error for the run of stray bytes, then the 0xFF and a fresh sync")
case("sync-mid-object", b'{"execute":"guest-sync","arguments":{"id":' + b"\xff" + req("guest-sync-delimited", b'{"id":99}'),
     "0xFF", "return=99")
case("ff-inside-string", req("guest-ping", b'{"x":"a\xffb"}') + b"\n" + PING,
     "GenericError", "return",
     why="0xFF is never UTF-8: it resyncs even inside a string; what follows it (b\"}}) is stray")
case("nul-in-the-middle",
     b'{"execute":"guest-ping"\x00}' + b'{"execute":"guest-\x00ping"}' + b"\x00" + PING,
     "GenericError", "GenericError", "GenericError", "return")
case("invalid-utf8",
     req("guest-ping", b'{"x":"\xc3\x28"}') + req("guest-ping", b'{"x":"\xc0\xaf"}') + req("guest-ping", b'{"x":"\xed\xa0\x80"}')
     + req("guest-ping", b'{"x":"\\ud800"}') + PING,
     "4*GenericError", "return")
case("top-level-non-objects", b'[' + PING + b']\n"guest-ping" 42 true\n' + PING,
     "GenericError", "return", "GenericError", "return",
     why="a request is an object: '[' is stray, the object inside is served, ']' and the rest are stray")
case("many-in-one-write", (PING + b"\n") * 50 + b"\r\n\t " + req("guest-sync", b'{"id":50}'),
     "50*return={}", "return=50")
case("id-echo", b'{"execute":"guest-ping","id":"abc"}' + b'{"execute":"nope","id":[1,{"a":2}]}',
     "return", "CommandNotFound")
case("local-names-over-the-host-channel", req("status", b"{}") + req("shrink", b'{"target_bytes":0,"reason":"manual"}'),
     "return", "InvalidParameter",
     why="the host may use the local names (unlisted in guest-info); \"reason\" is not the host's to give")


def main():
    names = []
    for i, (name, (data, expect, why)) in enumerate(CASES.items(), 1):
        base = os.path.join(HERE, "%02d-%s" % (i, name))
        names.append(os.path.basename(base))
        with open(base + ".in", "wb") as f:
            f.write(data)
        with open(base + ".expect", "w") as f:
            if why:
                f.write("# %s\n" % why)
            for e in expect:
                f.write(e + "\n")
    print("wrote %d cases" % len(names))


if __name__ == "__main__":
    main()
