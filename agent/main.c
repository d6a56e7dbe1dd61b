/* SPDX-License-Identifier: MIT */
/*
 * shrinkd: options and settings, the state, the main loop.
 *
 * Settings come from the built-in defaults, then the config file, then the
 * command line. All state lives in one Agent made here and freed in
 * agent_state_free(), in the reverse order of its making.
 */
#include <errno.h>
#include <glib-unix.h>
#include <malloc.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "commands.h"
#include "config.h"
#include "errors.h"
#include "local-proto.h"
#include "memory.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"
#include "server.h"
#include "settings.h"

typedef struct {
  AgentSettings settings;
  GMainLoop *loop;
  AgentProcfs *procfs;
  AgentRegistry *registry;
  AgentRounds *rounds;
  AgentCommands *commands;
  AgentServer *server;
  guint sigterm_id;
  guint sigint_id;
} Agent;

static void agent_state_free(Agent *a) {
  if (a->sigterm_id)
    g_source_remove(a->sigterm_id);
  if (a->sigint_id)
    g_source_remove(a->sigint_id);
  /* Peers first (their shrinkers leave the registry and any round), then
   * what they used. */
  agent_server_free(a->server);
  agent_memory_shutdown();
  agent_commands_free(a->commands);
  agent_rounds_free(a->rounds);
  agent_registry_free(a->registry);
  agent_procfs_free(a->procfs);
  if (a->loop)
    g_main_loop_unref(a->loop);
  agent_settings_clear(&a->settings);
  g_free(a);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Agent, agent_state_free)

static gboolean on_signal(gpointer data) {
  Agent *a = data;

  g_message("stopping on a signal");
  g_main_loop_quit(a->loop);
  return G_SOURCE_CONTINUE;
}

/* Many clients, one descriptor each: take what the hard limit allows. */
static void raise_fd_limit(void) {
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      g_debug("cannot raise the descriptor limit: %s", g_strerror(errno));
  }
}

int main(int argc, char **argv) {
  g_autofree char *opt_socket = NULL;
  g_autofree char *opt_config = NULL;
  g_autofree char *opt_proc_root = NULL;
  gint opt_deadline_ms = -1;
  gboolean opt_verbose = FALSE, opt_version = FALSE, opt_no_mlock = FALSE;
  const GOptionEntry entries[] = {
      {"socket", 's', 0, G_OPTION_ARG_FILENAME, &opt_socket,
       "Listen on PATH (default " SHRINKD_DEFAULT_SOCKET ")", "PATH"},
      {"config", 'c', 0, G_OPTION_ARG_FILENAME, &opt_config,
       "Read settings from FILE (default " SHRINKD_DEFAULT_CONFIG "; a missing default file means "
       "defaults)",
       "FILE"},
      {"proc-root", 0, 0, G_OPTION_ARG_FILENAME, &opt_proc_root,
       "Read /proc and /sys under DIR (default /)", "DIR"},
      {"deadline-ms", 'd', 0, G_OPTION_ARG_INT, &opt_deadline_ms,
       "Deadline of rounds that name none (default 1000)", "MS"},
      {"no-mlock", 0, 0, G_OPTION_ARG_NONE, &opt_no_mlock, "Do not lock memory", NULL},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "Log debug messages", NULL},
      {"version", 0, 0, G_OPTION_ARG_NONE, &opt_version, "Print the version and exit", NULL},
      {NULL},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- the shrinkd guest agent");
  g_autoptr(GError) error = NULL;
  g_autoptr(Agent) a = NULL;

  g_option_context_add_main_entries(context, entries, NULL);
  g_option_context_set_summary(
      context, "Asks the applications that registered through libshrink to give memory back.");
  g_option_context_set_description(
      context,
      "Settings: built-in defaults, then the config file (group [shrinkd]: socket, proc_root,\n"
      "deadline_ms, miss_limit, soft_share_percent, max_shrinkers_per_client, max_clients,\n"
      "mlock), then the command line.\n"
      "\n"
      "Exit status: 0 stopped by SIGTERM/SIGINT; 1 could not start; 2 usage error.\n");
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    g_printerr("shrinkd: %s\n", error->message);
    return 2;
  }
  if (argc > 1) {
    g_printerr("shrinkd: unexpected argument %s\n", argv[1]);
    return 2;
  }
  if (opt_version) {
    printf("shrinkd %s (protocol %d)\n", SHRINKD_VERSION, PROTO_VERSION);
    return 0;
  }
  if (opt_verbose)
    g_log_set_debug_enabled(TRUE);

  a = g_new0(Agent, 1);
  agent_settings_init(&a->settings);
  if (!agent_settings_load_file(&a->settings, opt_config ? opt_config : SHRINKD_DEFAULT_CONFIG,
                                opt_config != NULL, &error)) {
    g_printerr("shrinkd: %s\n", error->message);
    return 1;
  }
  if (opt_socket) {
    g_free(a->settings.socket_path);
    a->settings.socket_path = g_steal_pointer(&opt_socket);
  }
  if (opt_proc_root) {
    g_free(a->settings.proc_root);
    a->settings.proc_root = g_steal_pointer(&opt_proc_root);
  }
  if (opt_deadline_ms != -1) {
    if (opt_deadline_ms < 1 || opt_deadline_ms > PROTO_DEADLINE_MAX_MS) {
      g_printerr("shrinkd: --deadline-ms must be within 1..%d\n", PROTO_DEADLINE_MAX_MS);
      return 2;
    }
    a->settings.deadline_ms = (uint32_t)opt_deadline_ms;
  }
  if (opt_no_mlock)
    a->settings.mlock = FALSE;

  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  /* Large buffers (a status reply with many shrinkers) get their own
   * mapping and go back whole when freed. glibc's default threshold grows
   * after such a free, and then they would come from the heap, which
   * cannot shrink from the inside once locked. */
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);

  a->loop = g_main_loop_new(NULL, FALSE);
  a->procfs = agent_procfs_new(a->settings.proc_root);
  a->registry = agent_registry_new(a->settings.max_shrinkers_per_client);
  a->rounds = agent_rounds_new(a->registry, a->procfs,
                               &(AgentRoundConfig){
                                   .miss_limit = a->settings.miss_limit,
                                   .soft_share_pct = a->settings.soft_share_pct,
                               });
  a->commands = agent_commands_new(a->registry, a->rounds, a->procfs, a->settings.deadline_ms);
  a->server = agent_server_new(a->settings.socket_path, a->settings.max_clients, a->registry,
                               a->rounds, a->commands, &error);
  if (!a->server) {
    g_printerr("shrinkd: %s\n", error->message);
    return 1;
  }
  a->sigterm_id = g_unix_signal_add(SIGTERM, on_signal, a);
  a->sigint_id = g_unix_signal_add(SIGINT, on_signal, a);
  g_message("shrinkd %s listening on %s (proc root %s)", SHRINKD_VERSION, a->settings.socket_path,
            a->settings.proc_root);

  /* Everything is set up: the one-time work of the first command is done
   * now (type registration in json-glib and GObject), what only start-up
   * touched is dropped, and what the loop touches from now on stays
   * resident. */
  agent_commands_warm_up(a->commands);
  agent_memory_drop_startup_pages();
  if (a->settings.mlock)
    agent_memory_lock();

  g_main_loop_run(a->loop);
  return 0;
}
