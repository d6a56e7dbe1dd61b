/* SPDX-License-Identifier: MIT */
/*
 * Defaults and the config file (see settings.h).
 */
#include "settings.h"

#include <string.h>

#include "channel.h"
#include "config.h" /* the build's: SHRINKD_DEFAULT_SOCKET */
#include "errors.h"
#include "local-proto.h"
#include "registry.h"
#include "server.h"

void agent_settings_init(AgentSettings *config) {
  memset(config, 0, sizeof(*config));
  config->socket_path = g_strdup(SHRINKD_DEFAULT_SOCKET);
  config->proc_root = g_strdup("/");
  config->deadline_ms = 1000;
  config->miss_limit = 3;
  config->soft_share_pct = 50;
  config->max_shrinkers_per_client = AGENT_REGISTRY_SHRINKERS_PER_CLIENT_DEFAULT;
  config->max_clients = AGENT_SERVER_CLIENTS_DEFAULT;
  config->max_clients_per_uid = AGENT_SERVER_CLIENTS_PER_UID_DEFAULT;
  config->reserved_root_clients = AGENT_SERVER_ROOT_RESERVED_DEFAULT;
  config->max_shrinkers_per_uid = AGENT_REGISTRY_SHRINKERS_PER_UID_DEFAULT;
  config->max_shrinkers = AGENT_REGISTRY_SHRINKERS_DEFAULT;
  config->hello_timeout_ms = AGENT_SERVER_HELLO_TIMEOUT_DEFAULT_MS;
  config->mlock = TRUE;
  config->balloon = TRUE;
  config->balloon_events = g_strdup("auto");
  config->balloon_reserve_mib = 64;
  config->balloon_stall_ms = 300;
  config->balloon_max_rounds = 6;
  config->balloon_min_interval_ms = 100;
  config->balloon_soft_deadline_ms = 1000;
  config->balloon_hard_deadline_ms = 3000;
  config->poll_fast_ms = 20;
  config->poll_moving_ms = 100;
  config->poll_idle_ms = 250;
  config->kmsg_path = g_strdup("/dev/kmsg");
  config->psi_trigger = g_strdup("some 150000 1000000");
  config->psi_round_mib = 64;
  config->psi_interval_ms = 10000;
  config->hint_rounds_pct = 100;
  config->channel_path = g_strdup(AGENT_CHANNEL_DEFAULT_PATH);
  config->vsock_port = 0;
  config->channel_out_max_kib = AGENT_CHANNEL_OUT_MAX_DEFAULT / 1024;
  config->channel_write_timeout_ms = AGENT_CHANNEL_WRITE_TIMEOUT_DEFAULT;
}

gboolean agent_settings_valid_channel(const char *value) {
  return value && (strcmp(value, "none") == 0 || g_path_is_absolute(value));
}

gboolean agent_settings_valid_balloon_events(const char *value) {
  static const char *const modes[] = {"auto", "kprobe-pmu", "kprobe-tracefs", "poll", NULL};

  return value && g_strv_contains(modes, value);
}

gboolean agent_settings_parse_hint_rounds(const char *value, uint32_t *pct) {
  guint64 v;

  if (!value)
    return FALSE;
  if (strcmp(value, "off") == 0) {
    *pct = 0;
    return TRUE;
  }
  if (strcmp(value, "soft") == 0) {
    *pct = 100;
    return TRUE;
  }
  /* g_ascii_string_to_unsigned() refuses signs, blanks and trailing text. */
  if (!g_ascii_string_to_unsigned(value, 10, 1, 100, &v, NULL))
    return FALSE;
  *pct = (uint32_t)v;
  return TRUE;
}

void agent_settings_clear(AgentSettings *config) {
  g_clear_pointer(&config->socket_path, g_free);
  g_clear_pointer(&config->proc_root, g_free);
  g_clear_pointer(&config->balloon_events, g_free);
  g_clear_pointer(&config->kmsg_path, g_free);
  g_clear_pointer(&config->psi_trigger, g_free);
  g_clear_pointer(&config->channel_path, g_free);
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
      "max_clients_per_uid",
      "reserved_root_clients",
      "max_shrinkers_per_uid",
      "max_shrinkers",
      "hello_timeout_ms",
      "mlock",
      "balloon",
      "balloon_events",
      "balloon_reserve_mib",
      "balloon_stall_ms",
      "balloon_max_rounds",
      "balloon_min_interval_ms",
      "balloon_soft_deadline_ms",
      "balloon_hard_deadline_ms",
      "poll_fast_ms",
      "poll_moving_ms",
      "poll_idle_ms",
      "kmsg",
      "psi_trigger",
      "psi_round_mib",
      "psi_interval_ms",
      "hint_rounds",
      "channel",
      "vsock_port",
      "channel_out_max_kib",
      "channel_write_timeout_ms",
      NULL,
  };
  static const struct {
    const char *key;
    size_t offset;
    guint64 min, max;
  } u32_keys[] = {
      {"max_clients_per_uid", G_STRUCT_OFFSET(AgentSettings, max_clients_per_uid), 1, 65536},
      {"reserved_root_clients", G_STRUCT_OFFSET(AgentSettings, reserved_root_clients), 0, 65535},
      {"max_shrinkers_per_uid", G_STRUCT_OFFSET(AgentSettings, max_shrinkers_per_uid), 1,
       1 << 20},
      {"max_shrinkers", G_STRUCT_OFFSET(AgentSettings, max_shrinkers), 1, 1 << 20},
      {"hello_timeout_ms", G_STRUCT_OFFSET(AgentSettings, hello_timeout_ms), 10, 600000},
      {"balloon_reserve_mib", G_STRUCT_OFFSET(AgentSettings, balloon_reserve_mib), 1, 1 << 20},
      {"balloon_stall_ms", G_STRUCT_OFFSET(AgentSettings, balloon_stall_ms), 10, 5000},
      {"balloon_max_rounds", G_STRUCT_OFFSET(AgentSettings, balloon_max_rounds), 1, 100},
      {"balloon_min_interval_ms", G_STRUCT_OFFSET(AgentSettings, balloon_min_interval_ms), 1,
       60000},
      {"balloon_soft_deadline_ms", G_STRUCT_OFFSET(AgentSettings, balloon_soft_deadline_ms), 1,
       5000},
      {"balloon_hard_deadline_ms", G_STRUCT_OFFSET(AgentSettings, balloon_hard_deadline_ms), 1,
       5000},
      {"poll_fast_ms", G_STRUCT_OFFSET(AgentSettings, poll_fast_ms), 1, 10000},
      {"poll_moving_ms", G_STRUCT_OFFSET(AgentSettings, poll_moving_ms), 1, 60000},
      {"poll_idle_ms", G_STRUCT_OFFSET(AgentSettings, poll_idle_ms), 1, 600000},
      {"psi_round_mib", G_STRUCT_OFFSET(AgentSettings, psi_round_mib), 1, 1 << 20},
      {"psi_interval_ms", G_STRUCT_OFFSET(AgentSettings, psi_interval_ms), 1, 86400000},
      /* 0: none; vsock ports are 32-bit, VMADDR_PORT_ANY (-1U) excluded */
      {"vsock_port", G_STRUCT_OFFSET(AgentSettings, vsock_port), 0, G_MAXUINT32 - 1},
      {"channel_out_max_kib", G_STRUCT_OFFSET(AgentSettings, channel_out_max_kib), 64, 1 << 20},
      {"channel_write_timeout_ms", G_STRUCT_OFFSET(AgentSettings, channel_write_timeout_ms), 10,
       600000},
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

  for (gsize i = 0; i < G_N_ELEMENTS(u32_keys); i++) {
    uint32_t *field = G_STRUCT_MEMBER_P(&c, u32_keys[i].offset);

    v = *field;
    if (!get_uint(kf, path, u32_keys[i].key, u32_keys[i].min, u32_keys[i].max, &v, error))
      return FALSE;
    *field = (uint32_t)v;
  }

  if (g_key_file_has_key(kf, AGENT_SETTINGS_GROUP, "balloon", NULL)) {
    g_autofree char *b = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "balloon", NULL);

    if (!b || (strcmp(g_strstrip(b), "auto") != 0 && strcmp(b, "off") != 0)) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID, "%s: [%s] balloon: expected auto or off",
                  path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    c.balloon = strcmp(b, "auto") == 0;
  }

  if (g_key_file_has_key(kf, AGENT_SETTINGS_GROUP, "hint_rounds", NULL)) {
    g_autofree char *h = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "hint_rounds", NULL);

    if (!h || !agent_settings_parse_hint_rounds(g_strstrip(h), &c.hint_rounds_pct)) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] hint_rounds: expected off, soft or a percentage 1..100", path,
                  AGENT_SETTINGS_GROUP);
      return FALSE;
    }
  }

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
    g_autofree char *events =
        g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "balloon_events", NULL);
    g_autofree char *kmsg = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "kmsg", NULL);
    g_autofree char *psi = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "psi_trigger", NULL);
    g_autofree char *channel = g_key_file_get_string(kf, AGENT_SETTINGS_GROUP, "channel", NULL);

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
    if (events && !agent_settings_valid_balloon_events(g_strstrip(events))) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] balloon_events: expected auto, kprobe-pmu, kprobe-tracefs or poll",
                  path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    if (kmsg && !g_path_is_absolute(g_strstrip(kmsg))) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] kmsg: expected an absolute path", path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    if (psi && strlen(g_strstrip(psi)) > 128) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] psi_trigger: longer than 128 characters", path, AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    if (channel && !agent_settings_valid_channel(g_strstrip(channel))) {
      g_set_error(error, AGENT_ERROR, AGENT_ERROR_INVALID,
                  "%s: [%s] channel: expected an absolute path or none", path,
                  AGENT_SETTINGS_GROUP);
      return FALSE;
    }
    if (channel) {
      g_free(c.channel_path);
      c.channel_path = g_steal_pointer(&channel);
    }
    if (events) {
      g_free(c.balloon_events);
      c.balloon_events = g_steal_pointer(&events);
    }
    if (kmsg) {
      g_free(c.kmsg_path);
      c.kmsg_path = g_steal_pointer(&kmsg);
    }
    if (psi) {
      g_free(c.psi_trigger);
      c.psi_trigger = g_steal_pointer(&psi);
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
