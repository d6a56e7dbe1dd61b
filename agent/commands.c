/* SPDX-License-Identifier: MIT */
/*
 * The JSON commands (see commands.h). Requests are read with
 * json-reader.h; replies are written as text with json-writer.h.
 */
#include "commands.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "errors.h"
#include "saturate.h"
#include "json-writer.h"
#include "local-proto.h"

struct AgentCommands {
  AgentRegistry *registry;
  AgentRounds *rounds;
  AgentProcfs *procfs;
  uint32_t default_deadline_ms;
  int64_t start_mono;
  AgentBalloon *balloon;
  const AgentPrivileges *privileges;
  uint64_t prepare_reserve_bytes;
};

AgentCommands *agent_commands_new(AgentRegistry *registry, AgentRounds *rounds, AgentProcfs *procfs,
                                  uint32_t default_deadline_ms) {
  AgentCommands *self = g_new0(AgentCommands, 1);

  self->registry = registry;
  self->rounds = rounds;
  self->procfs = procfs;
  self->default_deadline_ms = default_deadline_ms;
  self->start_mono = g_get_monotonic_time();
  self->prepare_reserve_bytes = AGENT_COMMANDS_PREPARE_RESERVE_DEFAULT;
  return self;
}

void agent_commands_set_prepare_reserve(AgentCommands *self, uint64_t reserve_bytes) {
  self->prepare_reserve_bytes = reserve_bytes;
}

void agent_commands_set_balloon(AgentCommands *self, AgentBalloon *balloon) {
  self->balloon = balloon;
}

void agent_commands_set_privileges(AgentCommands *self, const AgentPrivileges *privileges) {
  self->privileges = privileges;
}

void agent_commands_free(AgentCommands *self) {
  g_free(self);
}

/* ---- replies ---- */

/* What a command needs to deliver its reply. */
typedef struct {
  AgentCommandReplyFunc reply;
  gpointer user_data;
  GDestroyNotify destroy;
  /* The request's "id" as JSON text, echoed; may be NULL. Text: the
   * request's document is gone when a round's reply goes out. */
  char *id;
  gint64 only_uid;
} Call;

static void call_free(Call *call) {
  if (call->destroy)
    call->destroy(call->user_data);
  g_free(call->id);
  g_free(call);
}

/* Starts a reply in @out: the top object, open. */
static void reply_begin(AgentJsonWriter *w, GString *out) {
  agent_json_init(w, out);
  agent_json_begin_object(w, NULL);
}

/* Closes the reply (with the request's id), delivers it, frees @call. */
static void call_finish(Call *call, AgentJsonWriter *w, GString *out) {
  gsize len;

  if (call->id)
    agent_json_raw(w, "id", call->id);
  agent_json_end_object(w);
  len = out->len;
  call->reply(g_string_free(out, FALSE), len, call->user_data);
  call_free(call);
}

/* @desc is valid UTF-8: where it quotes a request (a command or member
 * name), the reader validated the text and decodes escapes to UTF-8. */
static void write_error(AgentJsonWriter *w, const char *klass, const char *desc) {
  agent_json_begin_object(w, "error");
  agent_json_string(w, "class", klass);
  agent_json_string(w, "desc", desc);
  agent_json_end_object(w);
}

static void call_error(Call *call, const char *klass, const char *format, ...) G_GNUC_PRINTF(3, 4);

/* Replies {"error": ...} to @call and frees it. */
static void call_error(Call *call, const char *klass, const char *format, ...) {
  GString *out = g_string_new(NULL);
  g_autofree char *desc = NULL;
  AgentJsonWriter w;
  va_list ap;

  va_start(ap, format);
  desc = g_strdup_vprintf(format, ap);
  va_end(ap);
  reply_begin(&w, out);
  write_error(&w, klass, desc);
  call_finish(call, &w, out);
}

char *agent_commands_error_text(const char *klass, const AgentJsonValue *id, gsize *len,
                                const char *format, ...) {
  GString *out = g_string_new(NULL);
  g_autofree char *desc = NULL;
  AgentJsonWriter w;
  va_list ap;

  va_start(ap, format);
  desc = g_strdup_vprintf(format, ap);
  va_end(ap);
  reply_begin(&w, out);
  write_error(&w, klass, desc);
  if (id)
    agent_json_node(&w, "id", id);
  agent_json_end_object(&w);
  if (len)
    *len = out->len;
  return g_string_free(out, FALSE);
}

/* ---- the replies' contents ---- */

static void write_memory(AgentJsonWriter *w, AgentProcfs *procfs) {
  AgentMeminfo mi;

  if (!agent_procfs_read_meminfo(procfs, &mi, NULL)) {
    agent_json_null(w, "memory");
    return;
  }
  agent_json_begin_object(w, "memory");
  agent_json_uint(w, "mem_total_bytes", mi.mem_total_bytes);
  agent_json_uint(w, "mem_available_bytes", mi.mem_available_bytes);
  agent_json_uint(w, "mem_free_bytes", mi.mem_free_bytes);
  agent_json_end_object(w);
}

/*
 * A round report:
 * {"round_id", "level", "reason", "target_bytes", "deadline_ms", "started_us",
 *  "duration_us", "fanout_us", "claimed_bytes", "verified_bytes", "measured_bytes" | null,
 *  "mem_available_before_bytes" | null, "mem_available_after_bytes" | null,
 *  "requests": [{"pid", "client", "shrinker", "id", "pass", "level",
 *                "asked_bytes", "freed_bytes", "reply_us" | null, "missed"}]}
 * With @only_uid >= 0, requests to other uids are left out.
 */
static void write_report(AgentJsonWriter *w, const char *key, const AgentRoundReport *report,
                         gint64 only_uid) {
  agent_json_begin_object(w, key);
  agent_json_uint(w, "round_id", report->round_id);
  agent_json_string(w, "level", proto_level_name(report->level));
  agent_json_string(w, "reason", proto_reason_name(report->reason));
  agent_json_uint(w, "target_bytes", report->target_bytes);
  agent_json_int(w, "deadline_ms", report->deadline_ms);
  agent_json_int(w, "started_us", report->started_us);
  agent_json_int(w, "duration_us", report->duration_us);
  agent_json_int(w, "fanout_us", report->fanout_us);
  agent_json_uint(w, "claimed_bytes", report->claimed_bytes);
  agent_json_uint(w, "verified_bytes", report->verified_bytes);
  if (report->measured) {
    agent_json_int(w, "measured_bytes", report->measured_bytes);
    agent_json_uint(w, "mem_available_before_bytes", report->mem_available_before_bytes);
    agent_json_uint(w, "mem_available_after_bytes", report->mem_available_after_bytes);
  } else {
    agent_json_null(w, "measured_bytes");
    agent_json_null(w, "mem_available_before_bytes");
    agent_json_null(w, "mem_available_after_bytes");
  }
  agent_json_begin_array(w, "requests");
  for (guint i = 0; i < report->requests->len; i++) {
    const AgentRoundRequest *req = &g_array_index(report->requests, AgentRoundRequest, i);

    if (only_uid >= 0 && (gint64)req->uid != only_uid)
      continue;
    agent_json_begin_object(w, NULL);
    agent_json_int(w, "pid", req->pid);
    agent_json_string(w, "client", req->client);
    agent_json_string(w, "shrinker", req->shrinker);
    agent_json_int(w, "id", req->id);
    agent_json_int(w, "pass", req->pass);
    agent_json_string(w, "level", proto_level_name(req->level));
    agent_json_uint(w, "asked_bytes", req->asked_bytes);
    agent_json_uint(w, "freed_bytes", req->freed_bytes);
    if (req->reply_us >= 0)
      agent_json_int(w, "reply_us", req->reply_us);
    else
      agent_json_null(w, "reply_us");
    agent_json_bool(w, "missed", req->missed);
    agent_json_end_object(w);
  }
  agent_json_end_array(w);
  agent_json_end_object(w);
}

/* An optional number: the value, or null. */
static void write_opt_uint(AgentJsonWriter *w, const char *key, bool known, uint64_t v) {
  if (known)
    agent_json_uint(w, key, v);
  else
    agent_json_null(w, key);
}

static void write_opt_int(AgentJsonWriter *w, const char *key, int64_t v) {
  if (v >= 0)
    agent_json_int(w, key, v);
  else
    agent_json_null(w, key);
}

/*
 * "balloon": null when there is no balloon device (or no controller), else
 * {"device", "mode": "kprobe-pmu"|"kprobe-tracefs"|"poll"|"none",
 *  "mode_reason", "config_access": "pci-cfg-window"|"legacy-io"|"none",
 *  "config_access_reason", "deflate_on_oom", "free_page_hint",
 *  "target_bytes" | null (config space unreadable), "actual_bytes" | null,
 *  "free_page_hint_cmd_id" | null, "hint_in_progress",
 *  "state": "idle"|"inflating"|"stalled"|"deflating",
 *  "stalls_seen", "oom_kills", "reliefs", "kprobe_hits", "reads",
 *  "episode": null | {"started_us", "target_bytes", "actual_start_bytes",
 *     "rounds", "soft_rounds", "hard_rounds", "claimed_bytes", "stalls",
 *     "oom_kills", "first_round_us" | null, "converged_us" | null,
 *     "gave_up", "end_reason" | null}}
 * Sizes are the balloon's (what it should hold, what it holds).
 */
static void write_balloon(AgentJsonWriter *w, AgentBalloon *balloon) {
  AgentBalloonStatus st;
  const AgentBalloonReading *r;
  const AgentBalloonEpisode *e;

  if (!balloon) {
    agent_json_null(w, "balloon");
    return;
  }
  agent_balloon_get_status(balloon, &st);
  if (!st.present) {
    agent_json_null(w, "balloon");
    return;
  }
  r = &st.virtio.reading;
  agent_json_begin_object(w, "balloon");
  agent_json_string(w, "device", st.virtio.device);
  agent_json_string(w, "mode", st.virtio.mode);
  agent_json_string(w, "mode_reason", st.virtio.mode_reason ? st.virtio.mode_reason : "");
  agent_json_string(w, "config_access", agent_virtio_access_name(st.virtio.access));
  agent_json_string(w, "config_access_reason",
                    st.virtio.access_reason ? st.virtio.access_reason : "");
  agent_json_bool(w, "deflate_on_oom", st.virtio.deflate_on_oom);
  agent_json_bool(w, "free_page_hint", r->hint_supported);
  write_opt_uint(w, "target_bytes", r->target_known, r->target_bytes);
  write_opt_uint(w, "actual_bytes", r->actual_known, r->actual_bytes);
  write_opt_uint(w, "free_page_hint_cmd_id", r->hint_supported, r->free_page_hint_cmd_id);
  agent_json_bool(w, "hint_in_progress", r->hint_in_progress);
  agent_json_string(w, "state", st.state);
  agent_json_uint(w, "stalls_seen", st.stalls_seen);
  agent_json_uint(w, "oom_kills", st.oom_kills);
  agent_json_uint(w, "reliefs", st.reliefs);
  agent_json_uint(w, "kprobe_hits", st.virtio.kprobe_hits);
  agent_json_uint(w, "reads", st.virtio.reads);
  if (!st.has_episode) {
    agent_json_null(w, "episode");
  } else {
    e = &st.episode;
    agent_json_begin_object(w, "episode");
    agent_json_int(w, "started_us", e->started_us);
    agent_json_uint(w, "target_bytes", e->target_bytes);
    agent_json_uint(w, "actual_start_bytes", e->actual_start_bytes);
    agent_json_uint(w, "rounds", e->rounds);
    agent_json_uint(w, "soft_rounds", e->soft_rounds);
    agent_json_uint(w, "hard_rounds", e->hard_rounds);
    agent_json_uint(w, "claimed_bytes", e->claimed_bytes);
    agent_json_uint(w, "stalls", e->stalls);
    agent_json_uint(w, "oom_kills", e->oom_kills);
    write_opt_int(w, "first_round_us", e->first_round_us);
    write_opt_int(w, "converged_us", e->converged_us);
    agent_json_bool(w, "gave_up", e->gave_up);
    if (e->end_reason)
      agent_json_string(w, "end_reason", e->end_reason);
    else
      agent_json_null(w, "end_reason");
    agent_json_end_object(w);
  }
  agent_json_end_object(w);
}

/*
 * "free_page_hints": null without a balloon controller, else
 * {"mode": "off"|"soft", "percent" (a hint round's share of the estimates;
 *  0 when off), "deadline_ms", "hints_seen" (new command ids), "rounds"
 *  (hint rounds that ended), "round_running", "last_cmd_id" | null,
 *  "last_round_id" | null, "last_claimed_bytes" | null (of the last hint
 *  round that ended)}.
 */
static void write_hints(AgentJsonWriter *w, AgentBalloon *balloon) {
  AgentBalloonStatus st;

  if (!balloon) {
    agent_json_null(w, "free_page_hints");
    return;
  }
  agent_balloon_get_status(balloon, &st);
  agent_json_begin_object(w, "free_page_hints");
  agent_json_string(w, "mode", st.hint_rounds_on ? "soft" : "off");
  agent_json_int(w, "percent", st.hint_pct);
  agent_json_int(w, "deadline_ms", st.hint_deadline_ms);
  agent_json_uint(w, "hints_seen", st.hints_seen);
  agent_json_uint(w, "rounds", st.hint_rounds);
  agent_json_bool(w, "round_running", st.hint_round_running);
  write_opt_uint(w, "last_cmd_id", st.has_hint_round, st.last_hint_cmd_id);
  write_opt_uint(w, "last_round_id", st.has_hint_round, st.last_hint_round_id);
  write_opt_uint(w, "last_claimed_bytes", st.has_hint_round, st.last_hint_claimed_bytes);
  agent_json_end_object(w);
}

/* "sources": [{"name", "active", "mode", "reason", "refused"}], in the order added. */
static void write_sources(AgentJsonWriter *w, AgentBalloon *balloon) {
  const GPtrArray *sources = balloon ? agent_balloon_sources(balloon) : NULL;

  agent_json_begin_array(w, "sources");
  for (guint i = 0; sources && i < sources->len; i++) {
    AgentSourceStatus st;

    agent_source_get_status(g_ptr_array_index(sources, i), &st);
    agent_json_begin_object(w, NULL);
    agent_json_string(w, "name", st.name);
    agent_json_bool(w, "active", st.active);
    agent_json_string(w, "mode", st.mode);
    agent_json_string(w, "reason", st.reason);
    agent_json_uint(w, "refused", st.refused);
    agent_json_end_object(w);
  }
  agent_json_end_array(w);
}

/* "privileges": {"capabilities": ["CAP_IPC_LOCK", ...] (effective, after
 * the drop), "no_new_privs", "dropped", "cap_eff", "cap_eff_at_start" (as
 * in /proc/PID/status: 16 hex digits), "securebits" | null, "reason"} |
 * null (main.c set none). */
static void write_privileges(AgentJsonWriter *w, const AgentPrivileges *p) {
  char hex[24];

  if (!p) {
    agent_json_null(w, "privileges");
    return;
  }
  agent_json_begin_object(w, "privileges");
  agent_json_begin_array(w, "capabilities");
  for (unsigned cap = 0; cap <= AGENT_PRIVILEGES_CAP_MAX; cap++) {
    const char *name = agent_privileges_cap_name(cap);

    if (!(p->effective & (UINT64_C(1) << cap)))
      continue;
    if (name) {
      agent_json_string(w, NULL, name);
    } else {
      g_snprintf(hex, sizeof(hex), "cap_%u", cap);
      agent_json_string(w, NULL, hex);
    }
  }
  agent_json_end_array(w);
  agent_json_bool(w, "no_new_privs", p->no_new_privs);
  agent_json_bool(w, "dropped", p->dropped);
  g_snprintf(hex, sizeof(hex), "%016" PRIx64, p->effective);
  agent_json_string(w, "cap_eff", hex);
  g_snprintf(hex, sizeof(hex), "%016" PRIx64, p->effective_at_start);
  agent_json_string(w, "cap_eff_at_start", hex);
  if (p->securebits >= 0)
    agent_json_int(w, "securebits", p->securebits);
  else
    agent_json_null(w, "securebits");
  agent_json_string(w, "reason", p->reason);
  agent_json_end_object(w);
}

static void write_shrinker(AgentJsonWriter *w, AgentCommands *self, const AgentShrinker *s) {
  agent_json_begin_object(w, NULL);
  agent_json_int(w, "id", s->id);
  agent_json_string(w, "name", s->name);
  agent_json_int(w, "priority", s->priority);
  if (s->has_estimate)
    agent_json_uint(w, "estimate_bytes", s->estimate_bytes);
  else
    agent_json_null(w, "estimate_bytes");
  agent_json_uint(w, "asked", s->asked);
  agent_json_uint(w, "asked_bytes", s->asked_bytes);
  agent_json_uint(w, "freed_bytes", s->freed_bytes);
  agent_json_uint(w, "misses", s->misses);
  agent_json_int(w, "consecutive_misses", s->consecutive_misses);
  agent_json_bool(w, "skipped_in_soft", agent_round_skips_in_soft(self->rounds, s));
  if (s->last_reply_us)
    agent_json_int(w, "last_reply_us", s->last_reply_us);
  else
    agent_json_null(w, "last_reply_us");
  agent_json_end_object(w);
}

/*
 * The status object, as member @key:
 * {"version", "pid", "uptime_ms",
 *  "memory": {"mem_total_bytes", "mem_available_bytes", "mem_free_bytes"} | null,
 *  "clients": [{"pid", "uid", "name", "rss_bytes", "trust_percent",
 *     "shrinkers": [{"id", "name", "priority",
 *     "estimate_bytes" | null, "asked", "asked_bytes", "freed_bytes", "misses",
 *     "consecutive_misses", "skipped_in_soft", "last_reply_us" | null}]}],
 *  "rounds": [report, ... newest last],
 *  "totals": {"rounds", "claimed_bytes", "verified_bytes", "measured_bytes"},
 *  "balloon": see write_balloon() | null,
 *  "free_page_hints": see write_hints() | null,
 *  "sources": [{"name", "active", "mode", "reason", "refused"}],
 *  "privileges": see write_privileges() | null,
 *  "summary": {"clients", "shrinkers", "shown", "offset", "truncated"}}
 * Clients without shrinkers (shrinkctl itself, say) are left out; with
 * @only_uid >= 0, so are clients and round requests of other uids. The
 * reply stays bounded whatever registered: only the shrinkers from @offset
 * on, at most @limit of them, are listed (a client none of whose
 * shrinkers is on the page is left out), and "summary" says how many
 * there are.
 */
static void write_status(AgentJsonWriter *w, const char *key, AgentCommands *self, gint64 only_uid,
                         guint64 offset, guint64 limit) {
  uint64_t n_rounds, claimed, verified;
  int64_t measured;
  guint64 seen = 0, shown = 0, n_clients = 0;

  agent_json_begin_object(w, key);
  agent_json_string(w, "version", SHRINKD_VERSION);
  agent_json_int(w, "pid", getpid());
  agent_json_int(w, "uptime_ms", (g_get_monotonic_time() - self->start_mono) / 1000);
  write_memory(w, self->procfs);

  agent_json_begin_array(w, "clients");
  for (const GList *c = agent_registry_clients(self->registry)->head; c; c = c->next) {
    const AgentClient *client = c->data;

    if (!client->shrinkers.head)
      continue;
    guint64 n = g_queue_get_length((GQueue *)&client->shrinkers);
    guint64 skip;
    const GList *s;

    if (only_uid >= 0 && (gint64)client->uid != only_uid)
      continue;
    n_clients++;
    skip = seen >= offset ? 0 : MIN(offset - seen, n);
    seen += n;
    if (skip == n || shown >= limit)
      continue;
    agent_json_begin_object(w, NULL);
    agent_json_int(w, "pid", client->pid);
    agent_json_int(w, "uid", client->uid);
    agent_json_string(w, "name", client->name);
    agent_json_uint(w, "rss_bytes", client->rss_bytes);
    agent_json_int(w, "trust_percent", agent_client_trust(client) * 100 / AGENT_CLIENT_TRUST_ONE);
    agent_json_begin_array(w, "shrinkers");
    s = client->shrinkers.head;
    for (guint64 i = 0; i < skip; i++)
      s = s->next;
    for (; s && shown < limit; s = s->next, shown++)
      write_shrinker(w, self, s->data);
    agent_json_end_array(w);
    agent_json_end_object(w);
  }
  agent_json_end_array(w);
  agent_json_begin_object(w, "summary");
  agent_json_uint(w, "clients", n_clients);
  agent_json_uint(w, "shrinkers", seen);
  agent_json_uint(w, "shown", shown);
  agent_json_uint(w, "offset", offset);
  agent_json_bool(w, "truncated", shown < seen);
  agent_json_end_object(w);

  agent_json_begin_array(w, "rounds");
  for (const GList *l = agent_round_history(self->rounds)->head; l; l = l->next)
    write_report(w, NULL, l->data, only_uid);
  agent_json_end_array(w);

  agent_round_totals(self->rounds, &n_rounds, &claimed, &verified, &measured);
  agent_json_begin_object(w, "totals");
  agent_json_uint(w, "rounds", n_rounds);
  agent_json_uint(w, "claimed_bytes", claimed);
  agent_json_uint(w, "verified_bytes", verified);
  agent_json_int(w, "measured_bytes", measured);
  agent_json_end_object(w);
  write_balloon(w, self->balloon);
  write_hints(w, self->balloon);
  write_sources(w, self->balloon);
  write_privileges(w, self->privileges);
  agent_json_end_object(w);
}

/* ---- commands ---- */

static gboolean caller_is_privileged(const AgentCaller *caller) {
  return caller->kind == AGENT_CALLER_HOST || caller->uid == 0;
}

/* Reads an integer member; FALSE with a reason in *@why if it is not one. */
static gboolean get_int_arg(const AgentJsonValue *args, const char *name, gint64 min, gint64 max,
                            gint64 *out, char **why) {
  const AgentJsonValue *n = agent_json_reader_member(args, name);

  if (!n || agent_json_reader_type(n) != AGENT_JSON_INT) {
    *why = g_strdup_printf("'%s' must be an integer", name);
    return FALSE;
  }
  *out = agent_json_reader_get_int(n);
  if (*out < min || *out > max) {
    *why = g_strdup_printf("'%s' must be within %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT, name, min,
                           max);
    return FALSE;
  }
  return TRUE;
}

/* @len bytes of a request's string, for a message: a NUL character
 * (written "\u0000") shows as such rather than cutting the text short. */
static char *printable(const char *s, gsize len) {
  GString *out = g_string_sized_new(len);

  for (gsize i = 0; i < len; i++) {
    if (s[i])
      g_string_append_c(out, s[i]);
    else
      g_string_append(out, "\\u0000");
  }
  return g_string_free(out, FALSE);
}

/* Reads a string member as a C string: a string with a NUL character in
 * it is none of the words an argument takes, and is refused here rather
 * than compared cut short. FALSE with a reason in *@why. */
static gboolean get_string_arg(const AgentJsonValue *args, const char *name, const char **out,
                               char **why) {
  const AgentJsonValue *n = agent_json_reader_member(args, name);
  gsize len;

  if (!n || agent_json_reader_type(n) != AGENT_JSON_STRING) {
    *why = g_strdup_printf("'%s' must be a string", name);
    return FALSE;
  }
  *out = agent_json_reader_get_string(n, &len);
  if (strlen(*out) != len) {
    *why = g_strdup_printf("'%s' must not contain a NUL character", name);
    return FALSE;
  }
  return TRUE;
}

/* Refuses any member of @args (an object, or NULL) not in @known; the
 * first in the request's order is named. */
static gboolean check_known_args(const AgentJsonValue *args, const char *const *known, char **why) {
  AgentJsonIter iter;
  const AgentJsonValue *name;

  agent_json_reader_iter_init(&iter, args);
  while (agent_json_reader_iter_next(&iter, &name, NULL)) {
    gsize len;
    const char *s = agent_json_reader_get_string(name, &len);

    if (strlen(s) != len || !g_strv_contains(known, s)) {
      g_autofree char *shown = printable(s, len);

      *why = g_strdup_printf("unknown argument '%s'", shown);
      return FALSE;
    }
  }
  return TRUE;
}

/* The class of a refused round request. The host's protocol has "Busy" for
 * a full queue; local callers have always seen GenericError there. */
static const char *round_error_class(const GError *error, const AgentCaller *caller) {
  if (caller->kind == AGENT_CALLER_HOST && g_error_matches(error, AGENT_ERROR, AGENT_ERROR_BUSY))
    return "Busy";
  return "GenericError";
}

/* The round runner calls done, then its destroy notify, on the same user
 * data: the Call sits in a slot that done empties. */
static void shrink_done(const AgentRoundReport *report, gpointer user_data) {
  Call *call = g_steal_pointer((Call **)user_data);
  GString *out = g_string_sized_new(1024);
  AgentJsonWriter w;

  reply_begin(&w, out);
  write_report(&w, "return", report, call->only_uid);
  call_finish(call, &w, out);
}

/* A round that never ended (the agent is stopping): only the destroy. */
static void shrink_slot_free(gpointer data) {
  Call **slot = data;

  if (*slot)
    call_free(*slot);
  g_free(slot);
}

/* Fills @params from @args; FALSE with a reason in *@why. "reason" is an
 * argument only if @with_reason (the host's rounds are always "host"). */
static gboolean shrink_params(const AgentJsonValue *args, gboolean with_reason,
                              AgentRoundParams *params, char **why) {
  static const char *const known[] = {"target_bytes", "level", "deadline_ms", "reason", NULL};
  static const char *const known_host[] = {"target_bytes", "level", "deadline_ms", NULL};
  gint64 v;
  const char *s;

  if (!agent_json_reader_member(args, "target_bytes")) {
    *why = g_strdup("'target_bytes' is required");
    return FALSE;
  }
  if (!check_known_args(args, with_reason ? known : known_host, why) ||
      !get_int_arg(args, "target_bytes", 0, G_MAXINT64, &v, why))
    return FALSE;
  params->target_bytes = (uint64_t)v;
  if (agent_json_reader_member(args, "level")) {
    if (!get_string_arg(args, "level", &s, why))
      return FALSE;
    if (strcmp(s, "soft") == 0) {
      params->level = PROTO_LEVEL_SOFT;
    } else if (strcmp(s, "hard") == 0) {
      params->level = PROTO_LEVEL_HARD;
    } else {
      *why = g_strdup("'level' must be \"soft\" or \"hard\"");
      return FALSE;
    }
  }
  if (agent_json_reader_member(args, "deadline_ms")) {
    if (!get_int_arg(args, "deadline_ms", 1, PROTO_DEADLINE_MAX_MS, &v, why))
      return FALSE;
    params->deadline_ms = (uint32_t)v;
  }
  if (agent_json_reader_member(args, "reason")) {
    unsigned r;

    if (!get_string_arg(args, "reason", &s, why))
      return FALSE;
    for (r = 0; r <= PROTO_REASON_LAST; r++)
      if (strcmp(s, proto_reason_name(r)) == 0)
        break;
    if (r > PROTO_REASON_LAST) {
      *why = g_strdup_printf("unknown reason \"%s\"", s);
      return FALSE;
    }
    params->reason = (proto_reason)r;
  }
  return TRUE;
}

static void cmd_shrink(AgentCommands *self, const AgentJsonValue *args, const AgentCaller *caller,
                       Call *call) {
  g_autofree char *why = NULL;
  g_autoptr(GError) error = NULL;
  AgentRoundParams params = {
      .level = PROTO_LEVEL_SOFT,
      .deadline_ms = self->default_deadline_ms,
      .reason = PROTO_REASON_MANUAL,
  };
  Call **slot;

  if (!caller_is_privileged(caller)) {
    call_error(call, "PermissionDenied", "only root may run a shrink round (uid %u)",
               (unsigned)caller->uid);
    return;
  }
  if (!shrink_params(args, caller->kind == AGENT_CALLER_LOCAL, &params, &why)) {
    call_error(call, "InvalidParameter", "%s", why);
    return;
  }
  if (caller->kind == AGENT_CALLER_HOST)
    params.reason = PROTO_REASON_HOST;
  slot = g_new(Call *, 1);
  *slot = call;
  if (!agent_round_request(self->rounds, &params, shrink_done, slot, shrink_slot_free, &error)) {
    g_free(slot);
    call_error(call, round_error_class(error, caller), "%s", error->message);
  }
}

/* For commands that take no arguments: answers InvalidParameter and returns
 * FALSE if @args has any member, else returns TRUE. */
static gboolean no_args(const AgentJsonValue *args, Call *call) {
  static const char *const known[] = {NULL};
  g_autofree char *why = NULL;

  if (check_known_args(args, known, &why))
    return TRUE;
  call_error(call, "InvalidParameter", "%s", why);
  return FALSE;
}

/* status [{"offset": N, "limit": N}]: the page of shrinkers to list. */
static void cmd_status(AgentCommands *self, const AgentJsonValue *args, const AgentCaller *caller,
                       Call *call) {
  static const char *const known[] = {"offset", "limit", NULL};
  g_autofree char *why = NULL;
  gint64 offset = 0, limit = AGENT_STATUS_LIMIT_DEFAULT;
  GString *out;
  AgentJsonWriter w;

  if (!check_known_args(args, known, &why) ||
      (agent_json_reader_member(args, "offset") &&
       !get_int_arg(args, "offset", 0, G_MAXINT64, &offset, &why)) ||
      (agent_json_reader_member(args, "limit") &&
       !get_int_arg(args, "limit", 0, AGENT_STATUS_LIMIT_MAX, &limit, &why))) {
    call_error(call, "InvalidParameter", "%s", why);
    return;
  }
  out = g_string_sized_new(4096);
  reply_begin(&w, out);
  write_status(&w, "return", self, caller_is_privileged(caller) ? -1 : (gint64)caller->uid,
               (guint64)offset, (guint64)limit);
  call_finish(call, &w, out);
}

/* ---- the host's commands (docs/channel-protocol.md) ---- */

/* guest-sync and guest-sync-delimited: {"id": int} -> the id. */
static void sync_common(const AgentJsonValue *args, Call *call, gboolean delimited) {
  static const char *const known[] = {"id", NULL};
  g_autofree char *why = NULL;
  GString *out;
  AgentJsonWriter w;
  gint64 id;

  if (!agent_json_reader_member(args, "id")) {
    call_error(call, "InvalidParameter", "'id' is required");
    return;
  }
  if (!check_known_args(args, known, &why) ||
      !get_int_arg(args, "id", G_MININT64, G_MAXINT64, &id, &why)) {
    call_error(call, "InvalidParameter", "%s", why);
    return;
  }
  out = g_string_sized_new(64);
  /* The host discards everything up to this byte: the answer that follows
   * is the first it reads after resynchronising. */
  if (delimited)
    g_string_append_c(out, (char)AGENT_COMMANDS_SYNC_BYTE);
  reply_begin(&w, out);
  agent_json_int(&w, "return", id);
  call_finish(call, &w, out);
}

static void cmd_guest_sync_delimited(AgentCommands *self, const AgentJsonValue *args,
                                     const AgentCaller *caller, Call *call) {
  sync_common(args, call, TRUE);
}

static void cmd_guest_sync(AgentCommands *self, const AgentJsonValue *args,
                           const AgentCaller *caller, Call *call) {
  sync_common(args, call, FALSE);
}

/* Replies {"return": {}} if @args has no member, else InvalidParameter. */
static void reply_empty(const AgentJsonValue *args, Call *call) {
  GString *out;
  AgentJsonWriter w;

  if (!no_args(args, call))
    return;
  out = g_string_sized_new(32);
  reply_begin(&w, out);
  agent_json_begin_object(&w, "return");
  agent_json_end_object(&w);
  call_finish(call, &w, out);
}

static void cmd_guest_ping(AgentCommands *self, const AgentJsonValue *args,
                           const AgentCaller *caller, Call *call) {
  reply_empty(args, call);
}

static void cmd_guest_info(AgentCommands *self, const AgentJsonValue *args,
                           const AgentCaller *caller, Call *call);

/* ---- shrinkd-prepare ---- */

/*
 * One prepare: a soft round for what is needed, then, if a shortfall
 * remains and time is left, a hard round for it. Each round request holds
 * a reference (the runner calls done, then destroy); the answer goes out
 * when the last round ends, or never if the agent stops first (then only
 * the call's destroy runs).
 */
typedef struct {
  int refs;
  AgentCommands *self;
  Call *call;                  /* NULL once answered */
  uint64_t current_size_bytes; /* MemTotal, less the balloon with deflate-on-oom */
  uint64_t new_size_bytes;
  uint64_t free_bytes; /* MemAvailable at the start */
  uint64_t reserve_bytes;
  uint64_t needed_bytes;
  uint64_t freed_bytes;     /* claimed over the rounds */
  uint64_t shortfall_bytes; /* still needed after the last round */
  uint32_t deadline_ms;
  gint64 start_mono;
  GPtrArray *reports; /* the rounds' reports as JSON text */
  gboolean hard_asked;
} Prepare;

static Prepare *prepare_ref(Prepare *p) {
  p->refs++;
  return p;
}

static void prepare_unref(gpointer data) {
  Prepare *p = data;

  if (--p->refs > 0)
    return;
  if (p->call)
    call_free(p->call);
  g_ptr_array_unref(p->reports);
  g_free(p);
}

/* What free memory beyond the reserve cannot cover of shrinking from
 * current_size_bytes to new_size_bytes, with @available bytes free. */
static uint64_t prepare_shortfall(const Prepare *p, uint64_t available) {
  uint64_t drop =
      p->current_size_bytes > p->new_size_bytes ? p->current_size_bytes - p->new_size_bytes : 0;
  uint64_t beyond = available > p->reserve_bytes ? available - p->reserve_bytes : 0;

  return drop > beyond ? drop - beyond : 0;
}

/*
 * {"return": {"current_size_bytes", "new_size_bytes", "needed_bytes",
 *   "free_bytes", "reserve_bytes", "freed_bytes", "shortfall_bytes", "ready",
 *   "deadline_ms", "duration_us", "rounds": [report, ...]}}
 */
static void prepare_answer(Prepare *p) {
  GString *out = g_string_sized_new(1024);
  AgentJsonWriter w;
  Call *call = g_steal_pointer(&p->call);

  reply_begin(&w, out);
  agent_json_begin_object(&w, "return");
  agent_json_uint(&w, "current_size_bytes", p->current_size_bytes);
  agent_json_uint(&w, "new_size_bytes", p->new_size_bytes);
  agent_json_uint(&w, "needed_bytes", p->needed_bytes);
  agent_json_uint(&w, "free_bytes", p->free_bytes);
  agent_json_uint(&w, "reserve_bytes", p->reserve_bytes);
  agent_json_uint(&w, "freed_bytes", p->freed_bytes);
  agent_json_uint(&w, "shortfall_bytes", p->shortfall_bytes);
  agent_json_bool(&w, "ready", p->shortfall_bytes == 0);
  agent_json_int(&w, "deadline_ms", p->deadline_ms);
  agent_json_int(&w, "duration_us", g_get_monotonic_time() - p->start_mono);
  agent_json_begin_array(&w, "rounds");
  /* The reports were written when their rounds ended (a report lives only
   * during its done call); they go in as they are. */
  for (guint i = 0; i < p->reports->len; i++)
    agent_json_raw(&w, NULL, g_ptr_array_index(p->reports, i));
  agent_json_end_array(&w);
  agent_json_end_object(&w);
  call_finish(call, &w, out);
}

static void prepare_round_done(const AgentRoundReport *report, gpointer user_data);

/* Asks for a round of @level for @target_bytes within @deadline_ms.
 * Returns FALSE with @error if the runner refuses it. */
static gboolean prepare_request(Prepare *p, proto_level level, uint64_t target_bytes,
                                uint32_t deadline_ms, GError **error) {
  AgentRoundParams params = {
      .target_bytes = target_bytes,
      .level = level,
      .deadline_ms = deadline_ms,
      .reason = PROTO_REASON_HOST,
  };

  if (!agent_round_request(p->self->rounds, &params, prepare_round_done, prepare_ref(p),
                           prepare_unref, error)) {
    p->refs--; /* the runner took nothing */
    return FALSE;
  }
  return TRUE;
}

static void prepare_round_done(const AgentRoundReport *report, gpointer user_data) {
  Prepare *p = user_data;
  GString *text = g_string_sized_new(512);
  g_autoptr(GError) error = NULL;
  AgentJsonWriter w;
  AgentMeminfo mi;
  gint64 left_ms;

  agent_json_init(&w, text);
  write_report(&w, NULL, report, -1);
  g_ptr_array_add(p->reports, g_string_free(text, FALSE));
  p->freed_bytes = agent_sat_add(p->freed_bytes, report->verified_bytes);
  if (!p->call)
    return;

  /* What the balloon will find: MemAvailable now, as the balloon
   * controller judges a shortfall; only what the applications claimed if
   * it cannot be read. */
  if (agent_procfs_read_meminfo(p->self->procfs, &mi, NULL))
    p->shortfall_bytes = prepare_shortfall(p, mi.mem_available_bytes);
  else
    p->shortfall_bytes = p->needed_bytes > p->freed_bytes ? p->needed_bytes - p->freed_bytes : 0;

  left_ms = (gint64)p->deadline_ms - (g_get_monotonic_time() - p->start_mono) / 1000;
  if (p->shortfall_bytes > 0 && !p->hard_asked && left_ms >= 1) {
    p->hard_asked = TRUE;
    if (prepare_request(p, PROTO_LEVEL_HARD, p->shortfall_bytes, (uint32_t)left_ms, &error))
      return;
    g_debug("host prepare: no hard round: %s", error->message);
  }
  prepare_answer(p);
}

static void cmd_prepare(AgentCommands *self, const AgentJsonValue *args, const AgentCaller *caller,
                        Call *call) {
  static const char *const known[] = {"new_size_bytes", "deadline_ms", NULL};
  g_autofree char *why = NULL;
  g_autoptr(GError) error = NULL;
  AgentBalloonStatus bst;
  AgentMeminfo mi;
  gint64 new_size, deadline = AGENT_COMMANDS_PREPARE_DEADLINE_DEFAULT;
  Prepare *p;

  if (!agent_json_reader_member(args, "new_size_bytes")) {
    call_error(call, "InvalidParameter", "'new_size_bytes' is required");
    return;
  }
  if (!check_known_args(args, known, &why) ||
      !get_int_arg(args, "new_size_bytes", 0, G_MAXINT64, &new_size, &why) ||
      (agent_json_reader_member(args, "deadline_ms") &&
       !get_int_arg(args, "deadline_ms", 1, PROTO_DEADLINE_MAX_MS, &deadline, &why))) {
    call_error(call, "InvalidParameter", "%s", why);
    return;
  }
  if (!agent_procfs_read_meminfo(self->procfs, &mi, &error)) {
    call_error(call, "GenericError", "cannot read the guest's memory figures: %s", error->message);
    return;
  }

  p = g_new0(Prepare, 1);
  p->refs = 1;
  p->self = self;
  p->call = call;
  p->start_mono = g_get_monotonic_time();
  p->reports = g_ptr_array_new_with_free_func(g_free);
  p->new_size_bytes = (uint64_t)new_size;
  p->deadline_ms = (uint32_t)deadline;
  p->reserve_bytes = self->prepare_reserve_bytes;
  p->free_bytes = mi.mem_available_bytes;
  /* With deflate-on-oom the balloon's pages stay in MemTotal: the size the
   * host sees is MemTotal less what the balloon holds. */
  p->current_size_bytes = mi.mem_total_bytes;
  if (self->balloon) {
    agent_balloon_get_status(self->balloon, &bst);
    if (bst.present && bst.virtio.deflate_on_oom && bst.virtio.reading.actual_known)
      p->current_size_bytes = mi.mem_total_bytes > bst.virtio.reading.actual_bytes
                                  ? mi.mem_total_bytes - bst.virtio.reading.actual_bytes
                                  : 0;
  }
  p->needed_bytes = prepare_shortfall(p, mi.mem_available_bytes);
  p->shortfall_bytes = p->needed_bytes;
  g_debug("host prepare: %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT " bytes: %" G_GUINT64_FORMAT
          " needed beyond free memory",
          p->current_size_bytes, p->new_size_bytes, p->needed_bytes);

  if (p->needed_bytes > 0) {
    /* The soft round gets half the deadline, so that a hard one has time
     * if it is not enough. */
    if (prepare_request(p, PROTO_LEVEL_SOFT, p->needed_bytes, MAX(1u, p->deadline_ms / 2),
                        &error)) {
      prepare_unref(p);
      return;
    }
    call = g_steal_pointer(&p->call);
    prepare_unref(p);
    call_error(call, round_error_class(error, caller), "%s", error->message);
    return;
  }
  prepare_answer(p);
  prepare_unref(p);
}

/* ---- shrinkd-prepare-migration ---- */

/* The round runner calls done, then destroy, on this: done answers and
 * empties the slot; destroy frees what is left. */
typedef struct {
  Call *call;
} Migration;

static void migration_free(gpointer data) {
  Migration *m = data;

  if (m->call)
    call_free(m->call);
  g_free(m);
}

/*
 * {"return": {"freed_bytes" (claimed), "measured_bytes" | null,
 *   "mem_available_before_bytes" | null, "mem_available_after_bytes" | null,
 *   "target_bytes", "ready": true, "rounds": [report]}}: the measured
 * figures are the round's (null when MemAvailable could not be read).
 */
static void migration_done(const AgentRoundReport *report, gpointer user_data) {
  Migration *m = user_data;
  Call *call = g_steal_pointer(&m->call);
  GString *out = g_string_sized_new(1024);
  AgentJsonWriter w;

  reply_begin(&w, out);
  agent_json_begin_object(&w, "return");
  agent_json_uint(&w, "freed_bytes", report->verified_bytes);
  if (report->measured) {
    agent_json_int(&w, "measured_bytes", report->measured_bytes);
    agent_json_uint(&w, "mem_available_before_bytes", report->mem_available_before_bytes);
    agent_json_uint(&w, "mem_available_after_bytes", report->mem_available_after_bytes);
  } else {
    agent_json_null(&w, "measured_bytes");
    agent_json_null(&w, "mem_available_before_bytes");
    agent_json_null(&w, "mem_available_after_bytes");
  }
  agent_json_uint(&w, "target_bytes", report->target_bytes);
  /* A soft round is all a migration asks: whatever it freed, the guest
   * is ready. */
  agent_json_bool(&w, "ready", TRUE);
  agent_json_begin_array(&w, "rounds");
  write_report(&w, NULL, report, -1);
  agent_json_end_array(&w);
  agent_json_end_object(&w);
  call_finish(call, &w, out);
}

static void cmd_prepare_migration(AgentCommands *self, const AgentJsonValue *args,
                                  const AgentCaller *caller, Call *call) {
  static const char *const known[] = {"deadline_ms", "fraction_pct", NULL};
  g_autofree char *why = NULL;
  g_autoptr(GError) error = NULL;
  gint64 deadline = AGENT_COMMANDS_MIGRATION_DEADLINE_DEFAULT, pct = 100;
  uint64_t sum;
  bool known_estimates;
  AgentRoundParams params = {.level = PROTO_LEVEL_SOFT, .reason = PROTO_REASON_MIGRATION};
  Migration *m;

  if (!check_known_args(args, known, &why) ||
      (agent_json_reader_member(args, "deadline_ms") &&
       !get_int_arg(args, "deadline_ms", 1, PROTO_DEADLINE_MAX_MS, &deadline, &why)) ||
      (agent_json_reader_member(args, "fraction_pct") &&
       !get_int_arg(args, "fraction_pct", 1, 100, &pct, &why))) {
    call_error(call, "InvalidParameter", "%s", why);
    return;
  }
  /* Sized as the balloon controller sizes a round for a free page hint. */
  known_estimates = agent_balloon_sum_estimates(self->registry, &sum);
  params.target_bytes = agent_balloon_migration_bytes(known_estimates, sum,
                                                      self->prepare_reserve_bytes, (uint32_t)pct);
  params.deadline_ms = (uint32_t)deadline;
  g_debug("host prepare-migration: soft round for %" G_GUINT64_FORMAT " bytes (%" G_GINT64_FORMAT
          "%% of %s), %" G_GINT64_FORMAT " ms",
          params.target_bytes, pct, known_estimates ? "the estimates" : "the fallback size",
          deadline);
  m = g_new0(Migration, 1);
  m->call = call;
  if (!agent_round_request(self->rounds, &params, migration_done, m, migration_free, &error)) {
    call = g_steal_pointer(&m->call);
    g_free(m);
    call_error(call, round_error_class(error, caller), "%s", error->message);
  }
}

/* ---- the table ---- */

#define FOR_LOCAL (1u << AGENT_CALLER_LOCAL)
#define FOR_HOST  (1u << AGENT_CALLER_HOST)
#define UNLISTED  (1u << 8) /* not in guest-info */

typedef void (*CommandFunc)(AgentCommands *self, const AgentJsonValue *args,
                            const AgentCaller *caller, Call *call);

/* The commands and who may call them: the host channel's protocol
 * commands are the host's only (a local caller is told they are not
 * found); the host may also use the local names, which guest-info does not
 * list (over the channel, "shrink" is "shrinkd-shrink"). */
static const struct {
  const char *name;
  CommandFunc func;
  unsigned callers;
} commands[] = {
    {"status", cmd_status, FOR_LOCAL | FOR_HOST | UNLISTED},
    {"shrink", cmd_shrink, FOR_LOCAL | FOR_HOST | UNLISTED},
    {"guest-sync-delimited", cmd_guest_sync_delimited, FOR_HOST},
    {"guest-sync", cmd_guest_sync, FOR_HOST},
    {"guest-ping", cmd_guest_ping, FOR_HOST},
    {"guest-info", cmd_guest_info, FOR_HOST},
    {"shrinkd-status", cmd_status, FOR_HOST},
    {"shrinkd-shrink", cmd_shrink, FOR_HOST},
    {"shrinkd-prepare", cmd_prepare, FOR_HOST},
    {"shrinkd-prepare-migration", cmd_prepare_migration, FOR_HOST},
};

/* {"return": {"version", "supported_commands": [{"name", "enabled",
 * "success-response"}]}}: the host's commands. */
static void cmd_guest_info(AgentCommands *self, const AgentJsonValue *args,
                           const AgentCaller *caller, Call *call) {
  GString *out;
  AgentJsonWriter w;

  if (!no_args(args, call))
    return;
  out = g_string_sized_new(512);
  reply_begin(&w, out);
  agent_json_begin_object(&w, "return");
  agent_json_string(&w, "version", SHRINKD_VERSION);
  agent_json_begin_array(&w, "supported_commands");
  for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
    if (!(commands[i].callers & FOR_HOST) || (commands[i].callers & UNLISTED))
      continue;
    agent_json_begin_object(&w, NULL);
    agent_json_string(&w, "name", commands[i].name);
    agent_json_bool(&w, "enabled", TRUE);
    agent_json_bool(&w, "success-response", TRUE);
    agent_json_end_object(&w);
  }
  agent_json_end_array(&w);
  agent_json_end_object(&w);
  call_finish(call, &w, out);
}

void agent_commands_dispatch(AgentCommands *self, const AgentJsonValue *request,
                             const AgentCaller *caller, AgentCommandReplyFunc reply,
                             gpointer user_data, GDestroyNotify destroy) {
  static const char *const top_known[] = {"execute", "arguments", "id", NULL};
  Call *call = g_new0(Call, 1);
  g_autofree char *why = NULL;
  const AgentJsonValue *id, *exec, *args;
  const char *name;
  gsize name_len;
  g_autofree char *shown = NULL;

  call->reply = reply;
  call->user_data = user_data;
  call->destroy = destroy;
  call->only_uid = -1;

  if (agent_json_reader_type(request) != AGENT_JSON_OBJECT) {
    call_error(call, "GenericError", "a request must be an object");
    return;
  }
  id = agent_json_reader_member(request, "id");
  if (id)
    call->id = agent_json_to_text(id); /* kept past its request */
  if (!check_known_args(request, top_known, &why)) {
    call_error(call, "GenericError", "request: %s", why);
    return;
  }
  exec = agent_json_reader_member(request, "execute");
  name = exec ? agent_json_reader_get_string(exec, &name_len) : NULL;
  if (!name) {
    call_error(call, "GenericError", "a request needs \"execute\": a command name");
    return;
  }
  args = agent_json_reader_member(request, "arguments");
  if (args && agent_json_reader_type(args) != AGENT_JSON_OBJECT) {
    call_error(call, "InvalidParameter", "\"arguments\" must be an object");
    return;
  }
  /* A name with a NUL character in it ("status\u0000x") is no command's:
   * compared whole, not as a C string. */
  for (gsize i = 0, n = strlen(name) == name_len ? G_N_ELEMENTS(commands) : 0; i < n; i++) {
    if ((commands[i].callers & (1u << caller->kind)) && strcmp(commands[i].name, name) == 0) {
      commands[i].func(self, args, caller, call);
      return;
    }
  }
  shown = printable(name, name_len);
  call_error(call, "CommandNotFound", "the command %s has not been found", shown);
}

void agent_commands_handle_text(AgentCommands *self, const char *text, gsize len,
                                const AgentCaller *caller, AgentCommandReplyFunc reply,
                                gpointer user_data, GDestroyNotify destroy) {
  g_autoptr(GError) error = NULL;
  g_autoptr(AgentJsonDoc) request = agent_json_reader_parse(text, len, &error);

  if (!request) {
    gsize n;
    char *reply_text = agent_commands_error_text("GenericError", NULL, &n, "%s", error->message);

    reply(reply_text, n, user_data);
    if (destroy)
      destroy(user_data);
    return;
  }
  agent_commands_dispatch(self, agent_json_reader_root(request), caller, reply, user_data, destroy);
}

static void discard_reply(char *text, gsize len, gpointer user_data) {
  g_free(text);
}

void agent_commands_warm_up(AgentCommands *self) {
  static const char request[] = "{\"execute\":\"status\"}";
  AgentCaller root = {AGENT_CALLER_LOCAL, 0, 0};

  agent_commands_handle_text(self, request, sizeof(request) - 1, &root, discard_reply, NULL, NULL);
}
