/* SPDX-License-Identifier: MIT */
/*
 * Dispatch to the backend and agent implementations (see backend.h).
 */
#include "backend.h"

#include "vs-error.h"

JsonNode *vs_agent_call(VsAgent *agent, const char *command, JsonObject *arguments,
                        guint timeout_ms, GError **error) {
  return agent->ops->call(agent, command, arguments, timeout_ms, error);
}

void vs_agent_free(VsAgent *agent) {
  if (agent)
    agent->ops->free(agent);
}

JsonNode *vs_backend_ask_agent(VsBackend *backend, guint open_timeout_ms, const char *command,
                               JsonObject *arguments, guint timeout_ms, GError **error) {
  g_autoptr(VsAgent) agent = vs_backend_open_agent(backend, open_timeout_ms, error);
  JsonNode *answer;

  if (!agent)
    return NULL;
  answer = vs_agent_call(agent, command, arguments, timeout_ms, error);
  if (answer && !JSON_NODE_HOLDS_OBJECT(answer)) {
    g_set_error(error, VS_ERROR, VS_ERROR_PROTOCOL, "%s: the answer is not an object", command);
    g_clear_pointer(&answer, json_node_unref);
  }
  return answer;
}

gboolean vs_backend_get_memory(VsBackend *backend, VsMemory *out, GError **error) {
  *out = (VsMemory){0};
  return backend->ops->get_memory(backend, out, error);
}

gboolean vs_backend_set_memory(VsBackend *backend, guint64 target_bytes, GError **error) {
  return backend->ops->set_memory(backend, target_bytes, error);
}

gboolean vs_backend_get_state(VsBackend *backend, gboolean *running, char **state, GError **error) {
  return backend->ops->get_state(backend, running, state, error);
}

VsAgent *vs_backend_open_agent(VsBackend *backend, guint timeout_ms, GError **error) {
  return backend->ops->open_agent(backend, timeout_ms, error);
}

void vs_migration_info_init(VsMigrationInfo *info) {
  *info = (VsMigrationInfo){
      .status = VS_MIGRATION_NONE,
      .status_word = "none",
      .transferred_bytes = -1,
      .remaining_bytes = -1,
      .total_bytes = -1,
      .rate_bytes_per_s = -1,
      .total_time_ms = -1,
      .setup_time_ms = -1,
      .downtime_ms = -1,
  };
}

void vs_migration_info_clear(VsMigrationInfo *info) {
  g_free(info->error);
  vs_migration_info_init(info);
}

gboolean vs_migration_status_is_final(VsMigrationStatus status) {
  return status == VS_MIGRATION_COMPLETED || status == VS_MIGRATION_FAILED ||
         status == VS_MIGRATION_CANCELLED;
}

const char *vs_migration_status_name(VsMigrationStatus status) {
  switch (status) {
  case VS_MIGRATION_NONE: return "none";
  case VS_MIGRATION_SETUP: return "setup";
  case VS_MIGRATION_ACTIVE: return "active";
  case VS_MIGRATION_CANCELLING: return "cancelling";
  case VS_MIGRATION_COMPLETED: return "completed";
  case VS_MIGRATION_FAILED: return "failed";
  case VS_MIGRATION_CANCELLED: return "cancelled";
  default: return "unknown";
  }
}

/* The error for a backend without migration. */
static gboolean no_migration(VsBackend *backend, GError **error) {
  g_set_error(error, VS_ERROR, VS_ERROR_FAILED, "%s: cannot migrate with this backend",
              backend->name ? backend->name : "the guest");
  return FALSE;
}

gboolean vs_backend_migrate_start(VsBackend *backend, const VsMigrateParams *params,
                                  GError **error) {
  if (!backend->ops->migrate_start)
    return no_migration(backend, error);
  return backend->ops->migrate_start(backend, params, error);
}

gboolean vs_backend_migrate_query(VsBackend *backend, VsMigrationInfo *out, GError **error) {
  vs_migration_info_init(out);
  if (!backend->ops->migrate_query)
    return no_migration(backend, error);
  return backend->ops->migrate_query(backend, out, error);
}

gboolean vs_backend_migrate_cancel(VsBackend *backend, GError **error) {
  if (!backend->ops->migrate_cancel)
    return no_migration(backend, error);
  return backend->ops->migrate_cancel(backend, error);
}

void vs_backend_free(VsBackend *backend) {
  if (!backend)
    return;
  g_free(backend->name);
  g_free(backend->guest);
  backend->ops->free(backend);
}
