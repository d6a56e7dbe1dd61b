/* SPDX-License-Identifier: MIT */
/*
 * The plain-QEMU backend (see qmp-backend.h).
 */
#include "qmp-backend.h"

#include <string.h>

#include "channel-client.h"
#include "qmp.h"
#include "vs-error.h"

typedef struct {
  VsBackend parent; /* first */
  VsQmp *qmp;
  char *channel_path;
  guint64 max_bytes; /* 0 until known */
} QmpBackend;

static gboolean qmp_get_memory(VsBackend *self, VsMemory *out, GError **error) {
  QmpBackend *b = (QmpBackend *)self;

  if (!vs_qmp_query_balloon(b->qmp, &out->actual_bytes, VS_QMP_TIMEOUT_MS, error))
    return FALSE;
  /* The boot size does not change; old QEMUs lack the command, which only
   * costs us the figure. */
  if (b->max_bytes == 0) {
    g_autoptr(GError) ignored = NULL;

    if (!vs_qmp_query_memory_size(b->qmp, &b->max_bytes, VS_QMP_TIMEOUT_MS, &ignored))
      b->max_bytes = 0;
  }
  out->max_bytes = b->max_bytes;
  return TRUE;
}

static gboolean qmp_set_memory(VsBackend *self, guint64 target_bytes, GError **error) {
  return vs_qmp_balloon(((QmpBackend *)self)->qmp, target_bytes, VS_QMP_TIMEOUT_MS, error);
}

static gboolean qmp_get_state(VsBackend *self, gboolean *running, char **state, GError **error) {
  return vs_qmp_query_status(((QmpBackend *)self)->qmp, running, state, VS_QMP_TIMEOUT_MS, error);
}

static VsAgent *qmp_open_agent(VsBackend *self, guint timeout_ms, GError **error) {
  QmpBackend *b = (QmpBackend *)self;
  VsChannel *ch;

  if (!b->channel_path) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_NO_AGENT,
                        "no agent channel given (--channel SOCKET)");
    return NULL;
  }
  ch = vs_channel_open(b->channel_path, timeout_ms, error);
  return ch ? vs_channel_into_agent(ch) : NULL;
}

/* A non-negative integer member of @o, or -1. */
static gint64 uint_member(JsonObject *o, const char *name) {
  JsonNode *n = o ? json_object_get_member(o, name) : NULL;

  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64 &&
      json_node_get_int(n) >= 0)
    return json_node_get_int(n);
  return -1;
}

static const struct {
  const char *word;
  VsMigrationStatus status;
} qemu_statuses[] = {
    {"none", VS_MIGRATION_NONE},
    {"setup", VS_MIGRATION_SETUP},
    {"cancelling", VS_MIGRATION_CANCELLING},
    {"cancelled", VS_MIGRATION_CANCELLED},
    {"completed", VS_MIGRATION_COMPLETED},
    {"failed", VS_MIGRATION_FAILED},
};

gboolean vs_qmp_parse_migration(JsonNode *ret, VsMigrationInfo *out, GError **error) {
  JsonObject *o, *ram;
  JsonNode *n;
  const char *word = "none";

  vs_migration_info_init(out);
  if (!ret || !JSON_NODE_HOLDS_OBJECT(ret)) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_PROTOCOL, "QMP query-migrate: not an object");
    return FALSE;
  }
  o = json_node_get_object(ret);
  n = json_object_get_member(o, "status");
  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
    word = json_node_get_string(n);
  /* Every other word is a stage of a running migration (active,
   * pre-switchover, device, postcopy-active, wait-unplug...). */
  out->status = VS_MIGRATION_ACTIVE;
  for (guint i = 0; i < G_N_ELEMENTS(qemu_statuses); i++)
    if (strcmp(word, qemu_statuses[i].word) == 0)
      out->status = qemu_statuses[i].status;
  g_strlcpy(out->status_word, word, sizeof(out->status_word));

  n = json_object_get_member(o, "ram");
  ram = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  out->transferred_bytes = uint_member(ram, "transferred");
  out->remaining_bytes = uint_member(ram, "remaining");
  out->total_bytes = uint_member(ram, "total");
  n = ram ? json_object_get_member(ram, "mbps") : NULL;
  if (n && JSON_NODE_HOLDS_VALUE(n) &&
      (json_node_get_value_type(n) == G_TYPE_DOUBLE ||
       json_node_get_value_type(n) == G_TYPE_INT64)) {
    double mbps = json_node_get_double(n);

    /* Megabits (10^6) per second. */
    if (mbps >= 0 && mbps < 1e12)
      out->rate_bytes_per_s = (gint64)(mbps * 1e6 / 8 + 0.5);
  }
  out->total_time_ms = uint_member(o, "total-time");
  out->setup_time_ms = uint_member(o, "setup-time");
  out->downtime_ms = uint_member(o, "downtime");
  if (out->downtime_ms < 0)
    out->downtime_ms = uint_member(o, "expected-downtime");
  n = json_object_get_member(o, "error-desc");
  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
    out->error = g_strdup(json_node_get_string(n));
  return TRUE;
}

static gboolean qmp_migrate_start(VsBackend *self, const VsMigrateParams *params, GError **error) {
  QmpBackend *b = (QmpBackend *)self;
  g_autoptr(JsonObject) args = json_object_new();
  g_autoptr(JsonNode) ret = NULL;

  if (params->migrate_uri || params->dest_xml || params->persistent || params->undefine_source) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_INVALID,
                        "plain QEMU migrates to its URI only: a separate migration URI, a "
                        "destination XML, persistent and undefine-source need libvirt");
    return FALSE;
  }
  if (params->bandwidth_mib_s) {
    g_autoptr(JsonObject) p = json_object_new();
    g_autoptr(JsonNode) r = NULL;

    /* A parameter of QEMU's, not of this migration: it stays set after. */
    json_object_set_int_member(p, "max-bandwidth", (gint64)(params->bandwidth_mib_s << 20));
    r = vs_qmp_call(b->qmp, "migrate-set-parameters", p, VS_QMP_TIMEOUT_MS, error);
    if (!r)
      return FALSE;
  }
  json_object_set_string_member(args, "uri", params->dest_uri);
  ret = vs_qmp_call(b->qmp, "migrate", args, VS_QMP_TIMEOUT_MS, error);
  return ret != NULL;
}

static gboolean qmp_migrate_query(VsBackend *self, VsMigrationInfo *out, GError **error) {
  g_autoptr(JsonNode) ret =
      vs_qmp_call(((QmpBackend *)self)->qmp, "query-migrate", NULL, VS_QMP_TIMEOUT_MS, error);

  return ret && vs_qmp_parse_migration(ret, out, error);
}

static gboolean qmp_migrate_cancel(VsBackend *self, GError **error) {
  g_autoptr(JsonNode) ret =
      vs_qmp_call(((QmpBackend *)self)->qmp, "migrate_cancel", NULL, VS_QMP_TIMEOUT_MS, error);

  return ret != NULL;
}

static void qmp_free(VsBackend *self) {
  QmpBackend *b = (QmpBackend *)self;

  vs_qmp_free(b->qmp);
  g_free(b->channel_path);
  g_free(b);
}

static const VsBackendOps qmp_backend_ops = {
    .get_memory = qmp_get_memory,
    .set_memory = qmp_set_memory,
    .get_state = qmp_get_state,
    .open_agent = qmp_open_agent,
    .free = qmp_free,
    .migrate_start = qmp_migrate_start,
    .migrate_query = qmp_migrate_query,
    .migrate_cancel = qmp_migrate_cancel,
};

VsBackend *vs_qmp_backend_new(const char *qmp_path, const char *channel_path, GError **error) {
  VsQmp *qmp = vs_qmp_open(qmp_path, VS_QMP_TIMEOUT_MS, error);
  QmpBackend *b;

  if (!qmp)
    return NULL;
  b = g_new0(QmpBackend, 1);
  b->parent.ops = &qmp_backend_ops;
  b->parent.name = g_strdup_printf("QEMU at %s", qmp_path);
  b->parent.guest = g_strdup(qmp_path);
  b->qmp = qmp;
  b->channel_path = g_strdup(channel_path);
  return &b->parent;
}
