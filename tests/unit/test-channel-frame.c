/* SPDX-License-Identifier: MIT */
/*
 * The host channel's framing (proto/channel-frame.c): every input is fed
 * whole, byte by byte, split at every point, and (short ones) split at
 * every pair of points, and must give the same events each time. Objects,
 * whitespace, strings with braces and escapes, 0xFF resynchronisation
 * anywhere, stray bytes, each limit just met and just passed, recovery
 * after each error, the buffer's bound, and random streams of objects.
 */
#include "cunit-run.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/param.h>

#include "channel-frame.h"

/* ---- the event log ---- */

typedef struct {
  char *text;
  size_t len;
  FILE *f;
} Log;

static void log_open(Log *log) {
  log->text = NULL;
  log->len = 0;
  log->f = open_memstream(&log->text, &log->len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(log->f);
}

static char *log_close(Log *log) {
  fclose(log->f);
  return log->text;
}

static void log_bytes(FILE *f, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];

    if (c >= 0x20 && c < 0x7f && c != '\\')
      fputc(c, f);
    else
      fprintf(f, "\\x%02x", c);
  }
}

/* Appends one event (not NEED_MORE) to @log. */
static void log_event(Log *log, proto_frame *fr, proto_frame_event ev) {
  const char *obj;
  size_t n;

  if (ftell(log->f) > 0)
    fputs(" | ", log->f);
  switch (ev) {
  case PROTO_FRAME_OBJECT:
    obj = proto_frame_object(fr, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    CU_ASSERT_EQUAL(obj[n], '\0');
    log_bytes(log->f, obj, n);
    break;
  case PROTO_FRAME_SYNC: fputs("SYNC", log->f); break;
  case PROTO_FRAME_ERR_TOO_BIG: fputs("TOO_BIG", log->f); break;
  case PROTO_FRAME_ERR_TOO_DEEP: fputs("TOO_DEEP", log->f); break;
  case PROTO_FRAME_ERR_STRING: fputs("STRING", log->f); break;
  case PROTO_FRAME_ERR_STRAY: fprintf(log->f, "STRAY(%02x)", proto_frame_stray_byte(fr)); break;
  case PROTO_FRAME_ERR_NO_MEMORY: fputs("NOMEM", log->f); break;
  case PROTO_FRAME_NEED_MORE: CU_FAIL("NEED_MORE logged"); break;
  }
}

static size_t cur_max_bytes; /* of the scanner being fed */

/* Feeds one piece, logging every event; checks the feed contract. */
static void feed_piece(proto_frame *fr, Log *log, const char *p, size_t n) {
  while (n > 0) {
    proto_frame_event ev;
    size_t used = proto_frame_feed(fr, p, n, &ev);

    CU_ASSERT_FATAL(used <= n);
    if (ev == PROTO_FRAME_NEED_MORE) {
      CU_ASSERT_EQUAL_FATAL(used, n);
    } else {
      CU_ASSERT_FATAL(used >= 1);
      log_event(log, fr, ev);
    }
    /* The buffer never exceeds its bound. */
    CU_ASSERT_FATAL(proto_frame_capacity(fr) <= cur_max_bytes + 1);
    p += used;
    n -= used;
  }
}

/* Feeds @data cut at the @n_cuts offsets in @cuts (ascending). Returns the
 * event log (free()). */
static char *scan(const proto_frame_limits *limits, const char *data, size_t len,
                  const size_t *cuts, size_t n_cuts) {
  proto_frame *fr = NULL;
  size_t at = 0;
  Log log;

  CU_ASSERT_EQUAL_FATAL(proto_frame_new(limits, &fr), 0);
  cur_max_bytes = limits ? limits->max_bytes : PROTO_FRAME_OBJECT_MAX;
  log_open(&log);
  for (size_t i = 0; i <= n_cuts; i++) {
    size_t end = i < n_cuts ? cuts[i] : len;

    feed_piece(fr, &log, data + at, end - at);
    at = end;
  }
  proto_frame_free(fr);
  return log_close(&log);
}

static unsigned mismatches;

static void compare(const char *got, const char *want, const char *how) {
  if (strcmp(got, want) != 0 && mismatches++ < 5)
    fprintf(stderr, "\n  %s:\n    got  %s\n    want %s\n", how, got, want);
  CU_ASSERT_STRING_EQUAL(got, want);
}

/*
 * Checks that @data gives @want fed whole, byte by byte, cut at every
 * point, and (if short) cut at every pair of points.
 */
static void expect_limits(const proto_frame_limits *limits, const char *data, size_t len,
                          const char *want) {
  size_t cuts[2];
  char *got;
  size_t *all;
  char how[64];

  got = scan(limits, data, len, NULL, 0);
  compare(got, want, "whole");
  free(got);

  all = malloc((len ? len : 1) * sizeof(*all));
  for (size_t i = 0; i < len; i++)
    all[i] = i;
  got = scan(limits, data, len, all, len);
  compare(got, want, "byte by byte");
  free(got);
  free(all);

  for (size_t k = 0; k <= len; k++) {
    cuts[0] = k;
    got = scan(limits, data, len, cuts, 1);
    snprintf(how, sizeof(how), "cut at %zu", k);
    compare(got, want, how);
    free(got);
  }
  if (len <= 64) {
    for (size_t a = 0; a <= len; a++) {
      for (size_t b = a; b <= len; b++) {
        cuts[0] = a;
        cuts[1] = b;
        got = scan(limits, data, len, cuts, 2);
        snprintf(how, sizeof(how), "cut at %zu and %zu", a, b);
        compare(got, want, how);
        free(got);
      }
    }
  }
}

#define S(lit) lit, sizeof(lit) - 1

static void expect(const char *data, size_t len, const char *want) {
  expect_limits(NULL, data, len, want);
}

/* ---- the cases ---- */

static void test_objects_and_whitespace(void) {
  expect(S(""), "");
  expect(S(" \t\r\n"), "");
  expect(S("{}"), "{}");
  expect(S(" {\"execute\":\"guest-ping\"}\r\n\n\t{\"a\": [1, {\"b\": 2}]}\n"),
         "{\"execute\":\"guest-ping\"} | {\"a\": [1, {\"b\": 2}]}");
  expect(S("{\"a\":1}{\"b\":2}"), "{\"a\":1} | {\"b\":2}");
  /* A partial object at the end is held, not reported. */
  expect(S("{\"a\":1} {\"b\":"), "{\"a\":1}");
}

static void test_strings(void) {
  /* Braces, brackets and quotes inside strings do not count. */
  expect(S("{\"a\": \"}{\\\"[\", \"b\": [1, {\"c\": \"\\\\\"}]} {}"),
         "{\"a\": \"}{\\x5c\"[\", \"b\": [1, {\"c\": \"\\x5c\\x5c\"}]} | {}");
  /* A key with braces; an escaped backslash before the closing quote. */
  expect(S("{\"}}\":\"\\\\\"}"), "{\"}}\":\"\\x5c\\x5c\"}");
  /* UTF-8 passes through untouched. */
  expect(S("{\"e\":\"\xc3\xa9\"}"), "{\"e\":\"\\xc3\\xa9\"}");
}

static void test_sync(void) {
  /* 0xFF between objects: an event, nothing lost. */
  expect(S("{\"a\":1}\xff\xff{\"b\":2}"), "{\"a\":1} | SYNC | SYNC | {\"b\":2}");
  /* 0xFF inside an object voids it. */
  expect(S("{\"a\": {\"half\": \xff{\"b\":2}"), "SYNC | {\"b\":2}");
  /* Inside a string too: it is never UTF-8. */
  expect(S("{\"a\": \"x\xffy\"} {\"b\":2}"), "SYNC | STRAY(79) | {\"b\":2}");
  /* After an error, a 0xFF ends the discarding. */
  expect(S("junk\xff{\"b\":2}"), "STRAY(6a) | SYNC | {\"b\":2}");
}

static void test_stray_bytes(void) {
  /* One error per run, up to the next '{'. */
  expect(S("abc {\"x\":1} ]"), "STRAY(61) | {\"x\":1} | STRAY(5d)");
  expect(S("a b\nc{\"x\":1}"), "STRAY(61) | {\"x\":1}");
  /* Top-level arrays and values are not requests. */
  expect(S("[1, 2]"), "STRAY(5b)");
  expect(S("[{\"x\":1}]"), "STRAY(5b) | {\"x\":1} | STRAY(5d)");
  expect(S("\"str\" 42 {}"), "STRAY(22) | {}");
  /* NUL outside and inside an object. */
  expect(S("\0{}"), "STRAY(00) | {}");
  expect(S("{\"a\"\0:1}"), "{\"a\"\\x00:1}");
  /* Mismatched pairs are the parser's business. */
  expect(S("{]{}"), "{] | {}");
}

static void test_limits(void) {
  proto_frame_limits lim = {.max_bytes = 16, .max_depth = 3, .max_string = 4};

  /* Size: exactly 16 passes, 17 does not; the next object is read. */
  expect_limits(&lim, S("{\"a\":[1,2,3,45]}"), "{\"a\":[1,2,3,45]}");
  expect_limits(&lim, S("{\"a\":[1,2,3,456]} {}"), "TOO_BIG | {}");
  /* Discarding follows strings: braces in them do not end it. */
  lim.max_string = 0;
  expect_limits(&lim, S("{\"a\":\"}}}}}}}}}}}}}}}}}}}\"}{\"b\":1}"), "TOO_BIG | {\"b\":1}");
  /* An oversize object that never ends: discarded up to a 0xFF. */
  expect_limits(&lim, S("{\"a\":\"xxxxxxxxxxxxxxxxxxxxxx {} \xff{\"b\":1}"),
                "TOO_BIG | SYNC | {\"b\":1}");
  lim.max_string = 4;

  /* Depth: 3 passes, 4 does not; discarding counts on. */
  expect_limits(&lim, S("{\"a\":[[1]]}"), "{\"a\":[[1]]}");
  expect_limits(&lim, S("{\"a\":[[[1]]]} {}"), "TOO_DEEP | {}");
  expect_limits(&lim, S("{[[[[[[[]]]]]]]}{}"), "TOO_DEEP | {}");

  /* Strings: 4 bytes pass, 5 do not (escapes count as written). */
  expect_limits(&lim, S("{\"abcd\":1}"), "{\"abcd\":1}");
  expect_limits(&lim, S("{\"abcde\":1}{}"), "STRING | {}");
  expect_limits(&lim, S("{\"\\\\\\\\\":1}"), "{\"\\x5c\\x5c\\x5c\\x5c\":1}");
  expect_limits(&lim, S("{\"\\\\\\\\\\\"\":1}{}"), "STRING | {}");
  expect_limits(&lim, S("{\"a\":\"\",\"b\":\"wxyz\"}"), "TOO_BIG");
}

static void test_skip_to_sync(void) {
  proto_frame *fr = NULL;
  proto_frame_event ev;
  const char *in = "{\"a\":1} junk {\"b\":\xff {\"c\":3}";
  size_t len = strlen(in), at = 0, n;
  Log log;
  char *got;

  CU_ASSERT_EQUAL_FATAL(proto_frame_new(NULL, &fr), 0);
  /* Holding a partial object, then told to skip: it goes. */
  at += proto_frame_feed(fr, "{\"x\":", 5, &ev);
  CU_ASSERT_EQUAL(ev, PROTO_FRAME_NEED_MORE);
  CU_ASSERT_EQUAL(proto_frame_pending(fr), 5);
  proto_frame_skip_to_sync(fr);
  CU_ASSERT(proto_frame_is_skipping(fr));
  CU_ASSERT_EQUAL(proto_frame_pending(fr), 0);
  log_open(&log);
  at = 0;
  while (at < len) {
    n = proto_frame_feed(fr, in + at, len - at, &ev);
    if (ev != PROTO_FRAME_NEED_MORE)
      log_event(&log, fr, ev);
    at += n;
  }
  got = log_close(&log);
  CU_ASSERT_STRING_EQUAL(got, "SYNC | {\"c\":3}");
  CU_ASSERT_FALSE(proto_frame_is_skipping(fr));
  free(got);

  /* reset() drops a partial object and reads on. */
  proto_frame_feed(fr, "{\"y\":[", 6, &ev);
  CU_ASSERT_EQUAL(proto_frame_pending(fr), 6);
  proto_frame_reset(fr);
  CU_ASSERT_EQUAL(proto_frame_pending(fr), 0);
  n = proto_frame_feed(fr, "{}", 2, &ev);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(ev, PROTO_FRAME_OBJECT);
  /* The object stays readable until the next call. */
  CU_ASSERT_PTR_NOT_NULL(proto_frame_object(fr, NULL));
  n = proto_frame_feed(fr, " ", 1, &ev);
  CU_ASSERT_PTR_NULL(proto_frame_object(fr, NULL));
  proto_frame_free(fr);
}

static void test_new_refuses_bad_limits(void) {
  proto_frame_limits lim = {.max_bytes = 1, .max_depth = 1};
  proto_frame *fr = NULL;

  CU_ASSERT_EQUAL(proto_frame_new(&lim, &fr), -EINVAL);
  lim.max_bytes = 2;
  lim.max_depth = 0;
  CU_ASSERT_EQUAL(proto_frame_new(&lim, &fr), -EINVAL);
  lim.max_bytes = SIZE_MAX;
  lim.max_depth = 1;
  CU_ASSERT_EQUAL(proto_frame_new(&lim, &fr), -EINVAL);
  CU_ASSERT_EQUAL(proto_frame_new(NULL, &fr), 0);
  proto_frame_free(fr);
  proto_frame_free(NULL);
  for (int e = PROTO_FRAME_NEED_MORE; e <= PROTO_FRAME_EVENT_LAST; e++)
    CU_ASSERT_STRING_NOT_EQUAL(proto_frame_event_name((proto_frame_event)e), "unknown event");
}

/* The host channel's own bounds, on the inputs of the bad-input corpus. */
static void test_host_bounds(void) {
  size_t big = 1 << 20, n;
  char *in = malloc(big + 256);
  proto_frame *fr = NULL;
  proto_frame_event ev;
  size_t at, deepest_cap = 0;
  Log log;
  char *got;

  /* A 1 MiB string: one error at 4 KiB of it, nothing held, the next
   * request read. */
  static const char head[] = "{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"";
  static const char tail[] = "\"}}{\"execute\":\"guest-ping\"}";

  CU_ASSERT_PTR_NOT_NULL_FATAL(in);
  memcpy(in, head, sizeof(head) - 1);
  n = sizeof(head) - 1;
  memset(in + n, 'x', big);
  n += big;
  memcpy(in + n, tail, sizeof(tail) - 1);
  n += sizeof(tail) - 1;
  CU_ASSERT_EQUAL_FATAL(proto_frame_new(NULL, &fr), 0);
  log_open(&log);
  for (at = 0; at < n;) {
    at += proto_frame_feed(fr, in + at, MIN(n - at, 4096), &ev);
    if (ev != PROTO_FRAME_NEED_MORE)
      log_event(&log, fr, ev);
    if (proto_frame_capacity(fr) > deepest_cap)
      deepest_cap = proto_frame_capacity(fr);
  }
  got = log_close(&log);
  CU_ASSERT_STRING_EQUAL(got, "STRING | {\"execute\":\"guest-ping\"}");
  CU_ASSERT(deepest_cap <= 2 * PROTO_FRAME_STRING_MAX + 256);
  free(got);

  /* Nesting 1000 deep: one error, then the next request. */
  n = (size_t)sprintf(in, "{\"a\":");
  for (int i = 0; i < 1000; i++)
    in[n++] = '[';
  for (int i = 0; i < 1000; i++)
    in[n++] = ']';
  n += (size_t)sprintf(in + n, "}{}");
  log_open(&log);
  for (at = 0; at < n;) {
    at += proto_frame_feed(fr, in + at, n - at, &ev);
    if (ev != PROTO_FRAME_NEED_MORE)
      log_event(&log, fr, ev);
  }
  got = log_close(&log);
  CU_ASSERT_STRING_EQUAL(got, "TOO_DEEP | {}");
  free(got);

  /* 64 KiB exactly passes; the buffer shrinks back after it. */
  n = (size_t)sprintf(in, "{\"a\":\"");
  memset(in + n, 'y', PROTO_FRAME_OBJECT_MAX);
  for (size_t i = n; i < PROTO_FRAME_OBJECT_MAX - 2; i += 100)
    memcpy(in + i, "\",\"b\":\"", 7);
  n = PROTO_FRAME_OBJECT_MAX - 2;
  memcpy(in + n, "\"}", 2);
  n += 2;
  at = proto_frame_feed(fr, in, n, &ev);
  CU_ASSERT_EQUAL(at, n);
  CU_ASSERT_EQUAL_FATAL(ev, PROTO_FRAME_OBJECT);
  CU_ASSERT_EQUAL(proto_frame_capacity(fr), PROTO_FRAME_OBJECT_MAX + 1);
  proto_frame_feed(fr, "{}", 2, &ev);
  CU_ASSERT_EQUAL(ev, PROTO_FRAME_OBJECT);
  CU_ASSERT(proto_frame_capacity(fr) <= PROTO_FRAME_KEEP_BYTES);
  /* One byte more does not. */
  in[n - 1] = ' ';
  in[n] = '}';
  at = proto_frame_feed(fr, in, n + 1, &ev);
  CU_ASSERT_EQUAL(ev, PROTO_FRAME_ERR_TOO_BIG);
  CU_ASSERT_EQUAL(at, n + 1);
  CU_ASSERT_EQUAL(proto_frame_pending(fr), 0);
  proto_frame_free(fr);
  free(in);
}

/* ---- random streams ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

/* Appends a random JSON value of at most @depth levels. */
static void gen_value(FILE *f, int depth) {
  static const char *const atoms[] = {"1",        "-2.5e3",      "true",        "null",
                                      "\"\"",     "\"}\"",       "\"{[\"",      "\"\\\"\"",
                                      "\"\\\\\"", "\"\\u00e9\"", "\"\xc3\xa9\""};
  uint32_t k = depth > 0 ? rnd(4) : 3;

  if (k == 0 || k == 1) {
    unsigned n = rnd(4);
    char open = k == 0 ? '{' : '[';

    fputc(open, f);
    for (unsigned i = 0; i < n; i++) {
      if (i)
        fputs(rnd(2) ? "," : " , ", f);
      if (open == '{')
        fprintf(f, "\"k%u\":", i);
      gen_value(f, depth - 1);
    }
    fputc(open == '{' ? '}' : ']', f);
    return;
  }
  fputs(atoms[rnd(sizeof(atoms) / sizeof(atoms[0]))], f);
}

static void test_random_streams(void) {
  for (int round = 0; round < 300; round++) {
    Log in, want;
    char *input, *expected, *got;
    size_t cuts[8];
    unsigned n_objects = 1 + rnd(5), n_cuts = rnd(8);

    log_open(&in);
    log_open(&want);
    for (unsigned i = 0; i < n_objects; i++) {
      char *obj;
      size_t len;
      FILE *of = open_memstream(&obj, &len);

      fputs("{\"execute\":", of);
      gen_value(of, 5);
      fputc('}', of);
      fclose(of);
      fputs(rnd(2) ? "\n" : " \t", in.f);
      fwrite(obj, 1, len, in.f);
      if (i)
        fputs(" | ", want.f);
      log_bytes(want.f, obj, len);
      free(obj);
    }
    input = log_close(&in);
    expected = log_close(&want);
    for (unsigned i = 0; i < n_cuts; i++)
      cuts[i] = rnd((uint32_t)in.len + 1);
    /* ascending */
    for (unsigned i = 1; i < n_cuts; i++)
      for (unsigned j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
        size_t t = cuts[j];
        cuts[j] = cuts[j - 1];
        cuts[j - 1] = t;
      }
    got = scan(NULL, input, in.len, cuts, n_cuts);
    compare(got, expected, "random stream");
    free(got);
    free(input);
    free(expected);
  }
}

int main(void) {
  CU_pSuite suite;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  suite = CU_add_suite("channel-frame", NULL, NULL);
  CU_add_test(suite, "objects and whitespace", test_objects_and_whitespace);
  CU_add_test(suite, "strings", test_strings);
  CU_add_test(suite, "0xFF resynchronisation", test_sync);
  CU_add_test(suite, "stray bytes", test_stray_bytes);
  CU_add_test(suite, "limits and recovery", test_limits);
  CU_add_test(suite, "skip to sync, reset", test_skip_to_sync);
  CU_add_test(suite, "bad limits", test_new_refuses_bad_limits);
  CU_add_test(suite, "the host channel's bounds", test_host_bounds);
  CU_add_test(suite, "random streams, random cuts", test_random_streams);
  return cunit_run_all();
}
