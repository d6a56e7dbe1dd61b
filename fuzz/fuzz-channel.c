/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the host channel's parser: the framing
 * (proto/channel-frame.c) and the commands (agent/commands.c, caller
 * HOST), with the libFuzzer entry point LLVMFuzzerTestOneInput(). Built
 * with clang -fsanitize=fuzzer it is a libFuzzer binary; linked with
 * driver.c it is a standalone program that mutates a corpus for a bounded
 * time (gcc, ASan and UBSan, in CI). See README.md.
 *
 * For each input it checks, and aborts on failure:
 *  - the scanner's contract: every feed consumes at least one byte per
 *    event and all of them otherwise; an object starts with '{', ends with
 *    '}' or ']', is NUL-terminated and within the limit; the buffer never
 *    grows beyond the limit;
 *  - that the events do not depend on how the input is split (the input is
 *    fed whole and in pieces whose sizes come from the input itself);
 *  - that every object gets exactly one answer, which is JSON with either
 *    "return" or "error" (with a class of the protocol's), a 0xFF before it
 *    only for guest-sync-delimited.
 * Commands that run rounds (there are no shrinkers: rounds end at once)
 * are driven to their end by iterating the main loop.
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel-frame.h"
#include "commands.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
  gboolean ready;
  AgentProcfs *procfs;
  AgentRegistry *registry;
  AgentRounds *rounds;
  AgentCommands *commands;
  proto_frame *whole;
  proto_frame *pieces;
} F;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz-channel: check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static void quiet(const gchar *domain, GLogLevelFlags level, const gchar *message,
                  gpointer user_data) {
  /* A critical is a bug whatever the input: it is fatal (below). */
  if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR))
    fprintf(stderr, "fuzz-channel: %s: %s\n", domain ? domain : "", message);
}

static void setup(void) {
  const char *root = g_getenv("SHRINKD_FUZZ_PROC_ROOT");

  g_log_set_default_handler(quiet, NULL);
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
  F.procfs = agent_procfs_new(root ? root : "/");
  F.registry = agent_registry_new(64);
  F.rounds = agent_rounds_new(F.registry, F.procfs, &(AgentRoundConfig){0});
  F.commands = agent_commands_new(F.registry, F.rounds, F.procfs, 100);
  CHECK(proto_frame_new(NULL, &F.whole) == 0);
  CHECK(proto_frame_new(NULL, &F.pieces) == 0);
  F.ready = TRUE;
}

/* ---- the framing ---- */

/* An event and, for an object, a hash of its bytes. */
typedef struct {
  proto_frame_event ev;
  uint64_t hash;
  size_t len;
} Event;

static uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;

  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
  return h;
}

/* Checks one event of @f; records it in @log. */
static void check_event(proto_frame *f, proto_frame_event ev, GArray *log) {
  Event e = {ev, 0, 0};

  CHECK(ev > PROTO_FRAME_NEED_MORE && ev <= PROTO_FRAME_EVENT_LAST);
  if (ev == PROTO_FRAME_OBJECT) {
    const char *obj = proto_frame_object(f, &e.len);

    CHECK(obj != NULL);
    CHECK(e.len >= 2 && e.len <= PROTO_FRAME_OBJECT_MAX);
    CHECK(obj[0] == '{');
    CHECK(obj[e.len - 1] == '}' || obj[e.len - 1] == ']');
    CHECK(obj[e.len] == '\0');
    CHECK(memchr(obj, PROTO_FRAME_SYNC_BYTE, e.len) == NULL);
    e.hash = fnv1a(obj, e.len);
  } else {
    CHECK(proto_frame_object(f, NULL) == NULL);
  }
  g_array_append_val(log, e);
}

/* Feeds @n bytes of @p to @f in one call after another. */
static void feed_all(proto_frame *f, const uint8_t *p, size_t n, GArray *log,
                     void (*on_object)(proto_frame *f)) {
  while (n > 0) {
    proto_frame_event ev;
    size_t used = proto_frame_feed(f, p, n, &ev);

    CHECK(used <= n);
    CHECK(proto_frame_capacity(f) <= PROTO_FRAME_OBJECT_MAX + 1);
    CHECK(proto_frame_pending(f) <= PROTO_FRAME_OBJECT_MAX);
    if (ev == PROTO_FRAME_NEED_MORE) {
      CHECK(used == n);
    } else {
      CHECK(used >= 1);
      check_event(f, ev, log);
      if (ev == PROTO_FRAME_OBJECT && on_object)
        on_object(f);
    }
    p += used;
    n -= used;
  }
}

/* ---- the commands ---- */

static guint answers_pending;

static void on_answer(char *text, gsize len, gpointer user_data) {
  const char *synced = user_data;
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) error = NULL;
  const char *json = text;
  JsonObject *o;
  gboolean has_return, has_error;

  CHECK(answers_pending > 0);
  answers_pending--;
  CHECK(len == strlen(text));
  if ((uint8_t)text[0] == AGENT_COMMANDS_SYNC_BYTE) {
    CHECK(synced != NULL); /* only guest-sync-delimited */
    json++;
  }
  if (!json_parser_load_from_data(parser, json, -1, &error)) {
    fprintf(stderr, "fuzz-channel: an answer that is not JSON: %s\n", error->message);
    abort();
  }
  CHECK(JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)));
  o = json_node_get_object(json_parser_get_root(parser));
  has_return = json_object_has_member(o, "return");
  has_error = json_object_has_member(o, "error");
  CHECK(has_return != has_error);
  CHECK(json_object_get_size(o) == 1 ||
        (json_object_get_size(o) == 2 && json_object_has_member(o, "id")));
  if (has_error) {
    static const char *const classes[] = {"GenericError", "CommandNotFound", "InvalidParameter",
                                          "Busy", NULL};
    JsonNode *e = json_object_get_member(o, "error");
    JsonObject *eo;

    CHECK(JSON_NODE_HOLDS_OBJECT(e));
    eo = json_node_get_object(e);
    CHECK(g_strv_contains(classes, json_object_get_string_member_with_default(eo, "class", "")));
    CHECK(json_object_get_string_member_with_default(eo, "desc", NULL) != NULL);
  }
  g_free(text);
}

/* Runs the object the scanner just found, as the host's request. */
static void run_object(proto_frame *f) {
  static const AgentCaller host = {AGENT_CALLER_HOST, 0, 0};
  size_t len;
  const char *text = proto_frame_object(f, &len);
  g_autoptr(JsonNode) req = agent_commands_parse(text, len, NULL);
  const char *synced = NULL;

  /* guest-sync-delimited is the one command whose answer starts with 0xFF:
   * tell the check when the request is one. */
  if (req && JSON_NODE_HOLDS_OBJECT(req)) {
    JsonNode *exec = json_object_get_member(json_node_get_object(req), "execute");

    if (exec && JSON_NODE_HOLDS_VALUE(exec) && json_node_get_value_type(exec) == G_TYPE_STRING &&
        strcmp(json_node_get_string(exec), "guest-sync-delimited") == 0)
      synced = "yes";
  }

  answers_pending++;
  agent_commands_handle_text(F.commands, text, len, &host, on_answer, (gpointer)synced, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  g_autoptr(GArray) whole = g_array_new(FALSE, FALSE, sizeof(Event));
  g_autoptr(GArray) pieces = g_array_new(FALSE, FALSE, sizeof(Event));
  uint32_t state = 2166136261u;
  size_t off = 0;
  guint spins = 0;

  if (!F.ready)
    setup();
  proto_frame_reset(F.whole);
  proto_frame_reset(F.pieces);

  /* Whole, running the commands. */
  feed_all(F.whole, data, size, whole, run_object);
  /* Rounds end from the main loop: every answer must come. */
  while (answers_pending > 0 && spins++ < 10000)
    g_main_context_iteration(NULL, FALSE);
  CHECK(answers_pending == 0);

  /* In pieces of 1..64 bytes chosen by the input: the same events. */
  for (size_t i = 0; i < size && i < 64; i++)
    state = (state ^ data[i]) * 16777619u;
  while (off < size) {
    size_t n;

    state = state * 1103515245u + 12345u;
    n = 1 + (state >> 16) % 64;
    if (n > size - off)
      n = size - off;
    feed_all(F.pieces, data + off, n, pieces, NULL);
    off += n;
  }
  CHECK(whole->len == pieces->len);
  for (guint i = 0; i < whole->len; i++) {
    const Event *a = &g_array_index(whole, Event, i), *b = &g_array_index(pieces, Event, i);

    CHECK(a->ev == b->ev && a->hash == b->hash && a->len == b->len);
  }
  return 0;
}
