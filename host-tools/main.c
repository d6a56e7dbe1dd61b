/* SPDX-License-Identifier: MIT */
/*
 * virt-shrink: the host's command line for shrinkd. Options and
 * subcommands; the work is in setmem.c, watch.c and report.c, over a
 * backend (libvirt-backend.c, or qmp-backend.c for plain QEMU).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "config.h"
#include "backend.h"
#include "channel-client.h"
#include "libvirt-backend.h"
#include "qmp-backend.h"
#include "report.h"
#include "setmem.h"
#include "size.h"
#include "vs-error.h"
#include "watch.h"

enum {
  EXIT_OK = 0,      /* setmem: the balloon reached the target; status/watch: done */
  EXIT_FAILED = 1,  /* an error; status: no agent */
  EXIT_PARTIAL = 2, /* setmem: set, but short of the target at the timeout */
  EXIT_USAGE = 64,  /* bad command line (EX_USAGE) */
};

/* shrinkd-status is cheap; this only bounds a guest gone wrong. */
#define STATUS_TIMEOUT_MS   10000
#define DEFAULT_INTERVAL_MS 500

static const char usage_text[] =
    "Usage: virt-shrink [-c URI] COMMAND DOMAIN [ARGUMENTS] [OPTIONS]\n"
    "       virt-shrink --qmp SOCKET [--channel SOCKET] COMMAND [ARGUMENTS] [OPTIONS]\n"
    "\n"
    "Shrinks a guest's memory cooperatively: tells the shrinkd agent in the guest the\n"
    "new size, lets its applications give memory back, then sets the balloon.\n"
    "\n"
    "Commands:\n"
    "  setmem DOMAIN SIZE   1. prepare: ask the guest agent to free what the new size\n"
    "                          needs (shrinkd-prepare) and wait for its answer, at\n"
    "                          most the deadline plus 2 s (only when shrinking);\n"
    "                       2. balloon: set the new size, live;\n"
    "                       3. follow the balloon until it is within 1 MiB of SIZE or\n"
    "                          --timeout runs out (a progress bar on a terminal);\n"
    "                       then report the size asked and reached, the time of each\n"
    "                       phase and what each application freed\n"
    "  status DOMAIN        the guest's shrinkers with their figures and last rounds\n"
    "                       (shrinkd-status), and the balloon as the host sees it\n"
    "  watch DOMAIN         a line per change of the balloon, the guest's state, the\n"
    "                       agent's registrations and its rounds, until interrupted\n"
    "With --qmp, commands take no DOMAIN: \"virt-shrink --qmp S --channel C setmem 1G\".\n"
    "\n"
    "SIZE is read as \"virsh setmem\" reads it: a bare number is in KiB (393216 is\n"
    "384 MiB); suffixes (any case) b or bytes; K, M, G, T (or KiB, MiB...) are powers\n"
    "of 1024; KB, MB, GB, TB powers of 1000. It is rounded up to a whole KiB.\n"
    "\n"
    "Options:\n"
    "  -c, --connect URI    libvirt connection URI (default: $LIBVIRT_DEFAULT_URI, else\n"
    "                       libvirt's default, as for virsh)\n"
    "  --qmp SOCKET         plain QEMU without libvirt: its QMP socket\n"
    "  --channel SOCKET     with --qmp: the host end of the guest's virtio-serial port\n"
    "                       org.shrinkd.agent.0 (with libvirt it is found in the live\n"
    "                       domain XML); without it there is no agent\n"
    "  --deadline MS        setmem: the agent's deadline for freeing (default 4000)\n"
    "  --timeout SEC        setmem: how long to follow the balloon (default 60;\n"
    "                       fractions allowed)\n"
    "  --agent-timeout MS   connecting to the agent and its answer to\n"
    "                       guest-sync-delimited (default 2000)\n"
    "  --no-agent           do not talk to the agent (setmem: the reactive path, like\n"
    "                       virsh setmem; status, watch: the balloon only)\n"
    "  --require-agent      setmem: if the agent cannot be reached or does not answer\n"
    "                       prepare, fail (exit 1) and leave the balloon alone\n"
    "  --json               setmem, status: print JSON on stdout\n"
    "  --interval MS        watch: time between polls (default 500)\n"
    "  -v, --verbose        log the commands sent and the answers' timing (stderr)\n"
    "  -h, --help           this text\n"
    "  -V, --version        the version of virt-shrink and of libvirt\n"
    "\n"
    "Without an agent (the domain has no org.shrinkd.agent.0 channel, its socket\n"
    "cannot be connected to, or nobody answers guest-sync-delimited in time), or when\n"
    "the agent fails to prepare, setmem says so on stderr and sets the balloon anyway:\n"
    "the guest then gets no warning (the reactive path). --require-agent refuses that.\n"
    "\n"
    "Exit status:\n"
    "  0   setmem: the balloon reached the target (within 1 MiB); status, watch: done\n"
    "  1   failure: no such domain, hypervisor or agent error, guest not running;\n"
    "      status: the agent could not be asked (the balloon is still printed)\n"
    "  2   setmem: the balloon was set but was short of the target at --timeout\n"
    "  64  usage error\n";

static int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static int usage_error(const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "virt-shrink: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'virt-shrink --help'.\n");
  return EXIT_USAGE;
}

static int fail(const GError *error) {
  fprintf(stderr, "virt-shrink: %s\n", error->message);
  return EXIT_FAILED;
}

typedef struct {
  const char *uri;
  const char *qmp;
  const char *channel;
  const char *command;
  const char *domain;
  const char *size;
  guint64 size_bytes;
  guint64 deadline_ms, agent_timeout_ms, interval_ms;
  double timeout_s;
  gboolean deadline_set, timeout_set, interval_set;
  gboolean no_agent, require_agent, json;
} Options;

/* Matches "--name VALUE" (taking the next argument), "--name=VALUE", and
 * for a short @alias "-c VALUE" and "-cVALUE". */
static gboolean option_value(int argc, char **argv, int *i, const char *name, const char *alias,
                             const char **value, gboolean *missing) {
  const char *arg = argv[*i];
  size_t n = strlen(name);

  if (strcmp(arg, name) == 0 || (alias && strcmp(arg, alias) == 0)) {
    if (*i + 1 >= argc) {
      *missing = TRUE;
      return TRUE;
    }
    *value = argv[++*i];
    return TRUE;
  }
  if (strncmp(arg, name, n) == 0 && arg[n] == '=') {
    *value = arg + n + 1;
    return TRUE;
  }
  if (alias && strncmp(arg, alias, strlen(alias)) == 0 && arg[strlen(alias)] != '\0') {
    *value = arg + strlen(alias);
    return TRUE;
  }
  return FALSE;
}

/* Parses the command line into @o. Returns -1 to go on, or an exit status
 * (after --help, --version, or a usage error). */
static int parse_options(int argc, char **argv, Options *o) {
  g_autoptr(GPtrArray) operands = g_ptr_array_new();
  gboolean only_operands = FALSE;
  g_autoptr(GError) error = NULL;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = NULL;
    gboolean missing = FALSE;

    if (only_operands || arg[0] != '-' || arg[1] == '\0') {
      g_ptr_array_add(operands, (gpointer)arg);
      continue;
    }
    if (strcmp(arg, "--") == 0) {
      only_operands = TRUE;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage_text, stdout);
      return EXIT_OK;
    } else if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
      unsigned long lv = 0;

      if (virGetVersion(&lv, NULL, NULL) == 0)
        printf("virt-shrink %s (libvirt %lu.%lu.%lu)\n", SHRINKD_VERSION, lv / 1000000,
               lv / 1000 % 1000, lv % 1000);
      else
        printf("virt-shrink %s\n", SHRINKD_VERSION);
      return EXIT_OK;
    } else if (strcmp(arg, "--json") == 0) {
      o->json = TRUE;
    } else if (strcmp(arg, "--verbose") == 0 || strcmp(arg, "-v") == 0) {
      g_log_set_debug_enabled(TRUE);
    } else if (strcmp(arg, "--no-agent") == 0) {
      o->no_agent = TRUE;
    } else if (strcmp(arg, "--require-agent") == 0) {
      o->require_agent = TRUE;
    } else if (option_value(argc, argv, &i, "--connect", "-c", &value, &missing)) {
      o->uri = value;
    } else if (option_value(argc, argv, &i, "--qmp", NULL, &value, &missing)) {
      o->qmp = value;
    } else if (option_value(argc, argv, &i, "--channel", NULL, &value, &missing)) {
      o->channel = value;
    } else if (option_value(argc, argv, &i, "--deadline", NULL, &value, &missing)) {
      o->deadline_set = TRUE;
      if (value && !vs_parse_uint(value, "--deadline", 1, 600000, &o->deadline_ms, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--agent-timeout", NULL, &value, &missing)) {
      if (value &&
          !vs_parse_uint(value, "--agent-timeout", 1, 600000, &o->agent_timeout_ms, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--interval", NULL, &value, &missing)) {
      o->interval_set = TRUE;
      if (value && !vs_parse_uint(value, "--interval", 10, 3600000, &o->interval_ms, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--timeout", NULL, &value, &missing)) {
      char *end = NULL;

      o->timeout_set = TRUE;
      if (value) {
        o->timeout_s = g_ascii_strtod(value, &end);
        if (end == value || *end != '\0' || !(o->timeout_s > 0) || o->timeout_s > 86400)
          return usage_error("--timeout wants seconds (more than 0, at most 86400), not \"%s\"",
                             value);
      }
    } else {
      return usage_error("unknown option %s", arg);
    }
    if (missing)
      return usage_error("%s needs a value", arg);
  }

  if (operands->len == 0)
    return usage_error("%s", "no command given (setmem, status or watch)");
  o->command = g_ptr_array_index(operands, 0);
  if (strcmp(o->command, "setmem") != 0 && strcmp(o->command, "status") != 0 &&
      strcmp(o->command, "watch") != 0)
    return usage_error("unknown command '%s' (setmem, status or watch)", o->command);
  if (o->qmp && o->uri)
    return usage_error("%s", "--qmp and -c/--connect exclude each other");
  if (o->channel && !o->qmp)
    return usage_error("%s", "--channel goes with --qmp (libvirt's domain XML names the channel)");
  {
    guint want = (o->qmp ? 1 : 2) + (strcmp(o->command, "setmem") == 0 ? 1 : 0);
    guint next = 1;

    if (operands->len < want) {
      if (!o->qmp && operands->len < 2)
        return usage_error("%s needs a DOMAIN", o->command);
      return usage_error("%s", "setmem needs a SIZE (e.g. 384M, 1G, or KiB)");
    }
    if (operands->len > want)
      return usage_error("unexpected argument '%s'", (char *)g_ptr_array_index(operands, want));
    if (!o->qmp)
      o->domain = g_ptr_array_index(operands, next++);
    if (strcmp(o->command, "setmem") == 0) {
      o->size = g_ptr_array_index(operands, next);
      if (!vs_parse_size(o->size, &o->size_bytes, &error))
        return usage_error("%s", error->message);
    }
  }
  if (strcmp(o->command, "setmem") != 0 && (o->deadline_set || o->timeout_set || o->require_agent))
    return usage_error("%s", "--deadline, --timeout and --require-agent go with setmem");
  if (strcmp(o->command, "watch") != 0 && o->interval_set)
    return usage_error("%s", "--interval goes with watch");
  if (strcmp(o->command, "watch") == 0 && o->json)
    return usage_error("%s", "--json goes with setmem and status");
  if (o->no_agent && o->require_agent)
    return usage_error("%s", "--no-agent and --require-agent exclude each other");
  return -1;
}

static VsBackend *open_backend(const Options *o, GError **error) {
  if (o->qmp)
    return vs_qmp_backend_new(o->qmp, o->channel, error);
  return vs_libvirt_backend_new(o->uri, o->domain, error);
}

static void print_warning(const char *message, gpointer data) {
  fprintf(stderr, "virt-shrink: warning: %s\n", message);
}

static int cmd_setmem(const Options *o, VsBackend *backend) {
  VsSetmemOptions opts;
  VsSetmemResult result;
  VsProgressBar bar;
  int rc;

  vs_setmem_options_init(&opts, o->size_bytes);
  if (o->deadline_set)
    opts.deadline_ms = (guint)o->deadline_ms;
  if (o->timeout_set)
    opts.timeout_ms = (guint)(o->timeout_s * 1000 + 0.5);
  if (o->agent_timeout_ms)
    opts.agent_timeout_ms = (guint)o->agent_timeout_ms;
  opts.agent_mode = o->no_agent        ? VS_AGENT_NONE
                    : o->require_agent ? VS_AGENT_REQUIRED
                                       : VS_AGENT_AUTO;
  vs_progress_bar_init(&bar, stdout, !o->json);
  opts.progress = vs_progress_bar_update;
  opts.warning = print_warning;
  opts.data = &bar;
  vs_setmem_run(backend, &opts, &result);
  vs_progress_bar_finish(&bar);
  if (o->json) {
    g_autoptr(JsonNode) report = vs_report_setmem_json(backend->guest, &result);

    vs_print_json(stdout, report);
  } else {
    vs_report_sanitize(result.prepare);
    vs_report_setmem_text(stdout, backend->name, &result);
  }
  if (result.error)
    fprintf(stderr, "virt-shrink: %s\n", result.error->message);
  rc = vs_setmem_exit_code(&result);
  vs_setmem_result_clear(&result);
  return rc;
}

static int cmd_status(const Options *o, VsBackend *backend) {
  g_autoptr(GError) error = NULL;
  g_autoptr(GError) agent_error = NULL;
  g_autoptr(VsAgent) agent = NULL;
  g_autoptr(JsonNode) status = NULL;
  g_autofree char *state = NULL;
  gboolean running;
  VsMemory mem;

  if (!vs_backend_get_state(backend, &running, &state, &error) ||
      !vs_backend_get_memory(backend, &mem, &error))
    return fail(error);
  if (!o->no_agent) {
    agent = vs_backend_open_agent(backend,
                                  o->agent_timeout_ms ? (guint)o->agent_timeout_ms
                                                      : VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS,
                                  &agent_error);
    if (agent)
      status = vs_agent_call(agent, "shrinkd-status", NULL, STATUS_TIMEOUT_MS, &agent_error);
    if (status && !JSON_NODE_HOLDS_OBJECT(status)) {
      g_clear_pointer(&status, json_node_unref);
      g_set_error_literal(&agent_error, VS_ERROR, VS_ERROR_PROTOCOL,
                          "shrinkd-status: the answer is not an object");
    }
  }
  if (o->json) {
    g_autoptr(JsonNode) out =
        vs_report_status_json(state, &mem, status, agent_error ? agent_error->message : NULL);

    vs_print_json(stdout, out);
  } else {
    vs_report_sanitize(status);
    vs_report_status_text(stdout, backend->name, state, &mem, status,
                          agent_error ? agent_error->message : NULL);
  }
  if (agent_error)
    return fail(agent_error);
  return EXIT_OK;
}

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig) {
  stop_requested = 1;
}

static int cmd_watch(const Options *o, VsBackend *backend) {
  struct sigaction sa = {.sa_handler = on_stop_signal};
  VsWatchOptions wo = {
      .interval_ms = o->interval_set ? (guint)o->interval_ms : DEFAULT_INTERVAL_MS,
      .agent_timeout_ms =
          o->agent_timeout_ms ? (guint)o->agent_timeout_ms : VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS,
      .use_agent = !o->no_agent,
      .stop = &stop_requested,
      .out = stdout,
  };

  /* No SA_RESTART: a signal ends the sleep between polls at once. */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  return vs_watch_run(backend, &wo);
}

int main(int argc, char **argv) {
  Options o = {0};
  g_autoptr(GError) error = NULL;
  g_autoptr(VsBackend) backend = NULL;
  int rc;

  /* Debug messages would go to stdout, into the reports and the JSON. */
  g_log_writer_default_set_use_stderr(TRUE);
  rc = parse_options(argc, argv, &o);
  if (rc >= 0)
    return rc;
  backend = open_backend(&o, &error);
  if (!backend)
    return fail(error);
  if (strcmp(o.command, "setmem") == 0)
    return cmd_setmem(&o, backend);
  if (strcmp(o.command, "status") == 0)
    return cmd_status(&o, backend);
  return cmd_watch(&o, backend);
}
