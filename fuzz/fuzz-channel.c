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
 *    only for guest-sync-delimited;
 *  - the request reader (agent/json-reader.c) on the whole input and on
 *    every object: its bounds hold, what it accepts is written back by
 *    agent_json_node() as text it reads back the same, and where the text
 *    is plain JSON it agrees with json-glib on accept/reject, and on the
 *    value where both accept (allowed_difference() lists the deliberate
 *    differences).
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
#include "json-reader.h"
#include "json-writer.h"
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

/* ---- the reader against json-glib ---- */

/* The nesting of @text counted as the old pre-check did (brackets outside
 * strings): exact for any text the reader accepts. Stops past @limit. */
static unsigned crude_depth(const char *text, size_t len, unsigned limit) {
  unsigned depth = 0, deepest = 0;
  gboolean in_string = FALSE;

  for (size_t i = 0; i < len && deepest <= limit; i++) {
    if (in_string) {
      if (text[i] == '\\')
        i++;
      else if (text[i] == '"')
        in_string = FALSE;
    } else if (text[i] == '"') {
      in_string = TRUE;
    } else if (text[i] == '[' || text[i] == '{') {
      if (++depth > deepest)
        deepest = depth;
    } else if ((text[i] == ']' || text[i] == '}') && depth > 0) {
      depth--;
    }
  }
  return deepest;
}

/*
 * Plain JSON: outside strings, only bytes JSON's grammar uses (structural
 * characters, the characters of numbers, the letters of true, false and
 * null, the four whitespace bytes); inside strings, anything. That leaves
 * out what json-glib takes beyond JSON and the reader never would:
 * comments, "var x = ..." assignments, single quotes, hex numbers, a
 * UTF-8 BOM, other words.
 */
static gboolean plain(const char *text, size_t len) {
  gboolean in_string = FALSE;

  for (size_t i = 0; i < len; i++) {
    if (in_string) {
      if (text[i] == '\\')
        i++;
      else if (text[i] == '"')
        in_string = FALSE;
    } else if (text[i] == '"') {
      in_string = TRUE;
    } else if (!text[i] || !strchr("{}[],: \t\r\n0123456789-+.eEtruefalsn", text[i])) {
      return FALSE;
    }
  }
  return TRUE;
}

/* Whether the reader's value @ours is json-glib's @theirs. (Strings
 * compare as C strings: with "\u0000" in the text, they are not compared
 * at all, see differential().) */
static gboolean same_value(const AgentJsonValue *ours, JsonNode *theirs) {
  AgentJsonIter iter;
  const AgentJsonValue *name, *item;
  guint i = 0;

  switch (agent_json_reader_type(ours)) {
  case AGENT_JSON_NULL: return JSON_NODE_HOLDS_NULL(theirs);
  case AGENT_JSON_BOOL:
    return JSON_NODE_HOLDS_VALUE(theirs) && json_node_get_value_type(theirs) == G_TYPE_BOOLEAN &&
           json_node_get_boolean(theirs) == agent_json_reader_get_bool(ours);
  case AGENT_JSON_INT:
    return JSON_NODE_HOLDS_VALUE(theirs) && json_node_get_value_type(theirs) == G_TYPE_INT64 &&
           json_node_get_int(theirs) == agent_json_reader_get_int(ours);
  case AGENT_JSON_DOUBLE:
    return JSON_NODE_HOLDS_VALUE(theirs) && json_node_get_value_type(theirs) == G_TYPE_DOUBLE &&
           json_node_get_double(theirs) == agent_json_reader_get_double(ours);
  case AGENT_JSON_STRING:
    return JSON_NODE_HOLDS_VALUE(theirs) && json_node_get_value_type(theirs) == G_TYPE_STRING &&
           strcmp(json_node_get_string(theirs), agent_json_reader_get_string(ours, NULL)) == 0;
  case AGENT_JSON_ARRAY:
    if (!JSON_NODE_HOLDS_ARRAY(theirs) ||
        json_array_get_length(json_node_get_array(theirs)) != agent_json_reader_length(ours))
      return FALSE;
    agent_json_reader_iter_init(&iter, ours);
    while (agent_json_reader_iter_next(&iter, NULL, &item))
      if (!same_value(item, json_array_get_element(json_node_get_array(theirs), i++)))
        return FALSE;
    return TRUE;
  case AGENT_JSON_OBJECT:
    if (!JSON_NODE_HOLDS_OBJECT(theirs) ||
        json_object_get_size(json_node_get_object(theirs)) != agent_json_reader_length(ours))
      return FALSE;
    agent_json_reader_iter_init(&iter, ours);
    while (agent_json_reader_iter_next(&iter, &name, &item)) {
      JsonNode *member = json_object_get_member(json_node_get_object(theirs),
                                                agent_json_reader_get_string(name, NULL));

      if (!member || !same_value(item, member))
        return FALSE;
    }
    return TRUE;
  }
  return FALSE;
}

/*
 * Whether the reader may refuse what json-glib accepts, by the reader's
 * @message about @text. The deliberate differences on plain JSON:
 *  - json-glib is laxer than RFC 8259:
 *      "a number with a leading zero"       it reads 01 as 1
 *      "expected a digit after '-'"         "- 1" is -1 to it
 *      "expected a digit after '.'"         it takes "1." and "1.e5"
 *      "expected a value" at a '.'          it takes ".5"
 *      "a control character in a string"    it takes raw ones
 *      "an invalid escape in a string"      "\x" is "x" to it
 *      "an invalid \u escape in a string"   it reads "\u00zz" as ""
 *      "an unpaired surrogate"              it takes "\ud800x", and makes
 *                                           invalid UTF-8 (ED A0 80) of it
 *      "unexpected text after the value"    it ignores what follows a
 *                                           top-level object ("{} {}")
 *  - the reader refuses what a request cannot need or the agent cannot
 *    hold:
 *      "a duplicate member name"            json-glib keeps the last one
 *      "an integer beyond 64 bits"          json-glib wraps it around
 *      "a number beyond the range of a double"  json-glib reads infinity
 *      "nests deeper than"                  json-glib has no depth limit
 * The bounds checked before json-glib is asked (size, NUL byte, UTF-8,
 * nesting far too deep for its recursion) are in differential(). Both
 * take "\u0000", but json-glib cuts the string there (so "a\u0000b" and
 * "a\u0000c" are one name to it, and a duplicate): where the text has
 * one, only accept/reject is compared.
 */
static gboolean allowed_difference(const char *message, const char *text, size_t len) {
  static const char *const deliberate[] = {
      "a number with a leading zero",
      "expected a digit after '-'",
      "expected a digit after '.'",
      "a control character in a string",
      "an invalid escape in a string",
      "an invalid \\u escape in a string",
      "an unpaired surrogate",
      "unexpected text after the value",
      "a duplicate member name",
      "an integer beyond 64 bits",
      "a number beyond the range of a double",
      "nests deeper than",
      NULL,
  };
  size_t at;

  for (const char *const *d = deliberate; *d; d++)
    if (strstr(message, *d))
      return TRUE;
  return sscanf(message, "malformed JSON at byte %zu", &at) == 1 && at < len && text[at] == '.' &&
         strstr(message, "expected a value");
}

/* The reader on @len bytes of @text, against its bounds, its writer and
 * json-glib. */
static void differential(const char *text, size_t len) {
  g_autoptr(GError) error = NULL;
  g_autoptr(AgentJsonDoc) ours = agent_json_reader_parse(text, len, &error);
  g_autoptr(JsonParser) parser = NULL;
  gboolean theirs;
  unsigned depth;

  CHECK(!ours != !error);
  if (ours) {
    /* Written back, it reads back as the same text. */
    GString *a = g_string_new(NULL), *b = g_string_new(NULL);
    AgentJsonWriter w;
    g_autoptr(AgentJsonDoc) again = NULL;

    agent_json_init(&w, a);
    agent_json_node(&w, NULL, agent_json_reader_root(ours));
    again = agent_json_reader_parse(a->str, a->len, NULL);
    CHECK(again != NULL);
    agent_json_init(&w, b);
    agent_json_node(&w, NULL, agent_json_reader_root(again));
    CHECK(g_string_equal(a, b));
    g_string_free(a, TRUE);
    g_string_free(b, TRUE);
  }
  /* The bounds: checked here rather than by json-glib, which would stop at
   * a NUL, might warn about bad UTF-8, and recurses without a limit. */
  if (len > AGENT_JSON_READER_TEXT_MAX) {
    CHECK(!ours && strstr(error->message, "exceeds the limit"));
    return;
  }
  if (memchr(text, '\0', len)) {
    CHECK(!ours && strstr(error->message, "NUL byte"));
    return;
  }
  if (!g_utf8_validate_len(text, len, NULL)) {
    CHECK(!ours && strstr(error->message, "UTF-8"));
    return;
  }
  depth = crude_depth(text, len, 64);
  if (depth > AGENT_JSON_READER_DEPTH_MAX)
    CHECK(!ours);
  if (depth > 64 || !plain(text, len))
    return;

  parser = json_parser_new_immutable();
  theirs = json_parser_load_from_data(parser, text, (gssize)len, NULL) &&
           json_parser_get_root(parser) != NULL; /* an empty text has none */
  if (ours && theirs) {
    CHECK(g_strstr_len(text, (gssize)len, "\\u0000") ||
          same_value(agent_json_reader_root(ours), json_parser_get_root(parser)));
  } else if (ours) {
    fprintf(stderr, "fuzz-channel: json-glib refuses what the reader accepts: %.*s\n",
            (int)MIN(len, 200), text);
    abort();
  } else if (theirs && !allowed_difference(error->message, text, len)) {
    fprintf(stderr, "fuzz-channel: the reader refuses what json-glib accepts (%s): %.*s\n",
            error->message, (int)MIN(len, 200), text);
    abort();
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
  g_autoptr(AgentJsonDoc) req = agent_json_reader_parse(text, len, NULL);
  const char *synced = NULL;

  differential(text, len);

  /* guest-sync-delimited is the one command whose answer starts with 0xFF:
   * tell the check when the request is one. */
  if (req) {
    const AgentJsonValue *exec = agent_json_reader_member(agent_json_reader_root(req), "execute");
    const char *name = exec ? agent_json_reader_get_string(exec, NULL) : NULL;

    if (name && strcmp(name, "guest-sync-delimited") == 0)
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

  /* The whole input as one text, as the reader sees it (a top-level
   * array or scalar, too, which the framing never hands on). */
  differential((const char *)data, size);

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
