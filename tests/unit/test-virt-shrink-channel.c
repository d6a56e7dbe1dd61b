/* SPDX-License-Identifier: MIT */
/*
 * virt-shrink's side of the channel protocol (docs/channel-protocol.md):
 * the JSON stream splitter fed arbitrary byte sequences (garbage before a
 * 0xFF, 0xFF inside an object, one byte at a time, limits), the channel
 * client over a socketpair against a scripted peer thread (resync past
 * stale answers, split reads, an answer larger than one read, every error
 * class, timeouts that hold, a peer that closes), and the QMP client
 * against a scripted QMP server (greeting, events, stale ids, errors).
 */
#include "cunit-run.h"
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "channel-client.h"
#include "json-stream.h"
#include "qmp.h"
#include "unix-io.h"
#include "vs-error.h"

/* ---- the stream splitter ---- */

/* Feeds @len bytes of @data in pieces of @step and collects the objects as
 * compact JSON strings; errors are collected as "ERROR". */
static GPtrArray *split(const char *data, gsize len, gsize step, gsize max_bytes, guint max_depth,
                        gboolean skip_first) {
  g_autoptr(VsJsonStream) s = vs_json_stream_new(max_bytes, max_depth);
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);

  if (skip_first)
    vs_json_stream_skip_to_sync(s);
  for (gsize off = 0; off < len; off += step) {
    vs_json_stream_feed(s, data + off, MIN(step, len - off));
    for (;;) {
      g_autoptr(GError) error = NULL;
      g_autoptr(JsonNode) node = NULL;

      if (vs_json_stream_next(s, &node, &error)) {
        g_ptr_array_add(out, vs_json_to_string(node));
        continue;
      }
      if (!error)
        break;
      CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_PROTOCOL));
      g_ptr_array_add(out, g_strdup("ERROR"));
    }
  }
  return out;
}

/* Checks that @data gives the objects @want (NULL-terminated) for every
 * feeding step from 1 byte to all at once. */
static void expect_split(const char *data, gsize len, gboolean skip_first,
                         const char *const *want) {
  const gsize steps[] = {1, 2, 3, 5, 7, 16, 64, len};

  for (guint k = 0; k < G_N_ELEMENTS(steps); k++) {
    gsize step = MIN(steps[k], len);
    g_autoptr(GPtrArray) got = split(data, len, step, 1 << 20, 32, skip_first);
    guint n = 0;

    while (want[n])
      n++;
    if (got->len != n)
      fprintf(stderr, "\n  step %zu: %u objects, want %u\n", step, got->len, n);
    CU_ASSERT_EQUAL_FATAL(got->len, n);
    for (guint i = 0; i < n; i++) {
      if (strcmp(g_ptr_array_index(got, i), want[i]) != 0)
        fprintf(stderr, "\n  step %zu: #%u is %s, want %s\n", step, i,
                (char *)g_ptr_array_index(got, i), want[i]);
      CU_ASSERT_STRING_EQUAL(g_ptr_array_index(got, i), want[i]);
    }
  }
}

#define S(lit) lit, sizeof(lit) - 1

static void test_stream_objects(void) {
  static const char *const two[] = {"{\"return\":{}}", "{\"return\":5}", NULL};
  static const char *const tricky[] = {"{\"a\":\"}{\\\"[\",\"b\":[1,{\"c\":\"\\\\\"}]}",
                                       "{\"e\":\"\xc3\xa9\\n\"}", NULL};

  /* Whitespace and newlines between objects, CRLF as QMP sends. */
  expect_split(S(" {\"return\": {}}\r\n\n\t{\"return\": 5}\n"), FALSE, two);
  expect_split(S("{\"return\":{}}{\"return\":5}"), FALSE, two);
  /* Braces, brackets and escaped quotes inside strings do not count. */
  expect_split(S("{\"a\": \"}{\\\"[\", \"b\": [1, {\"c\": \"\\\\\"}]}\n{\"e\":\"\\u00e9\\n\"}"),
               FALSE, tricky);
}

static void test_stream_sync(void) {
  static const char *const one[] = {"{\"return\":42}", NULL};
  static const char *const two[] = {"{\"return\":1}", "{\"return\":42}", NULL};

  /* Skipping: garbage, even JSON, before the 0xFF is discarded. */
  expect_split(S("garbage {\"return\": 7}\n\x01\x02\xff{\"return\": 42}\n"), TRUE, one);
  /* 0xFF inside an object voids it (the agent resets mid-answer). */
  expect_split(S("{\"return\": {\"half\": \xff{\"return\": 42}"), FALSE, one);
  /* 0xFF between objects is harmless. */
  expect_split(S("{\"return\": 1}\xff\xff{\"return\": 42}"), FALSE, two);
}

static void test_stream_skipping_buffers_nothing(void) {
  g_autoptr(VsJsonStream) s = vs_json_stream_new(1024, 8);
  g_autoptr(JsonNode) node = NULL;
  char junk[4096];

  memset(junk, 'x', sizeof(junk));
  vs_json_stream_skip_to_sync(s);
  CU_ASSERT(vs_json_stream_is_skipping(s));
  for (int i = 0; i < 100; i++)
    vs_json_stream_feed(s, junk, sizeof(junk));
  CU_ASSERT_EQUAL(vs_json_stream_pending(s), 0);
  vs_json_stream_feed(s, "\xff{}", 3);
  CU_ASSERT_FALSE(vs_json_stream_is_skipping(s));
  CU_ASSERT(vs_json_stream_next(s, &node, NULL));
  CU_ASSERT(JSON_NODE_HOLDS_OBJECT(node));
}

static void test_stream_errors(void) {
  static const char *const junk_then_ok[] = {"ERROR", "{\"return\":1}", NULL};
  static const char *const bad_json_then_ok[] = {"ERROR", "{\"return\":2}", NULL};
  static const char *const array[] = {"ERROR", NULL};

  /* A byte outside an object: an error, then skipping to the next 0xFF. */
  expect_split(S("junk {\"return\": 0}\xff{\"return\": 1}"), FALSE, junk_then_ok);
  /* Balanced but malformed JSON: an error, the next object is fine. */
  expect_split(S("{\"a\": }\n{\"return\": 2}"), FALSE, bad_json_then_ok);
  expect_split(S("{\"a\": [}]\n{\"return\": 2}"), FALSE, bad_json_then_ok);
  /* Answers are objects. */
  expect_split(S("[1, 2]"), FALSE, array);
}

static void test_stream_limits(void) {
  g_autoptr(GString) deep = g_string_new(NULL);
  g_autoptr(GPtrArray) got = NULL;
  char big[300];

  /* Depth: 8 levels pass with a limit of 8, 9 do not. */
  for (int i = 0; i < 8; i++)
    g_string_append(deep, i ? "[" : "{\"a\":");
  for (int i = 7; i >= 0; i--)
    g_string_append(deep, i ? "]" : "}");
  got = split(deep->str, deep->len, deep->len, 1024, 8, FALSE);
  CU_ASSERT_EQUAL(got->len, 1);
  CU_ASSERT_STRING_NOT_EQUAL(g_ptr_array_index(got, 0), "ERROR");
  g_ptr_array_unref(got);
  got = split(deep->str, deep->len, deep->len, 1024, 7, FALSE);
  CU_ASSERT_EQUAL(got->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(got, 0), "ERROR");
  g_ptr_array_unref(got);

  /* Size: refused as soon as it is too large, complete or not. */
  memset(big, 'x', sizeof(big));
  memcpy(big, "{\"s\":\"", 6);
  memcpy(big + sizeof(big) - 2, "\"}", 2);
  got = split(big, sizeof(big), sizeof(big), sizeof(big), 8, FALSE);
  CU_ASSERT_EQUAL(got->len, 1);
  CU_ASSERT_STRING_NOT_EQUAL(g_ptr_array_index(got, 0), "ERROR");
  g_ptr_array_unref(got);
  got = split(big, sizeof(big), 7, sizeof(big) - 1, 8, FALSE);
  CU_ASSERT_EQUAL(got->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(got, 0), "ERROR");
  g_ptr_array_unref(got);
  got = split(big, sizeof(big) - 2, 1, 100, 8, FALSE); /* never completes */
  CU_ASSERT_EQUAL(got->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(got, 0), "ERROR");
  g_ptr_array_unref(got);
  got = NULL;
}

/* ---- a scripted peer on the other end of a socketpair ---- */

typedef struct Peer Peer;
typedef void (*PeerScript)(Peer *p);

struct Peer {
  int fd;
  PeerScript script;
  GThread *thread;
  GString *in;    /* what was read and not yet taken */
  GPtrArray *log; /* commands seen, in order ("execute" names) */
  gint64 last_sync_id;
  gpointer data;
};

/* Reads one request: up to the next newline, ignoring 0xFF bytes. Returns
 * the parsed object, or NULL at end of file. */
static JsonObject *peer_read(Peer *p) {
  for (;;) {
    char *nl = memchr(p->in->str, '\n', p->in->len);
    char buf[4096];
    ssize_t n;

    if (nl) {
      g_autoptr(JsonParser) parser = json_parser_new();
      g_autofree char *line = g_strndup(p->in->str, (gsize)(nl - p->in->str));
      char *start = line;
      JsonObject *o;

      g_string_erase(p->in, 0, (gssize)(nl - p->in->str) + 1);
      while ((guchar)*start == 0xFF)
        start++;
      if (!json_parser_load_from_data(parser, start, -1, NULL))
        return NULL;
      o = json_object_ref(json_node_get_object(json_parser_get_root(parser)));
      g_ptr_array_add(p->log, g_strdup(json_object_get_string_member(o, "execute")));
      if (strcmp(json_object_get_string_member(o, "execute"), "guest-sync-delimited") == 0)
        p->last_sync_id =
            json_object_get_int_member(json_object_get_object_member(o, "arguments"), "id");
      return o;
    }
    n = read(p->fd, buf, sizeof(buf));
    if (n <= 0)
      return NULL;
    g_string_append_len(p->in, buf, n);
  }
}

static void peer_write(Peer *p, const char *data, gsize len) {
  while (len > 0) {
    ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL);

    if (n <= 0)
      return;
    data += n;
    len -= (gsize)n;
  }
}

static void peer_printf(Peer *p, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void peer_printf(Peer *p, const char *fmt, ...) {
  g_autofree char *text = NULL;
  va_list ap;

  va_start(ap, fmt);
  text = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  peer_write(p, text, strlen(text));
}

/* Reads the sync request and answers it properly. */
static void peer_sync(Peer *p) {
  JsonObject *o = peer_read(p);

  if (o)
    json_object_unref(o);
  peer_printf(p, "\xff{\"return\": %" G_GINT64_FORMAT "}\n", p->last_sync_id);
}

static gpointer peer_main(gpointer data) {
  Peer *p = data;

  p->script(p);
  shutdown(p->fd, SHUT_WR);
  /* Drain until the client closes, so that its writes never fail. */
  for (;;) {
    char buf[256];

    if (read(p->fd, buf, sizeof(buf)) <= 0)
      break;
  }
  return NULL;
}

/* A channel whose other end runs @script in a thread. */
static VsChannel *start_peer(Peer *p, PeerScript script, gpointer data) {
  int sv[2];

  CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  *p = (Peer){.fd = sv[1],
              .script = script,
              .in = g_string_new(NULL),
              .log = g_ptr_array_new_with_free_func(g_free),
              .data = data};
  p->thread = g_thread_new("peer", peer_main, p);
  return vs_channel_new_for_fd(sv[0], "test peer");
}

static void stop_peer(Peer *p, VsChannel *ch) {
  vs_channel_free(ch); /* closes our end: the peer's drain ends */
  g_thread_join(p->thread);
  close(p->fd);
  g_string_free(p->in, TRUE);
  g_ptr_array_unref(p->log);
}

/* ---- channel scripts and tests ---- */

static void script_stale_then_sync(Peer *p) {
  JsonObject *o = peer_read(p);

  /* What an earlier client left: half an answer, junk, a stale sync
   * answer after its own 0xFF, then ours. */
  peer_printf(p, "{\"return\": {\"half\": \"x");
  peer_printf(p, "\x01\x02 garbage \xff{\"return\": 999}\n");
  peer_printf(p, "\xff{\"return\": %" G_GINT64_FORMAT "}\n", p->last_sync_id);
  json_object_unref(o);
  o = peer_read(p);
  peer_printf(p, "{\"return\": {\"pong\": true}}\n");
  json_object_unref(o);
}

static void test_channel_resync(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_stale_then_sync, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = vs_channel_call(ch, "guest-ping", NULL, 5000, &error);

  CU_ASSERT_PTR_NULL(error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ret);
  CU_ASSERT(json_object_get_boolean_member(json_node_get_object(ret), "pong"));
  stop_peer(&p, ch);
}

/* The answer one byte at a time, with pauses. */
static void script_split(Peer *p) {
  static const char answer[] = "{\"return\": {\"version\": \"0.1.0\", \"list\": [1, 2, {}]}}\n";
  JsonObject *o;

  peer_sync(p);
  o = peer_read(p);
  for (gsize i = 0; i < sizeof(answer) - 1; i++) {
    peer_write(p, answer + i, 1);
    g_usleep(300);
  }
  json_object_unref(o);
}

static void test_channel_split_reads(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_split, NULL);
  g_autoptr(JsonNode) ret = vs_channel_call(ch, "guest-info", NULL, 5000, NULL);

  CU_ASSERT_PTR_NOT_NULL_FATAL(ret);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(json_node_get_object(ret), "version"),
                         "0.1.0");
  stop_peer(&p, ch);
}

#define BIG_LEN (300 * 1024) /* many reads of 16 KiB */

static void script_big(Peer *p) {
  g_autoptr(GString) s = g_string_new("{\"return\": {\"blob\": \"");
  JsonObject *o;

  for (gsize i = 0; i < BIG_LEN; i++)
    g_string_append_c(s, (char)('a' + i % 26));
  g_string_append(s, "\"}}\n");
  peer_sync(p);
  o = peer_read(p);
  peer_write(p, s->str, s->len);
  json_object_unref(o);
}

static void test_channel_big_answer(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_big, NULL);
  g_autoptr(JsonNode) ret = vs_channel_call(ch, "shrinkd-status", NULL, 5000, NULL);
  const char *blob;

  CU_ASSERT_PTR_NOT_NULL_FATAL(ret);
  blob = json_object_get_string_member(json_node_get_object(ret), "blob");
  CU_ASSERT_EQUAL(strlen(blob), BIG_LEN);
  CU_ASSERT_EQUAL(blob[BIG_LEN - 1], 'a' + (BIG_LEN - 1) % 26);
  stop_peer(&p, ch);
}

static const char *const classes[] = {
    "GenericError", "CommandNotFound", "InvalidParameter", "CommandDisabled",
    "Busy",         "SomethingNew"};

static void script_errors(Peer *p) {
  peer_sync(p);
  for (guint i = 0; i < G_N_ELEMENTS(classes); i++) {
    JsonObject *o = peer_read(p);

    peer_printf(p, "{\"error\": {\"class\": \"%s\", \"desc\": \"desc %u\"}}\n", classes[i], i);
    json_object_unref(o);
  }
  /* An error without a class, and an answer that is neither. */
  json_object_unref(peer_read(p));
  peer_printf(p, "{\"error\": {}}\n");
  json_object_unref(peer_read(p));
  peer_printf(p, "{\"neither\": 1}\n");
  /* After the protocol error the client resyncs before the next command. */
  peer_sync(p);
  json_object_unref(peer_read(p));
  peer_printf(p, "{\"return\": 3}\n");
}

static void test_channel_error_classes(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_errors, NULL);
  g_autoptr(JsonNode) ret = NULL;

  for (guint i = 0; i < G_N_ELEMENTS(classes); i++) {
    g_autoptr(GError) error = NULL;
    g_autofree char *want = g_strdup_printf("desc %u (%s)", i, classes[i]);

    ret = vs_channel_call(ch, "shrinkd-prepare", NULL, 5000, &error);
    CU_ASSERT_PTR_NULL(ret);
    CU_ASSERT_EQUAL(error->domain, VS_AGENT_ERROR);
    CU_ASSERT_EQUAL(error->code, i < 5 ? (int)i : VS_AGENT_ERROR_OTHER);
    CU_ASSERT_STRING_EQUAL(error->message, want);
  }
  {
    g_autoptr(GError) error = NULL;

    CU_ASSERT_PTR_NULL(vs_channel_call(ch, "x", NULL, 5000, &error));
    CU_ASSERT(g_error_matches(error, VS_AGENT_ERROR, VS_AGENT_ERROR_GENERIC));
    CU_ASSERT_STRING_EQUAL(error->message, "(no description) (GenericError)");
  }
  {
    g_autoptr(GError) error = NULL;

    CU_ASSERT_PTR_NULL(vs_channel_call(ch, "y", NULL, 5000, &error));
    CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_PROTOCOL));
  }
  ret = vs_channel_call(ch, "z", NULL, 5000, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ret);
  CU_ASSERT_EQUAL(json_node_get_int(ret), 3);
  /* Synced once at the start and once after the protocol error, not after
   * the agent's error answers (the channel stays in step through those). */
  {
    guint syncs = 0;

    for (guint i = 0; i < p.log->len; i++)
      syncs += strcmp(g_ptr_array_index(p.log, i), "guest-sync-delimited") == 0;
    CU_ASSERT_EQUAL(syncs, 2);
    CU_ASSERT_EQUAL(p.log->len, G_N_ELEMENTS(classes) + 5);
  }
  stop_peer(&p, ch);
}

/* Answers the first command late, after the client gave up. */
static void script_late(Peer *p) {
  JsonObject *o;

  peer_sync(p);
  o = peer_read(p);
  json_object_unref(o);
  g_usleep(300000);
  peer_printf(p, "{\"return\": \"late\"}\n");
  /* The client resyncs: everything before our 0xFF is void. */
  peer_sync(p);
  o = peer_read(p);
  peer_printf(p, "{\"return\": \"fresh\"}\n");
  json_object_unref(o);
}

static void test_channel_timeout_then_resync(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_late, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) ret = NULL;
  gint64 t0 = g_get_monotonic_time(), dt;

  CU_ASSERT_PTR_NULL(vs_channel_call(ch, "slow", NULL, 100, &error));
  dt = g_get_monotonic_time() - t0;
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_TIMEOUT));
  CU_ASSERT_PTR_NOT_NULL(
      strstr(error->message, "slow: no answer from the guest agent within 100 ms"));
  CU_ASSERT(dt >= 95000 && dt < 1000000);
  g_usleep(350000); /* the late answer is in our socket now */
  ret = vs_channel_call(ch, "next", NULL, 5000, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ret);
  CU_ASSERT_STRING_EQUAL(json_node_get_string(ret), "fresh");
  stop_peer(&p, ch);
}

static void script_silent(Peer *p) {
  JsonObject *o = peer_read(p);

  if (o)
    json_object_unref(o);
  g_usleep(400000);
}

static void test_channel_silent_peer(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_silent, NULL);
  g_autoptr(GError) error = NULL;
  gint64 t0 = g_get_monotonic_time(), dt;

  CU_ASSERT_FALSE(vs_channel_sync(ch, 150, &error));
  dt = g_get_monotonic_time() - t0;
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_TIMEOUT));
  CU_ASSERT(dt >= 145000 && dt < 1000000);
  stop_peer(&p, ch);
}

static void script_close(Peer *p) {
  peer_sync(p);
  json_object_unref(peer_read(p));
  peer_printf(p, "{\"return\": {\"cut");
  /* peer_main shuts the socket down for writing: end of file. */
}

static void test_channel_peer_closes(void) {
  Peer p;
  VsChannel *ch = start_peer(&p, script_close, NULL);
  g_autoptr(GError) error = NULL;
  gint64 t0 = g_get_monotonic_time();

  CU_ASSERT_PTR_NULL(vs_channel_call(ch, "guest-ping", NULL, 5000, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_CLOSED));
  CU_ASSERT(g_get_monotonic_time() - t0 < 2000000);
  stop_peer(&p, ch);
}

/* The requests' wire form: 0xFF right before the sync only; each request
 * one line of JSON. */
typedef struct {
  char *sync_line;
  char *command_line;
} WireSeen;

static char *read_raw_line(Peer *p) {
  for (;;) {
    char *nl = memchr(p->in->str, '\n', p->in->len);
    char buf[512];
    ssize_t n;

    if (nl) {
      char *line = g_strndup(p->in->str, (gsize)(nl - p->in->str) + 1);

      g_string_erase(p->in, 0, (gssize)(nl - p->in->str) + 1);
      return line;
    }
    n = read(p->fd, buf, sizeof(buf));
    if (n <= 0)
      return NULL;
    g_string_append_len(p->in, buf, n);
  }
}

static void script_check_wire(Peer *p) {
  WireSeen *seen = p->data;
  g_autoptr(JsonParser) parser = json_parser_new();

  seen->sync_line = read_raw_line(p);
  if (!seen->sync_line || (guchar)seen->sync_line[0] != 0xFF ||
      !json_parser_load_from_data(parser, seen->sync_line + 1, -1, NULL))
    return;
  p->last_sync_id = json_object_get_int_member(
      json_object_get_object_member(json_node_get_object(json_parser_get_root(parser)),
                                    "arguments"),
      "id");
  peer_printf(p, "\xff{\"return\": %" G_GINT64_FORMAT "}\n", p->last_sync_id);
  seen->command_line = read_raw_line(p);
  peer_printf(p, "{\"return\": {}}\n");
}

static void test_channel_wire_form(void) {
  WireSeen seen = {0};
  Peer p;
  VsChannel *ch;
  g_autoptr(JsonObject) args = json_object_new();
  g_autoptr(JsonNode) ret = NULL;
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autofree char *sync_want = NULL;

  ch = start_peer(&p, script_check_wire, &seen);
  json_object_set_int_member(args, "new_size_bytes", 402653184);
  json_object_set_int_member(args, "deadline_ms", 4000);
  ret = vs_channel_call(ch, "shrinkd-prepare", args, 5000, NULL);
  CU_ASSERT_PTR_NOT_NULL(ret);
  CU_ASSERT(p.last_sync_id > 0 && p.last_sync_id < G_MAXINT32);
  sync_want = g_strdup_printf(
      "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%" G_GINT64_FORMAT "}}\n",
      p.last_sync_id);
  CU_ASSERT_STRING_EQUAL(seen.sync_line, sync_want);
  CU_ASSERT_STRING_EQUAL(seen.command_line,
                         "{\"execute\":\"shrinkd-prepare\",\"arguments\":"
                         "{\"new_size_bytes\":402653184,\"deadline_ms\":4000}}\n");
  stop_peer(&p, ch);
  g_free(seen.sync_line);
  g_free(seen.command_line);
}

/* ---- real sockets: connecting ---- */

static char *temp_socket_path(const char *name) {
  g_autofree char *dir = g_dir_make_tmp("vs-unit-XXXXXX", NULL);

  return g_build_filename(dir, name, NULL);
}

static void remove_socket(const char *path) {
  g_autofree char *dir = g_path_get_dirname(path);

  unlink(path);
  rmdir(dir);
}

static int listen_on(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
  CU_ASSERT_FATAL(listen(fd, 4) == 0);
  return fd;
}

static void test_channel_open_failures(void) {
  g_autofree char *path = temp_socket_path("chan.sock");
  g_autoptr(GError) error = NULL;
  gint64 t0;
  int lfd;

  /* Nothing there. */
  CU_ASSERT_PTR_NULL(vs_channel_open(path, 500, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_NO_AGENT));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "cannot connect to the guest agent channel at "));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, path));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "No such file or directory"));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "(is shrinkd running in the guest?)"));
  g_clear_error(&error);

  /* A listener that never accepts nor answers (a guest without the agent:
   * QEMU accepts, nobody reads). The connect succeeds; the sync times out. */
  lfd = listen_on(path);
  t0 = g_get_monotonic_time();
  CU_ASSERT_PTR_NULL(vs_channel_open(path, 200, &error));
  CU_ASSERT(g_get_monotonic_time() - t0 < 1000000);
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_NO_AGENT));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "no answer to guest-sync-delimited within 200 ms"));
  close(lfd);
  remove_socket(path);
}

static void test_connect_long_path(void) {
  /* Longer than sun_path (108): reached through /proc/self/fd. */
  g_autofree char *dir = g_dir_make_tmp("vs-unit-XXXXXX", NULL);
  g_autofree char *deep = g_build_filename(
      dir, "a-directory-name-long-enough-to-push-the-socket-path-past-sun-path-limits",
      "and-another-one-for-good-measure", NULL);
  g_autofree char *path = g_build_filename(deep, "org.shrinkd.agent.0", NULL);
  g_autofree char *cwd = g_get_current_dir();
  g_autoptr(GError) error = NULL;
  int lfd, fd;

  CU_ASSERT_FATAL(strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path));
  CU_ASSERT_FATAL(g_mkdir_with_parents(deep, 0700) == 0);
  /* bind() has the same limit: bind relative to the directory. */
  CU_ASSERT_FATAL(chdir(deep) == 0);
  lfd = listen_on("org.shrinkd.agent.0");
  CU_ASSERT_FATAL(chdir(cwd) == 0);
  fd = vs_unix_connect(path, g_get_monotonic_time() + 1000000, &error);
  CU_ASSERT(fd >= 0);
  CU_ASSERT_PTR_NULL(error);
  if (fd >= 0)
    close(fd);
  close(lfd);
  unlink(path);
  rmdir(deep);
  {
    g_autofree char *parent = g_path_get_dirname(deep);

    rmdir(parent);
  }
  rmdir(dir);
}

/* ---- QMP ---- */

typedef struct {
  char *path;
  int lfd;
  GThread *thread;
  gboolean greet;
} QmpServer;

static gpointer qmp_server_main(gpointer data) {
  QmpServer *q = data;
  Peer p = {.in = g_string_new(NULL), .log = g_ptr_array_new_with_free_func(g_free)};
  JsonObject *o;

  p.fd = accept(q->lfd, NULL, NULL);
  if (p.fd < 0)
    goto out;
  if (!q->greet) {
    g_usleep(500000);
    goto out;
  }
  peer_printf(
      &p, "{\"event\": \"SHUTDOWN\"}\r\n{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
  while ((o = peer_read(&p))) {
    const char *cmd = json_object_get_string_member(o, "execute");
    gint64 id = json_object_get_int_member_with_default(o, "id", -1);

    if (strcmp(cmd, "qmp_capabilities") == 0) {
      peer_printf(&p, "{\"return\": {}, \"id\": %" G_GINT64_FORMAT "}\r\n", id);
    } else if (strcmp(cmd, "query-balloon") == 0) {
      /* An event and a stale answer first. */
      peer_printf(&p,
                  "{\"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": 1}}\r\n"
                  "{\"return\": {\"actual\": 1}, \"id\": 9999}\r\n"
                  "{\"return\": {\"actual\": 536870912}, \"id\": %" G_GINT64_FORMAT "}\r\n",
                  id);
    } else if (strcmp(cmd, "balloon") == 0) {
      peer_printf(&p,
                  "{\"error\": {\"class\": \"DeviceNotActive\", \"desc\": \"No balloon "
                  "device has been activated\"}, \"id\": %" G_GINT64_FORMAT "}\r\n",
                  id);
    } else if (strcmp(cmd, "query-status") == 0) {
      peer_printf(
          &p,
          "{\"return\": {\"status\": \"paused\", \"running\": false}, \"id\": %" G_GINT64_FORMAT
          "}\r\n",
          id);
    } else if (strcmp(cmd, "query-memory-size-summary") == 0) {
      peer_printf(&p,
                  "{\"return\": {\"base-memory\": 1073741824, \"plugged-memory\": 1048576}, "
                  "\"id\": %" G_GINT64_FORMAT "}\r\n",
                  id);
    }
    json_object_unref(o);
  }
out:
  if (p.fd >= 0)
    close(p.fd);
  g_string_free(p.in, TRUE);
  g_ptr_array_unref(p.log);
  return NULL;
}

static void qmp_server_start(QmpServer *q, gboolean greet) {
  q->path = temp_socket_path("qmp.sock");
  q->lfd = listen_on(q->path);
  q->greet = greet;
  q->thread = g_thread_new("qmp", qmp_server_main, q);
}

static void qmp_server_stop(QmpServer *q) {
  g_thread_join(q->thread);
  close(q->lfd);
  remove_socket(q->path);
  g_free(q->path);
}

static void test_qmp(void) {
  QmpServer srv;
  g_autoptr(GError) error = NULL;
  g_autofree char *status = NULL;
  VsQmp *qmp;
  guint64 v = 0;
  gboolean running = TRUE;

  qmp_server_start(&srv, TRUE);
  qmp = vs_qmp_open(srv.path, 2000, &error);
  CU_ASSERT_PTR_NULL(error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(qmp);
  CU_ASSERT(vs_qmp_query_balloon(qmp, &v, 2000, &error));
  CU_ASSERT_EQUAL(v, 536870912);
  CU_ASSERT(vs_qmp_query_memory_size(qmp, &v, 2000, &error));
  CU_ASSERT_EQUAL(v, 1073741824 + 1048576);
  CU_ASSERT(vs_qmp_query_status(qmp, &running, &status, 2000, &error));
  CU_ASSERT_FALSE(running);
  CU_ASSERT_STRING_EQUAL(status, "paused");
  CU_ASSERT_FALSE(vs_qmp_balloon(qmp, 1 << 30, 2000, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_FAILED));
  CU_ASSERT_STRING_EQUAL(error->message,
                         "QMP balloon: No balloon device has been activated (DeviceNotActive)");
  g_clear_error(&error);
  /* An unknown command gets no answer from this server: the timeout holds. */
  CU_ASSERT_PTR_NULL(vs_qmp_call(qmp, "query-nothing", NULL, 100, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_TIMEOUT));
  vs_qmp_free(qmp);
  qmp_server_stop(&srv);
}

static void test_qmp_no_greeting(void) {
  QmpServer srv;
  g_autoptr(GError) error = NULL;

  qmp_server_start(&srv, FALSE);
  CU_ASSERT_PTR_NULL(vs_qmp_open(srv.path, 150, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_TIMEOUT));
  CU_ASSERT_PTR_NOT_NULL(strstr(error->message, "(is another client connected?)"));
  qmp_server_stop(&srv);
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("virt-shrink channel framing", NULL, NULL);
  CU_add_test(s, "objects, whitespace, strings, any split", test_stream_objects);
  CU_add_test(s, "0xFF resynchronisation", test_stream_sync);
  CU_add_test(s, "skipping buffers nothing", test_stream_skipping_buffers_nothing);
  CU_add_test(s, "junk, malformed JSON, non-objects", test_stream_errors);
  CU_add_test(s, "size and depth limits", test_stream_limits);
  s = CU_add_suite("virt-shrink channel client", NULL, NULL);
  CU_add_test(s, "resync past stale answers and junk", test_channel_resync);
  CU_add_test(s, "an answer split into single bytes", test_channel_split_reads);
  CU_add_test(s, "an answer larger than one read", test_channel_big_answer);
  CU_add_test(s, "error objects become GErrors with the class", test_channel_error_classes);
  CU_add_test(s, "a late answer after a timeout is not taken", test_channel_timeout_then_resync);
  CU_add_test(s, "a silent peer: the sync times out", test_channel_silent_peer);
  CU_add_test(s, "a peer that closes mid-answer", test_channel_peer_closes);
  CU_add_test(s, "the wire form of requests", test_channel_wire_form);
  CU_add_test(s, "open: no socket, no agent", test_channel_open_failures);
  CU_add_test(s, "connect: paths longer than sun_path", test_connect_long_path);
  s = CU_add_suite("virt-shrink QMP client", NULL, NULL);
  CU_add_test(s, "greeting, events, stale ids, errors, timeout", test_qmp);
  CU_add_test(s, "no greeting (another client)", test_qmp_no_greeting);
  return cunit_run_all();
}
