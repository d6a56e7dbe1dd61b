/* SPDX-License-Identifier: MIT */
/*
 * The cooperative setmem, independent of the hypervisor (it runs over any
 * VsBackend):
 *
 *   1. prepare: tell the guest agent the new size (shrinkd-prepare) and wait
 *      for its answer, at most the deadline plus a margin. Only when the
 *      guest shrinks; skipped with --no-agent. Without an agent: a warning,
 *      then the reactive path (the balloon alone), unless the agent is
 *      required.
 *   2. balloon: set the new size, live.
 *   3. follow: poll the balloon's actual size until it is within
 *      VS_SETMEM_TOLERANCE_BYTES of the target, or the timeout passes.
 *
 * Time comes from a VsClock, so the unit tests run the state machine on a
 * fake clock against a fake backend.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include "backend.h"

/* The balloon counts as arrived within 1 MiB of the target (QEMU moves it
 * in pages, libvirt reports KiB). */
#define VS_SETMEM_TOLERANCE_BYTES   (G_GUINT64_CONSTANT(1) << 20)
/* What the agent may take beyond its deadline to answer prepare: channel
 * latency, measuring, a slow TCG guest. */
#define VS_SETMEM_PREPARE_MARGIN_MS 2000

#define VS_SETMEM_DEFAULT_DEADLINE_MS      4000
#define VS_SETMEM_DEFAULT_TIMEOUT_MS       60000
#define VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS 2000
#define VS_SETMEM_DEFAULT_POLL_MS          100

typedef struct {
  /* Monotonic microseconds. */
  gint64 (*now_us)(gpointer data);
  /* Sleeps @us microseconds (may return early). */
  void (*sleep_us)(gpointer data, gint64 us);
  gpointer data;
} VsClock;

/* The real clock (g_get_monotonic_time, g_usleep). Static, never NULL. */
const VsClock *vs_clock_real(void);

typedef enum {
  VS_AGENT_AUTO,     /* use the agent; without one, warn and take the reactive path */
  VS_AGENT_NONE,     /* --no-agent: never try */
  VS_AGENT_REQUIRED, /* --require-agent: without an agent that prepared, fail before the balloon */
} VsAgentMode;

/* Where the balloon is, for a progress display. */
typedef struct {
  guint64 initial_bytes;
  guint64 target_bytes;
  guint64 actual_bytes;
  gint64 elapsed_us; /* since the balloon was set */
  gint64 timeout_us;
} VsProgress;

typedef struct {
  guint64 target_bytes;
  guint deadline_ms;      /* the agent's deadline for preparing */
  guint timeout_ms;       /* how long to follow the balloon */
  guint agent_timeout_ms; /* connecting to the agent and the sync */
  guint poll_ms;          /* how often to read the balloon */
  VsAgentMode agent_mode;
  /* Called after each reading of the balloon (may be NULL). */
  void (*progress)(const VsProgress *progress, gpointer data);
  /* Called with each warning as it happens (may be NULL); the warnings are
   * also kept in the result. */
  void (*warning)(const char *message, gpointer data);
  gpointer data;        /* for progress and warning */
  const VsClock *clock; /* NULL: vs_clock_real() */
} VsSetmemOptions;

/* @opts with the defaults above (agent AUTO, no callbacks, real clock). */
void vs_setmem_options_init(VsSetmemOptions *opts, guint64 target_bytes);

typedef enum {
  VS_SETMEM_REACHED, /* the balloon reached the target: exit 0 */
  VS_SETMEM_PARTIAL, /* set, but short of the target at the timeout: exit 2 */
  VS_SETMEM_FAILED,  /* an error: exit 1 */
} VsSetmemOutcome;

typedef struct {
  VsSetmemOutcome outcome;
  GError *error;         /* FAILED: why */
  guint64 asked_bytes;   /* the target */
  guint64 initial_bytes; /* the balloon's actual size before (0 if unknown) */
  guint64 reached_bytes; /* its actual size at the end (0 if unknown) */
  guint64 max_bytes;     /* the guest's maximum (0 if unknown) */
  gboolean agent_used;   /* the agent answered prepare */
  char *agent_note;      /* why the agent was not used or failed (NULL when used) */
  JsonNode *prepare;     /* the agent's prepare answer (an object), or NULL */
  /* Phase durations; -1 for a phase that did not run. */
  gint64 prepare_us, balloon_us, follow_us, total_us;
  GPtrArray *warnings; /* of char *, in order */
} VsSetmemResult;

/*
 * Runs the three phases on @backend as @opts says and fills @result (which
 * the caller clears with vs_setmem_result_clear()). Never fails as a call:
 * the outcome and error are in @result.
 */
void vs_setmem_run(VsBackend *backend, const VsSetmemOptions *opts, VsSetmemResult *result);

/* Frees what @result holds. */
void vs_setmem_result_clear(VsSetmemResult *result);

/* The exit status for @result: 0 reached, 2 partial, 1 failed. */
int vs_setmem_exit_code(const VsSetmemResult *result);
