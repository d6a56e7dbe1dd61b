/* SPDX-License-Identifier: MIT */
/*
 * The agent's settings: defaults, then the config file, then the command
 * line (main.c applies the last). (Not "config.h": that name is the
 * build's generated header.)
 *
 * The file is a GKeyFile with one group:
 *
 *   [shrinkd]
 *   socket=/run/shrinkd/shrinkd.sock
 *   proc_root=/
 *   deadline_ms=1000              # rounds that do not name one
 *   miss_limit=3                  # skip in soft rounds after this many misses in a row; 0: never
 *   soft_share_percent=50         # a hard round's soft phase gets this share of the deadline
 *   max_shrinkers_per_client=1024
 *   max_clients=1024
 *
 *   # Bounds per user (every local user may connect; uid 0 is exempt)
 *   max_clients_per_uid=32        # connections of one non-root uid
 *   reserved_root_clients=16      # of max_clients, slots only root may take
 *   max_shrinkers_per_uid=4096    # shrinkers of one non-root uid, over its connections
 *   max_shrinkers=65536           # shrinkers in all
 *   hello_timeout_ms=2000         # a connection that says no HELLO this long is closed
 *   mlock=true
 *
 *   # Pressure sources and the balloon controller (balloon.h has the rules)
 *   balloon=auto                  # auto: follow a virtio balloon if there is one; off
 *   balloon_events=auto           # auto (kprobe PMU, else tracefs, else poll), kprobe-pmu,
 *                                 # kprobe-tracefs, poll
 *   balloon_reserve_mib=64        # free memory the guest keeps; a soft round is sized to
 *                                 # what free memory beyond it cannot cover
 *   balloon_stall_ms=300          # no change of the balloon's size this long: stalled
 *   balloon_max_rounds=6          # rounds per episode
 *   balloon_min_interval_ms=100   # between the end of one balloon round and the next
 *   balloon_soft_deadline_ms=1000 # deadline of a soft balloon round (1..5000)
 *   balloon_hard_deadline_ms=3000 # deadline of a hard one, its soft phase included (1..5000)
 *   poll_fast_ms=20               # config-space poll right after a change
 *   poll_moving_ms=100            # slowest poll while the balloon moves
 *   poll_idle_ms=250              # slowest poll when nothing moves (poll mode only)
 *   kmsg=/dev/kmsg                # the kernel log ("Out of puff" lines, OOM kills)
 *   psi_trigger=some 150000 1000000 # PSI trigger on /proc/pressure/memory; off disables
 *   psi_round_mib=64              # a PSI-triggered soft round asks for this much
 *   psi_interval_ms=10000         # PSI rounds at most this often
 *   hint_rounds=soft              # free page hints (live migration): one soft round per
 *                                 # new hint, for the estimates (soft = 100), for PCT
 *                                 # (1..100) percent of them, or off
 *
 *   # The host channel (channel.h, docs/channel-protocol.md)
 *   channel=/dev/virtio-ports/org.shrinkd.agent.0 # a character device, or a unix
 *                                 # socket to connect to; none: no channel
 *   vsock_port=0                  # also listen on this AF_VSOCK port; 0: not
 *   channel_out_max_kib=1024      # answers waiting for the host at most
 *   channel_write_timeout_ms=5000 # the host reads nothing this long: they are dropped
 *
 * A missing file means defaults; a file that cannot be parsed, or a value
 * of the wrong type or out of range, is an error naming the file and key.
 * Unknown keys are logged as warnings and ignored (a newer config on an
 * older agent must not stop it).
 */
#pragma once

#include <glib.h>
#include <stdint.h>

#define AGENT_SETTINGS_GROUP "shrinkd"

typedef struct {
  char *socket_path;
  char *proc_root;
  uint32_t deadline_ms;
  uint32_t miss_limit;
  unsigned soft_share_pct;
  uint32_t max_shrinkers_per_client;
  unsigned max_clients;
  uint32_t max_clients_per_uid;
  uint32_t reserved_root_clients;
  uint32_t max_shrinkers_per_uid;
  uint32_t max_shrinkers;
  uint32_t hello_timeout_ms;
  gboolean mlock;

  gboolean balloon;     /* FALSE: balloon=off */
  char *balloon_events; /* auto, kprobe-pmu, kprobe-tracefs, poll */
  uint32_t balloon_reserve_mib;
  uint32_t balloon_stall_ms;
  uint32_t balloon_max_rounds;
  uint32_t balloon_min_interval_ms;
  uint32_t balloon_soft_deadline_ms;
  uint32_t balloon_hard_deadline_ms;
  uint32_t poll_fast_ms;
  uint32_t poll_moving_ms;
  uint32_t poll_idle_ms;
  char *kmsg_path;
  char *psi_trigger; /* "off": none */
  uint32_t psi_round_mib;
  uint32_t psi_interval_ms;
  uint32_t hint_rounds_pct; /* 0: hint_rounds=off; soft is 100 */

  char *channel_path;  /* "none": no channel */
  uint32_t vsock_port; /* 0: none */
  uint32_t channel_out_max_kib;
  uint32_t channel_write_timeout_ms;
} AgentSettings;

/* Checks a channel value: "none" or an absolute path. */
gboolean agent_settings_valid_channel(const char *value);

/* Checks a balloon_events value; TRUE if it is one of the four. */
gboolean agent_settings_valid_balloon_events(const char *value);

/* Reads a hint_rounds value ("off", "soft" or a percentage 1..100, no
 * sign, no blanks) into *@pct (0 for off, 100 for soft). Returns FALSE,
 * leaving *@pct alone, for anything else. */
gboolean agent_settings_parse_hint_rounds(const char *value, uint32_t *pct);

/* Fills @config with the built-in defaults (strings newly allocated). */
void agent_settings_init(AgentSettings *config);

/* Frees the strings of @config (the struct itself is the caller's). */
void agent_settings_clear(AgentSettings *config);

/*
 * Applies the file at @path over @config. A missing file is fine (TRUE,
 * nothing changed) unless @must_exist. Returns TRUE, or FALSE with @error
 * (AGENT_ERROR_INVALID naming file and key; AGENT_ERROR_NOT_FOUND for a
 * required file that is missing); @config is then unchanged.
 */
gboolean agent_settings_load_file(AgentSettings *config, const char *path, gboolean must_exist,
                                  GError **error);
