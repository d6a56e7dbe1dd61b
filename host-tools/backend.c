/* SPDX-License-Identifier: MIT */
/*
 * Dispatch to the backend and agent implementations (see backend.h).
 */
#include "backend.h"

JsonNode *vs_agent_call(VsAgent *agent, const char *command, JsonObject *arguments,
                        guint timeout_ms, GError **error) {
  return agent->ops->call(agent, command, arguments, timeout_ms, error);
}

void vs_agent_free(VsAgent *agent) {
  if (agent)
    agent->ops->free(agent);
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

void vs_backend_free(VsBackend *backend) {
  if (!backend)
    return;
  g_free(backend->name);
  g_free(backend->guest);
  backend->ops->free(backend);
}
