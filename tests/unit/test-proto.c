/* SPDX-License-Identifier: MIT */
/*
 * The local protocol codec: the valid/ and invalid/ corpora under
 * tests/data/proto, round trips of every message type, encoder refusals,
 * socket framing, and a bounded mutation fuzz that must never crash.
 */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cunit-run.h"
#include "local-proto.h"

static const char *corpus_dir;

/* Reads a corpus file: '#' comments, hex byte pairs. Returns the byte count,
 * or -1 when the file is unreadable; *expect gets the "# expect:" value. */
static ssize_t read_hex(const char *path, uint8_t *out, size_t max, char *expect, size_t expect_size) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  char line[512];
  size_t n = 0;
  expect[0] = '\0';
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') {
      if (sscanf(line, "# expect: %63s", expect) != 1)
        continue;
      (void)expect_size;
      continue;
    }
    for (char *p = line; *p;) {
      unsigned v;
      int used;
      if (sscanf(p, "%2x%n", &v, &used) != 1)
        break;
      if (n < max)
        out[n] = (uint8_t)v;
      n++;
      p += used;
      while (*p == ' ' || *p == '\n')
        p++;
    }
  }
  fclose(f);
  return (ssize_t)n;
}

static const char *const err_ids[] = {
  "PROTO_ERR_NONE", "PROTO_ERR_VERSION", "PROTO_ERR_TYPE", "PROTO_ERR_LENGTH",
  "PROTO_ERR_STRING", "PROTO_ERR_RANGE", "PROTO_ERR_RESERVED", "PROTO_ERR_STATE",
  "PROTO_ERR_DUPLICATE", "PROTO_ERR_UNKNOWN_ID", "PROTO_ERR_LIMIT", "PROTO_ERR_PERMISSION",
  "PROTO_ERR_COMMAND",
};

static int for_each_corpus_file(const char *kind, void (*fn)(const char *name, const uint8_t *b, size_t n, const char *expect)) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", corpus_dir, kind);
  DIR *d = opendir(dir);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int count = 0;
  struct dirent *e;
  static uint8_t buf[PROTO_MSG_MAX + 16];
  while ((e = readdir(d))) {
    if (!strstr(e->d_name, ".hex"))
      continue;
    char path[8192], expect[64];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    ssize_t n = read_hex(path, buf, sizeof buf, expect, sizeof expect);
    CU_ASSERT(n >= 0);
    if (n < 0)
      continue;
    fn(e->d_name, buf, (size_t)n, expect);
    count++;
  }
  closedir(d);
  return count;
}

static void check_valid(const char *name, const uint8_t *b, size_t n, const char *expect) {
  (void)expect;
  proto_msg m;
  proto_error err = PROTO_ERR_NONE;
  int r = proto_decode(b, n, &m, &err);
  if (r != 0)
    fprintf(stderr, "valid/%s: refused with %s\n", name, proto_error_name(err));
  CU_ASSERT_EQUAL(r, 0);
  CU_ASSERT_EQUAL(err, PROTO_ERR_NONE);
  if (r != 0)
    return;
  /* Re-encoding what was decoded gives the very same bytes. */
  uint8_t out[PROTO_MSG_MAX];
  ssize_t len = proto_encode(&m, out, sizeof out);
  if (len != (ssize_t)n || memcmp(out, b, n) != 0)
    fprintf(stderr, "valid/%s: re-encoding differs (%zd vs %zu bytes)\n", name, len, n);
  CU_ASSERT_EQUAL(len, (ssize_t)n);
  CU_ASSERT(len == (ssize_t)n && memcmp(out, b, n) == 0);
}

static void check_invalid(const char *name, const uint8_t *b, size_t n, const char *expect) {
  proto_msg m;
  proto_error err = PROTO_ERR_NONE;
  int r = proto_decode(b, n, &m, &err);
  CU_ASSERT_EQUAL(r, -EBADMSG);
  CU_ASSERT_NOT_EQUAL(err, PROTO_ERR_NONE);
  CU_ASSERT(expect[0] != '\0'); /* every invalid case states its error */
  if ((unsigned)err < sizeof err_ids / sizeof *err_ids && strcmp(err_ids[err], expect) != 0) {
    fprintf(stderr, "invalid/%s: got %s, expected %s\n", name, err_ids[err], expect);
    CU_FAIL("wrong error code");
  }
}

static void test_valid_corpus(void) {
  CU_ASSERT(for_each_corpus_file("valid", check_valid) >= 15);
}

static void test_invalid_corpus(void) {
  CU_ASSERT(for_each_corpus_file("invalid", check_invalid) >= 30);
}

static void roundtrip(const proto_msg *in, proto_msg *out, uint8_t *buf) {
  ssize_t n = proto_encode(in, buf, PROTO_MSG_MAX);
  CU_ASSERT_FATAL(n >= PROTO_HEADER_SIZE);
  proto_error err;
  CU_ASSERT_EQUAL_FATAL(proto_decode(buf, (size_t)n, out, &err), 0);
  CU_ASSERT_EQUAL(out->type, in->type);
}

static void test_roundtrip_all_types(void) {
  static uint8_t buf[PROTO_MSG_MAX];
  proto_msg in, out;

  in = (proto_msg){.type = PROTO_MSG_HELLO, .u.hello = {1, 3, "app"}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.hello.max_version, 3);
  CU_ASSERT_STRING_EQUAL(out.u.hello.name, "app");

  in = (proto_msg){.type = PROTO_MSG_REGISTER,
                   .u.reg = {.id = 0xdeadbeef, .priority = 100, .flags = PROTO_REGISTER_HAS_ESTIMATE,
                             .estimate_bytes = UINT64_MAX, .name = "cache"}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.reg.id, 0xdeadbeef);
  CU_ASSERT_EQUAL(out.u.reg.estimate_bytes, UINT64_MAX);
  CU_ASSERT_STRING_EQUAL(out.u.reg.name, "cache");

  in = (proto_msg){.type = PROTO_MSG_SHRINK,
                   .u.shrink = {.round_id = UINT64_MAX, .id = 3, .level = PROTO_LEVEL_HARD,
                                .reason = PROTO_REASON_MIGRATION, .target_bytes = 1ull << 40,
                                .deadline_ms = 1}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.shrink.round_id, UINT64_MAX);
  CU_ASSERT_EQUAL(out.u.shrink.level, PROTO_LEVEL_HARD);
  CU_ASSERT_EQUAL(out.u.shrink.reason, PROTO_REASON_MIGRATION);
  CU_ASSERT_EQUAL(out.u.shrink.target_bytes, 1ull << 40);

  in = (proto_msg){.type = PROTO_MSG_SHRINK_DONE,
                   .u.done = {.round_id = 9, .id = 3, .flags = PROTO_DONE_TRIMMED,
                              .freed_bytes = 12345, .elapsed_us = 77}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.done.freed_bytes, 12345);
  CU_ASSERT_EQUAL(out.u.done.elapsed_us, 77);

  in = (proto_msg){.type = PROTO_MSG_ESTIMATE, .u.estimate = {.id = 3, .flags = 1, .estimate_bytes = 5}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.estimate.estimate_bytes, 5);

  in = (proto_msg){.type = PROTO_MSG_RELIEF, .u.relief = {.round_id = 4, .reason = PROTO_REASON_BALLOON}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.relief.reason, PROTO_REASON_BALLOON);

  in = (proto_msg){.type = PROTO_MSG_ERROR, .u.error = {.code = PROTO_ERR_LIMIT, .ref = 4, .text = "too many"}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_STRING_EQUAL(out.u.error.text, "too many");

  /* The largest control text that fits, byte for byte. */
  static char big[PROTO_CONTROL_TEXT_MAX];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  in = (proto_msg){.type = PROTO_MSG_CONTROL_REPLY,
                   .u.control = {.request_id = 2, .flags = PROTO_CONTROL_MORE, .text = big,
                                 .text_len = (uint32_t)strlen(big)}};
  roundtrip(&in, &out, buf);
  CU_ASSERT_EQUAL(out.u.control.text_len, sizeof big - 1);
  CU_ASSERT_EQUAL(out.u.control.flags, PROTO_CONTROL_MORE);
}

static void test_encoder_refuses(void) {
  uint8_t buf[PROTO_MSG_MAX];
  proto_msg m = {.type = PROTO_MSG_REGISTER, .u.reg = {.id = 1, .priority = 101, .name = "x"}};
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
  m.u.reg.priority = 1;
  m.u.reg.name = "";
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
  char longname[PROTO_NAME_MAX + 1];
  memset(longname, 'a', PROTO_NAME_MAX);
  longname[PROTO_NAME_MAX] = '\0';
  m.u.reg.name = longname;
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
  longname[PROTO_NAME_MAX - 1] = '\0'; /* 63 characters: fits */
  CU_ASSERT(proto_encode(&m, buf, sizeof buf) > 0);
  CU_ASSERT_EQUAL(proto_encode(&m, buf, 10), -EMSGSIZE);

  m = (proto_msg){.type = PROTO_MSG_SHRINK, .u.shrink = {.level = 2, .deadline_ms = 5}};
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
  m.u.shrink.level = 0;
  m.u.shrink.deadline_ms = 0;
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
  m = (proto_msg){.type = (proto_msg_type)77};
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
  m = (proto_msg){.type = PROTO_MSG_CONTROL, .u.control = {.text = "a\0b", .text_len = 3}};
  CU_ASSERT_EQUAL(proto_encode(&m, buf, sizeof buf), -EINVAL);
}

static void test_version_negotiation(void) {
  CU_ASSERT_EQUAL(proto_negotiate_version(1, 1), 1);
  CU_ASSERT_EQUAL(proto_negotiate_version(1, 50), PROTO_VERSION);
  CU_ASSERT_EQUAL(proto_negotiate_version(PROTO_VERSION + 1, PROTO_VERSION + 5), 0);
  CU_ASSERT_EQUAL(proto_negotiate_version(3, 2), 0);
  CU_ASSERT_EQUAL(proto_negotiate_version(0, 0), 0);
}

static void test_socket_framing(void) {
  int sv[2];
  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  static uint8_t buf[PROTO_MSG_MAX];
  proto_msg m = {.type = PROTO_MSG_UNREGISTER, .u.unreg = {.id = 42}}, out;
  proto_error err;
  CU_ASSERT_EQUAL(proto_send(sv[0], &m, true), 0);
  CU_ASSERT_EQUAL(proto_recv(sv[1], buf, &out, &err), 0);
  CU_ASSERT_EQUAL(out.u.unreg.id, 42);

  /* The largest CONTROL message goes through proto_send's heap path. */
  static char text[PROTO_CONTROL_TEXT_MAX];
  memset(text, 'j', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  int bufsize = 4 * PROTO_MSG_MAX;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
  m = (proto_msg){.type = PROTO_MSG_CONTROL,
                  .u.control = {.request_id = 5, .text = text, .text_len = sizeof text - 1}};
  CU_ASSERT_EQUAL(proto_send(sv[0], &m, true), 0);
  CU_ASSERT_EQUAL(proto_recv(sv[1], buf, &out, &err), 0);
  CU_ASSERT_EQUAL(out.u.control.text_len, sizeof text - 1);
  CU_ASSERT_EQUAL(out.u.control.request_id, 5);

  /* An oversize packet is refused as a length error, not silently cut. */
  static uint8_t huge[PROTO_MSG_MAX + 100];
  memset(huge, 0, sizeof huge);
  CU_ASSERT_EQUAL(send(sv[0], huge, sizeof huge, 0), (ssize_t)sizeof huge);
  CU_ASSERT_EQUAL(proto_recv(sv[1], buf, &out, &err), -EBADMSG);
  CU_ASSERT_EQUAL(err, PROTO_ERR_LENGTH);

  /* Nothing to read on a non-blocking receive. */
  CU_ASSERT_EQUAL(recv(sv[1], buf, 1, MSG_DONTWAIT | MSG_PEEK), -1);
  close(sv[0]);
  CU_ASSERT_EQUAL(proto_recv(sv[1], buf, &out, &err), -ECONNRESET);
  close(sv[1]);
}

/* xorshift: a fixed seed, so a failure reproduces. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static uint8_t seeds[32][256];
static size_t seed_len[32];
static int nseeds;

static void collect_seed(const char *name, const uint8_t *b, size_t n, const char *expect) {
  (void)name;
  (void)expect;
  if (nseeds < 32 && n <= sizeof seeds[0]) {
    memcpy(seeds[nseeds], b, n);
    seed_len[nseeds++] = n;
  }
}

/* Mutated valid messages: the decoder must never crash or read out of
 * bounds (run under ASan/valgrind to see that), and anything it accepts
 * must re-encode to exactly the same bytes. */
static void test_mutation_fuzz(void) {
  nseeds = 0;
  for_each_corpus_file("valid", collect_seed);
  CU_ASSERT_FATAL(nseeds > 0);
  uint8_t buf[512], again[PROTO_MSG_MAX];
  long accepted = 0, refused = 0, mismatched = 0;
  for (int i = 0; i < 200000; i++) {
    int s = (int)(rng() % (uint64_t)nseeds);
    size_t n = seed_len[s];
    memcpy(buf, seeds[s], n);
    int flips = 1 + (int)(rng() % 4);
    for (int f = 0; f < flips; f++) {
      switch (rng() % 4) {
      case 0: buf[rng() % n] ^= (uint8_t)(1u << (rng() % 8)); break;
      case 1: buf[rng() % n] = (uint8_t)rng(); break;
      case 2: if (n > 9) n -= 1 + rng() % 8; break;
      case 3: if (n < sizeof buf - 8) { for (int k = 0; k < 4; k++) buf[n++] = (uint8_t)rng(); } break;
      }
    }
    proto_msg m;
    proto_error err;
    if (proto_decode(buf, n, &m, &err) == 0) {
      accepted++;
      ssize_t len = proto_encode(&m, again, sizeof again);
      /* A HELLO is accepted whatever version frames it; the encoder
       * always writes its own, so compare from the type byte on. */
      size_t from = m.type == PROTO_MSG_HELLO ? 1 : 0;
      if (len != (ssize_t)n || memcmp(again + from, buf + from, n - from) != 0)
        mismatched++;
    } else {
      refused++;
      CU_ASSERT(err != PROTO_ERR_NONE);
    }
  }
  printf("\n    fuzz: %ld accepted, %ld refused, %ld re-encoded differently\n", accepted, refused, mismatched);
  CU_ASSERT(refused > 0);
  CU_ASSERT_EQUAL(mismatched, 0);
}

int main(int argc, char **argv) {
  corpus_dir = argc > 1 ? argv[1] : getenv("PROTO_CORPUS_DIR");
  if (!corpus_dir) {
    fprintf(stderr, "usage: %s CORPUS_DIR (tests/data/proto)\n", argv[0]);
    return 2;
  }
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  CU_pSuite s = CU_add_suite("proto", NULL, NULL);
  CU_add_test(s, "valid corpus decodes and re-encodes", test_valid_corpus);
  CU_add_test(s, "invalid corpus gets typed errors", test_invalid_corpus);
  CU_add_test(s, "round trip of every type", test_roundtrip_all_types);
  CU_add_test(s, "encoder refuses bad fields", test_encoder_refuses);
  CU_add_test(s, "version negotiation", test_version_negotiation);
  CU_add_test(s, "socket framing", test_socket_framing);
  CU_add_test(s, "mutation fuzz", test_mutation_fuzz);
  return cunit_run_all();
}
