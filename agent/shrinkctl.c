/* SPDX-License-Identifier: MIT */
/*
 * shrinkctl: the guest's command line for shrinkd. It speaks the local
 * protocol: HELLO, then one CONTROL with a JSON command, then the
 * CONTROL_REPLY chunks of the answer.
 */
#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "local-proto.h"
#include "units.h"

enum {
  EXIT_OK = 0,          /* done; for shrink: the round freed its target (verified) */
  EXIT_FAILED = 1,      /* the agent refused or failed the command */
  EXIT_USAGE = 2,       /* bad command line */
  EXIT_UNREACHABLE = 3, /* no agent, or it broke the protocol, or timed out */
  EXIT_PERMISSION = 4,  /* the agent said permission denied */
  EXIT_SHORT = 5,       /* shrink: the round ran but freed less than its target */
};

static const char usage_text[] =
    "Usage: shrinkctl [--socket PATH] [--timeout SEC] COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  status [--offset N] [--limit N] [--json]\n"
    "                                          registered shrinkers, their estimates and\n"
    "                                          figures, the last rounds, totals, the\n"
    "                                          balloon, free page hints, the pressure\n"
    "                                          sources and the capabilities shrinkd\n"
    "                                          kept; shrinkers from the Nth\n"
    "                                          (default 0), at most --limit of them\n"
    "                                          (default 1000, at most 10000)\n"
    "  shrink SIZE [--hard] [--deadline MS] [--json]\n"
    "                                          run one round asking the applications to\n"
    "                                          free SIZE (4096, 512K, 64M, 1.5G; binary\n"
    "                                          units), print who was asked for what and\n"
    "                                          freed how much (root only)\n"
    "\n"
    "Options:\n"
    "  --socket PATH    the agent's socket (default " SHRINKD_DEFAULT_SOCKET ")\n"
    "  --timeout SEC    give up waiting for the agent after SEC seconds (default 60;\n"
    "                   a shrink adds its deadline)\n"
    "  --hard           a hard round (a soft phase first, then hard for the rest)\n"
    "  --deadline MS    the round's deadline (default: the agent's)\n"
    "  --json           print the agent's JSON answer\n"
    "  --help, --version\n"
    "\n"
    "Exit status:\n"
    "  0  success (shrink: the round's whole target was freed, as the\n"
    "     processes' RSS confirms where it can be read)\n"
    "  1  the agent refused or failed the command\n"
    "  2  usage error\n"
    "  3  cannot reach the agent (not running?), protocol error or timeout\n"
    "  4  permission denied by the agent\n"
    "  5  shrink: the round ran but freed (verified) less than its target\n";

static int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static int usage_error(const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "shrinkctl: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'shrinkctl --help'.\n");
  return EXIT_USAGE;
}

/* ---- talking to the agent ---- */

typedef struct {
  const char *path;
  int fd;
  int timeout_ms;
  guint8 buf[PROTO_MSG_MAX];
} Link;

/* Waits for a packet (up to the timeout) and decodes it. Returns 0 or an
 * exit code after printing why. */
static int link_recv(Link *l, proto_msg *msg) {
  struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
  proto_error err = PROTO_ERR_NONE;
  int rc;

  for (;;) {
    rc = poll(&pfd, 1, l->timeout_ms);
    if (rc < 0 && errno == EINTR)
      continue;
    break;
  }
  if (rc == 0) {
    fprintf(stderr, "shrinkctl: no answer from %s after %d s\n", l->path, l->timeout_ms / 1000);
    return EXIT_UNREACHABLE;
  }
  rc = proto_recv(l->fd, l->buf, msg, &err);
  if (rc == -ECONNRESET) {
    fprintf(stderr, "shrinkctl: %s closed the connection\n", l->path);
    return EXIT_UNREACHABLE;
  }
  if (rc == -EBADMSG) {
    fprintf(stderr, "shrinkctl: malformed message from the agent: %s\n", proto_error_name(err));
    return EXIT_UNREACHABLE;
  }
  if (rc < 0) {
    fprintf(stderr, "shrinkctl: reading from %s: %s\n", l->path, g_strerror(-rc));
    return EXIT_UNREACHABLE;
  }
  return 0;
}

static int agent_error(const proto_error_msg *e) {
  if (e->code == PROTO_ERR_PERMISSION) {
    fprintf(stderr, "shrinkctl: permission denied: %s\n", e->text);
    return EXIT_PERMISSION;
  }
  fprintf(stderr, "shrinkctl: the agent says: %s (%s)\n", e->text, proto_error_name(e->code));
  return EXIT_UNREACHABLE;
}

static int link_open(Link *l) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  proto_msg msg = {.type = PROTO_MSG_HELLO};
  int rc;

  if (strlen(l->path) >= sizeof(addr.sun_path)) {
    fprintf(stderr, "shrinkctl: socket path %s is too long\n", l->path);
    return EXIT_USAGE;
  }
  strcpy(addr.sun_path, l->path);
  l->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (l->fd < 0 || connect(l->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    int e = errno;

    fprintf(stderr, "shrinkctl: cannot connect to %s: %s%s\n", l->path, g_strerror(e),
            e == ENOENT || e == ECONNREFUSED ? " (is shrinkd running?)" : "");
    return EXIT_UNREACHABLE;
  }
  msg.u.hello.min_version = PROTO_VERSION_MIN;
  msg.u.hello.max_version = PROTO_VERSION;
  msg.u.hello.name = "shrinkctl";
  rc = proto_send(l->fd, &msg, false);
  if (rc < 0) {
    fprintf(stderr, "shrinkctl: cannot talk to %s: %s\n", l->path, g_strerror(-rc));
    return EXIT_UNREACHABLE;
  }
  if ((rc = link_recv(l, &msg)) != 0)
    return rc;
  if (msg.type == PROTO_MSG_ERROR)
    return agent_error(&msg.u.error);
  if (msg.type != PROTO_MSG_WELCOME) {
    fprintf(stderr, "shrinkctl: unexpected %s instead of WELCOME\n", proto_msg_type_name(msg.type));
    return EXIT_UNREACHABLE;
  }
  return 0;
}

/* Sends @request and collects the reply's chunks into *@reply_out. */
static int link_command(Link *l, const char *request, JsonNode **reply_out) {
  g_autoptr(GString) text = g_string_new(NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) error = NULL;
  proto_msg msg = {.type = PROTO_MSG_CONTROL};
  int rc;

  msg.u.control.request_id = 1;
  msg.u.control.text = request;
  msg.u.control.text_len = (uint32_t)strlen(request);
  rc = proto_send(l->fd, &msg, false);
  if (rc < 0) {
    fprintf(stderr, "shrinkctl: cannot send the command: %s\n", g_strerror(-rc));
    return EXIT_UNREACHABLE;
  }
  for (;;) {
    if ((rc = link_recv(l, &msg)) != 0)
      return rc;
    if (msg.type == PROTO_MSG_ERROR)
      return agent_error(&msg.u.error);
    if (msg.type != PROTO_MSG_CONTROL_REPLY || msg.u.control.request_id != 1)
      continue; /* nothing else is meant for us; be lenient */
    g_string_append_len(text, msg.u.control.text, msg.u.control.text_len);
    if (!(msg.u.control.flags & PROTO_CONTROL_MORE))
      break;
  }
  if (!json_parser_load_from_data(parser, text->str, (gssize)text->len, &error) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
    fprintf(stderr, "shrinkctl: the agent's answer is not a JSON object: %s\n",
            error ? error->message : "wrong type");
    return EXIT_UNREACHABLE;
  }
  *reply_out = json_parser_steal_root(parser);
  return 0;
}

/* Splits {"return": R} / {"error": E}: returns 0 with *@ret, or an exit
 * code after printing the error. */
static int reply_return(JsonNode *reply, JsonObject **ret) {
  JsonObject *top = json_node_get_object(reply);
  JsonObject *err;
  const char *klass, *desc;

  if (json_object_has_member(top, "return") &&
      JSON_NODE_HOLDS_OBJECT(json_object_get_member(top, "return"))) {
    *ret = json_object_get_object_member(top, "return");
    return 0;
  }
  if (!json_object_has_member(top, "error") ||
      !JSON_NODE_HOLDS_OBJECT(json_object_get_member(top, "error"))) {
    fprintf(stderr, "shrinkctl: the agent's answer has neither \"return\" nor \"error\"\n");
    return EXIT_UNREACHABLE;
  }
  err = json_object_get_object_member(top, "error");
  klass = json_object_get_string_member_with_default(err, "class", "GenericError");
  desc = json_object_get_string_member_with_default(err, "desc", "(no description)");
  if (strcmp(klass, "PermissionDenied") == 0) {
    fprintf(stderr, "shrinkctl: permission denied: %s\n", desc);
    return EXIT_PERMISSION;
  }
  fprintf(stderr, "shrinkctl: %s: %s\n", klass, desc);
  return EXIT_FAILED;
}

/* ---- printing ---- */

static gint64 get_int(JsonObject *o, const char *name) {
  return json_object_get_int_member_with_default(o, name, 0);
}

/* An unsigned figure: json-glib reads one above G_MAXINT64 as a double. */
static uint64_t get_uint(JsonObject *o, const char *name) {
  JsonNode *n = json_object_get_member(o, name);

  if (!n || !JSON_NODE_HOLDS_VALUE(n))
    return 0;
  if (json_node_get_value_type(n) == G_TYPE_DOUBLE) {
    double d = json_node_get_double(n);

    return d <= 0 ? 0 : d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
  }
  return (uint64_t)MAX(json_node_get_int(n), 0);
}

static const char *fmt_bytes(gint64 v, char *buf) {
  return agent_format_bytes(v < 0 ? 0 : (uint64_t)v, buf, 32);
}

/* "-1.5 MiB" for a signed measurement. */
static const char *fmt_signed_bytes(gint64 v, char *buf) {
  char tmp[32];

  g_snprintf(buf, 40, "%s%s", v < 0 ? "-" : "",
             agent_format_bytes(v < 0 ? (uint64_t)-v : (uint64_t)v, tmp, sizeof(tmp)));
  return buf;
}

static void print_json(JsonNode *node) {
  g_autoptr(JsonGenerator) gen = json_generator_new();
  g_autofree char *text = NULL;

  json_generator_set_pretty(gen, TRUE);
  json_generator_set_root(gen, node);
  text = json_generator_to_data(gen, NULL);
  printf("%s\n", text);
}

static void print_request(JsonObject *r) {
  char asked[32], freed[32], when[32];
  JsonNode *reply_us = json_object_get_member(r, "reply_us");

  if (reply_us && !JSON_NODE_HOLDS_NULL(reply_us))
    g_snprintf(when, sizeof(when), "%.1f", (double)json_node_get_int(reply_us) / 1000.0);
  else
    g_strlcpy(when, "-", sizeof(when));
  printf("  %" G_GINT64_FORMAT " %s/%s pass %" G_GINT64_FORMAT " %s asked %s freed %s in %s ms%s\n",
         get_int(r, "pid"), json_object_get_string_member_with_default(r, "client", "?"),
         json_object_get_string_member_with_default(r, "shrinker", "?"), get_int(r, "pass"),
         json_object_get_string_member_with_default(r, "level", "?"),
         fmt_bytes(get_int(r, "asked_bytes"), asked), fmt_bytes(get_int(r, "freed_bytes"), freed),
         when, json_object_get_boolean_member_with_default(r, "missed", FALSE) ? " MISSED" : "");
}

static void print_round(JsonObject *round) {
  char target[32], claimed[32], verified[32], measured[40], before[32], after[32];
  JsonArray *reqs = json_object_get_array_member(round, "requests");
  JsonNode *m = json_object_get_member(round, "measured_bytes");

  printf("round %" G_GINT64_FORMAT " (%s, %s): target %s, deadline %" G_GINT64_FORMAT " ms\n",
         get_int(round, "round_id"),
         json_object_get_string_member_with_default(round, "level", "?"),
         json_object_get_string_member_with_default(round, "reason", "?"),
         fmt_bytes(get_int(round, "target_bytes"), target), get_int(round, "deadline_ms"));
  if (!reqs || json_array_get_length(reqs) == 0)
    printf("  (nobody was asked)\n");
  for (guint i = 0; reqs && i < json_array_get_length(reqs); i++)
    print_request(json_array_get_object_element(reqs, i));
  printf("verified %s of ", fmt_bytes(get_int(round, "verified_bytes"), verified));
  if (m && !JSON_NODE_HOLDS_NULL(m))
    printf("claimed %s, measured %s (MemAvailable %s -> %s)",
           fmt_bytes(get_int(round, "claimed_bytes"), claimed),
           fmt_signed_bytes(json_node_get_int(m), measured),
           fmt_bytes(get_int(round, "mem_available_before_bytes"), before),
           fmt_bytes(get_int(round, "mem_available_after_bytes"), after));
  else
    printf("claimed %s, not measured", fmt_bytes(get_int(round, "claimed_bytes"), claimed));
  printf("; took %.1f ms (fan-out %.1f ms)\n", (double)get_int(round, "duration_us") / 1000.0,
         (double)get_int(round, "fanout_us") / 1000.0);
}

/* "free page hints: one soft round per hint, ...", and the last hint
 * round; nothing from an agent without a balloon controller, or an older
 * one. */
static void print_hints(JsonObject *st) {
  char claimed[32];
  JsonNode *hn = json_object_get_member(st, "free_page_hints");
  JsonObject *h;
  JsonNode *last;

  if (!hn || !JSON_NODE_HOLDS_OBJECT(hn))
    return;
  h = json_node_get_object(hn);
  if (strcmp(json_object_get_string_member_with_default(h, "mode", "?"), "off") == 0)
    printf("free page hints: no rounds (hint-rounds=off)");
  else
    printf("free page hints: one soft round per hint, for %" G_GINT64_FORMAT "%% of the estimates",
           get_int(h, "percent"));
  printf("; %" G_GINT64_FORMAT " seen, %" G_GINT64_FORMAT " rounds%s\n", get_int(h, "hints_seen"),
         get_int(h, "rounds"),
         json_object_get_boolean_member_with_default(h, "round_running", FALSE) ? ", one running"
                                                                                : "");
  last = json_object_get_member(h, "last_round_id");
  if (last && !JSON_NODE_HOLDS_NULL(last))
    printf("  last: round %" G_GINT64_FORMAT " for command id 0x%" G_GINT64_MODIFIER
           "x, claimed %s\n",
           json_node_get_int(last), get_int(h, "last_cmd_id"),
           fmt_bytes(get_int(h, "last_claimed_bytes"), claimed));
}

/* "balloon: 0000:00:02.0 ..." and the sources, a few lines. */
static void print_balloon(JsonObject *st) {
  char a[32], b[32], c[32];
  JsonNode *bn = json_object_get_member(st, "balloon");
  JsonArray *sources =
      json_object_has_member(st, "sources") ? json_object_get_array_member(st, "sources") : NULL;

  if (bn && JSON_NODE_HOLDS_OBJECT(bn)) {
    JsonObject *bo = json_node_get_object(bn);
    JsonNode *t = json_object_get_member(bo, "target_bytes");
    JsonNode *act = json_object_get_member(bo, "actual_bytes");
    JsonNode *en = json_object_get_member(bo, "episode");

    printf("balloon: %s, %s, config via %s; target %s, holds %s, %s%s\n",
           json_object_get_string_member_with_default(bo, "device", "?"),
           json_object_get_string_member_with_default(bo, "mode", "?"),
           json_object_get_string_member_with_default(bo, "config_access", "?"),
           t && !JSON_NODE_HOLDS_NULL(t) ? fmt_bytes(json_node_get_int(t), a) : "unknown",
           act && !JSON_NODE_HOLDS_NULL(act) ? fmt_bytes(json_node_get_int(act), b) : "unknown",
           json_object_get_string_member_with_default(bo, "state", "?"),
           json_object_get_boolean_member_with_default(bo, "hint_in_progress", FALSE)
               ? ", free page hinting"
               : "");
    if (en && JSON_NODE_HOLDS_OBJECT(en)) {
      JsonObject *e = json_node_get_object(en);
      JsonNode *conv = json_object_get_member(e, "converged_us");
      JsonNode *end = json_object_get_member(e, "end_reason");

      printf("  last episode: target %s, %" G_GINT64_FORMAT " rounds (%" G_GINT64_FORMAT
             " soft, %" G_GINT64_FORMAT " hard) claimed %s; ",
             fmt_bytes(get_int(e, "target_bytes"), c), get_int(e, "rounds"),
             get_int(e, "soft_rounds"), get_int(e, "hard_rounds"),
             fmt_bytes(get_int(e, "claimed_bytes"), a));
      if (conv && !JSON_NODE_HOLDS_NULL(conv))
        printf("converged in %.2f s\n", (double)json_node_get_int(conv) / 1e6);
      else if (end && !JSON_NODE_HOLDS_NULL(end))
        printf("ended: %s\n", json_node_get_string(end));
      else
        printf("in progress\n");
    }
    printf("  %" G_GINT64_FORMAT " stall lines, %" G_GINT64_FORMAT " OOM kills seen\n",
           get_int(bo, "stalls_seen"), get_int(bo, "oom_kills"));
  } else {
    printf("balloon: none\n");
  }
  print_hints(st);
  for (guint i = 0; sources && i < json_array_get_length(sources); i++) {
    JsonObject *s = json_array_get_object_element(sources, i);

    uint64_t refused = get_uint(s, "refused");

    printf("  source %-14s %-8s %s", json_object_get_string_member_with_default(s, "name", "?"),
           json_object_get_boolean_member_with_default(s, "active", FALSE)
               ? json_object_get_string_member_with_default(s, "mode", "?")
               : "off",
           json_object_get_string_member_with_default(s, "reason", ""));
    /* Forged records someone wrote: worth an administrator's look. */
    if (refused > 0)
      printf(" (%" G_GUINT64_FORMAT " forged records refused)", refused);
    printf("\n");
  }
}

/* "privileges: CAP_IPC_LOCK (no-new-privs; CapEff 000001ffffffffff ->
 * 0000000000004000)"; nothing from an older agent. Many capabilities (not
 * dropped) are shown as their count and mask. */
static void print_privileges(JsonObject *st) {
  JsonNode *pn = json_object_get_member(st, "privileges");
  g_autoptr(GString) names = g_string_new(NULL);
  JsonObject *p;
  JsonArray *caps;
  gboolean nnp;
  guint n;

  if (!pn || !JSON_NODE_HOLDS_OBJECT(pn))
    return;
  p = json_node_get_object(pn);
  caps = json_object_has_member(p, "capabilities") ? json_object_get_array_member(p, "capabilities")
                                                   : NULL;
  n = caps ? json_array_get_length(caps) : 0;
  for (guint i = 0; i < n && n <= 8; i++)
    g_string_append_printf(names, "%s%s", i ? ", " : "",
                           json_array_get_string_element(caps, i) ?: "?");
  if (n == 0)
    g_string_append(names, "none");
  else if (n > 8)
    g_string_append_printf(names, "%u capabilities", n);
  nnp = json_object_get_boolean_member_with_default(p, "no_new_privs", FALSE);
  printf("privileges: %s (%s", names->str, nnp ? "no-new-privs" : "no no-new-privs");
  if (json_object_get_boolean_member_with_default(p, "dropped", FALSE))
    printf("; CapEff %s -> %s)\n",
           json_object_get_string_member_with_default(p, "cap_eff_at_start", "?"),
           json_object_get_string_member_with_default(p, "cap_eff", "?"));
  else
    printf("; CapEff %s: %s)\n", json_object_get_string_member_with_default(p, "cap_eff", "?"),
           json_object_get_string_member_with_default(p, "reason", "not dropped"));
}

static void print_status(JsonObject *st) {
  char a[32], b[32], c[32], d[40];
  JsonNode *memn = json_object_get_member(st, "memory");
  JsonArray *clients = json_object_get_array_member(st, "clients");
  JsonArray *rounds = json_object_get_array_member(st, "rounds");
  JsonObject *totals = json_object_get_object_member(st, "totals");
  JsonObject *summary = json_object_get_object_member(st, "summary");
  gint64 up_s = get_int(st, "uptime_ms") / 1000;
  guint n_shrinkers = 0;
  int w_client = 6, w_shrinker = 8;

  printf("shrinkd %s, pid %" G_GINT64_FORMAT ", up %" G_GINT64_FORMAT "h%02" G_GINT64_FORMAT
         "m%02" G_GINT64_FORMAT "s\n",
         json_object_get_string_member_with_default(st, "version", "?"), get_int(st, "pid"),
         up_s / 3600, up_s / 60 % 60, up_s % 60);
  if (memn && JSON_NODE_HOLDS_OBJECT(memn)) {
    JsonObject *mem = json_node_get_object(memn);

    printf("memory: total %s, available %s, free %s\n",
           fmt_bytes(get_int(mem, "mem_total_bytes"), a),
           fmt_bytes(get_int(mem, "mem_available_bytes"), b),
           fmt_bytes(get_int(mem, "mem_free_bytes"), c));
  }
  print_balloon(st);
  print_privileges(st);
  /* Columns as wide as the longest name (names are at most 63 bytes). */
  for (guint i = 0; clients && i < json_array_get_length(clients); i++) {
    JsonObject *cl = json_array_get_object_element(clients, i);
    JsonArray *sh = json_object_get_array_member(cl, "shrinkers");

    w_client =
        MAX(w_client, (int)strlen(json_object_get_string_member_with_default(cl, "name", "?")));
    for (guint j = 0; sh && j < json_array_get_length(sh); j++)
      w_shrinker = MAX(w_shrinker, (int)strlen(json_object_get_string_member_with_default(
                                       json_array_get_object_element(sh, j), "name", "?")));
  }
  printf("\n%-8s %-*s %-*s %6s %4s %10s %6s %10s %10s %s\n", "PID", w_client, "CLIENT", w_shrinker,
         "SHRINKER", "ID", "PRIO", "ESTIMATE", "ASKED", "ASKED", "FREED", "MISSES");
  printf("%-8s %-*s %-*s %6s %4s %10s %6s %10s %10s %s\n", "", w_client, "", w_shrinker, "", "", "",
         "", "(times)", "(bytes)", "(bytes)", "(in a row)");
  for (guint i = 0; clients && i < json_array_get_length(clients); i++) {
    JsonObject *cl = json_array_get_object_element(clients, i);
    JsonArray *sh = json_object_get_array_member(cl, "shrinkers");

    for (guint j = 0; sh && j < json_array_get_length(sh); j++) {
      JsonObject *s = json_array_get_object_element(sh, j);
      JsonNode *est = json_object_get_member(s, "estimate_bytes");

      n_shrinkers++;
      printf(
          "%-8" G_GINT64_FORMAT " %-*s %-*s %6" G_GINT64_FORMAT " %4" G_GINT64_FORMAT
          " %10s %6" G_GINT64_FORMAT " %10s %10s %" G_GINT64_FORMAT " (%" G_GINT64_FORMAT ")%s\n",
          get_int(cl, "pid"), w_client, json_object_get_string_member_with_default(cl, "name", "?"),
          w_shrinker, json_object_get_string_member_with_default(s, "name", "?"), get_int(s, "id"),
          get_int(s, "priority"),
          est && !JSON_NODE_HOLDS_NULL(est) ? fmt_bytes(json_node_get_int(est), a) : "-",
          get_int(s, "asked"), fmt_bytes(get_int(s, "asked_bytes"), b),
          fmt_bytes(get_int(s, "freed_bytes"), c), get_int(s, "misses"),
          get_int(s, "consecutive_misses"),
          json_object_get_boolean_member_with_default(s, "skipped_in_soft", FALSE)
              ? "  skipped in soft rounds"
              : "");
    }
  }
  if (n_shrinkers == 0)
    printf("(no shrinkers registered)\n");
  if (summary && json_object_get_boolean_member_with_default(summary, "truncated", FALSE))
    printf("(showing %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " shrinkers from the %" G_GINT64_FORMAT
           "th; see --offset and --limit)\n",
           get_int(summary, "shown"), get_int(summary, "shrinkers"), get_int(summary, "offset"));
  if (totals)
    printf("\ntotals: %" G_GINT64_FORMAT " rounds, claimed %s, measured %s\n",
           get_int(totals, "rounds"), fmt_bytes(get_int(totals, "claimed_bytes"), a),
           fmt_signed_bytes(get_int(totals, "measured_bytes"), d));
  if (rounds && json_array_get_length(rounds) > 0) {
    printf("\nlast rounds (oldest first):\n");
    for (guint i = 0; i < json_array_get_length(rounds); i++) {
      JsonObject *r = json_array_get_object_element(rounds, i);
      JsonNode *m = json_object_get_member(r, "measured_bytes");
      JsonArray *reqs = json_object_get_array_member(r, "requests");

      printf("  #%-4" G_GINT64_FORMAT " %-4s %-9s target %10s  claimed %10s  measured %10s  "
             "%3u requests  %.1f ms\n",
             get_int(r, "round_id"), json_object_get_string_member_with_default(r, "level", "?"),
             json_object_get_string_member_with_default(r, "reason", "?"),
             fmt_bytes(get_int(r, "target_bytes"), a), fmt_bytes(get_int(r, "claimed_bytes"), b),
             m && !JSON_NODE_HOLDS_NULL(m) ? fmt_signed_bytes(json_node_get_int(m), d) : "-",
             reqs ? json_array_get_length(reqs) : 0, (double)get_int(r, "duration_us") / 1000.0);
    }
  }
}

/* ---- main ---- */

/* Matches "--name VALUE" (taking the next argument) or "--name=VALUE". */
static gboolean option_value(int argc, char **argv, int *i, const char *name, const char **value) {
  const char *arg = argv[*i];
  size_t n = strlen(name);

  if (strcmp(arg, name) == 0 && *i + 1 < argc) {
    *value = argv[++*i];
    return TRUE;
  }
  if (strncmp(arg, name, n) == 0 && arg[n] == '=') {
    *value = arg + n + 1;
    return TRUE;
  }
  return FALSE;
}

int main(int argc, char **argv) {
  const char *socket_path = SHRINKD_DEFAULT_SOCKET;
  const char *command = NULL, *size_arg = NULL;
  gboolean json = FALSE, hard = FALSE;
  gint64 deadline_ms = -1, timeout_s = 60, offset = -1, limit = -1;
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autoptr(JsonNode) request = NULL;
  g_autoptr(JsonNode) reply = NULL;
  g_autofree char *request_text = NULL;
  Link *l;
  JsonObject *ret;
  int rc;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = NULL;

    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage_text, stdout);
      return EXIT_OK;
    } else if (strcmp(arg, "--version") == 0) {
      printf("shrinkctl %s (protocol %d)\n", SHRINKD_VERSION, PROTO_VERSION);
      return EXIT_OK;
    } else if (option_value(argc, argv, &i, "--socket", &value)) {
      socket_path = value;
    } else if (option_value(argc, argv, &i, "--timeout", &value)) {
      if (!g_ascii_string_to_signed(value, 10, 1, 86400, &timeout_s, NULL))
        return usage_error("--timeout wants seconds (1..86400), not \"%s\"", value);
    } else if (option_value(argc, argv, &i, "--deadline", &value)) {
      if (!g_ascii_string_to_signed(value, 10, 1, PROTO_DEADLINE_MAX_MS, &deadline_ms, NULL))
        return usage_error("--deadline wants milliseconds (1..600000), not \"%s\"", value);
    } else if (option_value(argc, argv, &i, "--offset", &value)) {
      if (!g_ascii_string_to_signed(value, 10, 0, G_MAXINT64, &offset, NULL))
        return usage_error("--offset wants a count of shrinkers, not \"%s\"", value);
    } else if (option_value(argc, argv, &i, "--limit", &value)) {
      if (!g_ascii_string_to_signed(value, 10, 0, 10000, &limit, NULL))
        return usage_error("--limit wants a count of shrinkers (0..10000), not \"%s\"", value);
    } else if (strcmp(arg, "--socket") == 0 || strcmp(arg, "--timeout") == 0 ||
               strcmp(arg, "--deadline") == 0 || strcmp(arg, "--offset") == 0 ||
               strcmp(arg, "--limit") == 0) {
      return usage_error("%s needs a value", arg);
    } else if (strcmp(arg, "--json") == 0) {
      json = TRUE;
    } else if (strcmp(arg, "--hard") == 0) {
      hard = TRUE;
    } else if (arg[0] == '-' && arg[1] != '\0' && !g_ascii_isdigit(arg[1])) {
      return usage_error("unknown option %s", arg);
    } else if (!command) {
      command = arg;
    } else if (strcmp(command, "shrink") == 0 && !size_arg) {
      size_arg = arg;
    } else {
      return usage_error("unexpected argument %s", arg);
    }
  }

  if (!command)
    return usage_error("%s", "no command given (status or shrink)");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "execute");
  if (strcmp(command, "status") == 0) {
    if (hard || deadline_ms >= 0)
      return usage_error("%s", "--hard and --deadline go with shrink");
    json_builder_add_string_value(b, "status");
    if (offset >= 0 || limit >= 0) {
      json_builder_set_member_name(b, "arguments");
      json_builder_begin_object(b);
      if (offset >= 0) {
        json_builder_set_member_name(b, "offset");
        json_builder_add_int_value(b, offset);
      }
      if (limit >= 0) {
        json_builder_set_member_name(b, "limit");
        json_builder_add_int_value(b, limit);
      }
      json_builder_end_object(b);
    }
  } else if (strcmp(command, "shrink") == 0) {
    g_autoptr(GError) error = NULL;
    uint64_t bytes;

    if (!size_arg)
      return usage_error("%s", "shrink needs a SIZE (e.g. 64M)");
    if (offset >= 0 || limit >= 0)
      return usage_error("%s", "--offset and --limit go with status");
    if (!agent_parse_size(size_arg, &bytes, &error))
      return usage_error("%s", error->message);
    json_builder_add_string_value(b, "shrink");
    json_builder_set_member_name(b, "arguments");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "target_bytes");
    json_builder_add_int_value(b, (gint64)bytes);
    json_builder_set_member_name(b, "level");
    json_builder_add_string_value(b, hard ? "hard" : "soft");
    if (deadline_ms > 0) {
      json_builder_set_member_name(b, "deadline_ms");
      json_builder_add_int_value(b, deadline_ms);
    }
    json_builder_set_member_name(b, "reason");
    json_builder_add_string_value(b, "manual");
    json_builder_end_object(b);
  } else {
    return usage_error("unknown command %s (status or shrink)", command);
  }
  json_builder_end_object(b);
  request = json_builder_get_root(b);
  {
    g_autoptr(JsonGenerator) gen = json_generator_new();

    json_generator_set_root(gen, request);
    request_text = json_generator_to_data(gen, NULL);
  }

  l = g_new0(Link, 1);
  l->path = socket_path;
  l->fd = -1;
  l->timeout_ms = (int)(timeout_s * 1000 + (deadline_ms > 0 ? deadline_ms : 0));
  rc = link_open(l);
  if (rc == 0)
    rc = link_command(l, request_text, &reply);
  if (l->fd >= 0)
    close(l->fd);
  g_free(l);
  if (rc != 0)
    return rc;

  rc = reply_return(reply, &ret);
  if (rc != 0)
    return rc;
  if (json) {
    print_json(json_object_get_member(json_node_get_object(reply), "return"));
  } else if (strcmp(command, "status") == 0) {
    print_status(ret);
  } else {
    print_round(ret);
  }
  /* Claims are the clients' word; verified_bytes is what their RSS
   * confirmed. */
  if (strcmp(command, "shrink") == 0 &&
      get_uint(ret, "verified_bytes") < get_uint(ret, "target_bytes"))
    return EXIT_SHORT;
  return EXIT_OK;
}
