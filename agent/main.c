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
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "balloon.h"
#include "channel.h"
#include "commands.h"
#include "config.h"
#include "errors.h"
#include "local-proto.h"
#include "memory.h"
#include "privileges.h"
#include "procfs.h"
#include "registry.h"
#include "round.h"
#include "server.h"
#include "settings.h"
#include "source.h"

typedef struct {
  AgentSettings settings;
  GMainLoop *loop;
  AgentProcfs *procfs;
  AgentRegistry *registry;
  AgentRounds *rounds;
  AgentCommands *commands;
  AgentBalloon *balloon;
  AgentServer *server;
  AgentChannel *channel;       /* the path (virtio-serial port), or NULL */
  AgentChannel *vsock_channel; /* or NULL */
  int signal_fd; /* SIGTERM and SIGINT, or -1 */
  guint signal_id;
  /* What start-up left; status shows it. */
  AgentPrivileges privileges;
} Agent;

static void agent_state_free(Agent *a) {
  if (a->signal_id)
    g_source_remove(a->signal_id);
  if (a->signal_fd >= 0)
    close(a->signal_fd);
  /* Peers first (their shrinkers leave the registry and any round), then
   * what they used. */
  agent_server_free(a->server);
  /* The host's sessions too: an answer still to come is dropped. */
  agent_channel_free(a->channel);
  agent_channel_free(a->vsock_channel);
  agent_memory_shutdown();
  agent_commands_free(a->commands);
  /* Before the rounds: a balloon round still running is dropped. */
  agent_balloon_free(a->balloon);
  agent_rounds_free(a->rounds);
  agent_registry_free(a->registry);
  agent_procfs_free(a->procfs);
  if (a->loop)
    g_main_loop_unref(a->loop);
  agent_settings_clear(&a->settings);
  g_free(a);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Agent, agent_state_free)

static gboolean on_signal(int fd, GIOCondition condition, gpointer data) {
  Agent *a = data;
  struct signalfd_siginfo si;

  if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
    return G_SOURCE_CONTINUE;
  g_message("stopping on %s", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
  g_main_loop_quit(a->loop);
  return G_SOURCE_CONTINUE;
}

/* SIGTERM and SIGINT through a signalfd on the main loop rather than
 * g_unix_signal_add(): GLib dispatches those from a worker thread of its
 * own ("gmain"), whose stack would be locked and resident for the
 * agent's whole life, for two signals that come once. Blocked before any
 * thread exists, so that none of them takes the signal instead. */
static gboolean watch_signals(Agent *a, GError **error) {
  sigset_t set;

  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
      (a->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "cannot watch signals: %s",
                g_strerror(errno));
    return FALSE;
  }
  a->signal_id = g_unix_fd_add(a->signal_fd, G_IO_IN, on_signal, a);
  return TRUE;
}

/* The agent works hardest when the guest has no memory left (a stalled
 * balloon), where a page it touches for the first time may call the OOM
 * killer on an application. Stack pages touched now are locked with the
 * rest. The deepest use measured was 20 KiB (a thousand shrinkers, hard
 * rounds, a status of them all): three times that. */
#define PREFAULT_STACK_BYTES (64 * 1024)

static void __attribute__((noinline)) prefault_stack(void) {
  volatile char area[PREFAULT_STACK_BYTES];

  for (size_t i = 0; i < sizeof(area); i += 4096)
    area[i] = 0;
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

static AgentVirtioEvents parse_events(const char *s) {
  if (strcmp(s, "kprobe-pmu") == 0)
    return AGENT_VIRTIO_EVENTS_KPROBE_PMU;
  if (strcmp(s, "kprobe-tracefs") == 0)
    return AGENT_VIRTIO_EVENTS_KPROBE_TRACEFS;
  if (strcmp(s, "poll") == 0)
    return AGENT_VIRTIO_EVENTS_POLL;
  return AGENT_VIRTIO_EVENTS_AUTO;
}

/* The balloon controller and its sources, from the settings. */
static AgentBalloon *make_balloon(Agent *a) {
  const AgentSettings *s = &a->settings;
  AgentBalloonPolicy policy;
  AgentVirtioSourceConfig vc = {
      .events = parse_events(s->balloon_events),
      .poll_fast_ms = s->poll_fast_ms,
      .poll_moving_max_ms = s->poll_moving_ms,
      .poll_idle_ms = s->poll_idle_ms,
  };
  AgentSourceEnv env = {.context = NULL, .root = s->proc_root, .procfs = a->procfs};
  AgentBalloon *balloon;
  AgentSource *virtio;

  agent_balloon_policy_init(&policy);
  policy.reserve_bytes = (uint64_t)s->balloon_reserve_mib << 20;
  policy.blind_step_bytes = policy.reserve_bytes;
  policy.stall_ms = s->balloon_stall_ms;
  policy.max_rounds = s->balloon_max_rounds;
  policy.min_interval_ms = s->balloon_min_interval_ms;
  policy.soft_deadline_ms = s->balloon_soft_deadline_ms;
  policy.hard_deadline_ms = s->balloon_hard_deadline_ms;
  policy.psi_round_bytes = (uint64_t)s->psi_round_mib << 20;
  policy.psi_interval_ms = s->psi_interval_ms;
  policy.hint_off = s->hint_rounds_pct == 0;
  policy.hint_pct = s->hint_rounds_pct;
  /* No estimates: the reserve, as for the blind step and PSI rounds; it is
   * also what shrinkd-prepare-migration falls back to. */
  policy.hint_fallback_bytes = policy.reserve_bytes;
  balloon = agent_balloon_new(a->rounds, a->procfs, &policy);
  agent_balloon_set_registry(balloon, a->registry);

  virtio = agent_source_virtio_new(&env, &vc);
  if (!s->balloon)
    agent_source_disable(virtio, "balloon=off");
  agent_balloon_add_source(balloon, virtio);
  agent_balloon_add_source(balloon, agent_source_kmsg_new(&env, s->kmsg_path));
  agent_balloon_add_source(balloon, agent_source_psi_new(&env, s->psi_trigger));
  return balloon;
}

/* The host channels, from the settings. Only a vsock port that cannot be
 * listened on is an error; a path is waited for. */
static gboolean make_channels(Agent *a, GError **error) {
  const AgentSettings *s = &a->settings;
  AgentChannelConfig cc = {
      .out_max_bytes = (gsize)s->channel_out_max_kib * 1024,
      .write_timeout_ms = s->channel_write_timeout_ms,
      .sys_root = s->proc_root,
  };

  if (strcmp(s->channel_path, "none") != 0)
    a->channel = agent_channel_new_path(s->channel_path, a->commands, &cc);
  if (s->vsock_port) {
    a->vsock_channel = agent_channel_new_vsock(s->vsock_port, a->commands, &cc, error);
    if (!a->vsock_channel)
      return FALSE;
  }
  return TRUE;
}

int main(int argc, char **argv) {
  g_autofree char *opt_socket = NULL;
  g_autofree char *opt_config = NULL;
  g_autofree char *opt_proc_root = NULL;
  g_autofree char *opt_balloon = NULL;
  g_autofree char *opt_balloon_events = NULL;
  g_autofree char *opt_kmsg = NULL;
  g_autofree char *opt_psi = NULL;
  g_autofree char *opt_channel = NULL;
  g_autofree char *opt_hint_rounds = NULL;
  gint64 opt_vsock_port = -1;
  gint opt_deadline_ms = -1;
  gboolean opt_verbose = FALSE, opt_version = FALSE, opt_no_mlock = FALSE;
  gboolean opt_keep_privileges = FALSE;
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
      {"balloon", 0, 0, G_OPTION_ARG_STRING, &opt_balloon,
       "auto: follow the virtio balloon if there is one (default); off: do not", "auto|off"},
      {"balloon-events", 0, 0, G_OPTION_ARG_STRING, &opt_balloon_events,
       "How to learn of balloon changes: auto (kprobe PMU, else tracefs, else poll; default), "
       "kprobe-pmu, kprobe-tracefs, poll",
       "MODE"},
      {"kmsg", 0, 0, G_OPTION_ARG_FILENAME, &opt_kmsg,
       "Read the kernel log from PATH (default /dev/kmsg; a FIFO works)", "PATH"},
      {"psi-trigger", 0, 0, G_OPTION_ARG_STRING, &opt_psi,
       "PSI trigger on /proc/pressure/memory (default \"some 150000 1000000\"; off: none)",
       "TRIGGER"},
      {"hint-rounds", 0, 0, G_OPTION_ARG_STRING, &opt_hint_rounds,
       "On a new free page hint (live migration): soft: one soft round for the shrinkers' "
       "estimates (default); PCT (1..100): for that share of them; off: nothing",
       "off|soft|PCT"},
      {"channel", 0, 0, G_OPTION_ARG_FILENAME, &opt_channel,
       "Serve the host on PATH: a character device (default " AGENT_CHANNEL_DEFAULT_PATH
       ") or a unix socket to connect to; none: no host channel",
       "PATH"},
      {"vsock-port", 0, 0, G_OPTION_ARG_INT64, &opt_vsock_port,
       "Also serve the host on AF_VSOCK port N (default 0: no vsock)", "N"},
      {"no-mlock", 0, 0, G_OPTION_ARG_NONE, &opt_no_mlock, "Do not lock memory", NULL},
      {"keep-privileges", 0, 0, G_OPTION_ARG_NONE, &opt_keep_privileges,
       "Keep every capability after start-up (for debugging; default: keep only CAP_IPC_LOCK, "
       "set no-new-privs)",
       NULL},
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
      "deadline_ms, miss_limit, soft_share_percent, max_shrinkers_per_client, max_clients\n"
      "(1024), max_clients_per_uid (32), reserved_root_clients (16), max_shrinkers_per_uid\n"
      "(4096), max_shrinkers (65536), hello_timeout_ms (2000), mlock; balloon, balloon_events, balloon_reserve_mib (64), balloon_stall_ms (300),\n"
      "balloon_max_rounds (6), balloon_min_interval_ms (100), balloon_soft_deadline_ms (1000),\n"
      "balloon_hard_deadline_ms (3000), poll_fast_ms (20), poll_moving_ms (100), poll_idle_ms\n"
      "(250), kmsg, psi_trigger, psi_round_mib (64), psi_interval_ms (10000), hint_rounds\n"
      "(soft); channel, vsock_port (0), channel_out_max_kib (1024), channel_write_timeout_ms\n"
      "(5000)), then the command line.\n"
      "\n"
      "The balloon: when the host raises the balloon's target, a soft round asks the\n"
      "applications for what free memory beyond the reserve cannot cover; if that round leaves\n"
      "a shortfall, a hard round follows at once, and whenever the balloon stops growing for\n"
      "balloon_stall_ms (or the driver logs \"Out of puff\"), a hard round asks for all that is\n"
      "still missing; at most balloon_max_rounds rounds per change. When the target\n"
      "falls again, the applications get relief. A PSI trigger adds soft rounds for pressure\n"
      "that does not come from the balloon. Each new request of the host for free page hints\n"
      "(a live migration) gets one soft round (reason migration, 1 s deadline) for the\n"
      "shrinkers' estimates, or balloon_reserve_mib when none has one; never a hard round.\n"
      "Reading the balloon's config space, kprobes and /dev/kmsg need root; without them\n"
      "shrinkd says so once and uses what it can see. After start-up shrinkd keeps only\n"
      "CAP_IPC_LOCK (it stays uid 0) and sets no-new-privs, unless --keep-privileges.\n"
      "\n"
      "The host channel: the QEMU guest agent protocol (guest-sync-delimited, guest-ping,\n"
      "guest-info, shrinkd-status, shrinkd-shrink, shrinkd-prepare, shrinkd-prepare-migration)\n"
      "on the virtio-serial port org.shrinkd.agent.0, waited for if it is not there yet;\n"
      "virt-shrink speaks it.\n"
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
  a->signal_fd = -1;
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
  if (opt_balloon) {
    if (strcmp(opt_balloon, "auto") != 0 && strcmp(opt_balloon, "off") != 0) {
      g_printerr("shrinkd: --balloon must be auto or off\n");
      return 2;
    }
    a->settings.balloon = strcmp(opt_balloon, "auto") == 0;
  }
  if (opt_balloon_events) {
    if (!agent_settings_valid_balloon_events(opt_balloon_events)) {
      g_printerr("shrinkd: --balloon-events must be auto, kprobe-pmu, kprobe-tracefs or poll\n");
      return 2;
    }
    g_free(a->settings.balloon_events);
    a->settings.balloon_events = g_steal_pointer(&opt_balloon_events);
  }
  if (opt_kmsg) {
    g_free(a->settings.kmsg_path);
    a->settings.kmsg_path = g_steal_pointer(&opt_kmsg);
  }
  if (opt_psi) {
    g_free(a->settings.psi_trigger);
    a->settings.psi_trigger = g_steal_pointer(&opt_psi);
  }
  if (opt_hint_rounds &&
      !agent_settings_parse_hint_rounds(opt_hint_rounds, &a->settings.hint_rounds_pct)) {
    g_printerr("shrinkd: --hint-rounds must be off, soft or a percentage 1..100\n");
    return 2;
  }
  if (opt_channel) {
    if (!agent_settings_valid_channel(opt_channel)) {
      g_printerr("shrinkd: --channel must be an absolute path or none\n");
      return 2;
    }
    g_free(a->settings.channel_path);
    a->settings.channel_path = g_steal_pointer(&opt_channel);
  }
  if (opt_vsock_port != -1) {
    if (opt_vsock_port < 0 || opt_vsock_port >= G_MAXUINT32) {
      g_printerr("shrinkd: --vsock-port must be within 0..%u\n", G_MAXUINT32 - 1);
      return 2;
    }
    a->settings.vsock_port = (uint32_t)opt_vsock_port;
  }

  signal(SIGPIPE, SIG_IGN);
  if (!watch_signals(a, &error)) {
    g_printerr("shrinkd: %s\n", error->message);
    return 1;
  }
  raise_fd_limit();
  /* Large buffers (a status reply with many shrinkers) get their own
   * mapping and go back whole when freed. glibc's default threshold grows
   * after such a free, and then they would come from the heap, which
   * cannot shrink from the inside once locked. */
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);

  a->loop = g_main_loop_new(NULL, FALSE);
  a->procfs = agent_procfs_new(a->settings.proc_root);
  a->registry = agent_registry_new(a->settings.max_shrinkers_per_client);
  agent_registry_set_limits(a->registry, a->settings.max_shrinkers_per_uid,
                            a->settings.max_shrinkers);
  a->rounds = agent_rounds_new(a->registry, a->procfs,
                               &(AgentRoundConfig){
                                   .miss_limit = a->settings.miss_limit,
                                   .soft_share_pct = a->settings.soft_share_pct,
                               });
  a->commands = agent_commands_new(a->registry, a->rounds, a->procfs, a->settings.deadline_ms);
  /* shrinkd-prepare judges a shortfall as the balloon controller does. */
  agent_commands_set_prepare_reserve(a->commands, (uint64_t)a->settings.balloon_reserve_mib << 20);
  a->balloon = make_balloon(a);
  agent_commands_set_balloon(a->commands, a->balloon);
  agent_commands_set_privileges(a->commands, &a->privileges);
  a->server = agent_server_new(a->settings.socket_path, a->settings.max_clients, a->registry,
                               a->rounds, a->commands, &error);
  if (!a->server) {
    g_printerr("shrinkd: %s\n", error->message);
    return 1;
  }
  agent_server_set_limits(a->server, &(AgentServerLimits){
                                         .max_clients_per_uid = a->settings.max_clients_per_uid,
                                         .reserved_root_clients = a->settings.reserved_root_clients,
                                         .hello_timeout_ms = a->settings.hello_timeout_ms,
                                     });
  if (!make_channels(a, &error)) {
    g_printerr("shrinkd: %s\n", error->message);
    return 1;
  }
  g_message("shrinkd %s listening on %s (proc root %s)", SHRINKD_VERSION, a->settings.socket_path,
            a->settings.proc_root);
  /* What only start-up touched is dropped first; then the sources start
   * and a first command is run (the code of parsing and answering one), so
   * that the code they need is resident when memory is locked. Dropped after them, it would have to come back from
   * its file on the first round, and that round may come when the guest
   * has no page left for it (seen: the OOM killer invoked by shrinkd's
   * own page fault in a guest whose balloon target was unknown). */
  agent_memory_drop_startup_pages();
  /* Sources last: an event may ask for a round at once. */
  agent_balloon_start(a->balloon);
  agent_commands_warm_up(a->commands);
  prefault_stack();
  /* Everything that needs a capability only to be opened is open now:
   * the sources, the socket, the vsock listener. Before locking, so that
   * mlockall() already runs with the set kept for the agent's life: a set
   * that lacked what locking needs would show at once, not at the first
   * trim (agent_memory_release_soon() locks again). */
  if (opt_keep_privileges)
    agent_privileges_read(&a->privileges, "--keep-privileges: kept every capability");
  else
    agent_privileges_drop(&a->privileges);
  if (a->settings.mlock)
    agent_memory_lock();

  g_main_loop_run(a->loop);
  return 0;
}
