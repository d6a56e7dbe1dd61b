/* SPDX-License-Identifier: MIT */
/*
 * The output of virt-shrink (see report.h). The agent's JSON comes from a
 * guest: every member is read defensively (missing or ill-typed members
 * count as 0 or "?"), never trusted to have the documented shape.
 */
#include "report.h"

#include <string.h>
#include <unistd.h>

#include "size.h"
#include "vs-error.h"

/* ---- reading the agent's JSON defensively ---- */

static JsonNode *member(JsonObject *o, const char *name) {
  return o ? json_object_get_member(o, name) : NULL;
}

static gint64 get_int(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);

  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64)
    return json_node_get_int(n);
  return 0;
}

static guint64 get_bytes(JsonObject *o, const char *name) {
  gint64 v = get_int(o, name);

  return v > 0 ? (guint64)v : 0;
}

static gboolean has_int(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);

  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64;
}

static const char *get_str(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);

  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
    return json_node_get_string(n);
  return "?";
}

static gboolean get_bool(JsonObject *o, const char *name, gboolean def) {
  JsonNode *n = member(o, name);

  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN)
    return json_node_get_boolean(n);
  return def;
}

static JsonArray *get_array(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);

  return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

static JsonObject *get_object(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name);

  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static JsonObject *element_object(JsonArray *a, guint i) {
  JsonNode *n = json_array_get_element(a, i);

  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static const char *bytes_str(guint64 v, char *buf) {
  return vs_format_bytes(v, buf, 32);
}

/* ---- progress bar ---- */

#define BAR_WIDTH 30

void vs_progress_bar_init(VsProgressBar *bar, FILE *out, gboolean wanted) {
  bar->out = out;
  bar->enabled = wanted && isatty(fileno(out));
  bar->drawn = FALSE;
}

void vs_progress_bar_update(const VsProgress *p, gpointer data) {
  VsProgressBar *bar = data;
  char cells[BAR_WIDTH + 1];
  char from[32], to[32], now[32];
  double frac = 1.0;
  int filled;

  if (!bar->enabled)
    return;
  /* The share of the way from where the balloon was to the target. */
  if (p->initial_bytes != p->target_bytes) {
    frac = ((double)p->initial_bytes - (double)p->actual_bytes) /
           ((double)p->initial_bytes - (double)p->target_bytes);
    frac = CLAMP(frac, 0.0, 1.0);
  }
  filled = (int)(frac * BAR_WIDTH + 0.5);
  memset(cells, '#', (size_t)filled);
  memset(cells + filled, '-', (size_t)(BAR_WIDTH - filled));
  cells[BAR_WIDTH] = '\0';
  fprintf(bar->out, "\r[%s] %3.0f%%  %s -> %s, now %s  %.1f s\033[K", cells, frac * 100,
          bytes_str(p->initial_bytes, from), bytes_str(p->target_bytes, to),
          bytes_str(p->actual_bytes, now), (double)p->elapsed_us / 1e6);
  fflush(bar->out);
  bar->drawn = TRUE;
}

void vs_progress_bar_migration(const VsMigrateProgress *p, gpointer data) {
  VsProgressBar *bar = data;
  const VsMigrationInfo *info = p->info;
  char cells[BAR_WIDTH + 1];
  char sent[32], left[32], rate[32];
  double frac = 0.0;
  int filled;

  if (!bar->enabled)
    return;
  /* Sent over sent and left: pages the guest dirties again are sent again,
   * so the total alone would run past 100%. */
  if (info->status == VS_MIGRATION_COMPLETED)
    frac = 1.0;
  else if (info->transferred_bytes >= 0 && info->remaining_bytes >= 0 &&
           info->transferred_bytes + info->remaining_bytes > 0)
    frac = (double)info->transferred_bytes /
           ((double)info->transferred_bytes + (double)info->remaining_bytes);
  filled = (int)(frac * BAR_WIDTH + 0.5);
  memset(cells, '#', (size_t)filled);
  memset(cells + filled, '-', (size_t)(BAR_WIDTH - filled));
  cells[BAR_WIDTH] = '\0';
  fprintf(bar->out, "\r[%s] %3.0f%%  sent %s, left %s, %s/s  %.1f s  %s\033[K", cells, frac * 100,
          info->transferred_bytes >= 0 ? bytes_str((guint64)info->transferred_bytes, sent) : "-",
          info->remaining_bytes >= 0 ? bytes_str((guint64)info->remaining_bytes, left) : "-",
          info->rate_bytes_per_s >= 0 ? bytes_str((guint64)info->rate_bytes_per_s, rate) : "-",
          (double)p->elapsed_us / 1e6,
          p->cancelling && !vs_migration_status_is_final(info->status) ? "cancelling"
                                                                       : info->status_word);
  fflush(bar->out);
  bar->drawn = TRUE;
}

void vs_progress_bar_finish(VsProgressBar *bar) {
  if (bar->enabled && bar->drawn) {
    fputc('\n', bar->out);
    fflush(bar->out);
  }
  bar->drawn = FALSE;
}

/* ---- setmem ---- */

static void app_free(gpointer data) {
  VsAppFreed *a = data;

  g_free(a->client);
  g_ptr_array_unref(a->shrinkers);
  g_free(a);
}

static void add_request(GPtrArray *apps, JsonObject *req) {
  gint64 pid = get_int(req, "pid");
  const char *client = get_str(req, "client");
  const char *shrinker = get_str(req, "shrinker");
  VsAppFreed *app = NULL;
  gboolean known = FALSE;

  for (guint i = 0; i < apps->len && !app; i++) {
    VsAppFreed *a = g_ptr_array_index(apps, i);

    if (a->pid == pid && strcmp(a->client, client) == 0)
      app = a;
  }
  if (!app) {
    app = g_new0(VsAppFreed, 1);
    app->pid = pid;
    app->client = g_strdup(client);
    app->shrinkers = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(apps, app);
  }
  for (guint i = 0; i < app->shrinkers->len && !known; i++)
    known = strcmp(g_ptr_array_index(app->shrinkers, i), shrinker) == 0;
  if (!known)
    g_ptr_array_add(app->shrinkers, g_strdup(shrinker));
  app->asked_bytes += get_bytes(req, "asked_bytes");
  app->freed_bytes += get_bytes(req, "freed_bytes");
  app->requests++;
  if (get_bool(req, "missed", FALSE))
    app->missed++;
}

GPtrArray *vs_prepare_applications(JsonNode *prepare) {
  GPtrArray *apps = g_ptr_array_new_with_free_func(app_free);
  JsonArray *rounds;

  if (!prepare || !JSON_NODE_HOLDS_OBJECT(prepare))
    return apps;
  rounds = get_array(json_node_get_object(prepare), "rounds");
  for (guint i = 0; rounds && i < json_array_get_length(rounds); i++) {
    JsonArray *reqs = get_array(element_object(rounds, i), "requests");

    for (guint j = 0; reqs && j < json_array_get_length(reqs); j++) {
      JsonObject *req = element_object(reqs, j);

      if (req)
        add_request(apps, req);
    }
  }
  return apps;
}

static const char *outcome_name(VsSetmemOutcome o) {
  switch (o) {
  case VS_SETMEM_REACHED: return "reached";
  case VS_SETMEM_PARTIAL: return "partial";
  default: return "failed";
  }
}

/* "412.3 ms" or "-" for a phase that did not run. */
static const char *phase_str(gint64 us, char *buf) {
  if (us < 0)
    return "-";
  g_snprintf(buf, 32, "%.1f ms", (double)us / 1000.0);
  return buf;
}

static void print_prepare(FILE *out, const VsSetmemResult *r) {
  JsonObject *p = r->prepare ? json_node_get_object(r->prepare) : NULL;
  JsonArray *rounds = get_array(p, "rounds");
  char t[32], a[32], b[32], c[32];

  if (!r->agent_used) {
    fprintf(out, "  prepare  %10s  %s\n", phase_str(r->prepare_us, t),
            r->agent_note ? r->agent_note : "not asked");
    return;
  }
  fprintf(out,
          "  prepare  %10s  the guest freed %s of the %s it needed (%s was free; %u round%s; %s)\n",
          phase_str(r->prepare_us, t), bytes_str(get_bytes(p, "freed_bytes"), a),
          bytes_str(get_bytes(p, "needed_bytes"), b), bytes_str(get_bytes(p, "free_bytes"), c),
          rounds ? json_array_get_length(rounds) : 0,
          rounds && json_array_get_length(rounds) == 1 ? "" : "s",
          get_bool(p, "ready", FALSE) ? "ready" : "NOT ready");
}

/* The table of what each application freed in the agent's rounds of
 * @prepare (nothing when the agent was not used). */
static void print_applications(FILE *out, gboolean agent_used, JsonNode *prepare) {
  g_autoptr(GPtrArray) apps = vs_prepare_applications(prepare);
  int w_client = 6, w_shr = 9;

  if (!agent_used)
    return;
  if (apps->len == 0) {
    fprintf(out, "  no application was asked\n");
    return;
  }
  for (guint i = 0; i < apps->len; i++) {
    VsAppFreed *app = g_ptr_array_index(apps, i);
    g_autofree char *names = NULL;

    g_ptr_array_add(app->shrinkers, NULL);
    names = g_strjoinv(",", (char **)app->shrinkers->pdata);
    g_ptr_array_remove_index(app->shrinkers, app->shrinkers->len - 1);
    w_client = MAX(w_client, (int)strlen(app->client));
    w_shr = MAX(w_shr, (int)strlen(names));
  }
  fprintf(out, "\n  %-8s %-*s %-*s %10s %10s %s\n", "PID", w_client, "CLIENT", w_shr, "SHRINKERS",
          "ASKED", "FREED", "MISSED");
  for (guint i = 0; i < apps->len; i++) {
    VsAppFreed *app = g_ptr_array_index(apps, i);
    g_autofree char *names = NULL;
    char a[32], f[32];

    g_ptr_array_add(app->shrinkers, NULL);
    names = g_strjoinv(",", (char **)app->shrinkers->pdata);
    g_ptr_array_remove_index(app->shrinkers, app->shrinkers->len - 1);
    fprintf(out, "  %-8" G_GINT64_FORMAT " %-*s %-*s %10s %10s %u of %u\n", app->pid, w_client,
            app->client, w_shr, names, bytes_str(app->asked_bytes, a),
            bytes_str(app->freed_bytes, f), app->missed, app->requests);
  }
}

void vs_report_setmem_text(FILE *out, const char *guest, const VsSetmemResult *r) {
  char a[32], b[32], c[32], t[32];

  if (r->outcome == VS_SETMEM_FAILED) {
    /* The caller prints the error; say how far we got if the balloon was
     * touched. */
    if (r->balloon_us >= 0 && r->reached_bytes)
      fprintf(out, "%s: the balloon was set to %s and is at %s\n", guest,
              bytes_str(r->asked_bytes, a), bytes_str(r->reached_bytes, b));
    return;
  }
  fprintf(out, "%s: %s -> %s: ", guest, bytes_str(r->initial_bytes, a),
          bytes_str(r->asked_bytes, b));
  if (r->outcome == VS_SETMEM_REACHED)
    fprintf(out, "reached %s in %.2f s\n", bytes_str(r->reached_bytes, c),
            (double)r->total_us / 1e6);
  else
    fprintf(out, "PARTIAL: the balloon is at %s after %.2f s, %s short\n",
            bytes_str(r->reached_bytes, c), (double)r->total_us / 1e6,
            bytes_str(r->reached_bytes > r->asked_bytes ? r->reached_bytes - r->asked_bytes
                                                        : r->asked_bytes - r->reached_bytes,
                      t));
  print_prepare(out, r);
  fprintf(out, "  balloon  %10s  set to %s, live\n", phase_str(r->balloon_us, t),
          bytes_str(r->asked_bytes, a));
  fprintf(out, "  follow   %10s  %s at %s\n", phase_str(r->follow_us, t),
          r->outcome == VS_SETMEM_REACHED ? "arrived" : "timed out",
          bytes_str(r->reached_bytes, a));
  print_applications(out, r->agent_used, r->prepare);
}

/* A figure (a time, a size), or null when unknown (negative). */
static void add_figure(JsonBuilder *b, const char *name, gint64 value) {
  json_builder_set_member_name(b, name);
  if (value < 0)
    json_builder_add_null_value(b);
  else
    json_builder_add_int_value(b, value);
}

static void add_string_or_null(JsonBuilder *b, const char *name, const char *value) {
  json_builder_set_member_name(b, name);
  if (value)
    json_builder_add_string_value(b, value);
  else
    json_builder_add_null_value(b);
}

static void add_uint(JsonBuilder *b, const char *name, guint64 value) {
  json_builder_set_member_name(b, name);
  json_builder_add_int_value(b, (gint64)value);
}

/* "applications": what each application freed in the rounds of @prepare. */
static void add_applications(JsonBuilder *b, JsonNode *prepare) {
  g_autoptr(GPtrArray) apps = vs_prepare_applications(prepare);

  json_builder_set_member_name(b, "applications");
  json_builder_begin_array(b);
  for (guint i = 0; i < apps->len; i++) {
    VsAppFreed *app = g_ptr_array_index(apps, i);

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "pid");
    json_builder_add_int_value(b, app->pid);
    add_string_or_null(b, "client", app->client);
    json_builder_set_member_name(b, "shrinkers");
    json_builder_begin_array(b);
    for (guint j = 0; j < app->shrinkers->len; j++)
      json_builder_add_string_value(b, g_ptr_array_index(app->shrinkers, j));
    json_builder_end_array(b);
    add_uint(b, "asked_bytes", app->asked_bytes);
    add_uint(b, "freed_bytes", app->freed_bytes);
    add_uint(b, "requests", app->requests);
    add_uint(b, "missed", app->missed);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

static void add_warnings(JsonBuilder *b, GPtrArray *warnings) {
  json_builder_set_member_name(b, "warnings");
  json_builder_begin_array(b);
  for (guint i = 0; warnings && i < warnings->len; i++)
    json_builder_add_string_value(b, g_ptr_array_index(warnings, i));
  json_builder_end_array(b);
}

/* "agent": {"used", "note", "prepare"}. */
static void add_agent(JsonBuilder *b, gboolean used, const char *note, JsonNode *prepare) {
  json_builder_set_member_name(b, "agent");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "used");
  json_builder_add_boolean_value(b, used);
  add_string_or_null(b, "note", note);
  json_builder_set_member_name(b, "prepare");
  if (prepare)
    json_builder_add_value(b, json_node_copy(prepare));
  else
    json_builder_add_null_value(b);
  json_builder_end_object(b);
}

JsonNode *vs_report_setmem_json(const char *guest, const VsSetmemResult *r) {
  g_autoptr(JsonBuilder) b = json_builder_new();

  json_builder_begin_object(b);
  add_string_or_null(b, "guest", guest);
  add_string_or_null(b, "result", outcome_name(r->outcome));
  json_builder_set_member_name(b, "exit_status");
  json_builder_add_int_value(b, vs_setmem_exit_code(r));
  add_string_or_null(b, "error", r->error ? r->error->message : NULL);
  add_uint(b, "asked_bytes", r->asked_bytes);
  add_uint(b, "initial_bytes", r->initial_bytes);
  add_uint(b, "reached_bytes", r->reached_bytes);
  add_uint(b, "max_bytes", r->max_bytes);
  json_builder_set_member_name(b, "phases_us");
  json_builder_begin_object(b);
  add_figure(b, "prepare", r->prepare_us);
  add_figure(b, "balloon", r->balloon_us);
  add_figure(b, "follow", r->follow_us);
  add_figure(b, "total", r->total_us);
  json_builder_end_object(b);
  add_agent(b, r->agent_used, r->agent_note, r->prepare);
  add_applications(b, r->prepare);
  add_warnings(b, r->warnings);
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

/* ---- migrate, prepare-migration ---- */

static void print_migration_prepare(FILE *out, const VsMigrateResult *r) {
  JsonObject *p = r->prepare ? json_node_get_object(r->prepare) : NULL;
  JsonArray *rounds = get_array(p, "rounds");
  guint n = rounds ? json_array_get_length(rounds) : 0;
  char t[32], a[32], b[32], c[32], m[40];

  if (!r->agent_used) {
    fprintf(out, "  prepare  %10s  %s\n", phase_str(r->prepare_us, t),
            r->agent_note ? r->agent_note : "not asked");
    return;
  }
  fprintf(out,
          "  prepare  %10s  the guest freed %s (measured %s; available %s -> %s; %u round%s; "
          "%s)\n",
          phase_str(r->prepare_us, t), bytes_str(get_bytes(p, "freed_bytes"), a),
          has_int(p, "measured_bytes")
              ? vs_format_signed_bytes(get_int(p, "measured_bytes"), m, sizeof(m))
              : "-",
          /* null when the guest could not read MemAvailable */
          has_int(p, "mem_available_before_bytes")
              ? bytes_str(get_bytes(p, "mem_available_before_bytes"), b)
              : "-",
          has_int(p, "mem_available_after_bytes")
              ? bytes_str(get_bytes(p, "mem_available_after_bytes"), c)
              : "-",
          n, n == 1 ? "" : "s", get_bool(p, "ready", FALSE) ? "ready" : "NOT ready");
}

static void print_migration(FILE *out, const VsMigrateResult *r) {
  const VsMigrationInfo *i = &r->info;
  g_autoptr(GString) line = g_string_new(i->status_word);
  const char *sep = ": ";
  char t[32], v[32];

  if (!r->started) {
    fprintf(out, "  migrate  %10s  not started\n", phase_str(r->migrate_us, t));
    return;
  }
  /* The figures the hypervisor gave; libvirt's test driver, for one, gives
   * none. */
  if (i->transferred_bytes >= 0) {
    g_string_append_printf(line, "%ssent %s", sep, bytes_str((guint64)i->transferred_bytes, v));
    sep = ", ";
  }
  if (i->remaining_bytes >= 0) {
    g_string_append_printf(line, "%sleft %s", sep, bytes_str((guint64)i->remaining_bytes, v));
    sep = ", ";
  }
  if (i->rate_bytes_per_s >= 0) {
    g_string_append_printf(line, "%sat %s/s", sep, bytes_str((guint64)i->rate_bytes_per_s, v));
    sep = ", ";
  }
  sep = sep[0] == ',' ? "; " : sep;
  if (i->total_time_ms >= 0) {
    g_string_append_printf(line, "%stotal %" G_GINT64_FORMAT " ms", sep, i->total_time_ms);
    sep = ", ";
  }
  if (i->setup_time_ms >= 0) {
    g_string_append_printf(line, "%ssetup %" G_GINT64_FORMAT " ms", sep, i->setup_time_ms);
    sep = ", ";
  }
  /* Only a completed migration had a downtime; before, it is a guess. */
  if (i->status == VS_MIGRATION_COMPLETED && i->downtime_ms >= 0)
    g_string_append_printf(line, "%sdowntime %" G_GINT64_FORMAT " ms", sep, i->downtime_ms);
  fprintf(out, "  migrate  %10s  %s\n", phase_str(r->migrate_us, t), line->str);
}

void vs_report_migrate_text(FILE *out, const char *guest, const char *destination,
                            const VsMigrateResult *r) {
  double s = (double)r->total_us / 1e6;

  /* Nothing happened: the caller's error says it all. */
  if (r->outcome == VS_MIGRATE_FAILED && !r->started && r->prepare_us < 0 && r->migrate_us < 0)
    return;
  if (!destination) {
    if (r->outcome != VS_MIGRATE_PREPARED)
      return;
    fprintf(out, "%s: the guest agent prepared for a migration in %.1f ms\n", guest,
            (double)r->total_us / 1000.0);
    print_migration_prepare(out, r);
    print_applications(out, r->agent_used, r->prepare);
    return;
  }
  switch (r->outcome) {
  case VS_MIGRATE_COMPLETED:
    fprintf(out, "%s: migrated to %s in %.2f s\n", guest, destination, s);
    break;
  case VS_MIGRATE_CANCELLED:
    fprintf(out, "%s: migration to %s CANCELLED after %.2f s\n", guest, destination, s);
    break;
  case VS_MIGRATE_TIMEOUT:
    fprintf(out, "%s: migration to %s CANCELLED at the timeout, after %.2f s\n", guest, destination,
            s);
    break;
  default: fprintf(out, "%s: migration to %s FAILED after %.2f s\n", guest, destination, s); break;
  }
  print_migration_prepare(out, r);
  print_migration(out, r);
  print_applications(out, r->agent_used, r->prepare);
}

static void add_migration(JsonBuilder *b, const VsMigrateResult *r) {
  const VsMigrationInfo *i = &r->info;
  gboolean completed = i->status == VS_MIGRATION_COMPLETED;

  json_builder_set_member_name(b, "migration");
  if (!r->started) {
    json_builder_add_null_value(b);
    return;
  }
  json_builder_begin_object(b);
  add_string_or_null(b, "status", vs_migration_status_name(i->status));
  add_string_or_null(b, "hypervisor_status", i->status_word);
  add_figure(b, "transferred_bytes", i->transferred_bytes);
  add_figure(b, "remaining_bytes", i->remaining_bytes);
  add_figure(b, "total_bytes", i->total_bytes);
  add_figure(b, "rate_bytes_per_s", i->rate_bytes_per_s);
  add_figure(b, "total_time_ms", i->total_time_ms);
  add_figure(b, "setup_time_ms", i->setup_time_ms);
  add_figure(b, "downtime_ms", completed ? i->downtime_ms : -1);
  add_figure(b, "expected_downtime_ms", completed ? -1 : i->downtime_ms);
  add_string_or_null(b, "error", i->error);
  json_builder_set_member_name(b, "cancelled_by_us");
  json_builder_add_boolean_value(b, r->cancel_sent);
  json_builder_end_object(b);
}

JsonNode *vs_report_migrate_json(const char *guest, const char *destination,
                                 const VsMigrateResult *r) {
  g_autoptr(JsonBuilder) b = json_builder_new();

  json_builder_begin_object(b);
  add_string_or_null(b, "guest", guest);
  if (destination)
    add_string_or_null(b, "destination", destination);
  add_string_or_null(b, "result", vs_migrate_outcome_name(r->outcome));
  json_builder_set_member_name(b, "exit_status");
  json_builder_add_int_value(b, vs_migrate_exit_code(r));
  add_string_or_null(b, "error", r->error ? r->error->message : NULL);
  if (destination)
    add_migration(b, r);
  json_builder_set_member_name(b, "phases_us");
  json_builder_begin_object(b);
  add_figure(b, "prepare", r->prepare_us);
  if (destination)
    add_figure(b, "migrate", r->migrate_us);
  add_figure(b, "total", r->total_us);
  json_builder_end_object(b);
  add_agent(b, r->agent_used, r->agent_note, r->prepare);
  add_applications(b, r->prepare);
  add_warnings(b, r->warnings);
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

/* ---- status ---- */

static void print_shrinkers(FILE *out, JsonObject *st) {
  JsonArray *clients = get_array(st, "clients");
  int w_client = 6, w_shrinker = 8;
  guint n = 0;

  /* Columns as wide as the longest name. */
  for (guint i = 0; clients && i < json_array_get_length(clients); i++) {
    JsonObject *cl = element_object(clients, i);
    JsonArray *sh = get_array(cl, "shrinkers");

    w_client = MAX(w_client, (int)strlen(get_str(cl, "name")));
    for (guint j = 0; sh && j < json_array_get_length(sh); j++)
      w_shrinker = MAX(w_shrinker, (int)strlen(get_str(element_object(sh, j), "name")));
  }
  fprintf(out, "\n%-8s %-*s %-*s %4s %10s %6s %10s %10s %s\n", "PID", w_client, "CLIENT",
          w_shrinker, "SHRINKER", "PRIO", "ESTIMATE", "ASKED", "ASKED", "FREED", "MISSES");
  fprintf(out, "%-8s %-*s %-*s %4s %10s %6s %10s %10s %s\n", "", w_client, "", w_shrinker, "", "",
          "", "(times)", "(bytes)", "(bytes)", "(in a row)");
  for (guint i = 0; clients && i < json_array_get_length(clients); i++) {
    JsonObject *cl = element_object(clients, i);
    JsonArray *sh = get_array(cl, "shrinkers");

    for (guint j = 0; sh && j < json_array_get_length(sh); j++) {
      JsonObject *s = element_object(sh, j);
      char est[32], asked[32], freed[32];

      n++;
      fprintf(out,
              "%-8" G_GINT64_FORMAT " %-*s %-*s %4" G_GINT64_FORMAT " %10s %6" G_GINT64_FORMAT
              " %10s %10s %" G_GINT64_FORMAT " (%" G_GINT64_FORMAT ")%s\n",
              get_int(cl, "pid"), w_client, get_str(cl, "name"), w_shrinker, get_str(s, "name"),
              get_int(s, "priority"),
              has_int(s, "estimate_bytes") ? bytes_str(get_bytes(s, "estimate_bytes"), est) : "-",
              get_int(s, "asked"), bytes_str(get_bytes(s, "asked_bytes"), asked),
              bytes_str(get_bytes(s, "freed_bytes"), freed), get_int(s, "misses"),
              get_int(s, "consecutive_misses"),
              get_bool(s, "skipped_in_soft", FALSE) ? "  skipped in soft rounds" : "");
    }
  }
  if (n == 0)
    fprintf(out, "(no shrinkers registered)\n");
}

static void print_rounds(FILE *out, JsonObject *st) {
  JsonArray *rounds = get_array(st, "rounds");
  JsonObject *totals = get_object(st, "totals");
  char a[32], b[32], d[40];

  if (totals)
    fprintf(out, "\ntotals: %" G_GINT64_FORMAT " rounds, claimed %s, measured %s\n",
            get_int(totals, "rounds"), bytes_str(get_bytes(totals, "claimed_bytes"), a),
            vs_format_signed_bytes(get_int(totals, "measured_bytes"), d, sizeof(d)));
  if (!rounds || json_array_get_length(rounds) == 0)
    return;
  fprintf(out, "\nlast rounds (oldest first):\n");
  for (guint i = 0; i < json_array_get_length(rounds); i++) {
    JsonObject *r = element_object(rounds, i);
    JsonArray *reqs = get_array(r, "requests");

    fprintf(out,
            "  #%-4" G_GINT64_FORMAT " %-4s %-9s target %10s  claimed %10s  measured %10s  "
            "%3u requests  %.1f ms\n",
            get_int(r, "round_id"), get_str(r, "level"), get_str(r, "reason"),
            bytes_str(get_bytes(r, "target_bytes"), a), bytes_str(get_bytes(r, "claimed_bytes"), b),
            has_int(r, "measured_bytes")
                ? vs_format_signed_bytes(get_int(r, "measured_bytes"), d, sizeof(d))
                : "-",
            reqs ? json_array_get_length(reqs) : 0, (double)get_int(r, "duration_us") / 1000.0);
  }
}

void vs_report_status_text(FILE *out, const char *guest, const char *state, const VsMemory *mem,
                           JsonNode *status, const char *agent_error) {
  JsonObject *st = status && JSON_NODE_HOLDS_OBJECT(status) ? json_node_get_object(status) : NULL;
  JsonObject *m = get_object(st, "memory");
  char a[32], b[32], c[32];

  fprintf(out, "%s: %s, balloon %s", guest, state ? state : "?", bytes_str(mem->actual_bytes, a));
  if (mem->max_bytes)
    fprintf(out, " of %s", bytes_str(mem->max_bytes, b));
  fputc('\n', out);
  if (mem->available_bytes || mem->usable_bytes || mem->unused_bytes)
    fprintf(out, "balloon statistics: total %s, usable %s, unused %s\n",
            bytes_str(mem->available_bytes, a), bytes_str(mem->usable_bytes, b),
            bytes_str(mem->unused_bytes, c));
  if (!st) {
    fprintf(out, "guest agent: %s\n", agent_error ? agent_error : "not asked");
    return;
  }
  {
    gint64 up_s = get_int(st, "uptime_ms") / 1000;

    fprintf(out,
            "shrinkd %s in the guest, pid %" G_GINT64_FORMAT ", up %" G_GINT64_FORMAT
            "h%02" G_GINT64_FORMAT "m%02" G_GINT64_FORMAT "s\n",
            get_str(st, "version"), get_int(st, "pid"), up_s / 3600, up_s / 60 % 60, up_s % 60);
  }
  if (m)
    fprintf(out, "guest memory: total %s, available %s, free %s\n",
            bytes_str(get_bytes(m, "mem_total_bytes"), a),
            bytes_str(get_bytes(m, "mem_available_bytes"), b),
            bytes_str(get_bytes(m, "mem_free_bytes"), c));
  print_shrinkers(out, st);
  print_rounds(out, st);
}

static JsonNode *host_balloon(const char *state, const VsMemory *mem) {
  g_autoptr(JsonBuilder) b = json_builder_new();

  json_builder_begin_object(b);
  add_string_or_null(b, "state", state);
  add_uint(b, "actual_bytes", mem->actual_bytes);
  add_uint(b, "max_bytes", mem->max_bytes);
  /* Statistics the hypervisor has only with a balloon stats period. */
  if (mem->available_bytes)
    add_uint(b, "available_bytes", mem->available_bytes);
  if (mem->unused_bytes)
    add_uint(b, "unused_bytes", mem->unused_bytes);
  if (mem->usable_bytes)
    add_uint(b, "usable_bytes", mem->usable_bytes);
  if (mem->rss_bytes)
    add_uint(b, "rss_bytes", mem->rss_bytes);
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

JsonNode *vs_report_status_json(const char *state, const VsMemory *mem, JsonNode *status,
                                const char *agent_error) {
  JsonNode *root;
  JsonObject *o;

  if (status && JSON_NODE_HOLDS_OBJECT(status)) {
    root = json_node_copy(status);
    o = json_node_get_object(root);
  } else {
    root = json_node_new(JSON_NODE_OBJECT);
    o = json_object_new();
    json_node_take_object(root, o);
    json_object_set_string_member(o, "agent_error", agent_error ? agent_error : "not asked");
  }
  json_object_set_member(o, "host_balloon", host_balloon(state, mem));
  return root;
}

void vs_report_sanitize(JsonNode *node) {
  if (!node)
    return;
  if (JSON_NODE_HOLDS_OBJECT(node)) {
    JsonObjectIter it;
    const char *name;
    JsonNode *m;

    json_object_iter_init(&it, json_node_get_object(node));
    while (json_object_iter_next(&it, &name, &m))
      vs_report_sanitize(m);
  } else if (JSON_NODE_HOLDS_ARRAY(node)) {
    JsonArray *a = json_node_get_array(node);

    for (guint i = 0; i < json_array_get_length(a); i++)
      vs_report_sanitize(json_array_get_element(a, i));
  } else if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING) {
    g_autofree char *safe = vs_printable(json_node_get_string(node), 256);

    if (strcmp(safe, json_node_get_string(node)) != 0)
      json_node_set_string(node, safe);
  }
}

void vs_print_json(FILE *out, JsonNode *node) {
  g_autoptr(JsonGenerator) gen = json_generator_new();
  g_autofree char *text = NULL;

  json_generator_set_pretty(gen, TRUE);
  json_generator_set_root(gen, node);
  text = json_generator_to_data(gen, NULL);
  fprintf(out, "%s\n", text);
}
