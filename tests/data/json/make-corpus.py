#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the request reader's corpus (agent/json-reader.c), data-driven
like jansson's test suites:

  valid/NAME.in     a text the reader must accept
  valid/NAME.out    what agent_json_node() writes back for it (compact)
  invalid/NAME.in   a text the reader must refuse
  invalid/NAME.expect  the error message, exactly (one line)

Run it from anywhere after changing a case; the files it writes are
committed. Every valid case is also checked against Python's json module
here (same value before and after the write-back), so that an .out is not
just whatever the reader happened to print.

tests/unit/test-json-reader.c runs the corpus; fuzz/ starts from these
inputs too (the fuzz test takes both directories as seeds)."""
import json
import math
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))

VALID = {}
INVALID = {}


def valid(name, data, out):
    assert name not in VALID, name
    VALID[name] = (data, out)


def invalid(name, data, expect):
    assert name not in INVALID, name
    INVALID[name] = (data, expect)


def malformed(at, what, end=False):
    return "malformed JSON at byte %d%s: %s" % (at, " (the end)" if end else "", what)


# ---- valid ----

valid("empty-object", b"{}", b"{}")
valid("empty-array", b"[]", b"[]")
valid("top-integer", b"42", b"42")
valid("top-string", b'"x"', b'"x"')
valid("top-true", b"true", b"true")
valid("top-false", b"false", b"false")
valid("top-null", b"null", b"null")
valid("minus-zero", b"-0", b"0")
valid("whitespace-all-four", b' \t\r\n{ "a" : [ 1 , 2 ] ,\r\n"b":\t{ } }\n\t ', b'{"a":[1,2],"b":{}}')
valid("request-shrink",
      b'{"execute":"shrink","arguments":{"target_bytes":1048576,"level":"soft"},"id":7}',
      b'{"execute":"shrink","arguments":{"target_bytes":1048576,"level":"soft"},"id":7}')
valid("member-order-kept", b'{"z":1,"a":2,"m":3}', b'{"z":1,"a":2,"m":3}')
valid("int64-max", b"[9223372036854775807]", b"[9223372036854775807]")
valid("int64-min", b"[-9223372036854775808]", b"[-9223372036854775808]")
valid("numbers-exponents", b"[1e3,1E3,1e+3,1e-3,-1.5e3,0.5,0e0,1E-0,-0.0]",
      b"[1000.0,1000.0,1000.0,0.001,-1500.0,0.5,0.0,1.0,-0.0]")
valid("double-tenth", b"[0.1]", b"[0.10000000000000001]")
valid("double-max", b"[1.7976931348623157e308]", b"[1.7976931348623157e+308]")
valid("double-underflow-is-zero", b"[1e-400]", b"[0.0]")
valid("double-integral-beyond-int64", b"[9223372036854775808.0]", b"[9.2233720368547758e+18]")
valid("long-fraction", b"[1." + b"0" * 100 + b"1]", b"[1.0]")
valid("escapes-simple", b'["\\"\\\\\\/\\b\\f\\n\\r\\t"]', b'["\\"\\\\/\\u0008\\u000c\\n\\r\\t"]')
valid("escapes-unicode", b'["\\u00e9\\u20AC\\ud83d\\ude00\\u0041"]', "[\"\u00e9\u20ac\U0001f600A\"]".encode())
valid("utf8-raw", "[\"\u00e9 \u20ac \U0001f600\"]".encode(), "[\"\u00e9 \u20ac \U0001f600\"]".encode())
valid("escaped-nul", b'["a\\u0000b"]', b'["a\\u0000b"]')
valid("escaped-nul-in-name", b'{"execute\\u0000x":1,"execute":2}', b'{"execute\\u0000x":1,"execute":2}')
valid("del-raw", b'["a\x7fb"]', b'["a\x7fb"]')
valid("name-with-escape", b'{"a\\u0062":1}', b'{"ab":1}')
valid("names-differ-by-case", b'{"a":1,"A":2}', b'{"a":1,"A":2}')
valid("empty-name", b'{"":1}', b'{"":1}')
valid("same-name-in-sibling-objects", b'{"a":{"a":1},"b":{"a":2}}', b'{"a":{"a":1},"b":{"a":2}}')
valid("depth-16", b"[" * 16 + b"]" * 16, b"[" * 16 + b"]" * 16)
valid("depth-16-objects", b'{"a":' * 16 + b"1" + b"}" * 16, b'{"a":' * 16 + b"1" + b"}" * 16)
many = b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(200)) + b"}"
valid("many-members", many, many)
valid("nested-mixed", b'[{"a":[null,true,{"b":[]}]},"s",-1,[[[]]]]',
      b'[{"a":[null,true,{"b":[]}]},"s",-1,[[[]]]]')

# ---- invalid ----

invalid("empty", b"", "empty request")
invalid("whitespace-only", b" \t\r\n", "empty request")
invalid("formfeed-is-not-whitespace", b"\x0c{}", malformed(0, "expected a value"))
invalid("vertical-tab-is-not-whitespace", b"{}\x0b", malformed(2, "unexpected text after the value"))
invalid("bom", b"\xef\xbb\xbf{}", malformed(0, "expected a value"))
invalid("two-values", b"{} {}", malformed(3, "unexpected text after the value"))
invalid("extra-close", b"[]]", malformed(2, "unexpected text after the value"))
invalid("trailing-comma-array", b"[1,]", malformed(3, "expected a value"))
invalid("trailing-comma-object", b'{"a":1,}', malformed(7, "expected a member name (a string)"))
invalid("leading-comma", b"[,1]", malformed(1, "expected a value"))
invalid("double-comma", b"[1,,2]", malformed(3, "expected a value"))
invalid("missing-comma", b"[1 2]", malformed(3, "expected ',' or ']'"))
invalid("missing-colon", b'{"a" 1}', malformed(5, "expected ':'"))
invalid("colon-in-array", b"[1:2]", malformed(2, "expected ',' or ']'"))
invalid("unquoted-name", b"{a:1}", malformed(1, "expected a member name (a string)"))
invalid("number-name", b"{1:2}", malformed(1, "expected a member name (a string)"))
invalid("single-quotes", b"{'a':1}", malformed(1, "expected a member name (a string)"))
invalid("mismatched-close", b"[}", malformed(1, "expected a value"))
invalid("mismatched-close-object", b'{"a":1]', malformed(6, "expected ',' or '}'"))
invalid("unterminated-array", b"[1,2", malformed(4, "expected ',' or ']'", end=True))
invalid("unterminated-object", b'{"a":1', malformed(6, "expected ',' or '}'", end=True))
invalid("unterminated-value", b'{"execute": ', malformed(12, "expected a value", end=True))
invalid("unterminated-string", b'["abc', malformed(1, "a string without its closing '\"'"))
invalid("plus", b"[+1]", malformed(1, "expected a value"))
invalid("leading-dot", b"[.5]", malformed(1, "expected a value"))
invalid("trailing-dot", b"[1.]", malformed(3, "expected a digit after '.'"))
invalid("dot-exponent", b"[1.e5]", malformed(3, "expected a digit after '.'"))
invalid("leading-zero", b"[01]", malformed(1, "a number with a leading zero"))
invalid("leading-zeros", b"[00]", malformed(1, "a number with a leading zero"))
invalid("negative-leading-zero", b"[-01]", malformed(1, "a number with a leading zero"))
invalid("minus-alone", b"[-]", malformed(2, "expected a digit after '-'"))
invalid("minus-at-end", b"-", malformed(1, "expected a digit after '-'", end=True))
invalid("minus-space", b"[- 1]", malformed(2, "expected a digit after '-'"))
invalid("minus-minus", b"[--1]", malformed(2, "expected a digit after '-'"))
invalid("empty-exponent", b"[1e]", malformed(3, "expected a digit in the exponent"))
invalid("exponent-sign-only", b"[1e+]", malformed(4, "expected a digit in the exponent"))
invalid("two-dots", b"[1.5.5]", malformed(4, "expected ',' or ']'"))
invalid("hex", b"[0x10]", malformed(2, "expected ',' or ']'"))
invalid("number-then-letter", b"[1x]", malformed(2, "expected ',' or ']'"))
invalid("int64-max-plus-one", b"[9223372036854775808]", malformed(1, "an integer beyond 64 bits"))
invalid("int64-min-minus-one", b"[-9223372036854775809]", malformed(1, "an integer beyond 64 bits"))
invalid("integer-30-digits", b'{"id":123456789012345678901234567890}', malformed(6, "an integer beyond 64 bits"))
invalid("double-overflow", b"[1e309]", malformed(1, "a number beyond the range of a double"))
invalid("double-overflow-negative", b"[-1e309]", malformed(1, "a number beyond the range of a double"))
invalid("double-overflow-long", b"[1" + b"0" * 400 + b".0]", malformed(1, "a number beyond the range of a double"))
invalid("infinity", b"[Infinity]", malformed(1, "expected a value"))
invalid("nan", b"[NaN]", malformed(1, "expected a value"))
invalid("true-capitalised", b"[True]", malformed(1, "expected a value"))
invalid("true-truncated", b"[tru]", malformed(1, "expected a value"))
invalid("null-truncated-at-end", b"nul", malformed(0, "expected a value"))
invalid("words-glued", b"[truefalse]", malformed(5, "expected ',' or ']'"))
invalid("comment-block", b"/* c */ {}", malformed(0, "expected a value"))
invalid("comment-line", b"{} // c", malformed(3, "unexpected text after the value"))
invalid("var-assignment", b"var a = {};", malformed(0, "expected a value"))
invalid("control-tab-in-string", b'["a\tb"]', malformed(3, "a control character in a string"))
invalid("control-newline-in-string", b'["a\nb"]', malformed(3, "a control character in a string"))
invalid("control-0x1f-in-name", b'{"a\x1f":1}', malformed(3, "a control character in a string"))
invalid("escape-unknown", b'["\\x"]', malformed(2, "an invalid escape in a string"))
invalid("escape-capital-u", b'["\\U0041"]', malformed(2, "an invalid escape in a string"))
invalid("escape-at-end", b'["\\', malformed(2, "an invalid escape in a string"))
invalid("escape-u-short", b'["\\u12"]', malformed(2, "an invalid \\u escape in a string"))
invalid("escape-u-not-hex", b'["\\u00zz"]', malformed(2, "an invalid \\u escape in a string"))
invalid("surrogate-high-alone", b'["\\ud800"]', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("surrogate-high-at-end", b'["\\ud800', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("surrogate-low-alone", b'["\\udc00"]', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("surrogates-reversed", b'["\\udc00\\ud800"]', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("surrogate-high-then-bmp", b'["\\ud800\\u0041"]', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("surrogate-high-then-raw", b'["\\ud800x"]', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("surrogate-high-twice", b'["\\ud800\\ud800"]', malformed(2, "an unpaired surrogate in a \\u escape"))
invalid("nul-raw", b'["a\x00b"]', "request contains a NUL byte at byte 3")
invalid("nul-after-value", b"{}\x00", "request contains a NUL byte at byte 2")
invalid("utf8-invalid-byte", b'["\xff"]', "request is not valid UTF-8 at byte 2")
invalid("utf8-overlong", b'["\xc0\xaf"]', "request is not valid UTF-8 at byte 2")
invalid("utf8-surrogate", b'["\xed\xa0\x80"]', "request is not valid UTF-8 at byte 2")
invalid("utf8-truncated", b'"\xe2\x82', "request is not valid UTF-8 at byte 1")
invalid("utf8-beyond-unicode", b'["\xf4\x90\x80\x80"]', "request is not valid UTF-8 at byte 2")
invalid("depth-17", b"[" * 17 + b"]" * 17, "request nests deeper than 16 levels at byte 16")
invalid("depth-17-objects", b'{"a":' * 17 + b"1" + b"}" * 17, "request nests deeper than 16 levels at byte 80")
invalid("depth-1000", b"[" * 1000 + b"]" * 1000, "request nests deeper than 16 levels at byte 16")
invalid("duplicate", b'{"a":1,"a":2}', malformed(7, 'a duplicate member name "a"'))
invalid("duplicate-escaped", b'{"a":1,"\\u0061":2}', malformed(7, 'a duplicate member name "a"'))
invalid("duplicate-nested", b'{"x":{"b":1,"b":2}}', malformed(12, 'a duplicate member name "b"'))
invalid("duplicate-first-repeat", b'{"a":1,"b":2,"a":3,"b":4}', malformed(13, 'a duplicate member name "a"'))
invalid("duplicate-execute", b'{"execute":"guest-ping","execute":"shrink"}',
        malformed(24, 'a duplicate member name "execute"'))
long_name = b"n" * 65
invalid("duplicate-long-name", b'{"%s":1,"%s":2}' % (long_name, long_name),
        malformed(len(long_name) + 6, "a duplicate member name"))
dups = b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(300)) + b',"k150":0}'
invalid("duplicate-among-many", dups, malformed(len(dups) - 9, 'a duplicate member name "k150"'))


def check_valid(name, data, out):
    a = json.loads(data.decode())
    b = json.loads(out.decode())
    # Python reads -0 as int 0 and 1e-400 as 0.0: compare as numbers.
    assert a == b or (isinstance(a, float) and math.isclose(a, b)), name
    assert json.loads(out.decode()) == b


def check_invalid(name, data):
    # Python's json is lax where the reader is strict (NaN, duplicates,
    # big integers, lone surrogates, \u0000, 1e309): only the cases it
    # also refuses are checked here, to catch a typo that made them valid.
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return
    lax = ("duplicate", "int64", "integer", "double-overflow", "infinity", "nan", "surrogate",
           "depth", "nul-after", "vertical-tab")
    assert any(k in name for k in lax), "%s: Python accepts it" % name


def main():
    for sub in ("valid", "invalid"):
        path = os.path.join(HERE, sub)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    for name, (data, out) in VALID.items():
        check_valid(name, data, out)
        with open(os.path.join(HERE, "valid", name + ".in"), "wb") as f:
            f.write(data)
        with open(os.path.join(HERE, "valid", name + ".out"), "wb") as f:
            f.write(out + b"\n")
    for name, (data, expect) in INVALID.items():
        check_invalid(name, data)
        with open(os.path.join(HERE, "invalid", name + ".in"), "wb") as f:
            f.write(data)
        with open(os.path.join(HERE, "invalid", name + ".expect"), "w") as f:
            f.write(expect + "\n")
    print("%d valid, %d invalid" % (len(VALID), len(INVALID)))


if __name__ == "__main__":
    main()
