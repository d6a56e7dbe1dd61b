/* SPDX-License-Identifier: MIT */
/*
 * Defaults and the config file (see settings.h).
 */
#include "settings.h"

#include <string.h>

#include "config.h" /* the build's: SHRINKD_DEFAULT_SOCKET */
#include "errors.h"
#include "local-proto.h"

void agent_settings_init(AgentSettings *config) {
  memset(config, 0, sizeof(*config));
  config->socket_path = g_strdup(SHRINKD_DEFAULT_SOCKET);
  config->proc_root = g_strdup("/");
  config->deadline_ms = 1000;
  config->miss_limit = 3;
  config->soft_share_pct = 50;
  config->max_shrinkers_per_client = 1024;
  config->max_clients = 4096;
  config->mlock = TRUE;
}

void agent_settings_clear(AgentSettings *config) {
  g_clear_pointer(&config->socket_path, g_free);
  g_clear_pointer(&config->proc_root, g_free);
}

/* Reads integer @key into *@out if present, checking [@min, @max]. */
static gboolean get_uint(GKeyFile *kf, const char *path, const char *key, guint64 min, guint64 max,
                         guint64 *out, GError **error) {
  g_autoptr(GError) local = NULL;
  g_autofree char *text = g_key_file_get_value(kf, AGENT_SETTINGS_GROUP, key, NULL);
  guint64 v;

  if (!text)
    return TRUE;
  g_strstrip(text);
  if (!g_ascii_string_to_unsigned(text, 10, min, max, &v, &local)) {
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                "%s: [%s] %s=%s: expected an integer in %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT,
                path, AGENT_SETTINGS_GROUP, key, text, min, max);
    return FALSE;
  }
  *out = v;
  return TRUE;
}

gboolean agent_settings_load_file(AgentSettings *config, const char *path, gboolean must_exist,
                                  GError **error) {
  static const char *const known[] = {
      "socket",
      "proc_root",
      "deadline_ms",
      "miss_limit",
      "soft_share_percent",
      "max_shrinkers_per_client",
      "max_clients",
      "mlock",
      NULL,
  };
  g_autoptr(GKeyFile) kf = g_key_file_new();
  g_autoptr(GError) local = NULL;
  g_auto(GStrv) groups = NULL;
  g_auto(GStrv) keys = NULL;
  AgentSettings c = *config;
  guint64 v;

  if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &local)) {
    if (g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
      if (!must_exist)
        return TRUE;
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_NOT_FOUND, "%s: no such file", path);
      return FALSE;
    }
    g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "%s: %s", path, local->message);
    return FALSE;
  }

  groups = g_key_file_get_groups(kf, NULL);
  for (char **g = groups; *g; g++)
    if (strcmp(*g, AGENT_SETTINGS_GROUP) != 0)
      g_warning("%s: unknown group [%s] ignored", path, *g);
  keys = g_key_file_get_keys(kf, AGENT_SETTINGS_GROUP, NULL, NULL);
  for (char **k = keys; k && *k; k++)
    if (!g_strv_contains(known, *k))
      g_warning("%s: unknown key %s ignored", path, *k);

  v = c.deadline_ms;
  if (!get_uint(kf, path, "deadline_ms", 1, PROTO_DEADLINE_MAX_MS, &v, error))
    return FALSE;
  c.deadline_ms = (uint32_t)v;
  v = c.miss_limit;
  if (!get_uint(kf, path, "miss_limit", 0, 1000, &v, error))
    return FALSE;
  c.miss_limit = (uint32_t)v;
  v = c.soft_share_pct;
  if (!get_uint(kf, path, "soft_share_percent", 1, 99, &v, error))
    return FALSE;
  c.soft_share_pct = (unsigned)v;
  v = c.max_shrinkers_per_client;
  if (!get_uint(kf, path, "max_shrinkers_per_client", 1, 65536, &v, error))
    return FALSE;
  c.max_shrinkers_per_client = (uint32_t)v;
  v = c.max_clients;
  if (!get_uint(kf, path, "max_clients", 1, 65536, &v, error))
    return FALSE;
  c.max_clients = (unsigned)v;

  if (g_key_file_has_key(kf, AGENT_SETTINGS_GROUP, "mlock", NULL)) {
    gboolean b = g_key_file_get_boolean(kf, AGENT_SETTINGS_GROUP, "mlock", &local);

    if (local) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "%s: [%s] mlock: expected true or false",
                  path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    c.mlock = b;
  }

  /* Strings last, once nothing can fail any more. */
  {
    g_autofree char *sock = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "socket", NULL);
    g_autofree char *root = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "proc_root", NULL);

    if (sock && !g_path_is_absolute(sock)) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] socket: expected an absolute path", path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    if (root && !g_path_is_absolute(root)) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] proc_root: expected an absolute path", path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    if (sock) {
      g_free(c.socket_path);
      c.socket_path = g_steal_pointer(&sock);
    }
    if (root) {
      g_free(c.proc_root);
      c.proc_root = g_steal_pointer(&root);
    }
  }
  *config = c;
  return TRUE;
}
