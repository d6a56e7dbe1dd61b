/* SPDX-License-Identifier: MIT */
/*
 * virt-shrink: the host's command line for shrinkd. Options and
 * subcommands; the work is in setmem.c, migrate.c, watch.c and report.c,
 * over a backend (libvirt-backend.c, or qmp-backend.c for plain QEMU).
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
#include "migrate.h"
#include "qmp-backend.h"
#include "report.h"
#include "setmem.h"
#include "size.h"
#include "vs-error.h"
#include "watch.h"

/* setmem.c and migrate.c compute theirs (vs_setmem_exit_code(),
 * vs_migrate_exit_code()) in the same scheme. */
enum {
  EXIT_OK = 0,        /* setmem: reached; migrate: completed; prepare-migration: prepared */
  EXIT_FAILED = 1,    /* an error; status: no agent */
  EXIT_PARTIAL = 2,   /* setmem: set, but short of the target at the timeout */
  EXIT_CANCELLED = 3, /* migrate: cancelled by another client, or interrupted */
  EXIT_TIMEOUT = 4,   /* migrate: cancelled at --timeout */
  EXIT_USAGE = 64,    /* bad command line (EX_USAGE) */
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
    "Migrates a guest live once its applications dropped what they can rebuild.\n"
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
    "  migrate DOMAIN DESTURI\n"
    "                       1. prepare: ask the guest agent for a soft round\n"
    "                          (shrinkd-prepare-migration), at most the deadline\n"
    "                          plus 2 s; without an agent, say so and go on;\n"
    "                       2. migrate live, peer to peer, to the libvirt URI DESTURI\n"
    "                          (with --qmp: \"migrate URI\", QEMU's migration URI, e.g.\n"
    "                          tcp:HOST:PORT where a QEMU waits with -incoming);\n"
    "                       3. follow it to its end (a progress bar on a terminal);\n"
    "                          SIGINT or SIGTERM cancels it;\n"
    "                       then report how it ended, the bytes sent, the times\n"
    "                       (total, setup, downtime) and what each application freed\n"
    "  prepare-migration DOMAIN\n"
    "                       step 1 of migrate alone, for a migration started with\n"
    "                       other tools: the agent's report\n"
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
    "  --deadline MS        setmem, migrate, prepare-migration: the agent's deadline\n"
    "                       for freeing (default 4000; migrate and prepare-migration:\n"
    "                       3000)\n"
    "  --fraction PCT       migrate, prepare-migration: the soft round asks for PCT\n"
    "                       percent (1-100) of the shrinkers' estimates (default 100)\n"
    "  --timeout SEC        setmem: how long to follow the balloon (default 60);\n"
    "                       migrate: cancel the migration if it has not completed\n"
    "                       after SEC (default: never); fractions allowed\n"
    "  --bandwidth MIB      migrate: at most MIB MiB/s (QMP migrate-set-parameters\n"
    "                       max-bandwidth, which stays set; libvirt's bandwidth)\n"
    "  --migrateuri URI     migrate, libvirt: where the data goes, when not the host\n"
    "                       of DESTURI (e.g. tcp://10.0.0.2)\n"
    "  --xml FILE           migrate, libvirt: the domain XML for the destination\n"
    "  --persistent         migrate, libvirt: define the domain on the destination\n"
    "  --undefinesource     migrate, libvirt: undefine it here once migrated\n"
    "  --agent-timeout MS   connecting to the agent and its answer to\n"
    "                       guest-sync-delimited (default 2000)\n"
    "  --no-agent           do not talk to the agent (setmem: the reactive path, like\n"
    "                       virsh setmem; migrate: no soft round; status, watch: the\n"
    "                       balloon only)\n"
    "  --require-agent      setmem, migrate: if the agent cannot be reached or does\n"
    "                       not answer, fail (exit 1): leave the balloon alone, or\n"
    "                       do not migrate\n"
    "  --json               setmem, status, migrate, prepare-migration: print JSON on\n"
    "                       stdout\n"
    "  --interval MS        watch: time between polls (default 500)\n"
    "  -v, --verbose        log the commands sent and the answers' timing (stderr)\n"
    "  -h, --help           this text\n"
    "  -V, --version        the version of virt-shrink and of libvirt\n"
    "\n"
    "Without an agent (the domain has no org.shrinkd.agent.0 channel, its socket\n"
    "cannot be connected to, or nobody answers guest-sync-delimited in time), or when\n"
    "the agent fails to prepare, setmem says so on stderr and sets the balloon anyway:\n"
    "the guest then gets no warning (the reactive path); migrate says so and\n"
    "migrates. --require-agent refuses that.\n"
    "\n"
    "Exit status:\n"
    "  0   setmem: the balloon reached the target (within 1 MiB); migrate: completed;\n"
    "      prepare-migration: the agent prepared; status, watch: done\n"
    "  1   failure: no such domain, hypervisor or agent error, guest not running;\n"
    "      migrate: not started or failed (the guest still runs here);\n"
    "      prepare-migration: no agent, or it failed; status: the agent could not be\n"
    "      asked (the balloon is still printed)\n"
    "  2   setmem: the balloon was set but was short of the target at --timeout\n"
    "  3   migrate: cancelled (by another client, or virt-shrink was interrupted)\n"
    "  4   migrate: not completed at --timeout, and cancelled\n"
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

/* The commands, as bits so that an option can name those it goes with. */
typedef enum {
  CMD_SETMEM = 1 << 0,
  CMD_STATUS = 1 << 1,
  CMD_WATCH = 1 << 2,
  CMD_MIGRATE = 1 << 3,
  CMD_PREPARE = 1 << 4, /* prepare-migration */
} Command;

static const struct {
  const char *name;
  Command cmd;
} commands[] = {
    {"setmem", CMD_SETMEM},
    {"status", CMD_STATUS},
    {"watch", CMD_WATCH},
    {"migrate", CMD_MIGRATE},
    {"prepare-migration", CMD_PREPARE},
};

/* The options that go with some commands only. */
typedef enum {
  OPT_DEADLINE,
  OPT_FRACTION,
  OPT_TIMEOUT,
  OPT_BANDWIDTH,
  OPT_MIGRATEURI,
  OPT_XML,
  OPT_PERSISTENT,
  OPT_UNDEFINESOURCE,
  OPT_NO_AGENT,
  OPT_REQUIRE_AGENT,
  OPT_JSON,
  OPT_INTERVAL,
  N_OPTS,
} OptionId;

static const struct {
  const char *name;
  guint commands;
  const char *commands_text;
  gboolean libvirt_only;
} option_rules[N_OPTS] = {
    [OPT_DEADLINE] = {"--deadline", CMD_SETMEM | CMD_MIGRATE | CMD_PREPARE,
                      "setmem, migrate and prepare-migration"},
    [OPT_FRACTION] = {"--fraction", CMD_MIGRATE | CMD_PREPARE, "migrate and prepare-migration"},
    [OPT_TIMEOUT] = {"--timeout", CMD_SETMEM | CMD_MIGRATE, "setmem and migrate"},
    [OPT_BANDWIDTH] = {"--bandwidth", CMD_MIGRATE, "migrate"},
    [OPT_MIGRATEURI] = {"--migrateuri", CMD_MIGRATE, "migrate", TRUE},
    [OPT_XML] = {"--xml", CMD_MIGRATE, "migrate", TRUE},
    [OPT_PERSISTENT] = {"--persistent", CMD_MIGRATE, "migrate", TRUE},
    [OPT_UNDEFINESOURCE] = {"--undefinesource", CMD_MIGRATE, "migrate", TRUE},
    [OPT_NO_AGENT] = {"--no-agent", CMD_SETMEM | CMD_STATUS | CMD_WATCH | CMD_MIGRATE,
                      "setmem, status, watch and migrate"},
    [OPT_REQUIRE_AGENT] = {"--require-agent", CMD_SETMEM | CMD_MIGRATE, "setmem and migrate"},
    [OPT_JSON] = {"--json", CMD_SETMEM | CMD_STATUS | CMD_MIGRATE | CMD_PREPARE,
                  "setmem, status, migrate and prepare-migration"},
    [OPT_INTERVAL] = {"--interval", CMD_WATCH, "watch"},
};

typedef struct {
  const char *uri;
  const char *qmp;
  const char *channel;
  const char *command;
  Command cmd;
  const char *domain;
  const char *size;
  const char *dest; /* migrate: DESTURI, or QEMU's URI with --qmp */
  const char *migrate_uri;
  const char *xml_file;
  guint64 size_bytes;
  guint64 deadline_ms, agent_timeout_ms, interval_ms, fraction_pct, bandwidth_mib_s;
  double timeout_s;
  gboolean seen[N_OPTS];
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

/* Parses "--timeout SEC" for @o. Returns -1, or a usage error's status. */
static int parse_timeout(const char *value, Options *o) {
  char *end = NULL;

  o->timeout_s = g_ascii_strtod(value, &end);
  if (end == value || *end != '\0' || !(o->timeout_s > 0) || o->timeout_s > 86400)
    return usage_error("--timeout wants seconds (more than 0, at most 86400), not \"%s\"", value);
  return -1;
}

/* Checks the operands (after the options were read) into @o. Returns -1, or
 * a usage error's status. */
static int parse_operands(GPtrArray *operands, Options *o) {
  g_autoptr(GError) error = NULL;
  guint want, next = 1;

  if (operands->len == 0)
    return usage_error("%s",
                       "no command given (setmem, status, watch, migrate or prepare-migration)");
  o->command = g_ptr_array_index(operands, 0);
  for (guint i = 0; i < G_N_ELEMENTS(commands); i++)
    if (strcmp(o->command, commands[i].name) == 0)
      o->cmd = commands[i].cmd;
  if (!o->cmd)
    return usage_error("unknown command '%s' (setmem, status, watch, migrate or "
                       "prepare-migration)",
                       o->command);
  want = (o->qmp ? 1 : 2) + ((o->cmd & (CMD_SETMEM | CMD_MIGRATE)) ? 1 : 0);
  if (operands->len < want) {
    if (!o->qmp && operands->len < 2)
      return usage_error("%s needs a DOMAIN", o->command);
    if (o->cmd == CMD_SETMEM)
      return usage_error("%s", "setmem needs a SIZE (e.g. 384M, 1G, or KiB)");
    if (o->qmp)
      return usage_error("%s", "migrate needs a URI: QEMU's migration URI, where the "
                               "destination QEMU waits with -incoming (e.g. tcp:HOST:4444)");
    return usage_error("%s", "migrate needs a DESTURI: the destination's libvirt URI (e.g. "
                             "qemu+ssh://HOST/system)");
  }
  if (operands->len > want)
    return usage_error("unexpected argument '%s'", (char *)g_ptr_array_index(operands, want));
  if (!o->qmp)
    o->domain = g_ptr_array_index(operands, next++);
  if (o->cmd == CMD_SETMEM) {
    o->size = g_ptr_array_index(operands, next);
    if (!vs_parse_size(o->size, &o->size_bytes, &error))
      return usage_error("%s", error->message);
  } else if (o->cmd == CMD_MIGRATE) {
    o->dest = g_ptr_array_index(operands, next);
  }
  return -1;
}

/* Parses the command line into @o. Returns -1 to go on, or an exit status
 * (after --help, --version, or a usage error). */
static int parse_options(int argc, char **argv, Options *o) {
  g_autoptr(GPtrArray) operands = g_ptr_array_new();
  gboolean only_operands = FALSE;
  g_autoptr(GError) error = NULL;
  int rc;

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
      o->seen[OPT_JSON] = TRUE;
    } else if (strcmp(arg, "--verbose") == 0 || strcmp(arg, "-v") == 0) {
      g_log_set_debug_enabled(TRUE);
    } else if (strcmp(arg, "--no-agent") == 0) {
      o->seen[OPT_NO_AGENT] = TRUE;
    } else if (strcmp(arg, "--require-agent") == 0) {
      o->seen[OPT_REQUIRE_AGENT] = TRUE;
    } else if (strcmp(arg, "--persistent") == 0) {
      o->seen[OPT_PERSISTENT] = TRUE;
    } else if (strcmp(arg, "--undefinesource") == 0) {
      o->seen[OPT_UNDEFINESOURCE] = TRUE;
    } else if (option_value(argc, argv, &i, "--connect", "-c", &value, &missing)) {
      o->uri = value;
    } else if (option_value(argc, argv, &i, "--qmp", NULL, &value, &missing)) {
      o->qmp = value;
    } else if (option_value(argc, argv, &i, "--channel", NULL, &value, &missing)) {
      o->channel = value;
    } else if (option_value(argc, argv, &i, "--migrateuri", NULL, &value, &missing)) {
      o->seen[OPT_MIGRATEURI] = TRUE;
      o->migrate_uri = value;
    } else if (option_value(argc, argv, &i, "--xml", NULL, &value, &missing)) {
      o->seen[OPT_XML] = TRUE;
      o->xml_file = value;
    } else if (option_value(argc, argv, &i, "--deadline", NULL, &value, &missing)) {
      o->seen[OPT_DEADLINE] = TRUE;
      if (value && !vs_parse_uint(value, "--deadline", 1, 600000, &o->deadline_ms, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--fraction", NULL, &value, &missing)) {
      o->seen[OPT_FRACTION] = TRUE;
      if (value && !vs_parse_uint(value, "--fraction", 1, 100, &o->fraction_pct, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--bandwidth", NULL, &value, &missing)) {
      o->seen[OPT_BANDWIDTH] = TRUE;
      /* MiB/s as virsh takes it; 1 TiB/s is far beyond any link. */
      if (value && !vs_parse_uint(value, "--bandwidth", 1, 1u << 20, &o->bandwidth_mib_s, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--agent-timeout", NULL, &value, &missing)) {
      if (value &&
          !vs_parse_uint(value, "--agent-timeout", 1, 600000, &o->agent_timeout_ms, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--interval", NULL, &value, &missing)) {
      o->seen[OPT_INTERVAL] = TRUE;
      if (value && !vs_parse_uint(value, "--interval", 10, 3600000, &o->interval_ms, &error))
        return usage_error("%s", error->message);
    } else if (option_value(argc, argv, &i, "--timeout", NULL, &value, &missing)) {
      o->seen[OPT_TIMEOUT] = TRUE;
      if (value && (rc = parse_timeout(value, o)) >= 0)
        return rc;
    } else {
      return usage_error("unknown option %s", arg);
    }
    if (missing)
      return usage_error("%s needs a value", arg);
  }

  if (o->qmp && o->uri)
    return usage_error("%s", "--qmp and -c/--connect exclude each other");
  if (o->channel && !o->qmp)
    return usage_error("%s", "--channel goes with --qmp (libvirt's domain XML names the channel)");
  rc = parse_operands(operands, o);
  if (rc >= 0)
    return rc;
  for (guint i = 0; i < N_OPTS; i++) {
    if (!o->seen[i])
      continue;
    if (!(option_rules[i].commands & o->cmd))
      return usage_error("%s goes with %s", option_rules[i].name, option_rules[i].commands_text);
    if (option_rules[i].libvirt_only && o->qmp)
      return usage_error("%s goes with libvirt, not --qmp (plain QEMU migrates to its URI only)",
                         option_rules[i].name);
  }
  if (o->seen[OPT_NO_AGENT] && o->seen[OPT_REQUIRE_AGENT])
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

static VsAgentMode agent_mode(const Options *o) {
  if (o->seen[OPT_NO_AGENT])
    return VS_AGENT_NONE;
  return o->seen[OPT_REQUIRE_AGENT] ? VS_AGENT_REQUIRED : VS_AGENT_AUTO;
}

static int cmd_setmem(const Options *o, VsBackend *backend) {
  VsSetmemOptions opts;
  VsSetmemResult result;
  VsProgressBar bar;
  int rc;

  vs_setmem_options_init(&opts, o->size_bytes);
  if (o->seen[OPT_DEADLINE])
    opts.deadline_ms = (guint)o->deadline_ms;
  if (o->seen[OPT_TIMEOUT])
    opts.timeout_ms = (guint)(o->timeout_s * 1000 + 0.5);
  if (o->agent_timeout_ms)
    opts.agent_timeout_ms = (guint)o->agent_timeout_ms;
  opts.agent_mode = agent_mode(o);
  vs_progress_bar_init(&bar, stdout, !o->seen[OPT_JSON]);
  opts.progress = vs_progress_bar_update;
  opts.warning = print_warning;
  opts.data = &bar;
  vs_setmem_run(backend, &opts, &result);
  vs_progress_bar_finish(&bar);
  if (o->seen[OPT_JSON]) {
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
  if (!o->seen[OPT_NO_AGENT]) {
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
  if (o->seen[OPT_JSON]) {
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
      .interval_ms = o->seen[OPT_INTERVAL] ? (guint)o->interval_ms : DEFAULT_INTERVAL_MS,
      .agent_timeout_ms =
          o->agent_timeout_ms ? (guint)o->agent_timeout_ms : VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS,
      .use_agent = !o->seen[OPT_NO_AGENT],
      .stop = &stop_requested,
      .out = stdout,
  };

  /* No SA_RESTART: a signal ends the sleep between polls at once. */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  return vs_watch_run(backend, &wo);
}

/* Ends the progress bar's line (@data) before the warning, so that the
 * two do not share a line on a terminal. */
static void print_warning_after_bar(const char *message, gpointer data) {
  vs_progress_bar_finish(data);
  print_warning(message, NULL);
}

/* The options of the agent's step, for migrate and prepare-migration. */
static void migrate_options(const Options *o, VsMigrateOptions *opts) {
  vs_migrate_options_init(opts, o->dest);
  if (o->seen[OPT_DEADLINE])
    opts->deadline_ms = (guint)o->deadline_ms;
  if (o->seen[OPT_FRACTION])
    opts->fraction_pct = (guint)o->fraction_pct;
  if (o->agent_timeout_ms)
    opts->agent_timeout_ms = (guint)o->agent_timeout_ms;
  opts->agent_mode = agent_mode(o);
}

/* Prints @result as --json or for people, and its error on stderr;
 * returns its exit status and clears it. */
static int migrate_report(const Options *o, VsBackend *backend, VsMigrateResult *result) {
  int rc;

  if (o->seen[OPT_JSON]) {
    g_autoptr(JsonNode) report = vs_report_migrate_json(backend->guest, o->dest, result);

    vs_print_json(stdout, report);
  } else {
    vs_report_sanitize(result->prepare);
    vs_report_migrate_text(stdout, backend->name, o->dest, result);
  }
  if (result->error)
    fprintf(stderr, "virt-shrink: %s\n", result->error->message);
  rc = vs_migrate_exit_code(result);
  vs_migrate_result_clear(result);
  return rc;
}

static int cmd_migrate(const Options *o, VsBackend *backend) {
  /* A second signal ends virt-shrink at once (the cancel may hang). */
  struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESETHAND};
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = NULL;
  VsMigrateOptions opts;
  VsMigrateResult result;
  VsProgressBar bar;

  if (o->xml_file && !g_file_get_contents(o->xml_file, &xml, NULL, &error)) {
    g_prefix_error(&error, "--xml: ");
    return fail(error);
  }
  migrate_options(o, &opts);
  opts.params.migrate_uri = o->migrate_uri;
  opts.params.dest_xml = xml;
  opts.params.bandwidth_mib_s = o->bandwidth_mib_s;
  opts.params.persistent = o->seen[OPT_PERSISTENT];
  opts.params.undefine_source = o->seen[OPT_UNDEFINESOURCE];
  if (o->seen[OPT_TIMEOUT])
    opts.timeout_ms = (guint)(o->timeout_s * 1000 + 0.5);
  vs_progress_bar_init(&bar, stdout, !o->seen[OPT_JSON]);
  opts.progress = vs_progress_bar_migration;
  opts.warning = print_warning_after_bar;
  opts.data = &bar;
  opts.stop = &stop_requested;
  /* Interrupted, the migration is cancelled (as virsh migrate does), not
   * left running without anyone following it. */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  vs_migrate_run(backend, &opts, &result);
  vs_progress_bar_finish(&bar);
  return migrate_report(o, backend, &result);
}

static int cmd_prepare_migration(const Options *o, VsBackend *backend) {
  VsMigrateOptions opts;
  VsMigrateResult result;

  migrate_options(o, &opts);
  opts.warning = print_warning;
  vs_migrate_prepare_run(backend, &opts, &result);
  return migrate_report(o, backend, &result);
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
  switch (o.cmd) {
  case CMD_SETMEM: return cmd_setmem(&o, backend);
  case CMD_STATUS: return cmd_status(&o, backend);
  case CMD_MIGRATE: return cmd_migrate(&o, backend);
  case CMD_PREPARE: return cmd_prepare_migration(&o, backend);
  default: return cmd_watch(&o, backend);
  }
}
