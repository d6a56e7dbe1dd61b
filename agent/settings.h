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
 *   max_clients=4096
 *   mlock=true
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
  gboolean mlock;
} AgentSettings;

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
