/* SPDX-License-Identifier: MIT */
/*
 * The two small interfaces the commands (setmem.c, status, watch) are
 * written against, so that the same logic runs over libvirt, over plain
 * QEMU (QMP), and over fakes in the unit tests:
 *
 *   VsBackend: the hypervisor's side of one guest: its balloon, where its
 *              agent channel is, and its live migration
 *              (libvirt-backend.c, qmp-backend.c).
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

/* What to migrate where; the strings are borrowed. */
typedef struct {
  /* libvirt: the destination's connection URI (virsh migrate's desturi,
   * "qemu+ssh://host/system"); QMP: QEMU's migration URI ("tcp:host:4444"),
   * where a QEMU started with -incoming waits. */
  const char *dest_uri;
  /* libvirt only (NULL: not given): VIR_MIGRATE_PARAM_URI, the address the
   * data goes to, and VIR_MIGRATE_PARAM_DEST_XML, the domain XML (the text,
   * not a file name) to use on the destination. */
  const char *migrate_uri;
  const char *dest_xml;
  guint64 bandwidth_mib_s;  /* the most the migration may use; 0: the hypervisor's default */
  gboolean persistent;      /* libvirt only: VIR_MIGRATE_PERSIST_DEST */
  gboolean undefine_source; /* libvirt only: VIR_MIGRATE_UNDEFINE_SOURCE */
} VsMigrateParams;

/* Where a migration is, as the hypervisor says. */
typedef enum {
  VS_MIGRATION_NONE,       /* no migration (not started) */
  VS_MIGRATION_SETUP,      /* started; connecting, setting up */
  VS_MIGRATION_ACTIVE,     /* copying memory, or switching over */
  VS_MIGRATION_CANCELLING, /* cancelled, not yet stopped */
  VS_MIGRATION_COMPLETED,  /* the guest runs on the destination */
  VS_MIGRATION_FAILED,     /* stopped by an error; the guest still runs here */
  VS_MIGRATION_CANCELLED,  /* stopped by a cancel; the guest still runs here */
} VsMigrationStatus;

/* A migration's figures. Numbers are -1 when the hypervisor does not give
 * them (yet). */
typedef struct {
  VsMigrationStatus status;
  char status_word[32];     /* the hypervisor's own word ("active", "pre-switchover"...) */
  gint64 transferred_bytes; /* memory sent so far (pages sent again count again) */
  gint64 remaining_bytes;   /* memory still to send */
  gint64 total_bytes;       /* the guest's memory */
  gint64 rate_bytes_per_s;  /* the current transfer rate */
  gint64 total_time_ms;     /* since the migration started, as the hypervisor counts */
  gint64 setup_time_ms;     /* the setup phase */
  gint64 downtime_ms;       /* COMPLETED: how long the guest was stopped; else the expected */
  char *error;              /* FAILED: the hypervisor's reason, if it gave one (owned) */
} VsMigrationInfo;

/* @info with no migration and every figure unknown. */
void vs_migration_info_init(VsMigrationInfo *info);

/* Frees what @info holds and initialises it again. */
void vs_migration_info_clear(VsMigrationInfo *info);

/* Whether @status is an end: COMPLETED, FAILED or CANCELLED. */
gboolean vs_migration_status_is_final(VsMigrationStatus status);

/* "none", "setup", "active", "cancelling", "completed", "failed",
 * "cancelled". Static string. */
const char *vs_migration_status_name(VsMigrationStatus status);

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
  /* Live migration; after free so that backends written before it still
   * initialise in order. NULL: the backend cannot migrate. */
  gboolean (*migrate_start)(VsBackend *self, const VsMigrateParams *params, GError **error);
  gboolean (*migrate_query)(VsBackend *self, VsMigrationInfo *out, GError **error);
  gboolean (*migrate_cancel)(VsBackend *self, GError **error);
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

/* Opens the guest agent (connecting and syncing within @open_timeout_ms),
 * runs @command with @arguments (borrowed) and closes the channel at once:
 * another client (a watch) may be waiting for it. Returns the answer,
 * which must be an object (transfer full), or NULL with @error. */
JsonNode *vs_backend_ask_agent(VsBackend *backend, guint open_timeout_ms, const char *command,
                               JsonObject *arguments, guint timeout_ms, GError **error);

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

/*
 * Starts a live migration of the guest as @params says and returns without
 * waiting for it (follow it with vs_backend_migrate_query()). Returns TRUE,
 * or FALSE with @error: VS_ERROR_INVALID for a parameter this backend does
 * not take, VS_ERROR_FAILED when the hypervisor refused (the message is
 * its). One migration per backend.
 */
gboolean vs_backend_migrate_start(VsBackend *backend, const VsMigrateParams *params,
                                  GError **error);

/*
 * Fills @out (initialised here; the caller clears it) with where the
 * migration started by vs_backend_migrate_start() is now. Returns TRUE, or
 * FALSE with @error when the hypervisor cannot be asked (the migration's
 * fate is then unknown).
 */
gboolean vs_backend_migrate_query(VsBackend *backend, VsMigrationInfo *out, GError **error);

/*
 * Asks the hypervisor to cancel the migration; it stops afterwards (the
 * status goes to CANCELLED, or COMPLETED if it was too late). Returns TRUE,
 * or FALSE with @error (e.g. the job has not begun yet: try again).
 */
gboolean vs_backend_migrate_cancel(VsBackend *backend, GError **error);

/* Frees @backend (and its connection). NULL is fine. A migration still
 * running is waited for, not cancelled. */
void vs_backend_free(VsBackend *backend);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VsBackend, vs_backend_free)
