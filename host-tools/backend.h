/* SPDX-License-Identifier: MIT */
/*
 * The two small interfaces the commands (setmem.c, status, watch) are
 * written against, so that the same logic runs over libvirt, over plain
 * QEMU (QMP), and over fakes in the unit tests:
 *
 *   VsBackend: the hypervisor's side of one guest: its balloon, and where
 *              its agent channel is (libvirt-backend.c, qmp-backend.c).
 *   VsAgent:   the guest agent, commands and answers (channel-client.c).
 *
 * Neither is thread-safe; one thread uses a handle at a time.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* Memory figures of a guest, in bytes; 0 means unknown. */
typedef struct {
  guint64 actual_bytes;    /* the balloon's current size: the memory the guest has now */
  guint64 max_bytes;       /* the most the balloon can give the guest (the boot size) */
  guint64 available_bytes; /* the guest's total memory as it reports it (balloon stats) */
  guint64 unused_bytes;    /* free in the guest (balloon stats) */
  guint64 usable_bytes;    /* MemAvailable in the guest (balloon stats) */
  guint64 rss_bytes;       /* the VM process's resident set on the host */
} VsMemory;

typedef struct VsAgent VsAgent;
typedef struct VsBackend VsBackend;

typedef struct {
  /* See vs_agent_call(). */
  JsonNode *(*call)(VsAgent *self, const char *command, JsonObject *arguments, guint timeout_ms,
                    GError **error);
  void (*free)(VsAgent *self);
} VsAgentOps;

struct VsAgent {
  const VsAgentOps *ops;
};

typedef struct {
  /* See the vs_backend_*() wrappers below. */
  gboolean (*get_memory)(VsBackend *self, VsMemory *out, GError **error);
  gboolean (*set_memory)(VsBackend *self, guint64 target_bytes, GError **error);
  gboolean (*get_state)(VsBackend *self, gboolean *running, char **state, GError **error);
  VsAgent *(*open_agent)(VsBackend *self, guint timeout_ms, GError **error);
  void (*free)(VsBackend *self);
} VsBackendOps;

struct VsBackend {
  const VsBackendOps *ops;
  /* Owned, freed by vs_backend_free(): */
  char *name;  /* for messages: "domain 'NAME'" or "QEMU at PATH" */
  char *guest; /* for reports: the domain's name, or the QMP socket's path */
};

/*
 * Runs the agent command @command with @arguments (NULL: none; borrowed)
 * and waits at most @timeout_ms for the answer. Returns the answer's
 * "return" value (transfer full), or NULL with @error: VS_AGENT_ERROR (the
 * agent answered with an error; the code is its class), VS_ERROR_TIMEOUT,
 * VS_ERROR_CLOSED, VS_ERROR_PROTOCOL, VS_ERROR_FAILED.
 */
JsonNode *vs_agent_call(VsAgent *agent, const char *command, JsonObject *arguments,
                        guint timeout_ms, GError **error);

/* Closes and frees @agent. NULL is fine. */
void vs_agent_free(VsAgent *agent);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VsAgent, vs_agent_free)

/* Fills @out with what the hypervisor knows now (actual_bytes always; the
 * rest when known, else 0). Returns TRUE, or FALSE with @error. */
gboolean vs_backend_get_memory(VsBackend *backend, VsMemory *out, GError **error);

/* Sets the balloon so that the guest has @target_bytes (live; returns at
 * once, the balloon moves afterwards). Returns TRUE, or FALSE with @error. */
gboolean vs_backend_set_memory(VsBackend *backend, guint64 target_bytes, GError **error);

/* Whether the guest's CPUs run (*@running), and the hypervisor's word for
 * its state (*@state, transfer full: "running", "paused"...). Returns TRUE,
 * or FALSE with @error. */
gboolean vs_backend_get_state(VsBackend *backend, gboolean *running, char **state, GError **error);

/*
 * Opens the guest agent's channel and synchronises with it within
 * @timeout_ms. Returns the agent (transfer full), or NULL with @error:
 * VS_ERROR_NO_AGENT when there is no channel, it cannot be connected to, or
 * nobody answers the sync (the message says which and where); other codes
 * for other failures.
 */
VsAgent *vs_backend_open_agent(VsBackend *backend, guint timeout_ms, GError **error);

/* Frees @backend (and its connection). NULL is fine. */
void vs_backend_free(VsBackend *backend);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VsBackend, vs_backend_free)
