/* SPDX-License-Identifier: MIT */
/*
 * The watch loop (see watch.h).
 */
#include "watch.h"

#include <errno.h>
#include <poll.h>
#include <string.h>

#include "report.h"
#include "size.h"
#include "vs-error.h"

typedef struct {
  const VsWatchOptions *opts;
  guint64 actual_bytes; /* last printed; 0: none yet */
  char *state;          /* last printed */
  char *agent_line;     /* last printed agent reachability/registration line */
  gint64 last_round_id; /* newest round printed; -1: none seen */
} Watch;

static void line(Watch *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void line(Watch *w, const char *fmt, ...) {
  g_autoptr(GDateTime) t = g_date_time_new_now_local();
  g_autofree char *stamp = g_date_time_format(t, "%H:%M:%S");
  va_list ap;

  fprintf(w->opts->out, "%s.%03d ", stamp, g_date_time_get_microsecond(t) / 1000);
  va_start(ap, fmt);
  vfprintf(w->opts->out, fmt, ap);
  va_end(ap);
  fputc('\n', w->opts->out);
  fflush(w->opts->out);
}

/* Prints @text as the agent line unless it is the one already shown. */
static void agent_line(Watch *w, char *text) {
  if (g_strcmp0(w->agent_line, text) != 0)
    line(w, "agent: %s", text);
  g_free(w->agent_line);
  w->agent_line = text;
}

static JsonArray *array_member(JsonObject *o, const char *name) {
  JsonNode *n = json_object_get_member(o, name);

  return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

static gint64 int_member(JsonObject *o, const char *name) {
  JsonNode *n = o ? json_object_get_member(o, name) : NULL;

  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64
             ? json_node_get_int(n)
             : 0;
}

static const char *str_member(JsonObject *o, const char *name) {
  JsonNode *n = o ? json_object_get_member(o, name) : NULL;

  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : "?";
}

static JsonObject *element_object(JsonArray *a, guint i) {
  JsonNode *n = json_array_get_element(a, i);

  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static void print_round(Watch *w, JsonObject *r) {
  JsonArray *reqs = array_member(r, "requests");
  JsonNode *m = json_object_get_member(r, "measured_bytes");
  char t[32], c[32], d[40];

  line(w,
       "round %" G_GINT64_FORMAT " %s %s: target %s, claimed %s, measured %s, %u requests, %.1f ms",
       int_member(r, "round_id"), str_member(r, "level"), str_member(r, "reason"),
       vs_format_bytes((guint64)MAX(int_member(r, "target_bytes"), 0), t, sizeof(t)),
       vs_format_bytes((guint64)MAX(int_member(r, "claimed_bytes"), 0), c, sizeof(c)),
       m && JSON_NODE_HOLDS_VALUE(m) ? vs_format_signed_bytes(json_node_get_int(m), d, sizeof(d))
                                     : "-",
       reqs ? json_array_get_length(reqs) : 0, (double)int_member(r, "duration_us") / 1000.0);
}

static void poll_agent(Watch *w, VsBackend *backend) {
  g_autoptr(GError) error = NULL;
  g_autoptr(VsAgent) agent = vs_backend_open_agent(backend, w->opts->agent_timeout_ms, &error);
  g_autoptr(JsonNode) st = NULL;
  JsonObject *o;
  JsonArray *clients, *rounds;
  guint n_shrinkers = 0, n_clients;

  if (agent)
    st = vs_agent_call(agent, "shrinkd-status", NULL, w->opts->agent_timeout_ms, &error);
  if (st && !JSON_NODE_HOLDS_OBJECT(st)) {
    g_clear_pointer(&st, json_node_unref);
    g_set_error_literal(&error, VS_ERROR, VS_ERROR_PROTOCOL,
                        "shrinkd-status: the answer is not an object");
  }
  if (!st) {
    agent_line(w, g_strdup_printf("unreachable: %s", error->message));
    return;
  }
  vs_report_sanitize(st);
  o = json_node_get_object(st);
  clients = array_member(o, "clients");
  n_clients = clients ? json_array_get_length(clients) : 0;
  for (guint i = 0; i < n_clients; i++) {
    JsonObject *cl = element_object(clients, i);
    JsonArray *sh = cl ? array_member(cl, "shrinkers") : NULL;

    n_shrinkers += sh ? json_array_get_length(sh) : 0;
  }
  agent_line(w, g_strdup_printf("shrinkd %s, %u client%s, %u shrinker%s", str_member(o, "version"),
                                n_clients, n_clients == 1 ? "" : "s", n_shrinkers,
                                n_shrinkers == 1 ? "" : "s"));
  rounds = array_member(o, "rounds");
  for (guint i = 0; rounds && i < json_array_get_length(rounds); i++) {
    JsonObject *r = element_object(rounds, i);
    gint64 id = int_member(r, "round_id");

    if (!r || id <= w->last_round_id)
      continue;
    /* Rounds from before the watch started are history, not news. */
    if (w->last_round_id >= 0)
      print_round(w, r);
    w->last_round_id = MAX(w->last_round_id, id);
  }
  if (w->last_round_id < 0)
    w->last_round_id = 0;
}

/* Sleeps @ms unless stopped; a signal ends the sleep early. */
static void nap(const VsWatchOptions *opts, guint ms) {
  gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;

  while (!*opts->stop) {
    gint64 left = end - g_get_monotonic_time();

    if (left <= 0)
      return;
    (void)poll(NULL, 0, (int)MIN((left + 999) / 1000, 1000));
  }
}

int vs_watch_run(VsBackend *backend, const VsWatchOptions *opts) {
  Watch w = {.opts = opts, .last_round_id = -1};
  int rc = 0;

  while (!*opts->stop) {
    g_autoptr(GError) error = NULL;
    g_autofree char *state = NULL;
    gboolean running;
    VsMemory mem;

    if (!vs_backend_get_state(backend, &running, &state, &error) ||
        !vs_backend_get_memory(backend, &mem, &error)) {
      line(&w, "%s: %s", backend->name, error->message);
      rc = 1;
      break;
    }
    if (g_strcmp0(state, w.state) != 0) {
      line(&w, "%s: %s", backend->name, state);
      g_free(w.state);
      w.state = g_steal_pointer(&state);
    }
    if (mem.actual_bytes != w.actual_bytes) {
      char a[32], b[32], m[32];

      if (w.actual_bytes == 0)
        line(&w, "balloon %s%s%s", vs_format_bytes(mem.actual_bytes, a, sizeof(a)),
             mem.max_bytes ? " of " : "",
             mem.max_bytes ? vs_format_bytes(mem.max_bytes, m, sizeof(m)) : "");
      else
        line(&w, "balloon %s -> %s", vs_format_bytes(w.actual_bytes, a, sizeof(a)),
             vs_format_bytes(mem.actual_bytes, b, sizeof(b)));
      w.actual_bytes = mem.actual_bytes;
    }
    if (opts->use_agent && !*opts->stop)
      poll_agent(&w, backend);
    nap(opts, opts->interval_ms);
  }
  g_free(w.state);
  g_free(w.agent_line);
  return rc;
}
