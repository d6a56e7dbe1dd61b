/* SPDX-License-Identifier: MIT */
/*
 * The agent's core above the policy, without starting the daemon:
 *  - commands: JSON limits, typed errors, permissions, the status shape;
 *    shrinkd-prepare-migration (its size, answer, typed errors, Busy);
 *  - rounds: driven through the "shrink" command against fake clients on
 *    socketpairs (all answer, one hangs, late replies, second pass, soft
 *    before hard, a client gone mid-round, a full socket, the queue,
 *    relief, bounded history);
 *  - server: the real socket in a temporary directory (HELLO, typed
 *    errors, garbage, limits, chunked replies, stale and busy sockets);
 *  - settings (the config file) and units (shrinkctl's SIZE).
 * Time-based checks use short deadlines with generous bounds.
 */
#include "cunit-run.h"
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "errors.h"
#include "local-proto.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"
#include "server.h"
#include "settings.h"
#include "units.h"

/* ---- the agent under test ---- */

static char *tmpdir;

static AgentProcfs *procfs;
static AgentRegistry *reg;
static AgentRounds *rounds;
static AgentCommands *cmds;

static void agent_up(unsigned queue_max, uint32_t max_shrinkers) {
  AgentRoundConfig rc = {.miss_limit = 3, .soft_share_pct = 50, .queue_max = queue_max};

  procfs = agent_procfs_new("/");
  reg = agent_registry_new(max_shrinkers);
  rounds = agent_rounds_new(reg, procfs, &rc);
  cmds = agent_commands_new(reg, rounds, procfs, 1000);
}

/* As agent_up(), with /proc read under a fixture root in tmpdir: the
 * processes of fakes made with fake_new_rooted() have a statm there. */
static char *proc_root;

static void agent_up_rooted(uint32_t per_uid, uint32_t total) {
  AgentRoundConfig rc = {.miss_limit = 3, .soft_share_pct = 50, .queue_max = 8};

  proc_root = g_build_filename(tmpdir, "root", NULL);
  procfs = agent_procfs_new(proc_root);
  reg = agent_registry_new(1024);
  agent_registry_set_limits(reg, per_uid, total);
  rounds = agent_rounds_new(reg, procfs, &rc);
  cmds = agent_commands_new(reg, rounds, procfs, 1000);
}

static void agent_down(void) {
  if (proc_root) {
    g_autofree char *proc = g_build_filename(proc_root, "proc", NULL);

    g_rmdir(proc);
    g_rmdir(proc_root);
    g_clear_pointer(&proc_root, g_free);
  }
  agent_commands_free(cmds);
  agent_rounds_free(rounds);
  agent_registry_free(reg);
  agent_procfs_free(procfs);
  /* Let removed sources go. */
  while (g_main_context_iteration(NULL, FALSE))
    ;
}

/* ---- fake clients on socketpairs ---- */

/* ANSWER_LIE claims 2^64-1 bytes whatever it was asked; ANSWER_ALL_RSS
 * answers what it was asked and lowers its RSS in the fixture's statm by
 * as much, as a process that really freed it would. */
typedef enum { ANSWER_ALL, ANSWER_NONE, ANSWER_HALF, ANSWER_SOFTZERO, ANSWER_LIE, ANSWER_ALL_RSS } Mode;

typedef struct {
  int fd[2]; /* [0] the agent's end, [1] ours */
  AgentClient *client;
  Mode mode;
  GArray *seen; /* proto_shrink */
  guint relief;
  char *statm; /* ANSWER_ALL_RSS: the fixture file of its RSS */
  uint64_t rss_bytes;
} Fake;

static Fake *fake_new(const char *name, pid_t pid, uid_t uid, Mode mode) {
  Fake *f = g_new0(Fake, 1);

  g_assert(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, f->fd) == 0);
  f->client = agent_registry_add_client(reg, f->fd[0], pid, uid, name);
  f->mode = mode;
  f->seen = g_array_new(FALSE, TRUE, sizeof(proto_shrink));
  return f;
}

static void fake_set_rss(Fake *f, uint64_t bytes);

/* A fake whose process has @rss_bytes resident in the fixture root. */
static Fake *fake_new_rooted(const char *name, pid_t pid, uid_t uid, Mode mode, uint64_t rss_bytes) {
  Fake *f = fake_new(name, pid, uid, mode);
  g_autofree char *dir = g_strdup_printf("%s/proc/%d", proc_root, (int)pid);

  g_assert(g_mkdir_with_parents(dir, 0755) == 0);
  f->statm = g_build_filename(dir, "statm", NULL);
  fake_set_rss(f, rss_bytes);
  return f;
}

static void fake_add(Fake *f, uint32_t id, const char *name, uint16_t prio, gboolean has_est,
                     uint64_t est) {
  g_assert(agent_registry_add_shrinker(reg, f->client, id, name, prio, has_est, est, NULL));
}

/* The client's connection ends: the registry forgets it (as the server
 * would do). */
static void fake_disconnect(Fake *f) {
  if (f->client)
    agent_registry_remove_client(reg, f->client);
  f->client = NULL;
}

/* Writes the fixture's <root>/proc/PID/statm for @f's pid (see
 * agent_up_rooted()): @bytes resident. */
static void fake_set_rss(Fake *f, uint64_t bytes) {
  g_autofree char *text = g_strdup_printf("%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " 0 0 0 0 0\n",
                                          bytes / 4096 * 2, bytes / (uint64_t)sysconf(_SC_PAGESIZE));

  g_assert(f->statm);
  g_assert(g_file_set_contents(f->statm, text, -1, NULL));
  f->rss_bytes = bytes;
}

static void fake_free(Fake *f) {
  if (f->statm) {
    g_autofree char *dir = g_path_get_dirname(f->statm);

    g_unlink(f->statm);
    g_rmdir(dir);
  }
  g_free(f->statm);
  fake_disconnect(f);
  close(f->fd[0]);
  close(f->fd[1]);
  g_array_free(f->seen, TRUE);
  g_free(f);
}

static void fake_reply(Fake *f, uint64_t round_id, uint32_t id, uint64_t freed) {
  proto_shrink_done d = {.round_id = round_id, .id = id, .freed_bytes = freed};

  CU_ASSERT_TRUE(agent_round_handle_done(rounds, f->client, &d, NULL));
}

/* Reads what the agent sent and answers by the fake's mode. */
static void fake_pump(Fake *f) {
  static guint8 buf[PROTO_MSG_MAX];
  proto_msg m;

  while (f->client && proto_recv(f->fd[1], buf, &m, NULL) == 0) {
    if (m.type == PROTO_MSG_RELIEF) {
      f->relief++;
      continue;
    }
    if (m.type != PROTO_MSG_SHRINK)
      continue;
    g_array_append_val(f->seen, m.u.shrink);
    switch (f->mode) {
    case ANSWER_ALL:
      fake_reply(f, m.u.shrink.round_id, m.u.shrink.id, m.u.shrink.target_bytes);
      break;
    case ANSWER_HALF:
      fake_reply(f, m.u.shrink.round_id, m.u.shrink.id, m.u.shrink.target_bytes / 2);
      break;
    case ANSWER_SOFTZERO:
      fake_reply(f, m.u.shrink.round_id, m.u.shrink.id,
                 m.u.shrink.level == PROTO_LEVEL_SOFT ? 0 : m.u.shrink.target_bytes);
      break;
    case ANSWER_LIE: fake_reply(f, m.u.shrink.round_id, m.u.shrink.id, UINT64_MAX); break;
    case ANSWER_ALL_RSS:
      f->rss_bytes -= MIN(f->rss_bytes, m.u.shrink.target_bytes);
      fake_set_rss(f, f->rss_bytes);
      fake_reply(f, m.u.shrink.round_id, m.u.shrink.id, m.u.shrink.target_bytes);
      break;
    case ANSWER_NONE: break;
    }
  }
}

/* Takes a reply's text: it must be one JSON object; stored parsed. */
static void store_reply(char *text, gsize len, gpointer user_data) {
  JsonNode **slot = user_data;
  g_autoptr(GError) error = NULL;
  JsonNode *node = json_from_string(text, &error);

  g_assert(*slot == NULL); /* exactly once */
  CU_ASSERT_EQUAL(strlen(text), len);
  if (!node || !JSON_NODE_HOLDS_OBJECT(node))
    printf("\n    not a JSON object: %s (%s)", text, error ? error->message : "");
  g_assert(node && JSON_NODE_HOLDS_OBJECT(node));
  *slot = node;
  g_free(text);
}

/* Runs the loop and the fakes until *@slot is set or @timeout_ms pass. */
static void spin_until(JsonNode **slot, Fake **fakes, int n, int timeout_ms) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

  while (!*slot && g_get_monotonic_time() < end) {
    for (int i = 0; i < n; i++)
      fake_pump(fakes[i]);
    if (!g_main_context_iteration(NULL, FALSE))
      g_usleep(200);
  }
}

/* Runs one command as @uid and returns the reply (NULL on timeout). */
static JsonNode *run(const char *text, uid_t uid, Fake **fakes, int n, int timeout_ms) {
  AgentCaller caller = {AGENT_CALLER_LOCAL, uid, 1};
  JsonNode *reply = NULL;

  agent_commands_handle_text(cmds, text, strlen(text), &caller, store_reply, &reply, NULL);
  spin_until(&reply, fakes, n, timeout_ms);
  return reply;
}

/* Runs one command as the host and returns the reply (NULL on timeout). */
static JsonNode *run_host(const char *text, Fake **fakes, int n, int timeout_ms) {
  AgentCaller host = {AGENT_CALLER_HOST, 0, 0};
  JsonNode *reply = NULL;

  agent_commands_handle_text(cmds, text, strlen(text), &host, store_reply, &reply, NULL);
  spin_until(&reply, fakes, n, timeout_ms);
  return reply;
}

/* The "error" class of @reply, or NULL if it is a "return". */
static const char *error_class(JsonNode *reply) {
  JsonObject *top = json_node_get_object(reply);

  if (!json_object_has_member(top, "error"))
    return NULL;
  return json_object_get_string_member(json_object_get_object_member(top, "error"), "class");
}

static JsonObject *ret_of(JsonNode *reply) {
  JsonObject *top = json_node_get_object(reply);

  if (!json_object_has_member(top, "return")) {
    g_autofree char *text = json_to_string(reply, FALSE);
    printf("\n    not a return: %s", text);
    return NULL;
  }
  return json_object_get_object_member(top, "return");
}

static JsonObject *request_at(JsonObject *report, guint i) {
  return json_array_get_object_element(json_object_get_array_member(report, "requests"), i);
}

static guint n_requests(JsonObject *report) {
  return json_array_get_length(json_object_get_array_member(report, "requests"));
}

/* ---- commands ---- */

/* The reader's own tests are test-json-reader.c: these are the limits as
 * the commands see them. */
static void test_parse_limits(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(GString) deep = g_string_new(NULL);
  g_autoptr(GString) big = g_string_new("{\"execute\":\"status\",\"id\":\"");
  AgentJsonDoc *n;

  for (int i = 0; i < AGENT_COMMAND_NESTING_MAX; i++)
    g_string_append_c(deep, '[');
  for (int i = 0; i < AGENT_COMMAND_NESTING_MAX; i++)
    g_string_append_c(deep, ']');
  n = agent_json_reader_parse(deep->str, deep->len, &error);
  CU_ASSERT_PTR_NOT_NULL(n); /* exactly at the limit */
  agent_json_reader_free(n);
  g_string_prepend_c(deep, '[');
  g_string_append_c(deep, ']');
  CU_ASSERT_PTR_NULL(agent_json_reader_parse(deep->str, deep->len, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "nests"));
  g_clear_error(&error);

  /* Brackets inside strings do not nest. */
  {
    const char *brackets = "{\"execute\":\"[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{\\\"[[[\"}";

    n = agent_json_reader_parse(brackets, strlen(brackets), NULL);
  }
  CU_ASSERT_PTR_NOT_NULL(n);
  agent_json_reader_free(n);

  while (big->len <= AGENT_COMMAND_TEXT_MAX)
    g_string_append(big, "xxxxxxxxxxxxxxxx");
  g_string_append(big, "\"}");
  CU_ASSERT_PTR_NULL(agent_json_reader_parse(big->str, big->len, &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "limit"));
  g_clear_error(&error);

  CU_ASSERT_PTR_NULL(agent_json_reader_parse("{\"execute\": \"st\xff\"}", 18, &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "UTF-8"));
  g_clear_error(&error);
  CU_ASSERT_PTR_NULL(agent_json_reader_parse("{\"execute\": ", 12, &error));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "malformed"));
  g_clear_error(&error);
  CU_ASSERT_PTR_NULL(agent_json_reader_parse("", 0, &error));
}

static void test_dispatch_errors(void) {
  static const struct {
    const char *text;
    uid_t uid;
    const char *klass;
  } rows[] = {
      {"{\"execute\":\"nope\"}", 0, "CommandNotFound"},
      {"{\"execute\":\"guest-ping\"}", 0, "CommandNotFound"},
      {"{\"arguments\":{}}", 0, "GenericError"},
      {"{\"execute\":5}", 0, "GenericError"},
      {"[1,2]", 0, "GenericError"},
      {"not json", 0, "GenericError"},
      {"{\"execute\":\"status\",\"extra\":1}", 0, "GenericError"},
      {"{\"execute\":\"status\",\"arguments\":[]}", 0, "InvalidParameter"},
      {"{\"execute\":\"status\",\"arguments\":{\"x\":1}}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1}}", 1000, "PermissionDenied"},
      {"{\"execute\":\"shrink\"}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{}}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":-1}}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1.5}}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":\"1M\"}}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1,\"level\":\"medium\"}}", 0,
       "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1,\"deadline_ms\":0}}", 0,
       "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1,\"deadline_ms\":600001}}", 0,
       "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1,\"reason\":\"boredom\"}}", 0,
       "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1,\"hard\":true}}", 0,
       "InvalidParameter"},
      /* A NUL character ("\u0000") does not cut a name short. */
      {"{\"execute\":\"status\\u0000x\"}", 0, "CommandNotFound"},
      {"{\"execute\":\"status\",\"arguments\":{\"\\u0000\":1}}", 0, "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\\u0000x\":1}}", 0,
       "InvalidParameter"},
      {"{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1,\"level\":\"soft\\u0000\"}}", 0,
       "InvalidParameter"},
      /* Duplicate names are malformed: which one would count? */
      {"{\"execute\":\"status\",\"execute\":\"shrink\"}", 0, "GenericError"},
  };

  agent_up(8, 1024);
  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    JsonNode *reply = run(rows[i].text, rows[i].uid, NULL, 0, 1000);
    const char *klass;

    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    klass = error_class(reply);
    if (!klass || strcmp(klass, rows[i].klass) != 0)
      printf("\n    %s -> %s (want %s)", rows[i].text, klass ? klass : "return", rows[i].klass);
    CU_ASSERT_PTR_NOT_NULL(klass);
    if (klass)
      CU_ASSERT_STRING_EQUAL(klass, rows[i].klass);
    json_node_unref(reply);
  }

  /* The host is trusted like root; "id" is echoed. */
  {
    AgentCaller host = {AGENT_CALLER_HOST, 4242, 0};
    JsonNode *reply = NULL;
    const char *text = "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":0},\"id\":\"abc\"}";

    agent_commands_handle_text(cmds, text, strlen(text), &host, store_reply, &reply, NULL);
    spin_until(&reply, NULL, 0, 2000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    CU_ASSERT_PTR_NULL(error_class(reply));
    CU_ASSERT_STRING_EQUAL(json_object_get_string_member(json_node_get_object(reply), "id"), "abc");
    json_node_unref(reply);
  }
  agent_down();
}

/* Replies are written by hand (json-writer.c): whatever goes in must come
 * out as the same JSON. */
static void test_reply_text(void) {
  const char *text =
      "{\"execute\":\"nope\",\"id\":{\"a\":[1,true,null,\"x\\\"y\\n\\u0001\u00e9\",-1.5e3,{}],"
      "\"b\":{\"c\":[[]]}}}";
  g_autoptr(JsonNode) request = json_from_string(text, NULL);
  g_autoptr(AgentJsonDoc) ours = agent_json_reader_parse(text, strlen(text), NULL);
  JsonNode *reply;
  Fake *odd;
  const char *odd_name = "we\"ird\\ \n\t\x01 name \xc3\xa9";
  g_autofree char *err = NULL;
  gsize len = 0;

  agent_up(8, 1024);
  reply = run(text, 0, NULL, 0, 1000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  CU_ASSERT_STRING_EQUAL(error_class(reply), "CommandNotFound");
  CU_ASSERT_TRUE(json_node_equal(json_object_get_member(json_node_get_object(reply), "id"),
                                 json_object_get_member(json_node_get_object(request), "id")));
  json_node_unref(reply);

  odd = fake_new(odd_name, 5, 0, ANSWER_ALL);
  fake_add(odd, 1, odd_name, 50, TRUE, UINT64_MAX); /* clamped to INT64_MAX in JSON */
  reply = run("{\"execute\":\"status\"}", 0, NULL, 0, 1000);
  {
    JsonObject *cl =
        json_array_get_object_element(json_object_get_array_member(ret_of(reply), "clients"), 0);
    JsonObject *sh =
        json_array_get_object_element(json_object_get_array_member(cl, "shrinkers"), 0);

    CU_ASSERT_STRING_EQUAL(json_object_get_string_member(cl, "name"), odd_name);
    CU_ASSERT_STRING_EQUAL(json_object_get_string_member(sh, "name"), odd_name);
    CU_ASSERT_EQUAL(json_object_get_int_member(sh, "estimate_bytes"), G_MAXINT64);
  }
  json_node_unref(reply);
  fake_free(odd);

  CU_ASSERT_PTR_NOT_NULL_FATAL(ours);
  err = agent_commands_error_text("GenericError",
                                  agent_json_reader_member(agent_json_reader_root(ours), "id"),
                                  &len, "bad \"%s\"", "thing");
  CU_ASSERT_EQUAL(strlen(err), len);
  {
    g_autoptr(JsonNode) n = json_from_string(err, NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT_STRING_EQUAL(error_class(n), "GenericError");
    CU_ASSERT_TRUE(json_node_equal(json_object_get_member(json_node_get_object(n), "id"),
                                   json_object_get_member(json_node_get_object(request), "id")));
  }
  agent_down();
}

static const char *const status_keys[] = {"version", "pid",    "uptime_ms", "memory",
                                          "clients", "rounds", "totals",    NULL};
static const char *const shrinker_keys[] = {
    "id",          "name",   "priority",           "estimate_bytes",  "asked", "asked_bytes",
    "freed_bytes", "misses", "consecutive_misses", "skipped_in_soft", NULL};
static const char *const report_keys[] = {"round_id",
                                          "level",
                                          "reason",
                                          "target_bytes",
                                          "deadline_ms",
                                          "started_us",
                                          "duration_us",
                                          "fanout_us",
                                          "claimed_bytes",
                                          "measured_bytes",
                                          "mem_available_before_bytes",
                                          "mem_available_after_bytes",
                                          "requests",
                                          NULL};
static const char *const request_keys[] = {"pid",      "client", "shrinker",    "id",
                                           "pass",     "level",  "asked_bytes", "freed_bytes",
                                           "reply_us", "missed", NULL};

static gboolean has_keys(JsonObject *o, const char *const *keys) {
  gboolean ok = TRUE;

  for (const char *const *k = keys; *k; k++) {
    if (!json_object_has_member(o, *k)) {
      printf("\n    missing key %s", *k);
      ok = FALSE;
    }
  }
  return ok;
}

static void test_status(void) {
  Fake *root_app, *user_app, *idle;
  JsonNode *reply;
  JsonObject *st, *mem, *cl, *sh;
  JsonArray *clients;

  agent_up(8, 1024);
  root_app = fake_new("rootapp", 100, 0, ANSWER_ALL);
  user_app = fake_new("userapp", 200, 1000, ANSWER_ALL);
  idle = fake_new("shrinkctl", 300, 1000, ANSWER_ALL); /* no shrinkers: not listed */
  fake_add(root_app, 1, "cache", 70, TRUE, 4096);
  fake_add(user_app, 9, "heap", 50, FALSE, 0);

  reply = run("{\"execute\":\"status\"}", 0, NULL, 0, 1000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  st = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_TRUE(has_keys(st, status_keys));
  CU_ASSERT_EQUAL(json_object_get_int_member(st, "pid"), getpid());
  mem = json_object_get_object_member(st, "memory");
  CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
  CU_ASSERT(json_object_get_int_member(mem, "mem_total_bytes") > 0);
  CU_ASSERT(json_object_has_member(mem, "mem_available_bytes") &&
            json_object_has_member(mem, "mem_free_bytes"));
  clients = json_object_get_array_member(st, "clients");
  CU_ASSERT_EQUAL_FATAL(json_array_get_length(clients), 2);
  cl = json_array_get_object_element(clients, 0);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(cl, "name"), "rootapp");
  CU_ASSERT_EQUAL(json_object_get_int_member(cl, "pid"), 100);
  CU_ASSERT_EQUAL(json_object_get_int_member(cl, "uid"), 0);
  sh = json_array_get_object_element(json_object_get_array_member(cl, "shrinkers"), 0);
  CU_ASSERT_TRUE(has_keys(sh, shrinker_keys));
  CU_ASSERT_EQUAL(json_object_get_int_member(sh, "estimate_bytes"), 4096);
  CU_ASSERT_EQUAL(json_object_get_int_member(sh, "priority"), 70);
  cl = json_array_get_object_element(clients, 1);
  sh = json_array_get_object_element(json_object_get_array_member(cl, "shrinkers"), 0);
  CU_ASSERT_TRUE(json_node_is_null(json_object_get_member(sh, "estimate_bytes")));
  CU_ASSERT_TRUE(
      has_keys(json_object_get_object_member(st, "totals"),
               (const char *const[]){"rounds", "claimed_bytes", "measured_bytes", NULL}));
  json_node_unref(reply);

  /* A user sees only its own. */
  reply = run("{\"execute\":\"status\"}", 1000, NULL, 0, 1000);
  st = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  clients = json_object_get_array_member(st, "clients");
  CU_ASSERT_EQUAL_FATAL(json_array_get_length(clients), 1);
  CU_ASSERT_STRING_EQUAL(
      json_object_get_string_member(json_array_get_object_element(clients, 0), "name"), "userapp");
  json_node_unref(reply);
  reply = run("{\"execute\":\"status\"}", 4321, NULL, 0, 1000);
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(ret_of(reply), "clients")), 0);
  json_node_unref(reply);

  fake_free(root_app);
  fake_free(user_app);
  fake_free(idle);
  agent_down();
}

static void test_status_hints(void) {
  static const char *const hint_keys[] = {
      "mode",          "percent",     "deadline_ms",   "hints_seen",         "rounds",
      "round_running", "last_cmd_id", "last_round_id", "last_claimed_bytes", NULL};
  AgentBalloonPolicy p;
  AgentBalloon *balloon;
  JsonNode *reply;
  JsonObject *h;

  agent_up(8, 1024);
  reply = run("{\"execute\":\"status\"}", 0, NULL, 0, 1000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ret_of(reply));
  CU_ASSERT_TRUE(json_object_has_member(ret_of(reply), "free_page_hints"));
  CU_ASSERT_TRUE(json_node_is_null(json_object_get_member(ret_of(reply), "free_page_hints")));
  json_node_unref(reply);

  agent_balloon_policy_init(&p);
  p.hint_pct = 40;
  balloon = agent_balloon_new(rounds, procfs, &p);
  agent_commands_set_balloon(cmds, balloon);
  reply = run("{\"execute\":\"status\"}", 0, NULL, 0, 1000);
  h = json_object_get_object_member(ret_of(reply), "free_page_hints");
  CU_ASSERT_PTR_NOT_NULL_FATAL(h);
  CU_ASSERT_TRUE(has_keys(h, hint_keys));
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(h, "mode"), "soft");
  CU_ASSERT_EQUAL(json_object_get_int_member(h, "percent"), 40);
  CU_ASSERT_EQUAL(json_object_get_int_member(h, "deadline_ms"),
                  AGENT_BALLOON_HINT_DEADLINE_DEFAULT);
  CU_ASSERT_EQUAL(json_object_get_int_member(h, "hints_seen"), 0);
  CU_ASSERT_EQUAL(json_object_get_int_member(h, "rounds"), 0);
  CU_ASSERT_FALSE(json_object_get_boolean_member(h, "round_running"));
  CU_ASSERT_TRUE(json_node_is_null(json_object_get_member(h, "last_cmd_id")));
  CU_ASSERT_TRUE(json_node_is_null(json_object_get_member(h, "last_round_id")));
  /* No device: "balloon" stays null. */
  CU_ASSERT_TRUE(json_node_is_null(json_object_get_member(ret_of(reply), "balloon")));
  json_node_unref(reply);
  agent_commands_set_balloon(cmds, NULL);
  agent_balloon_free(balloon);

  p.hint_off = TRUE;
  balloon = agent_balloon_new(rounds, procfs, &p);
  agent_commands_set_balloon(cmds, balloon);
  reply = run("{\"execute\":\"shrinkd-status\"}", 0, NULL, 0, 1000);
  CU_ASSERT_STRING_EQUAL(error_class(reply), "CommandNotFound"); /* the host's name */
  json_node_unref(reply);
  reply = run_host("{\"execute\":\"shrinkd-status\"}", NULL, 0, 1000);
  h = json_object_get_object_member(ret_of(reply), "free_page_hints");
  CU_ASSERT_PTR_NOT_NULL_FATAL(h);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(h, "mode"), "off");
  CU_ASSERT_EQUAL(json_object_get_int_member(h, "percent"), 0);
  json_node_unref(reply);
  agent_commands_set_balloon(cmds, NULL);
  agent_balloon_free(balloon);
  agent_down();
}

/* ---- shrinkd-prepare-migration ---- */

/* The contract the host tool is written against: these members, no more. */
static const char *const migration_keys[] = {"freed_bytes",
                                             "measured_bytes",
                                             "mem_available_before_bytes",
                                             "mem_available_after_bytes",
                                             "target_bytes",
                                             "ready",
                                             "rounds",
                                             NULL};

/* Checks @reply against the contract; returns its one round report. */
static JsonObject *migration_report(JsonNode *reply, uint64_t target) {
  JsonObject *ret = ret_of(reply);
  JsonArray *reports;
  JsonObject *rep;

  if (!ret)
    return NULL;
  CU_ASSERT_TRUE(has_keys(ret, migration_keys));
  CU_ASSERT_EQUAL(json_object_get_size(ret), g_strv_length((char **)migration_keys));
  CU_ASSERT_EQUAL(json_object_get_int_member(ret, "target_bytes"), (gint64)target);
  CU_ASSERT_TRUE(json_object_get_boolean_member(ret, "ready"));
  reports = json_object_get_array_member(ret, "rounds");
  if (!reports || json_array_get_length(reports) != 1) {
    CU_FAIL("not one report");
    return NULL;
  }
  rep = json_array_get_object_element(reports, 0);
  CU_ASSERT_TRUE(has_keys(rep, report_keys));
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(rep, "level"), "soft");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(rep, "reason"), "migration");
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "target_bytes"), (gint64)target);
  /* The top's figures are the round's. */
  CU_ASSERT_EQUAL(json_object_get_int_member(ret, "freed_bytes"),
                  json_object_get_int_member(rep, "claimed_bytes"));
  for (const char *const *k = migration_keys + 1; k < migration_keys + 4; k++)
    CU_ASSERT_TRUE(
        json_node_equal(json_object_get_member(ret, *k), json_object_get_member(rep, *k)));
  return rep;
}

static void test_prepare_migration(void) {
  const uint64_t mib = UINT64_C(1) << 20;
  Fake *a, *b, *c;
  Fake *fakes[3];
  JsonNode *reply;
  JsonObject *rep;
  g_autofree char *text = NULL;

  agent_up(8, 1024);
  a = fake_new("a", 11, 0, ANSWER_ALL);
  b = fake_new("b", 12, 0, ANSWER_HALF);
  fake_add(a, 1, "cache", 50, TRUE, 100 * mib);
  fake_add(b, 2, "heap", 50, TRUE, 28 * mib);
  fakes[0] = a;
  fakes[1] = b;

  /* Defaults: all of the estimates (100 + 28 MiB), 3 s. */
  reply = run_host("{\"execute\":\"shrinkd-prepare-migration\"}", fakes, 2, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = migration_report(reply, 128 * mib);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "deadline_ms"), 3000);
  CU_ASSERT_EQUAL(json_object_get_int_member(ret_of(reply), "freed_bytes"), 114 * mib);
  CU_ASSERT_EQUAL_FATAL(n_requests(rep), 2);
  CU_ASSERT_EQUAL(json_object_get_int_member(request_at(rep, 0), "asked_bytes"), 100 * mib);
  CU_ASSERT_EQUAL(json_object_get_int_member(request_at(rep, 1), "asked_bytes"), 28 * mib);
  CU_ASSERT_EQUAL(g_array_index(a->seen, proto_shrink, 0).reason, PROTO_REASON_MIGRATION);
  CU_ASSERT_EQUAL(g_array_index(a->seen, proto_shrink, 0).level, PROTO_LEVEL_SOFT);
  json_node_unref(reply);

  /* A share, a deadline; the "id" is echoed. */
  reply = run_host("{\"execute\":\"shrinkd-prepare-migration\",\"arguments\":{\"fraction_pct\":"
                   "50,\"deadline_ms\":1500},\"id\":7}",
                   fakes, 2, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = migration_report(reply, 64 * mib);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "deadline_ms"), 1500);
  CU_ASSERT_EQUAL(json_object_get_int_member(json_node_get_object(reply), "id"), 7);
  json_node_unref(reply);
  /* 1% of 128 MiB, rounded up to a byte. */
  reply = run_host("{\"execute\":\"shrinkd-prepare-migration\",\"arguments\":{\"fraction_pct\":1}}",
                   fakes, 2, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  CU_ASSERT_PTR_NOT_NULL(migration_report(reply, (128 * mib + 99) / 100));
  json_node_unref(reply);

  /* No estimate anywhere: the prepare reserve (the balloon's reserve in
   * the daemon), or its share. */
  fake_free(a);
  fake_free(b);
  c = fake_new("c", 13, 0, ANSWER_ALL);
  fake_add(c, 1, "unknown", 50, FALSE, 0);
  fakes[0] = c;
  reply = run_host("{\"execute\":\"shrinkd-prepare-migration\"}", fakes, 1, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  CU_ASSERT_PTR_NOT_NULL(migration_report(reply, AGENT_COMMANDS_PREPARE_RESERVE_DEFAULT));
  json_node_unref(reply);
  agent_commands_set_prepare_reserve(cmds, 32 * mib);
  reply =
      run_host("{\"execute\":\"shrinkd-prepare-migration\",\"arguments\":{\"fraction_pct\":50}}",
               fakes, 1, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = migration_report(reply, 16 * mib);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_EQUAL(json_object_get_int_member(ret_of(reply), "freed_bytes"), 16 * mib);
  json_node_unref(reply);
  fake_free(c);

  /* Nobody registered: the round still runs (asking no one) and is
   * reported. */
  reply = run_host("{\"execute\":\"shrinkd-prepare-migration\"}", NULL, 0, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = migration_report(reply, 32 * mib);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_EQUAL(n_requests(rep), 0);
  CU_ASSERT_EQUAL(json_object_get_int_member(ret_of(reply), "freed_bytes"), 0);
  json_node_unref(reply);

  /* Listed for the host, unknown to local callers. */
  reply = run_host("{\"execute\":\"guest-info\"}", NULL, 0, 1000);
  text = json_to_string(reply, FALSE);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"name\":\"shrinkd-prepare-migration\""));
  json_node_unref(reply);
  reply = run("{\"execute\":\"shrinkd-prepare-migration\"}", 0, NULL, 0, 1000);
  CU_ASSERT_STRING_EQUAL(error_class(reply), "CommandNotFound");
  json_node_unref(reply);
  agent_down();
}

static void test_prepare_migration_errors(void) {
  static const char *const bad[] = {
      "{\"deadline_ms\":0}",        "{\"deadline_ms\":600001}", "{\"deadline_ms\":-1}",
      "{\"deadline_ms\":\"3000\"}", "{\"deadline_ms\":1.5}",    "{\"deadline_ms\":null}",
      "{\"fraction_pct\":0}",       "{\"fraction_pct\":101}",   "{\"fraction_pct\":-5}",
      "{\"fraction_pct\":\"50\"}",  "{\"fraction_pct\":true}",  "{\"fraction_pct\":50.0}",
      "{\"new_size_bytes\":1}",     "{\"fraction\":50}",        "[]",
  };
  const char *full = "{\"execute\":\"shrinkd-prepare-migration\",\"arguments\":{\"deadline_ms\":"
                     "50}}";
  AgentCaller host = {AGENT_CALLER_HOST, 0, 0};
  JsonNode *r1 = NULL, *r2 = NULL;

  agent_up(1, 1024);
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autofree char *text =
        g_strdup_printf("{\"execute\":\"shrinkd-prepare-migration\",\"arguments\":%s}", bad[i]);
    JsonNode *reply = run_host(text, NULL, 0, 1000);
    const char *klass;

    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    klass = error_class(reply);
    if (!klass || strcmp(klass, "InvalidParameter") != 0)
      printf("\n    %s -> %s", bad[i], klass ? klass : "return");
    CU_ASSERT_STRING_EQUAL(klass ? klass : "return", "InvalidParameter");
    json_node_unref(reply);
  }
  /* Edges are taken. */
  {
    JsonNode *reply = run_host("{\"execute\":\"shrinkd-prepare-migration\",\"arguments\":{"
                               "\"deadline_ms\":1,\"fraction_pct\":100}}",
                               NULL, 0, 2000);

    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    CU_ASSERT_PTR_NULL(error_class(reply));
    json_node_unref(reply);
  }

  /* A queue of 1 is full: Busy, at once; the first is answered. */
  agent_commands_handle_text(cmds, full, strlen(full), &host, store_reply, &r1, NULL);
  agent_commands_handle_text(cmds, full, strlen(full), &host, store_reply, &r2, NULL);
  CU_ASSERT_PTR_NULL(r1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r2);
  CU_ASSERT_STRING_EQUAL(error_class(r2), "Busy");
  spin_until(&r1, NULL, 0, 2000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r1);
  CU_ASSERT_PTR_NULL(error_class(r1));
  json_node_unref(r1);
  json_node_unref(r2);

  /* The agent stops before the round ends: no reply, no leak. */
  r1 = NULL;
  agent_commands_handle_text(cmds, full, strlen(full), &host, store_reply, &r1, NULL);
  agent_down();
  CU_ASSERT_PTR_NULL(r1);
}

/* ---- rounds ---- */

static void test_round_all_answer(void) {
  Fake *a, *b;
  Fake *fakes[2];
  JsonNode *reply;
  JsonObject *rep;
  gint64 t0 = g_get_monotonic_time();

  agent_up(8, 1024);
  a = fake_new("a", 11, 0, ANSWER_ALL);
  b = fake_new("b", 12, 0, ANSWER_ALL);
  fake_add(a, 1, "big", 50, TRUE, 3 << 20);
  fake_add(b, 2, "small", 50, TRUE, 1 << 20);
  fakes[0] = a;
  fakes[1] = b;
  reply =
      run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":2097152,\"deadline_ms\":5000}}",
          0, fakes, 2, 3000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_TRUE(has_keys(rep, report_keys));
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "claimed_bytes"), 2097152);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(rep, "level"), "soft");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(rep, "reason"), "manual");
  CU_ASSERT_EQUAL_FATAL(n_requests(rep), 2);
  CU_ASSERT_TRUE(has_keys(request_at(rep, 0), request_keys));
  /* Split 3:1 by estimate. */
  CU_ASSERT_EQUAL(json_object_get_int_member(request_at(rep, 0), "asked_bytes"), 1572864);
  CU_ASSERT_EQUAL(json_object_get_int_member(request_at(rep, 1), "asked_bytes"), 524288);
  CU_ASSERT_FALSE(json_object_get_boolean_member(request_at(rep, 0), "missed"));
  CU_ASSERT(json_object_get_int_member(request_at(rep, 0), "reply_us") >= 0);
  CU_ASSERT_EQUAL(json_object_get_int_member(request_at(rep, 0), "pass"), 1);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(request_at(rep, 1), "client"), "b");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(request_at(rep, 1), "shrinker"), "small");
  /* Answered well before the deadline, and measured. */
  CU_ASSERT(g_get_monotonic_time() - t0 < 2000 * 1000);
  CU_ASSERT(json_object_get_int_member(rep, "duration_us") < 2000 * 1000);
  CU_ASSERT(json_object_get_int_member(rep, "fanout_us") >= 0);
  CU_ASSERT_FALSE(json_node_is_null(json_object_get_member(rep, "measured_bytes")));
  CU_ASSERT(json_object_get_int_member(rep, "started_us") > 0);
  CU_ASSERT_EQUAL(a->seen->len, 1);
  CU_ASSERT_EQUAL(g_array_index(a->seen, proto_shrink, 0).reason, PROTO_REASON_MANUAL);
  CU_ASSERT(g_array_index(a->seen, proto_shrink, 0).deadline_ms <= 5000);
  json_node_unref(reply);
  fake_free(a);
  fake_free(b);
  agent_down();
}

static AgentShrinker *first_shrinker(Fake *f) {
  return g_queue_peek_head(&f->client->shrinkers);
}

static void test_round_hung_client(void) {
  Fake *good, *hung;
  Fake *fakes[2];
  JsonNode *reply;
  JsonObject *rep;
  gint64 t0;

  agent_up(8, 1024);
  good = fake_new("good", 21, 0, ANSWER_HALF);
  hung = fake_new("hung", 22, 0, ANSWER_NONE);
  fake_add(good, 1, "g", 50, FALSE, 0);
  fake_add(hung, 1, "h", 50, FALSE, 0);
  fakes[0] = good;
  fakes[1] = hung;

  /* Three soft rounds: the hung one misses each, and does not hold the
   * round past its deadline. */
  for (int i = 0; i < 3; i++) {
    t0 = g_get_monotonic_time();
    reply =
        run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1000,\"deadline_ms\":150}}", 0,
            fakes, 2, 3000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    rep = ret_of(reply);
    CU_ASSERT(g_get_monotonic_time() - t0 >= 140 * 1000);
    CU_ASSERT(g_get_monotonic_time() - t0 < 1000 * 1000);
    CU_ASSERT_EQUAL(n_requests(rep), 2);
    CU_ASSERT_TRUE(json_object_get_boolean_member(request_at(rep, 1), "missed"));
    CU_ASSERT_TRUE(json_node_is_null(json_object_get_member(request_at(rep, 1), "reply_us")));
    CU_ASSERT_FALSE(json_object_get_boolean_member(request_at(rep, 0), "missed"));
    CU_ASSERT_EQUAL(json_object_get_int_member(rep, "claimed_bytes"), 250); /* half of 500 */
    CU_ASSERT_EQUAL(first_shrinker(hung)->consecutive_misses, (uint32_t)i + 1);
    json_node_unref(reply);
  }
  CU_ASSERT_TRUE(agent_round_skips_in_soft(rounds, first_shrinker(hung)));
  CU_ASSERT_FALSE(agent_round_skips_in_soft(rounds, first_shrinker(good)));

  /* A fourth soft round skips it: nothing to wait for. */
  t0 = g_get_monotonic_time();
  reply = run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1000,\"deadline_ms\":5000}}",
              0, fakes, 2, 3000);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT(g_get_monotonic_time() - t0 < 1000 * 1000);
  CU_ASSERT_EQUAL(n_requests(rep), 1);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(request_at(rep, 0), "client"), "good");
  json_node_unref(reply);

  /* Status says so. */
  reply = run("{\"execute\":\"status\"}", 0, NULL, 0, 1000);
  {
    JsonArray *clients = json_object_get_array_member(ret_of(reply), "clients");
    JsonObject *h = json_array_get_object_element(
        json_object_get_array_member(json_array_get_object_element(clients, 1), "shrinkers"), 0);

    CU_ASSERT_TRUE(json_object_get_boolean_member(h, "skipped_in_soft"));
    CU_ASSERT_EQUAL(json_object_get_int_member(h, "consecutive_misses"), 3);
    CU_ASSERT_EQUAL(json_object_get_int_member(h, "misses"), 3);
  }
  json_node_unref(reply);

  /* A hard round: its soft phase skips the hung one, its hard phase asks
   * it anyway. */
  reply = run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1000,\"level\":\"hard\","
              "\"deadline_ms\":200}}",
              0, fakes, 2, 3000);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  {
    gboolean hung_soft = FALSE, hung_hard = FALSE;

    for (guint i = 0; i < n_requests(rep); i++) {
      JsonObject *r = request_at(rep, i);

      if (strcmp(json_object_get_string_member(r, "client"), "hung") != 0)
        continue;
      if (strcmp(json_object_get_string_member(r, "level"), "soft") == 0)
        hung_soft = TRUE;
      else
        hung_hard = TRUE;
    }
    CU_ASSERT_FALSE(hung_soft);
    CU_ASSERT_TRUE(hung_hard);
  }
  json_node_unref(reply);

  /* A late reply counts in its figures, not in the round, and does not
   * reset its misses. */
  {
    AgentShrinker *h = first_shrinker(hung);
    const GQueue *hist = agent_round_history(rounds);
    const AgentRoundReport *last = g_queue_peek_tail((GQueue *)hist);
    uint64_t claimed_before = last->claimed_bytes;
    uint32_t misses_before = h->consecutive_misses;
    proto_shrink late = g_array_index(hung->seen, proto_shrink, 0);

    CU_ASSERT_EQUAL(h->freed_bytes, 0);
    fake_reply(hung, late.round_id, late.id, 777);
    CU_ASSERT_EQUAL(h->freed_bytes, 777);
    CU_ASSERT_EQUAL(h->last_freed_bytes, 777);
    CU_ASSERT_EQUAL(last->claimed_bytes, claimed_before);
    CU_ASSERT_EQUAL(h->consecutive_misses, misses_before);
  }
  fake_free(good);
  fake_free(hung);
  agent_down();
}

static void test_round_second_pass(void) {
  Fake *full, *half;
  Fake *fakes[2];
  JsonNode *reply;
  JsonObject *rep, *r;

  agent_up(8, 1024);
  full = fake_new("full", 31, 0, ANSWER_ALL);
  half = fake_new("half", 32, 0, ANSWER_HALF);
  fake_add(full, 1, "f", 50, FALSE, 0);
  fake_add(half, 1, "h", 50, FALSE, 0);
  fakes[0] = full;
  fakes[1] = half;
  reply = run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":1000,\"deadline_ms\":5000}}",
              0, fakes, 2, 3000);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  /* Pass 1: 500 each; "full" frees 500, "half" 250. Pass 2: the 250
   * missing go to "full" only, which delivered its whole ask. */
  CU_ASSERT_EQUAL_FATAL(n_requests(rep), 3);
  r = request_at(rep, 2);
  CU_ASSERT_EQUAL(json_object_get_int_member(r, "pass"), 2);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(r, "client"), "full");
  CU_ASSERT_EQUAL(json_object_get_int_member(r, "asked_bytes"), 250);
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "claimed_bytes"), 1000);
  /* The second request's deadline is what is left of the phase. */
  CU_ASSERT_EQUAL_FATAL(full->seen->len, 2);
  CU_ASSERT(g_array_index(full->seen, proto_shrink, 1).deadline_ms <= 5000);
  json_node_unref(reply);
  fake_free(full);
  fake_free(half);
  agent_down();
}

static void test_round_soft_before_hard(void) {
  Fake *osv;
  JsonNode *reply;
  JsonObject *rep;

  agent_up(8, 1024);
  osv = fake_new("osv", 41, 0, ANSWER_SOFTZERO);
  fake_add(osv, 1, "heap", 50, FALSE, 0);
  reply = run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":4096,\"level\":\"hard\","
              "\"deadline_ms\":2000}}",
              0, &osv, 1, 3000);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_EQUAL_FATAL(osv->seen->len, 2);
  CU_ASSERT_EQUAL(g_array_index(osv->seen, proto_shrink, 0).level, PROTO_LEVEL_SOFT);
  CU_ASSERT_EQUAL(g_array_index(osv->seen, proto_shrink, 1).level, PROTO_LEVEL_HARD);
  CU_ASSERT(g_array_index(osv->seen, proto_shrink, 0).deadline_ms <= 1000); /* half of 2000 */
  CU_ASSERT_EQUAL(g_array_index(osv->seen, proto_shrink, 1).target_bytes, 4096);
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "claimed_bytes"), 4096);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(rep, "level"), "hard");
  CU_ASSERT(json_object_get_int_member(rep, "duration_us") < 1000 * 1000);
  json_node_unref(reply);

  /* A soft round never asks hard. */
  g_array_set_size(osv->seen, 0);
  reply = run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":4096,\"deadline_ms\":300}}",
              0, &osv, 1, 3000);
  CU_ASSERT_EQUAL(osv->seen->len, 1); /* no pass 2 either: it freed 0 of its ask */
  json_node_unref(reply);
  fake_free(osv);
  agent_down();
}

static void test_round_client_gone(void) {
  Fake *gone, *good;
  Fake *fakes[2];
  JsonNode *reply = NULL;
  JsonObject *rep;
  AgentCaller root = {AGENT_CALLER_LOCAL, 0, 1};
  const char *text =
      "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":2000,\"deadline_ms\":10000}}";
  gint64 t0 = g_get_monotonic_time();

  agent_up(8, 1024);
  gone = fake_new("gone", 51, 0, ANSWER_NONE);
  good = fake_new("good", 52, 0, ANSWER_ALL);
  fake_add(gone, 1, "x", 50, FALSE, 0);
  fake_add(gone, 2, "y", 50, FALSE, 0);
  fake_add(good, 1, "z", 50, FALSE, 0);
  fakes[0] = gone;
  fakes[1] = good;
  agent_commands_handle_text(cmds, text, strlen(text), &root, store_reply, &reply, NULL);
  /* Wait until the requests are out, then the client dies. */
  while (gone->seen->len < 2 && g_get_monotonic_time() - t0 < 2000 * 1000) {
    fake_pump(gone);
    fake_pump(good);
    g_main_context_iteration(NULL, FALSE);
  }
  CU_ASSERT_EQUAL(gone->seen->len, 2);
  fake_disconnect(gone);
  CU_ASSERT_EQUAL(agent_registry_n_shrinkers(reg), 1);
  spin_until(&reply, fakes, 2, 3000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = ret_of(reply);
  CU_ASSERT(g_get_monotonic_time() - t0 < 2000 * 1000); /* not the 10 s deadline */
  for (guint i = 0; i < n_requests(rep); i++) {
    JsonObject *r = request_at(rep, i);

    if (strcmp(json_object_get_string_member(r, "client"), "gone") == 0)
      CU_ASSERT_TRUE(json_object_get_boolean_member(r, "missed"));
  }
  json_node_unref(reply);
  fake_free(gone);
  fake_free(good);
  agent_down();
}

static void test_round_full_socket(void) {
  Fake *stuffed;
  JsonNode *reply;
  JsonObject *rep;
  proto_msg filler = {.type = PROTO_MSG_RELIEF};
  gint64 t0;
  int sent = 0;

  agent_up(8, 1024);
  stuffed = fake_new("stuffed", 61, 0, ANSWER_NONE);
  fake_add(stuffed, 1, "s", 50, FALSE, 0);
  /* The client never reads: fill its socket. */
  while (proto_send(stuffed->fd[0], &filler, true) == 0 && sent < 1000000)
    sent++;
  t0 = g_get_monotonic_time();
  reply = run("{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":100,\"deadline_ms\":10000}}",
              0, NULL, 0, 3000);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT(g_get_monotonic_time() - t0 < 1000 * 1000); /* never blocked, never waited */
  CU_ASSERT_EQUAL_FATAL(n_requests(rep), 1);
  CU_ASSERT_TRUE(json_object_get_boolean_member(request_at(rep, 0), "missed"));
  CU_ASSERT_EQUAL(first_shrinker(stuffed)->misses, 1);
  json_node_unref(reply);
  fake_free(stuffed);
  agent_down();
}

static void test_round_queue_and_history(void) {
  AgentCaller root = {AGENT_CALLER_LOCAL, 0, 1};
  const char *text = "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":0}}";
  JsonNode *r1 = NULL, *r2 = NULL, *r3 = NULL;
  uint64_t n_rounds;

  agent_up(2, 1024);
  agent_commands_handle_text(cmds, text, strlen(text), &root, store_reply, &r1, NULL);
  agent_commands_handle_text(cmds, text, strlen(text), &root, store_reply, &r2, NULL);
  /* Queue of 2 is full: refused at once, not merged. */
  agent_commands_handle_text(cmds, text, strlen(text), &root, store_reply, &r3, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r3);
  CU_ASSERT_PTR_NULL(r1);
  CU_ASSERT_STRING_EQUAL(error_class(r3), "GenericError");
  spin_until(&r2, NULL, 0, 2000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r2);
  CU_ASSERT_EQUAL(json_object_get_int_member(ret_of(r1), "round_id") + 1,
                  json_object_get_int_member(ret_of(r2), "round_id"));
  json_node_unref(r1);
  json_node_unref(r2);
  json_node_unref(r3);

  /* 20 more: the history keeps the last 16. */
  for (int i = 0; i < 20; i++)
    json_node_unref(run(text, 0, NULL, 0, 1000));
  agent_round_totals(rounds, &n_rounds, NULL, NULL, NULL);
  CU_ASSERT_EQUAL(n_rounds, 22);
  CU_ASSERT_EQUAL(g_queue_get_length((GQueue *)agent_round_history(rounds)), 16);
  CU_ASSERT_EQUAL(
      ((AgentRoundReport *)g_queue_peek_tail((GQueue *)agent_round_history(rounds)))->round_id, 22);
  CU_ASSERT_FALSE(agent_round_is_running(rounds));
  agent_down();
}

static void test_relief_and_done_errors(void) {
  Fake *a, *b, *bare;
  proto_shrink_done d = {.round_id = 1, .id = 99};
  g_autoptr(GError) error = NULL;

  agent_up(8, 1024);
  a = fake_new("a", 71, 0, ANSWER_ALL);
  b = fake_new("b", 72, 1000, ANSWER_ALL);
  bare = fake_new("shrinkctl", 73, 0, ANSWER_ALL);
  fake_add(a, 1, "x", 50, FALSE, 0);
  fake_add(b, 1, "y", 50, FALSE, 0);
  CU_ASSERT_EQUAL(agent_round_send_relief(rounds, 5, PROTO_REASON_BALLOON), 2);
  fake_pump(a);
  fake_pump(b);
  fake_pump(bare);
  CU_ASSERT_EQUAL(a->relief, 1);
  CU_ASSERT_EQUAL(b->relief, 1);
  CU_ASSERT_EQUAL(bare->relief, 0);

  CU_ASSERT_FALSE(agent_round_handle_done(rounds, a->client, &d, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_PROTO_ERROR, PROTO_ERR_UNKNOWN_ID));
  g_clear_error(&error);
  d.id = 1; /* known, but never asked */
  CU_ASSERT_FALSE(agent_round_handle_done(rounds, a->client, &d, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_PROTO_ERROR, PROTO_ERR_STATE));
  fake_free(a);
  fake_free(b);
  fake_free(bare);
  agent_down();
}

/* ---- server ---- */


static char *sock_path(void) {
  return g_build_filename(tmpdir, "run", "shrinkd.sock", NULL);
}

static int client_connect(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Receives one message while running the loop. Returns 0, -ECONNRESET at
 * end of stream, or -ETIMEDOUT. */
static int client_recv(int fd, proto_msg *m, guint8 *buf) {
  gint64 end = g_get_monotonic_time() + 2000 * 1000;

  while (g_get_monotonic_time() < end) {
    int rc = proto_recv(fd, buf, m, NULL);

    if (rc != -EAGAIN)
      return rc;
    if (!g_main_context_iteration(NULL, FALSE))
      g_usleep(200);
  }
  return -ETIMEDOUT;
}

static void client_send(int fd, const proto_msg *m) {
  CU_ASSERT_EQUAL(proto_send(fd, m, false), 0);
}

static int client_hello(const char *path, const char *name, guint8 *buf) {
  proto_msg m = {.type = PROTO_MSG_HELLO};
  int fd = client_connect(path);

  m.u.hello.min_version = 1;
  m.u.hello.max_version = 1;
  m.u.hello.name = name;
  client_send(fd, &m);
  CU_ASSERT_EQUAL(client_recv(fd, &m, buf), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_WELCOME);
  return fd;
}

static void expect_error(int fd, proto_error code, guint8 *buf) {
  proto_msg m;

  CU_ASSERT_EQUAL_FATAL(client_recv(fd, &m, buf), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_ERROR);
  if (m.type == PROTO_MSG_ERROR)
    CU_ASSERT_EQUAL(m.u.error.code, code);
}

static void expect_eof(int fd, guint8 *buf) {
  proto_msg m;

  CU_ASSERT_EQUAL(client_recv(fd, &m, buf), -ECONNRESET);
}

static void register_one(int fd, uint32_t id, const char *name) {
  proto_msg m = {.type = PROTO_MSG_REGISTER};

  m.u.reg.id = id;
  m.u.reg.priority = 50;
  m.u.reg.name = name;
  client_send(fd, &m);
}

/* Waits until the agent has taken what was sent. */
static void settle(void) {
  for (int i = 0; i < 50; i++) {
    g_main_context_iteration(NULL, FALSE);
    g_usleep(200);
  }
}

static void test_server_protocol(void) {
  static guint8 buf[PROTO_MSG_MAX];
  g_autofree char *path = sock_path();
  g_autoptr(GError) error = NULL;
  AgentServer *server;
  proto_msg m;
  struct stat st;
  int fd, other;

  agent_up(8, 4);
  server = agent_server_new(path, 64, reg, rounds, cmds, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(server);
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0666);

  /* Garbage: a typed error, then the door. */
  fd = client_connect(path);
  CU_ASSERT_EQUAL(send(fd, "\x01\x63garbage!", 10, 0), 10);
  expect_error(fd, PROTO_ERR_LENGTH, buf);
  expect_eof(fd, buf);
  close(fd);

  /* Anything before HELLO. */
  fd = client_connect(path);
  register_one(fd, 1, "early");
  expect_error(fd, PROTO_ERR_STATE, buf);
  expect_eof(fd, buf);
  close(fd);

  /* No common version. */
  fd = client_connect(path);
  m = (proto_msg){.type = PROTO_MSG_HELLO};
  m.u.hello.min_version = 7;
  m.u.hello.max_version = 9;
  m.u.hello.name = "future";
  client_send(fd, &m);
  expect_error(fd, PROTO_ERR_VERSION, buf);
  expect_eof(fd, buf);
  close(fd);

  /* A good client; semantic errors keep the connection. */
  fd = client_hello(path, "app", buf);
  register_one(fd, 1, "one");
  register_one(fd, 1, "again");
  expect_error(fd, PROTO_ERR_DUPLICATE, buf);
  m = (proto_msg){.type = PROTO_MSG_UNREGISTER};
  m.u.unreg.id = 9;
  client_send(fd, &m);
  expect_error(fd, PROTO_ERR_UNKNOWN_ID, buf);
  for (uint32_t id = 2; id <= 4; id++)
    register_one(fd, id, "more");
  register_one(fd, 5, "one too many"); /* max 4 */
  expect_error(fd, PROTO_ERR_LIMIT, buf);
  m = (proto_msg){.type = PROTO_MSG_ESTIMATE};
  m.u.estimate.id = 2;
  m.u.estimate.flags = PROTO_REGISTER_HAS_ESTIMATE;
  m.u.estimate.estimate_bytes = 12345;
  client_send(fd, &m);
  settle();
  CU_ASSERT_EQUAL(agent_registry_n_shrinkers(reg), 4);
  CU_ASSERT_EQUAL(agent_server_n_peers(server), 1);

  /* A message only the agent sends. */
  other = client_hello(path, "confused", buf);
  m = (proto_msg){.type = PROTO_MSG_WELCOME};
  m.u.welcome.version = 1;
  client_send(other, &m);
  expect_error(other, PROTO_ERR_STATE, buf);
  expect_eof(other, buf);
  close(other);

  /* CONTROL from a user: status, own shrinkers only (we are root here). */
  other = client_hello(path, "shrinkctl", buf);
  m = (proto_msg){.type = PROTO_MSG_CONTROL};
  m.u.control.request_id = 77;
  m.u.control.text = "{\"execute\":\"status\"}";
  m.u.control.text_len = (uint32_t)strlen(m.u.control.text);
  client_send(other, &m);
  CU_ASSERT_EQUAL_FATAL(client_recv(other, &m, buf), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_CONTROL_REPLY);
  CU_ASSERT_EQUAL(m.u.control.request_id, 77);
  CU_ASSERT_EQUAL(m.u.control.flags, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(m.u.control.text, "\"estimate_bytes\":12345"));
  close(other);

  /* Its connection goes: so do its shrinkers. */
  close(fd);
  settle();
  CU_ASSERT_EQUAL(agent_registry_n_shrinkers(reg), 0);
  CU_ASSERT_EQUAL(agent_server_n_peers(server), 0);

  agent_server_free(server);
  CU_ASSERT_NOT_EQUAL(stat(path, &st), 0); /* removed */
  agent_down();
}

/* A peer that floods is read AGENT_SERVER_BURST packets per wake-up: a
 * newcomer is answered within the first iterations, not after the flood. */
static void test_server_flood(void) {
  static guint8 buf[PROTO_MSG_MAX];
  g_autofree char *path = sock_path();
  AgentServer *server;
  proto_msg m = {.type = PROTO_MSG_ESTIMATE};
  int flood, late, queued = 0, iterations = 0;

  agent_up(8, 1024);
  server = agent_server_new(path, 64, reg, rounds, cmds, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(server);
  flood = client_hello(path, "flood", buf);
  register_one(flood, 1, "x");
  settle();
  m.u.estimate.id = 1;
  m.u.estimate.flags = PROTO_REGISTER_HAS_ESTIMATE;
  while (queued < 100000 && proto_send(flood, &m, true) == 0)
    queued++;
  CU_ASSERT(queued > 4 * AGENT_SERVER_BURST);

  late = client_connect(path);
  m = (proto_msg){.type = PROTO_MSG_HELLO};
  m.u.hello.min_version = 1;
  m.u.hello.max_version = 1;
  m.u.hello.name = "late";
  client_send(late, &m);
  while (iterations < 1000) {
    g_main_context_iteration(NULL, FALSE);
    iterations++;
    if (proto_recv(late, buf, &m, NULL) == 0)
      break;
  }
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_WELCOME);
  CU_ASSERT(iterations <= 3);
  /* The flood is still waiting on the agent's side of its socket. */
  {
    const AgentClient *flooder = g_queue_peek_head((GQueue *)agent_registry_clients(reg));
    int pending = 0;

    CU_ASSERT_STRING_EQUAL(flooder->name, "flood");
    CU_ASSERT_EQUAL(ioctl(flooder->fd, FIONREAD, &pending), 0);
    CU_ASSERT(pending > 0);
  }
  close(late);
  close(flood);
  agent_server_free(server);
  agent_down();
}

static void test_server_chunked_reply(void) {
  static guint8 buf[PROTO_MSG_MAX];
  g_autofree char *path = sock_path();
  g_autoptr(GString) text = g_string_new(NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  AgentServer *server;
  proto_msg m;
  int fd, ctl, chunks = 0;
  char name[PROTO_NAME_MAX];

  agent_up(8, 1024);
  server = agent_server_new(path, 64, reg, rounds, cmds, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(server);
  fd = client_hello(path, "many", buf);
  for (uint32_t id = 0; id < 1024; id++) {
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    register_one(fd, id, name);
    if (id % 64 == 0)
      settle();
  }
  settle();
  CU_ASSERT_EQUAL(agent_registry_n_shrinkers(reg), 1024);

  ctl = client_hello(path, "shrinkctl", buf);
  m = (proto_msg){.type = PROTO_MSG_CONTROL};
  m.u.control.request_id = 5;
  m.u.control.text = "{\"execute\":\"status\"}";
  m.u.control.text_len = (uint32_t)strlen(m.u.control.text);
  client_send(ctl, &m);
  do {
    CU_ASSERT_EQUAL_FATAL(client_recv(ctl, &m, buf), 0);
    CU_ASSERT_EQUAL_FATAL(m.type, PROTO_MSG_CONTROL_REPLY);
    g_string_append_len(text, m.u.control.text, m.u.control.text_len);
    chunks++;
  } while (m.u.control.flags & PROTO_CONTROL_MORE);
  CU_ASSERT(chunks > 1);
  CU_ASSERT(text->len > PROTO_CONTROL_TEXT_MAX);
  CU_ASSERT_TRUE(json_parser_load_from_data(parser, text->str, (gssize)text->len, NULL));
  close(ctl);
  close(fd);
  agent_server_free(server);
  agent_down();
}

static void test_server_stale_and_busy(void) {
  g_autofree char *path = sock_path();
  g_autofree char *dir = g_path_get_dirname(path);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_autoptr(GError) error = NULL;
  AgentServer *server, *second;
  int fd;

  agent_up(8, 1024);
  /* A socket file nobody listens on: removed and replaced. */
  g_mkdir_with_parents(dir, 0755);
  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
  CU_ASSERT_EQUAL(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  close(fd);
  server = agent_server_new(path, 64, reg, rounds, cmds, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(server);

  /* Somebody listens: refuse. */
  second = agent_server_new(path, 64, reg, rounds, cmds, &error);
  CU_ASSERT_PTR_NULL(second);
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_IN_USE));
  g_clear_error(&error);
  agent_server_free(server);

  /* Not a socket: refuse, leave it alone. */
  CU_ASSERT_TRUE(g_file_set_contents(path, "precious", -1, NULL));
  CU_ASSERT_PTR_NULL(agent_server_new(path, 64, reg, rounds, cmds, &error));
  CU_ASSERT_TRUE(g_file_test(path, G_FILE_TEST_IS_REGULAR));
  g_unlink(path);
  g_clear_error(&error);

  /* The directory is made if missing. */
  g_rmdir(dir);
  server = agent_server_new(path, 64, reg, rounds, cmds, &error);
  CU_ASSERT_PTR_NOT_NULL(server);
  agent_server_free(server);
  agent_down();
}

/* ---- settings ---- */

static void test_settings(void) {
  g_autofree char *file = g_build_filename(tmpdir, "shrinkd.conf", NULL);
  g_autofree char *missing = g_build_filename(tmpdir, "absent.conf", NULL);
  g_autoptr(GError) error = NULL;
  AgentSettings s;
  static const struct {
    const char *text;
    const char *mentions; /* NULL: loads */
  } bad[] = {
      {"[shrinkd\nx=1\n", "shrinkd.conf"},
      {"[shrinkd]\ndeadline_ms=0\n", "deadline_ms"},
      {"[shrinkd]\ndeadline_ms=600001\n", "deadline_ms"},
      {"[shrinkd]\ndeadline_ms=fast\n", "deadline_ms"},
      {"[shrinkd]\nmiss_limit=-1\n", "miss_limit"},
      {"[shrinkd]\nsoft_share_percent=100\n", "soft_share_percent"},
      {"[shrinkd]\nmlock=maybe\n", "mlock"},
      {"[shrinkd]\nsocket=relative.sock\n", "socket"},
      {"[shrinkd]\nmax_clients_per_uid=0\n", "max_clients_per_uid"},
      {"[shrinkd]\nhello_timeout_ms=5\n", "hello_timeout_ms"},
      {"[shrinkd]\nmax_shrinkers=0\n", "max_shrinkers"},
  };

  agent_settings_init(&s);
  CU_ASSERT_EQUAL(s.deadline_ms, 1000);
  CU_ASSERT_EQUAL(s.miss_limit, 3);
  CU_ASSERT_TRUE(s.mlock);
  CU_ASSERT_TRUE(agent_settings_load_file(&s, missing, FALSE, &error));
  CU_ASSERT_FALSE(agent_settings_load_file(&s, missing, TRUE, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND));
  g_clear_error(&error);

  CU_ASSERT_TRUE(
      g_file_set_contents(file,
                          "# a comment\n[shrinkd]\nsocket=/tmp/a.sock\nproc_root=/tmp/root\n"
                          "deadline_ms=250\nmiss_limit=0\nsoft_share_percent=30\n"
                          "max_shrinkers_per_client=8\nmax_clients=9\nmlock=false\n"
                          "max_clients_per_uid=3\nreserved_root_clients=2\n"
                          "max_shrinkers_per_uid=40\nmax_shrinkers=50\nhello_timeout_ms=700\n"
                          "future_key=1\n",
                          -1, NULL));
  CU_ASSERT_TRUE(agent_settings_load_file(&s, file, TRUE, &error));
  CU_ASSERT_STRING_EQUAL(s.socket_path, "/tmp/a.sock");
  CU_ASSERT_STRING_EQUAL(s.proc_root, "/tmp/root");
  CU_ASSERT_EQUAL(s.deadline_ms, 250);
  CU_ASSERT_EQUAL(s.miss_limit, 0);
  CU_ASSERT_EQUAL(s.soft_share_pct, 30);
  CU_ASSERT_EQUAL(s.max_shrinkers_per_client, 8);
  CU_ASSERT_EQUAL(s.max_clients, 9);
  CU_ASSERT_FALSE(s.mlock);
  CU_ASSERT_EQUAL(s.max_clients_per_uid, 3);
  CU_ASSERT_EQUAL(s.reserved_root_clients, 2);
  CU_ASSERT_EQUAL(s.max_shrinkers_per_uid, 40);
  CU_ASSERT_EQUAL(s.max_shrinkers, 50);
  CU_ASSERT_EQUAL(s.hello_timeout_ms, 700);

  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    CU_ASSERT_TRUE(g_file_set_contents(file, bad[i].text, -1, NULL));
    CU_ASSERT_FALSE(agent_settings_load_file(&s, file, TRUE, &error));
    CU_ASSERT_PTR_NOT_NULL_FATAL(error);
    if (!strstr(error->message, bad[i].mentions))
      printf("\n    \"%s\" -> \"%s\"", bad[i].text, error->message);
    CU_ASSERT_PTR_NOT_NULL(strstr(error->message, bad[i].mentions));
    g_clear_error(&error);
    CU_ASSERT_EQUAL(s.deadline_ms, 250); /* unchanged by a failed load */
  }
  agent_settings_clear(&s);
  g_unlink(file);
}

/* ---- units ---- */

/* data/shrinkd.conf shows every default as a commented "#key=value": with
 * those lines uncommented it must load to exactly the built-in defaults
 * (it once said max_clients=1024 where the code had 4096). Keys it does
 * not show are not checked. */
static void test_sample_config_is_the_defaults(void) {
  const char *sample = g_getenv("SHRINKD_TEST_SAMPLE_CONF");
  g_autofree char *text = NULL, *file = g_build_filename(tmpdir, "sample.conf", NULL);
  g_autoptr(GString) uncommented = g_string_new(NULL);
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;
  AgentSettings defaults, loaded;
  guint n_keys = 0;

  CU_ASSERT_PTR_NOT_NULL_FATAL(sample);
  CU_ASSERT_TRUE_FATAL(g_file_get_contents(sample, &text, NULL, NULL));
  lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    gboolean key_line = (*l)[0] == '#' && g_ascii_islower((*l)[1]) && strchr(*l, '=');

    g_string_append(uncommented, key_line ? *l + 1 : *l);
    g_string_append_c(uncommented, '\n');
    n_keys += key_line;
  }
  CU_ASSERT(n_keys >= 20);
  CU_ASSERT_TRUE_FATAL(g_file_set_contents(file, uncommented->str, -1, NULL));
  agent_settings_init(&defaults);
  agent_settings_init(&loaded);
  if (!agent_settings_load_file(&loaded, file, TRUE, &error))
    printf("\n    %s", error->message);
  CU_ASSERT_PTR_NULL(error);
#define SAME_STRING(f)                                                                             \
  do {                                                                                             \
    CU_ASSERT_STRING_EQUAL(loaded.f, defaults.f);                                                  \
    g_free(loaded.f);                                                                              \
    loaded.f = defaults.f;                                                                         \
  } while (0)
  SAME_STRING(socket_path);
  SAME_STRING(proc_root);
  SAME_STRING(balloon_events);
  SAME_STRING(kmsg_path);
  SAME_STRING(psi_trigger);
  SAME_STRING(channel_path);
#undef SAME_STRING
  /* Every other field is a number or a flag. */
  if (memcmp(&loaded, &defaults, sizeof(loaded)) != 0)
    printf("\n    the sample's values differ from the defaults");
  CU_ASSERT_EQUAL(memcmp(&loaded, &defaults, sizeof(loaded)), 0);
  agent_settings_clear(&defaults);
  g_unlink(file);
}

static void test_sizes(void) {
  static const struct {
    const char *text;
    gboolean ok;
    uint64_t bytes;
  } rows[] = {
      {"4096", TRUE, 4096},
      {"4096B", TRUE, 4096},
      {"512K", TRUE, 512 * 1024},
      {"512k", TRUE, 512 * 1024},
      {"64M", TRUE, 64 << 20},
      {"64MiB", TRUE, 64 << 20},
      {"64MB", TRUE, 64 << 20},
      {"1G", TRUE, UINT64_C(1) << 30},
      {"1.5G", TRUE, UINT64_C(1610612736)},
      {"0.5K", TRUE, 512},
      {"2T", TRUE, UINT64_C(2) << 40},
      {"0", TRUE, 0},
      {"8388607T", TRUE, UINT64_C(8388607) << 40},
      {"8388608T", FALSE, 0}, /* 2^63: above INT64_MAX */
      {"99999999999999999999999", FALSE, 0},
      {"", FALSE, 0},
      {"M", FALSE, 0},
      {"-1M", FALSE, 0},
      {"1X", FALSE, 0},
      {"1 M", FALSE, 0},
      {"1MiBs", FALSE, 0},
      {"1iB", FALSE, 0},
  };
  char buf[32];

  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    g_autoptr(GError) error = NULL;
    uint64_t v = 12345;
    gboolean ok = agent_parse_size(rows[i].text, &v, &error);

    if (ok != rows[i].ok || (ok && v != rows[i].bytes))
      printf("\n    \"%s\" -> %d %llu", rows[i].text, ok, (unsigned long long)v);
    CU_ASSERT_EQUAL(ok, rows[i].ok);
    if (ok) {
      CU_ASSERT_EQUAL(v, rows[i].bytes);
    } else {
      CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_INVALID));
    }
  }
  CU_ASSERT_STRING_EQUAL(agent_format_bytes(512, buf, sizeof(buf)), "512 B");
  CU_ASSERT_STRING_EQUAL(agent_format_bytes(1536, buf, sizeof(buf)), "1.50 KiB");
  CU_ASSERT_STRING_EQUAL(agent_format_bytes(64 << 20, buf, sizeof(buf)), "64.0 MiB");
  CU_ASSERT_STRING_EQUAL(agent_format_bytes(UINT64_C(300) << 30, buf, sizeof(buf)), "300 GiB");
  CU_ASSERT_PTR_NOT_NULL(agent_format_bytes(UINT64_MAX, buf, sizeof(buf)));
}


/* ---- hostile peers (issue 10): lies, floods, races ---- */

static const char hard_128m[] =
    "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":134217728,\"level\":\"hard\","
    "\"deadline_ms\":2000}}";

/* Sum of asked_bytes of @report's requests to @client at @level. */
static uint64_t asked_of(JsonObject *report, const char *client, const char *level) {
  uint64_t sum = 0;

  for (guint i = 0; i < n_requests(report); i++) {
    JsonObject *q = request_at(report, i);

    if (strcmp(json_object_get_string_member(q, "client"), client) == 0 &&
        (!level || strcmp(json_object_get_string_member(q, "level"), level) == 0))
      sum += (uint64_t)json_object_get_int_member(q, "asked_bytes");
  }
  return sum;
}

static JsonObject *client_in_status(JsonObject *status, pid_t pid) {
  JsonArray *clients = json_object_get_array_member(status, "clients");

  for (guint i = 0; i < json_array_get_length(clients); i++) {
    JsonObject *c = json_array_get_object_element(clients, i);

    if (json_object_get_int_member(c, "pid") == pid)
      return c;
  }
  return NULL;
}

/* A non-root liar (priority 100, estimate 2^56, claims 2^64-1 to every
 * request) beside an honest client whose RSS falls by what it frees: the
 * honest one gets the hard requests, the liar's estimate is capped at its
 * RSS, its replies at their asks, and only the honest client's freeing
 * counts as verified; the liar's trust falls round by round. */
static void test_hostile_lying_shrinker(void) {
  Fake *liar, *honest;
  Fake *fakes[2];
  uint64_t liar_asked_before = UINT64_MAX;
  gint64 trust_before = 101;

  agent_up_rooted(0, 0);
  liar = fake_new_rooted("liar", 4242, 1000, ANSWER_LIE, 4 << 20);
  honest = fake_new_rooted("honest", 4343, 1001, ANSWER_ALL_RSS, UINT64_C(1) << 30);
  fake_add(liar, 1, "lies", 100, TRUE, UINT64_C(1) << 56);
  fake_add(honest, 1, "cache", 0, TRUE, 512 << 20);
  fakes[0] = liar;
  fakes[1] = honest;
  for (int round = 0; round < 4; round++) {
    JsonNode *reply = run(hard_128m, 0, fakes, 2, 5000);
    JsonNode *st_reply;
    JsonObject *rep, *liar_st;
    uint64_t liar_asked;

    CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
    rep = ret_of(reply);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
    liar_asked = asked_of(rep, "liar", NULL);
    /* The liar can hold no more than its RSS (4 MiB) per request... */
    for (guint i = 0; i < n_requests(rep); i++) {
      JsonObject *q = request_at(rep, i);

      CU_ASSERT(json_object_get_int_member(q, "freed_bytes") <=
                json_object_get_int_member(q, "asked_bytes"));
      if (strcmp(json_object_get_string_member(q, "client"), "liar") == 0)
        CU_ASSERT(json_object_get_int_member(q, "asked_bytes") <= 4 << 20);
    }
    /* ...so the honest client is asked for the rest, and what counts is
     * what its RSS lost. */
    CU_ASSERT(asked_of(rep, "honest", NULL) >= (128u << 20) - 2 * (4u << 20));
    CU_ASSERT(json_object_get_int_member(rep, "verified_bytes") <= (128 << 20));
    CU_ASSERT(json_object_get_int_member(rep, "verified_bytes") >= (120 << 20));
    CU_ASSERT(json_object_get_int_member(rep, "claimed_bytes") <=
              json_object_get_int_member(rep, "target_bytes") * 2);
    /* The liar's share shrinks as its claims go unconfirmed. */
    CU_ASSERT(liar_asked <= liar_asked_before);
    liar_asked_before = liar_asked;
    json_node_unref(reply);

    st_reply = run("{\"execute\":\"status\"}", 0, fakes, 2, 2000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st_reply);
    liar_st = client_in_status(ret_of(st_reply), 4242);
    CU_ASSERT_PTR_NOT_NULL_FATAL(liar_st);
    CU_ASSERT_EQUAL(json_object_get_int_member(liar_st, "rss_bytes"), 4 << 20);
    CU_ASSERT(json_object_get_int_member(liar_st, "trust_percent") < trust_before);
    trust_before = json_object_get_int_member(liar_st, "trust_percent");
    CU_ASSERT_EQUAL(json_object_get_int_member(client_in_status(ret_of(st_reply), 4343),
                                               "trust_percent"),
                    100);
    json_node_unref(st_reply);
  }
  CU_ASSERT(trust_before < 50);
  fake_free(liar);
  fake_free(honest);
  agent_down();
}

/* A non-root flood of shrinkers without estimates beside a root client
 * without one: the flood is estimated at what its process holds, so the
 * hard round's need goes to the real client, not 1/65th of it. */
static void test_hostile_unestimated_flood(void) {
  Fake *flood, *real;
  Fake *fakes[2];
  JsonNode *reply;
  JsonObject *rep;

  agent_up_rooted(0, 0);
  flood = fake_new_rooted("flood", 4242, 1000, ANSWER_LIE, 8 << 20);
  real = fake_new("osv", 4343, 0, ANSWER_ALL);
  for (uint32_t id = 1; id <= 64; id++)
    fake_add(flood, id, "f", 100, FALSE, 0);
  fake_add(real, 1, "cache", 0, FALSE, 0);
  fakes[0] = flood;
  fakes[1] = real;
  reply = run(hard_128m, 0, fakes, 2, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT(asked_of(rep, "flood", NULL) <= 8 << 20);
  CU_ASSERT(asked_of(rep, "osv", NULL) >= (128u << 20) - (8u << 20));
  CU_ASSERT(json_object_get_int_member(rep, "verified_bytes") >= (120 << 20));
  json_node_unref(reply);
  fake_free(flood);
  fake_free(real);
  agent_down();
}

/* A liar alone: its claims end no round, and the round reports that
 * nothing was verified (shrinkctl exits 5 on that). */
static void test_hostile_liar_alone(void) {
  Fake *liar;
  JsonNode *reply;
  JsonObject *rep;

  agent_up_rooted(0, 0);
  liar = fake_new_rooted("liar", 4242, 1000, ANSWER_LIE, 256 << 20);
  fake_add(liar, 1, "lies", 100, TRUE, UINT64_C(1) << 56);
  reply = run(hard_128m, 0, &liar, 1, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  rep = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rep);
  CU_ASSERT_EQUAL(json_object_get_int_member(rep, "verified_bytes"), 0);
  /* The first reply claimed it all; the round went on regardless. */
  CU_ASSERT(n_requests(rep) >= 2);
  CU_ASSERT(json_object_get_int_member(rep, "claimed_bytes") <= 2 * (128 << 20));
  json_node_unref(reply);
  fake_free(liar);
  agent_down();
}

/* Claims of 2^64-1 then 33 554 603 bytes: every sum saturates or is capped,
 * none wraps below one of its parts (seen before: 33 554 602). */
static void test_hostile_sums_saturate(void) {
  static const char big[] = "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":"
                            "9223372036854775807,\"deadline_ms\":200}}";
  static const char small[] = "{\"execute\":\"shrink\",\"arguments\":{\"target_bytes\":33554603,"
                              "\"deadline_ms\":200}}";
  Fake *f;
  uint64_t claimed = 0;

  agent_up(8, 1024);
  f = fake_new("f", 11, 0, ANSWER_LIE);
  fake_add(f, 1, "s", 50, FALSE, 0);
  for (int i = 0; i < 3; i++)
    json_node_unref(run(big, 0, &f, 1, 3000));
  agent_round_totals(rounds, NULL, &claimed, NULL, NULL);
  CU_ASSERT(claimed >= UINT64_C(9223372036854775807));
  f->mode = ANSWER_ALL;
  json_node_unref(run(small, 0, &f, 1, 3000));
  agent_round_totals(rounds, NULL, &claimed, NULL, NULL);
  CU_ASSERT_EQUAL(claimed, UINT64_MAX);
  CU_ASSERT_EQUAL(first_shrinker(f)->freed_bytes, UINT64_MAX);
  fake_free(f);
  agent_down();
}

/* Shrinkers per uid and in all: refused with LIMIT beyond; root is bound
 * by the total only. */
static void test_hostile_registry_limits(void) {
  g_autoptr(GError) error = NULL;
  Fake *a, *b, *root;

  agent_up_rooted(4, 7);
  a = fake_new("a", 11, 1000, ANSWER_ALL);
  b = fake_new("b", 12, 1000, ANSWER_ALL);
  root = fake_new("root", 13, 0, ANSWER_ALL);
  for (uint32_t id = 1; id <= 2; id++) {
    fake_add(a, id, "x", 50, FALSE, 0);
    fake_add(b, id, "x", 50, FALSE, 0);
  }
  CU_ASSERT_PTR_NULL(agent_registry_add_shrinker(reg, b->client, 3, "x", 50, FALSE, 0, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_PROTO_ERROR, PROTO_ERR_LIMIT));
  CU_ASSERT_PTR_NOT_NULL(error && strstr(error->message, "uid 1000"));
  g_clear_error(&error);
  for (uint32_t id = 1; id <= 3; id++)
    fake_add(root, id, "r", 50, FALSE, 0);
  CU_ASSERT_PTR_NULL(agent_registry_add_shrinker(reg, root->client, 4, "r", 50, FALSE, 0, &error));
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_PROTO_ERROR, PROTO_ERR_LIMIT));
  g_clear_error(&error);
  /* One goes, one may come: the count follows removals. */
  fake_disconnect(a);
  fake_add(b, 3, "x", 50, FALSE, 0);
  CU_ASSERT_EQUAL(agent_registry_n_shrinkers(reg), 6);
  fake_free(a);
  fake_free(b);
  fake_free(root);
  agent_down();
}

/* status lists a bounded page and says so. */
static void test_hostile_status_paged(void) {
  Fake *f;
  JsonNode *reply;
  JsonObject *st, *summary;
  JsonArray *sh;

  agent_up(8, 1024);
  f = fake_new("many", 11, 0, ANSWER_ALL);
  for (uint32_t id = 1; id <= 30; id++)
    fake_add(f, id, "s", 50, FALSE, 0);
  reply = run("{\"execute\":\"status\",\"arguments\":{\"offset\":5,\"limit\":10}}", 0, &f, 1, 2000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(reply);
  st = ret_of(reply);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  summary = json_object_get_object_member(st, "summary");
  CU_ASSERT_PTR_NOT_NULL_FATAL(summary);
  CU_ASSERT_EQUAL(json_object_get_int_member(summary, "shrinkers"), 30);
  CU_ASSERT_EQUAL(json_object_get_int_member(summary, "shown"), 10);
  CU_ASSERT_TRUE(json_object_get_boolean_member(summary, "truncated"));
  sh = json_object_get_array_member(
      json_array_get_object_element(json_object_get_array_member(st, "clients"), 0), "shrinkers");
  CU_ASSERT_EQUAL_FATAL(json_array_get_length(sh), 10);
  CU_ASSERT_EQUAL(json_object_get_int_member(json_array_get_object_element(sh, 0), "id"), 6);
  json_node_unref(reply);
  /* Beyond the end: no client listed; the default page holds all 30. */
  reply = run("{\"execute\":\"status\",\"arguments\":{\"offset\":30}}", 0, &f, 1, 2000);
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(ret_of(reply), "clients")), 0);
  json_node_unref(reply);
  reply = run("{\"execute\":\"status\"}", 0, &f, 1, 2000);
  CU_ASSERT_FALSE(json_object_get_boolean_member(
      json_object_get_object_member(ret_of(reply), "summary"), "truncated"));
  json_node_unref(reply);
  reply = run("{\"execute\":\"status\",\"arguments\":{\"limit\":10001}}", 0, &f, 1, 2000);
  CU_ASSERT_STRING_EQUAL(error_class(reply), "InvalidParameter");
  json_node_unref(reply);
  fake_free(f);
  agent_down();
}

/* Makes @n connections to @path as @uid (in a child that drops to it) and
 * hands their fds back: SO_PEERCRED keeps the connecting process's uid. */
static void connect_as(uid_t uid, const char *path, int n, int *fds) {
  int sp[2];
  pid_t pid;
  int status;

  g_assert(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) == 0);
  pid = fork();
  g_assert(pid >= 0);
  if (pid == 0) {
    int mine[8];
    char cbuf[CMSG_SPACE(sizeof(mine))] = {0};
    char byte = 0;
    struct iovec iov = {&byte, 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

    if (setgid(uid) < 0 || setuid(uid) < 0)
      _exit(3);
    for (int i = 0; i < n; i++)
      if ((mine[i] = client_connect(path)) < 0)
        _exit(5);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
    memcpy(CMSG_DATA(c), mine, sizeof(int) * (size_t)n);
    _exit(sendmsg(sp[1], &mh, 0) == 1 ? 0 : 4);
  }
  /* The datagram waits in the pair: no need to read it before the child
   * is gone, and a child that failed sends none. */
  g_assert(waitpid(pid, &status, 0) == pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    printf("\n    the child connecting as uid %u failed (status %d)", (unsigned)uid, status);
  g_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  {
    char cbuf[CMSG_SPACE(sizeof(int) * 8)];
    char byte;
    struct iovec iov = {&byte, 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof(cbuf)};

    g_assert(recvmsg(sp[0], &mh, MSG_DONTWAIT) == 1);
    memcpy(fds, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int) * (size_t)n);
  }
  close(sp[0]);
  close(sp[1]);
  for (int i = 0; i < n; i++)
    g_assert(fds[i] >= 0);
}

/* Expects ERROR(LIMIT) mentioning @text, then the end, on @fd. */
static void expect_refused(int fd, const char *text, guint8 *buf) {
  proto_msg m;

  CU_ASSERT_EQUAL_FATAL(client_recv(fd, &m, buf), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_ERROR);
  if (m.type != PROTO_MSG_ERROR)
    return;
  CU_ASSERT_EQUAL(m.u.error.code, PROTO_ERR_LIMIT);
  if (!strstr(m.u.error.text, text))
    printf("\n    refused with \"%s\", not \"%s\"", m.u.error.text, text);
  CU_ASSERT_PTR_NOT_NULL(strstr(m.u.error.text, text));
  expect_eof(fd, buf);
}

/* Connections: a share per uid, the last slots for root, and no HELLO
 * within the timeout is a goodbye. */
static void test_hostile_server_bounds(void) {
  static guint8 buf[PROTO_MSG_MAX];
  g_autofree char *path = sock_path();
  AgentServer *server;
  int a[3], b[2], root[2], quiet, late;
  int *silent[] = {&a[0], &a[1], &b[0]};
  proto_msg m;

  agent_up(8, 1024);
  /* Other users must reach the socket. */
  g_chmod(tmpdir, 0755);
  server = agent_server_new(path, 5, reg, rounds, cmds, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(server);
  /* Five slots, the last two root's: three for everyone else. */
  agent_server_set_limits(server, &(AgentServerLimits){.max_clients_per_uid = 2,
                                                       .reserved_root_clients = 2,
                                                       .hello_timeout_ms = 1000});
  /* uid 65534: two connections, the third is one too many. */
  connect_as(65534, path, 3, a);
  expect_refused(a[2], "too many connections from uid 65534", buf);
  /* uid 65533: the third slot, then root's reserve. */
  connect_as(65533, path, 2, b);
  expect_refused(b[1], "too many clients", buf);
  /* Root gets the reserved slots, and no more. */
  for (int i = 0; i < 2; i++)
    root[i] = client_hello(path, "root", buf);
  quiet = client_connect(path);
  expect_refused(quiet, "too many clients", buf);
  CU_ASSERT_EQUAL(agent_server_n_peers(server), 5);
  /* The other three never said HELLO: closed after the timeout... */
  for (size_t i = 0; i < G_N_ELEMENTS(silent); i++) {
    CU_ASSERT_EQUAL_FATAL(client_recv(*silent[i], &m, buf), 0);
    CU_ASSERT_EQUAL(m.type, PROTO_MSG_ERROR);
    CU_ASSERT_EQUAL(m.u.error.code, PROTO_ERR_STATE);
    CU_ASSERT_PTR_NOT_NULL(strstr(m.u.error.text, "no HELLO within 1000 ms"));
    expect_eof(*silent[i], buf);
  }
  /* ...their slots are free again, root's HELLO-ed ones stay. */
  CU_ASSERT_EQUAL(agent_server_n_peers(server), 2);
  connect_as(65534, path, 1, &late);
  m = (proto_msg){.type = PROTO_MSG_HELLO};
  m.u.hello.min_version = 1;
  m.u.hello.max_version = 1;
  m.u.hello.name = "late";
  client_send(late, &m);
  CU_ASSERT_EQUAL(client_recv(late, &m, buf), 0);
  CU_ASSERT_EQUAL(m.type, PROTO_MSG_WELCOME);
  close(late);
  for (int i = 0; i < 3; i++)
    close(a[i]);
  for (int i = 0; i < 2; i++) {
    close(b[i]);
    close(root[i]);
  }
  close(quiet);
  agent_server_free(server);
  agent_down();
}

/* Two agents started together: the second finds the first one's socket
 * bound but not yet listening, which looks stale. The lock beside it is
 * what tells them apart: the socket stays, the second refuses. */
static void test_hostile_startup_race(void) {
  g_autofree char *path = sock_path();
  g_autofree char *dir = g_path_get_dirname(path);
  g_autofree char *lock = g_strconcat(path, ".lock", NULL);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_autoptr(GError) error = NULL;
  AgentServer *server;
  int fd, lock_fd;

  agent_up(8, 1024);
  g_mkdir_with_parents(dir, 0755);
  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  /* The first agent, between its bind() and its listen(). */
  lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  CU_ASSERT_EQUAL_FATAL(flock(lock_fd, LOCK_EX | LOCK_NB), 0);
  fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
  CU_ASSERT_EQUAL(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  server = agent_server_new(path, 64, reg, rounds, cmds, &error);
  CU_ASSERT_PTR_NULL(server);
  CU_ASSERT_TRUE(g_error_matches(error, AGENT_ERROR, AGENT_ERROR_IN_USE));
  CU_ASSERT_TRUE(g_file_test(path, G_FILE_TEST_EXISTS));
  g_clear_error(&error);
  agent_server_free(server);
  /* The first one went away: the next agent takes over. */
  close(lock_fd);
  close(fd);
  server = agent_server_new(path, 64, reg, rounds, cmds, &error);
  CU_ASSERT_PTR_NOT_NULL(server);
  agent_server_free(server);
  CU_ASSERT_FALSE(g_file_test(lock, G_FILE_TEST_EXISTS));
  agent_down();
}

int main(void) {
  int status;
  CU_pSuite s;

  tmpdir = g_dir_make_tmp("shrinkd-test-XXXXXX", NULL);
  g_assert(tmpdir);
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  s = CU_add_suite("commands", NULL, NULL);
  CU_add_test(s, "parse limits", test_parse_limits);
  CU_add_test(s, "typed errors and permissions", test_dispatch_errors);
  CU_add_test(s, "status shape and uid filter", test_status);
  CU_add_test(s, "reply text: escaping, id echo", test_reply_text);
  CU_add_test(s, "status: free page hints", test_status_hints);
  CU_add_test(s, "shrinkd-prepare-migration: size, answer", test_prepare_migration);
  CU_add_test(s, "shrinkd-prepare-migration: typed errors, Busy", test_prepare_migration_errors);
  s = CU_add_suite("rounds", NULL, NULL);
  CU_add_test(s, "everyone answers: split, report", test_round_all_answer);
  CU_add_test(s, "a hung client: deadline, misses, skip, late reply", test_round_hung_client);
  CU_add_test(s, "second pass for the shortfall", test_round_second_pass);
  CU_add_test(s, "soft before hard", test_round_soft_before_hard);
  CU_add_test(s, "a client gone mid-round", test_round_client_gone);
  CU_add_test(s, "a full socket is a miss, not a wait", test_round_full_socket);
  CU_add_test(s, "queue and history", test_round_queue_and_history);
  CU_add_test(s, "relief; bad SHRINK_DONE", test_relief_and_done_errors);
  s = CU_add_suite("server", NULL, NULL);
  CU_add_test(s, "protocol: hello, typed errors, garbage", test_server_protocol);
  CU_add_test(s, "a flooding peer does not starve others", test_server_flood);
  CU_add_test(s, "chunked control reply", test_server_chunked_reply);
  CU_add_test(s, "stale socket, busy socket", test_server_stale_and_busy);
  s = CU_add_suite("hostile peers", NULL, NULL);
  CU_add_test(s, "a lying shrinker: capped, verified, loses trust", test_hostile_lying_shrinker);
  CU_add_test(s, "a liar alone ends no round", test_hostile_liar_alone);
  CU_add_test(s, "a flood without estimates leaves the need to real clients",
              test_hostile_unestimated_flood);
  CU_add_test(s, "sums saturate", test_hostile_sums_saturate);
  CU_add_test(s, "shrinkers per uid and in all", test_hostile_registry_limits);
  CU_add_test(s, "status is paged", test_hostile_status_paged);
  CU_add_test(s, "start-up race: the lock beside the socket", test_hostile_startup_race);
  CU_add_test(s, "connections: per uid, root's reserve, HELLO timeout", test_hostile_server_bounds);
  s = CU_add_suite("settings and units", NULL, NULL);
  CU_add_test(s, "config file", test_settings);
  CU_add_test(s, "the sample config shows the defaults", test_sample_config_is_the_defaults);
  CU_add_test(s, "sizes", test_sizes);
  status = cunit_run_all();
  {
    g_autofree char *run_dir = g_build_filename(tmpdir, "run", NULL);

    g_rmdir(run_dir);
    g_rmdir(tmpdir);
  }
  g_free(tmpdir);
  return status;
}
