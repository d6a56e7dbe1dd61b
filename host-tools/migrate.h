/* SPDX-License-Identifier: MIT */
/*
 * The cooperative live migration, independent of the hypervisor (it runs
 * over any VsBackend):
 *
 *   1. prepare: ask the guest agent for a soft round (the
 *      shrinkd-prepare-migration command) so that the applications drop
 *      what they can rebuild, and the migration sends what they really
 *      need; wait for its answer, at most the deadline plus a margin.
 *      Without an agent, or when it fails: a warning, and the migration goes
 *      on (unless the agent is required); skipped with --no-agent.
 *   2. start the migration (live; returns at once).
 *   3. follow it until it ends, cancelling it when the timeout passes or
 *      the user interrupts (the guest then stays where it was).
 *
 * vs_migrate_prepare_run() is step 1 alone, for operators who migrate with
 * their own tools. Time comes from a VsClock (setmem.h), so the unit tests
 * run the state machine on a fake clock against a fake backend.
 */
#pragma once

#include <signal.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "backend.h"
#include "setmem.h"

/* What the agent may take beyond its deadline to answer: channel latency,
 * measuring, a slow TCG guest (as for setmem's prepare). */
#define VS_MIGRATE_PREPARE_MARGIN_MS      VS_SETMEM_PREPARE_MARGIN_MS
/* The agent's own default for shrinkd-prepare-migration. */
#define VS_MIGRATE_DEFAULT_DEADLINE_MS    3000
#define VS_MIGRATE_DEFAULT_POLL_MS        200
/* How long a cancelled migration may take to stop before we give up
 * waiting (QEMU stops at its next iteration; libvirt cleans up). */
#define VS_MIGRATE_DEFAULT_CANCEL_WAIT_MS 30000

/* Where a migration is, for a progress display. */
typedef struct {
  const VsMigrationInfo *info;
  gint64 elapsed_us;   /* since the migration was started */
  gint64 timeout_us;   /* 0: none */
  gboolean cancelling; /* we asked for the cancel */
} VsMigrateProgress;

typedef struct {
  VsMigrateParams params; /* the destination and the hypervisor's options */
  guint deadline_ms;      /* the agent's deadline for its soft round */
  guint fraction_pct;     /* percent of the shrinkers' estimates (1..100); 0: not sent */
  guint agent_timeout_ms; /* connecting to the agent and the sync */
  VsAgentMode agent_mode; /* AUTO, NONE (--no-agent), REQUIRED (--require-agent) */
  guint timeout_ms;       /* cancel the migration after this long; 0: never */
  guint poll_ms;          /* how often to ask the hypervisor */
  guint cancel_wait_ms;   /* how long to wait for a cancelled migration to stop */
  /* Set (by a signal handler) to cancel: checked before the migration
   * starts and at each poll. NULL: never. */
  volatile sig_atomic_t *stop;
  /* Called after each reading (may be NULL). */
  void (*progress)(const VsMigrateProgress *progress, gpointer data);
  /* Called with each warning as it happens (may be NULL); the warnings are
   * also kept in the result. */
  void (*warning)(const char *message, gpointer data);
  gpointer data;        /* for progress and warning */
  const VsClock *clock; /* NULL: vs_clock_real() */
} VsMigrateOptions;

/* @opts with the defaults above (agent AUTO, no timeout, no callbacks, real
 * clock) and @dest_uri as the destination (borrowed). */
void vs_migrate_options_init(VsMigrateOptions *opts, const char *dest_uri);

typedef enum {
  VS_MIGRATE_COMPLETED, /* the guest runs on the destination: exit 0 */
  VS_MIGRATE_PREPARED,  /* prepare only: the agent answered: exit 0 */
  VS_MIGRATE_FAILED,    /* not started, failed, or lost track of: exit 1 */
  VS_MIGRATE_CANCELLED, /* cancelled by another client, or interrupted: exit 3 */
  VS_MIGRATE_TIMEOUT,   /* cancelled by us when the timeout passed: exit 4 */
} VsMigrateOutcome;

typedef struct {
  VsMigrateOutcome outcome;
  GError *error;        /* FAILED, CANCELLED, TIMEOUT: why */
  gboolean started;     /* the hypervisor accepted the migration */
  gboolean cancel_sent; /* we cancelled it (timeout or interrupt) */
  gboolean agent_used;  /* the agent answered */
  char *agent_note;     /* why the agent was not used or failed (NULL when used) */
  JsonNode *prepare;    /* the agent's answer (an object), or NULL */
  VsMigrationInfo info; /* the last reading (status NONE if none) */
  /* Durations; -1 for a phase that did not run. migrate_us runs from the
   * start to the end seen (or to giving up). */
  gint64 prepare_us, migrate_us, total_us;
  GPtrArray *warnings; /* of char *, in order */
} VsMigrateResult;

/*
 * Runs the three steps on @backend as @opts says and fills @result (which
 * the caller clears with vs_migrate_result_clear()). Never fails as a call:
 * the outcome and error are in @result.
 */
void vs_migrate_run(VsBackend *backend, const VsMigrateOptions *opts, VsMigrateResult *result);

/*
 * Step 1 alone: the agent is required (without one, or when it fails:
 * FAILED). Only the agent members of @opts are read. Fills @result as
 * vs_migrate_run() does; the outcome is PREPARED or FAILED.
 */
void vs_migrate_prepare_run(VsBackend *backend, const VsMigrateOptions *opts,
                            VsMigrateResult *result);

/* Frees what @result holds. */
void vs_migrate_result_clear(VsMigrateResult *result);

/* The exit status for @result: 0 completed or prepared, 1 failed,
 * 3 cancelled, 4 timeout. */
int vs_migrate_exit_code(const VsMigrateResult *result);

/* "completed", "prepared", "failed", "cancelled", "timeout". Static. */
const char *vs_migrate_outcome_name(VsMigrateOutcome outcome);
