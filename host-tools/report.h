/* SPDX-License-Identifier: MIT */
/*
 * What virt-shrink prints: the setmem and migrate reports (for people, or
 * JSON for scripts), the progress bars (only on a terminal), and the status
 * (a table of the guest's shrinkers, or the agent's JSON plus the host's
 * view).
 */
#pragma once

#include <stdio.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "backend.h"
#include "migrate.h"
#include "setmem.h"

/* ---- progress bar ---- */

typedef struct {
  FILE *out;
  gboolean enabled; /* FALSE: update and finish do nothing */
  gboolean drawn;   /* a bar is on the current line */
} VsProgressBar;

/* Initialises @bar on @out, enabled only if @out is a terminal and
 * @wanted. */
void vs_progress_bar_init(VsProgressBar *bar, FILE *out, gboolean wanted);

/* Redraws the bar in place (a VsSetmemOptions.progress callback; @data is
 * the VsProgressBar). */
void vs_progress_bar_update(const VsProgress *progress, gpointer data);

/* Redraws the bar of a migration in place: the share sent, the bytes sent
 * and left, the rate, the time and the status (a VsMigrateOptions.progress
 * callback; @data is the VsProgressBar). */
void vs_progress_bar_migration(const VsMigrateProgress *progress, gpointer data);

/* Ends the bar's line, if one was drawn. */
void vs_progress_bar_finish(VsProgressBar *bar);

/* ---- setmem ---- */

/* One application's share of the agent's prepare rounds. */
typedef struct {
  gint64 pid;
  char *client;
  GPtrArray *shrinkers; /* of char *, distinct names in order of appearance */
  guint64 asked_bytes;
  guint64 freed_bytes;
  guint requests;
  guint missed;
} VsAppFreed;

/*
 * Sums the requests of every round in the prepare answer @prepare (a
 * JSON object, or NULL) per application (pid and client name), in order of
 * first appearance. Returns an array of VsAppFreed * (transfer full, frees
 * its elements; empty for NULL or an answer without rounds). Tolerates
 * missing or ill-typed members (they count as 0 / "?").
 */
GPtrArray *vs_prepare_applications(JsonNode *prepare);

/* Prints the setmem report for people on @out. @guest names the guest
 * ("domain 'web1'", "QEMU at /run/q.sock"). Prints nothing but how far the
 * balloon got for a failed run: the caller prints the error. */
void vs_report_setmem_text(FILE *out, const char *guest, const VsSetmemResult *result);

/* The setmem report as JSON (transfer full); @guest is the domain's name
 * or the QMP socket. See virt-shrink(1) for the members. */
JsonNode *vs_report_setmem_json(const char *guest, const VsSetmemResult *result);

/* ---- migrate, prepare-migration ---- */

/*
 * Prints the report of a migration to @destination (the URI given), or,
 * with @destination NULL, of prepare-migration, for people on @out: how it
 * ended, the agent's soft round (what it freed, measured, MemAvailable
 * before and after) and the migration's figures (bytes sent, rate, total
 * time, setup time, downtime), then what each application freed. Prints
 * nothing for a run that failed before doing anything: the caller prints
 * the error.
 */
void vs_report_migrate_text(FILE *out, const char *guest, const char *destination,
                            const VsMigrateResult *result);

/* The same as JSON (transfer full); @guest is the domain's name or the QMP
 * socket, @destination NULL for prepare-migration. See virt-shrink(1) for
 * the members. */
JsonNode *vs_report_migrate_json(const char *guest, const char *destination,
                                 const VsMigrateResult *result);

/* ---- status ---- */

/* Prints the status for people on @out: the host's view of the balloon
 * (@mem, @state), then the agent's @status object (NULL: @agent_error
 * says why there is none). */
void vs_report_status_text(FILE *out, const char *guest, const char *state, const VsMemory *mem,
                           JsonNode *status, const char *agent_error);

/*
 * The status as JSON (transfer full): the agent's @status object with a
 * member "host_balloon" added (the host's view: state, actual_bytes,
 * max_bytes and the balloon statistics the hypervisor has; @status's object
 * is modified and shared, not copied), or, without an agent, a new object
 * with "host_balloon" and "agent_error".
 */
JsonNode *vs_report_status_json(const char *state, const VsMemory *mem, JsonNode *status,
                                const char *agent_error);

/*
 * Makes every string in @node (from the guest) safe to print on a terminal,
 * in place (see vs_printable(); strings are cut at 256 characters). For the
 * reports for people; JSON output escapes control characters itself.
 */
void vs_report_sanitize(JsonNode *node);

/* Prints @node on @out, pretty, and a newline. */
void vs_print_json(FILE *out, JsonNode *node);
