/* SPDX-License-Identifier: MIT */
/*
 * The two-phase setmem (see setmem.h).
 */
#include "setmem.h"

#include <stdarg.h>

#include "vs-error.h"
#include "size.h"

static gint64 real_now_us(gpointer data) {
  return g_get_monotonic_time();
}

static void real_sleep_us(gpointer data, gint64 us) {
  if (us > 0)
    g_usleep((gulong)us);
}

static const VsClock real_clock = {real_now_us, real_sleep_us, NULL};

const VsClock *vs_clock_real(void) {
  return &real_clock;
}

void vs_setmem_options_init(VsSetmemOptions *opts, guint64 target_bytes) {
  *opts = (VsSetmemOptions){
      .target_bytes = target_bytes,
      .deadline_ms = VS_SETMEM_DEFAULT_DEADLINE_MS,
      .timeout_ms = VS_SETMEM_DEFAULT_TIMEOUT_MS,
      .agent_timeout_ms = VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS,
      .poll_ms = VS_SETMEM_DEFAULT_POLL_MS,
      .agent_mode = VS_AGENT_AUTO,
  };
}

void vs_setmem_result_clear(VsSetmemResult *result) {
  g_clear_error(&result->error);
  g_clear_pointer(&result->agent_note, g_free);
  g_clear_pointer(&result->prepare, json_node_unref);
  g_clear_pointer(&result->warnings, g_ptr_array_unref);
}

int vs_setmem_exit_code(const VsSetmemResult *result) {
  switch (result->outcome) {
  case VS_SETMEM_REACHED: return 0;
  case VS_SETMEM_PARTIAL: return 2;
  default: return 1;
  }
}

typedef struct {
  VsBackend *backend;
  const VsSetmemOptions *opts;
  const VsClock *clock;
  VsSetmemResult *r;
} Run;

static gint64 now(Run *run) {
  return run->clock->now_us(run->clock->data);
}

static void warn(Run *run, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void warn(Run *run, const char *fmt, ...) {
  va_list ap;
  char *msg;

  va_start(ap, fmt);
  msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_ptr_array_add(run->r->warnings, msg);
  if (run->opts->warning)
    run->opts->warning(msg, run->opts->data);
}

static void fail(Run *run, GError *error) {
  run->r->outcome = VS_SETMEM_FAILED;
  run->r->error = error;
}

static guint64 distance(guint64 a, guint64 b) {
  return a > b ? a - b : b - a;
}

/*
 * Phase 1. Returns FALSE when the agent is required and did not prepare
 * (the result then says why); TRUE otherwise, whether or not the agent was
 * used.
 */
static gboolean prepare(Run *run) {
  const VsSetmemOptions *o = run->opts;
  VsSetmemResult *r = run->r;
  g_autoptr(JsonObject) args = json_object_new();
  g_autoptr(JsonNode) answer = NULL;
  g_autoptr(GError) error = NULL;
  gint64 t0 = now(run);

  json_object_set_int_member(args, "new_size_bytes", (gint64)o->target_bytes);
  json_object_set_int_member(args, "deadline_ms", o->deadline_ms);
  answer = vs_backend_ask_agent(run->backend, o->agent_timeout_ms, "shrinkd-prepare", args,
                                o->deadline_ms + VS_SETMEM_PREPARE_MARGIN_MS, &error);
  r->prepare_us = now(run) - t0;
  if (answer) {
    r->agent_used = TRUE;
    r->prepare = g_steal_pointer(&answer);
    return TRUE;
  }
  if (o->agent_mode == VS_AGENT_REQUIRED) {
    g_prefix_error(&error, "the guest agent did not prepare (--require-agent): ");
    fail(run, g_steal_pointer(&error));
    return FALSE;
  }
  r->agent_note = g_strdup(error->message);
  if (g_error_matches(error, VS_ERROR, VS_ERROR_NO_AGENT))
    warn(run, "no guest agent: %s; setting the balloon without warning the guest (reactive path)",
         error->message);
  else
    warn(run, "the guest agent could not prepare: %s; setting the balloon anyway (reactive path)",
         error->message);
  return TRUE;
}

/* Phase 3: follows the balloon until it arrives or the timeout passes. */
static void follow(Run *run) {
  const VsSetmemOptions *o = run->opts;
  VsSetmemResult *r = run->r;
  gint64 t0 = now(run), timeout_us = (gint64)o->timeout_ms * 1000;

  for (;;) {
    g_autoptr(GError) error = NULL;
    VsMemory mem;
    VsProgress p;
    gint64 elapsed;

    if (!vs_backend_get_memory(run->backend, &mem, &error)) {
      r->follow_us = now(run) - t0;
      g_prefix_error(&error, "following the balloon: ");
      fail(run, g_steal_pointer(&error));
      return;
    }
    elapsed = now(run) - t0;
    r->reached_bytes = mem.actual_bytes;
    p = (VsProgress){r->initial_bytes, o->target_bytes, mem.actual_bytes, elapsed, timeout_us};
    if (o->progress)
      o->progress(&p, o->data);
    if (distance(mem.actual_bytes, o->target_bytes) <= VS_SETMEM_TOLERANCE_BYTES) {
      r->follow_us = elapsed;
      r->outcome = VS_SETMEM_REACHED;
      return;
    }
    if (elapsed >= timeout_us) {
      r->follow_us = elapsed;
      r->outcome = VS_SETMEM_PARTIAL;
      return;
    }
    run->clock->sleep_us(run->clock->data,
                         MIN((gint64)o->poll_ms * 1000, MAX(timeout_us - elapsed, 1)));
  }
}

void vs_setmem_run(VsBackend *backend, const VsSetmemOptions *opts, VsSetmemResult *result) {
  Run run = {backend, opts, opts->clock ? opts->clock : vs_clock_real(), result};
  g_autoptr(GError) error = NULL;
  g_autofree char *state = NULL;
  gboolean running = FALSE;
  VsMemory mem;
  gint64 t0 = now(&run), t;

  *result = (VsSetmemResult){
      .outcome = VS_SETMEM_FAILED,
      .asked_bytes = opts->target_bytes,
      .prepare_us = -1,
      .balloon_us = -1,
      .follow_us = -1,
      .total_us = -1,
      .warnings = g_ptr_array_new_with_free_func(g_free),
  };

  if (!vs_backend_get_state(backend, &running, &state, &error) ||
      !vs_backend_get_memory(backend, &mem, &error)) {
    fail(&run, g_steal_pointer(&error));
    goto out;
  }
  if (!running) {
    if (g_strcmp0(state, "paused") != 0) {
      fail(&run, g_error_new(VS_ERROR, VS_ERROR_NOT_RUNNING, "%s is not running (%s)",
                             backend->name, state));
      goto out;
    }
    warn(&run, "%s is paused: the balloon will not move until it runs", backend->name);
  }
  result->initial_bytes = mem.actual_bytes;
  result->max_bytes = mem.max_bytes;
  if (mem.max_bytes && opts->target_bytes > mem.max_bytes) {
    char a[32], m[32];

    fail(&run, g_error_new(VS_ERROR, VS_ERROR_INVALID, "%s is above the maximum memory of %s (%s)",
                           vs_format_bytes(opts->target_bytes, a, sizeof(a)), backend->name,
                           vs_format_bytes(mem.max_bytes, m, sizeof(m))));
    goto out;
  }

  /* Phase 1: only a guest that shrinks has anything to prepare. */
  if (opts->agent_mode == VS_AGENT_NONE)
    result->agent_note = g_strdup("not asked (--no-agent)");
  else if (opts->target_bytes >= mem.actual_bytes)
    result->agent_note = g_strdup("not asked: the guest does not shrink");
  else if (!prepare(&run))
    goto out;

  /* Phase 2. */
  t = now(&run);
  if (!vs_backend_set_memory(backend, opts->target_bytes, &error)) {
    result->balloon_us = now(&run) - t;
    fail(&run, g_steal_pointer(&error));
    goto out;
  }
  result->balloon_us = now(&run) - t;

  /* Phase 3. */
  follow(&run);
out:
  result->total_us = now(&run) - t0;
}
