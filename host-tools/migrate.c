/* SPDX-License-Identifier: MIT */
/*
 * The cooperative live migration (see migrate.h).
 */
#include "migrate.h"

#include <stdarg.h>

#include "vs-error.h"

void vs_migrate_options_init(VsMigrateOptions *opts, const char *dest_uri) {
  *opts = (VsMigrateOptions){
      .params = {.dest_uri = dest_uri},
      .deadline_ms = VS_MIGRATE_DEFAULT_DEADLINE_MS,
      .agent_timeout_ms = VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS,
      .agent_mode = VS_AGENT_AUTO,
      .poll_ms = VS_MIGRATE_DEFAULT_POLL_MS,
      .cancel_wait_ms = VS_MIGRATE_DEFAULT_CANCEL_WAIT_MS,
  };
}

void vs_migrate_result_clear(VsMigrateResult *result) {
  g_clear_error(&result->error);
  g_clear_pointer(&result->agent_note, g_free);
  g_clear_pointer(&result->prepare, json_node_unref);
  g_clear_pointer(&result->warnings, g_ptr_array_unref);
  vs_migration_info_clear(&result->info);
}

int vs_migrate_exit_code(const VsMigrateResult *result) {
  switch (result->outcome) {
  case VS_MIGRATE_COMPLETED:
  case VS_MIGRATE_PREPARED: return 0;
  case VS_MIGRATE_CANCELLED: return 3;
  case VS_MIGRATE_TIMEOUT: return 4;
  default: return 1;
  }
}

const char *vs_migrate_outcome_name(VsMigrateOutcome outcome) {
  switch (outcome) {
  case VS_MIGRATE_COMPLETED: return "completed";
  case VS_MIGRATE_PREPARED: return "prepared";
  case VS_MIGRATE_CANCELLED: return "cancelled";
  case VS_MIGRATE_TIMEOUT: return "timeout";
  default: return "failed";
  }
}

typedef struct {
  VsBackend *backend;
  const VsMigrateOptions *opts;
  const VsClock *clock;
  VsMigrateResult *r;
} Run;

/* Why we cancel. */
typedef enum {
  CANCEL_NONE,
  CANCEL_TIMEOUT,
  CANCEL_INTERRUPT,
} CancelReason;

static gint64 now(Run *run) {
  return run->clock->now_us(run->clock->data);
}

static gboolean stop_requested(Run *run) {
  return run->opts->stop && *run->opts->stop;
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

static void fail(Run *run, VsMigrateOutcome outcome, GError *error) {
  run->r->outcome = outcome;
  g_clear_error(&run->r->error);
  run->r->error = error;
}

static void result_init(VsMigrateResult *result) {
  *result = (VsMigrateResult){
      .outcome = VS_MIGRATE_FAILED,
      .prepare_us = -1,
      .migrate_us = -1,
      .total_us = -1,
      .warnings = g_ptr_array_new_with_free_func(g_free),
  };
  vs_migration_info_init(&result->info);
}

/*
 * Whether the guest can be migrated (and its agent asked): running, or
 * paused (*@paused). Returns FALSE, the result failed, for a guest in any
 * other state or a hypervisor that cannot say.
 */
static gboolean check_state(Run *run, gboolean *paused) {
  g_autoptr(GError) error = NULL;
  g_autofree char *state = NULL;
  gboolean running = FALSE;

  if (!vs_backend_get_state(run->backend, &running, &state, &error)) {
    fail(run, VS_MIGRATE_FAILED, g_steal_pointer(&error));
    return FALSE;
  }
  *paused = !running && g_strcmp0(state, "paused") == 0;
  if (!running && !*paused) {
    fail(run, VS_MIGRATE_FAILED,
         g_error_new(VS_ERROR, VS_ERROR_NOT_RUNNING, "%s is not running (%s)", run->backend->name,
                     state));
    return FALSE;
  }
  return TRUE;
}

/*
 * Step 1. When the agent did not prepare: with @required_prefix, fails
 * with the error after that prefix and returns FALSE; without, notes and
 * warns and returns TRUE.
 */
static gboolean prepare(Run *run, const char *required_prefix) {
  const VsMigrateOptions *o = run->opts;
  VsMigrateResult *r = run->r;
  g_autoptr(JsonObject) args = json_object_new();
  g_autoptr(JsonNode) answer = NULL;
  g_autoptr(GError) error = NULL;
  gint64 t0 = now(run);

  json_object_set_int_member(args, "deadline_ms", o->deadline_ms);
  if (o->fraction_pct)
    json_object_set_int_member(args, "fraction_pct", o->fraction_pct);
  answer = vs_backend_ask_agent(run->backend, o->agent_timeout_ms, "shrinkd-prepare-migration",
                                args, o->deadline_ms + VS_MIGRATE_PREPARE_MARGIN_MS, &error);
  r->prepare_us = now(run) - t0;
  if (answer) {
    r->agent_used = TRUE;
    r->prepare = g_steal_pointer(&answer);
    return TRUE;
  }
  r->agent_note = g_strdup(error->message);
  if (required_prefix) {
    g_prefix_error(&error, "%s", required_prefix);
    fail(run, VS_MIGRATE_FAILED, g_steal_pointer(&error));
    return FALSE;
  }
  if (g_error_matches(error, VS_ERROR, VS_ERROR_NO_AGENT))
    warn(run, "no guest agent: %s; migrating without a soft round first", error->message);
  else
    warn(run, "the guest agent could not prepare the migration: %s; migrating anyway",
         error->message);
  return TRUE;
}

/* The outcome once the migration reached the final @status. */
static void conclude(Run *run, CancelReason reason) {
  VsMigrateResult *r = run->r;
  const VsMigrationInfo *info = &r->info;

  switch (info->status) {
  case VS_MIGRATION_COMPLETED:
    r->outcome = VS_MIGRATE_COMPLETED;
    if (reason != CANCEL_NONE)
      warn(run, "the migration completed before the cancel took effect");
    break;
  case VS_MIGRATION_FAILED:
    fail(run, VS_MIGRATE_FAILED,
         g_error_new(VS_ERROR, VS_ERROR_FAILED, "the migration failed: %s",
                     info->error ? info->error : "the hypervisor gave no reason"));
    break;
  default: /* CANCELLED */
    if (reason == CANCEL_TIMEOUT)
      fail(run, VS_MIGRATE_TIMEOUT,
           g_error_new(VS_ERROR, VS_ERROR_TIMEOUT,
                       "the migration was not done after %.1f s (--timeout) and was cancelled; "
                       "the guest still runs here",
                       run->opts->timeout_ms / 1000.0));
    else if (reason == CANCEL_INTERRUPT)
      fail(run, VS_MIGRATE_CANCELLED,
           g_error_new_literal(VS_ERROR, VS_ERROR_FAILED,
                               "interrupted: the migration was cancelled; the guest still runs "
                               "here"));
    else
      fail(run, VS_MIGRATE_CANCELLED,
           g_error_new_literal(VS_ERROR, VS_ERROR_FAILED,
                               "the migration was cancelled (not by virt-shrink); the guest "
                               "still runs here"));
    break;
  }
}

/* Step 3: follows the migration started at @t0 until it ends, cancelling
 * it at the timeout or when stopped. */
static void follow(Run *run, gint64 t0) {
  const VsMigrateOptions *o = run->opts;
  VsMigrateResult *r = run->r;
  gint64 timeout_us = (gint64)o->timeout_ms * 1000;
  gint64 cancel_at = -1; /* when we first tried to cancel */
  CancelReason reason = CANCEL_NONE;
  gboolean cancel_warned = FALSE;

  for (;;) {
    g_autoptr(GError) error = NULL;
    VsMigrationInfo info;
    VsMigrateProgress p;
    gint64 t = now(run), elapsed = t - t0, nap;

    if (reason == CANCEL_NONE && stop_requested(run))
      reason = CANCEL_INTERRUPT;
    else if (reason == CANCEL_NONE && timeout_us && elapsed >= timeout_us)
      reason = CANCEL_TIMEOUT;
    /* A cancel may be refused before the hypervisor's job exists (libvirt):
     * try again at each poll until it takes. */
    if (reason != CANCEL_NONE && !r->cancel_sent) {
      if (cancel_at < 0)
        cancel_at = t;
      if (vs_backend_migrate_cancel(run->backend, &error)) {
        r->cancel_sent = TRUE;
      } else if (!cancel_warned) {
        warn(run, "cannot cancel the migration yet: %s; trying again", error->message);
        cancel_warned = TRUE;
      }
      g_clear_error(&error);
    }
    if (!vs_backend_migrate_query(run->backend, &info, &error)) {
      vs_migration_info_clear(&info);
      r->migrate_us = now(run) - t0;
      g_prefix_error(&error, "lost track of the migration (it may still be running: ask the "
                             "hypervisor): ");
      fail(run, VS_MIGRATE_FAILED, g_steal_pointer(&error));
      return;
    }
    vs_migration_info_clear(&r->info);
    r->info = info;
    elapsed = now(run) - t0;
    p = (VsMigrateProgress){&r->info, elapsed, timeout_us, cancel_at >= 0};
    if (o->progress)
      o->progress(&p, o->data);
    if (vs_migration_status_is_final(r->info.status)) {
      r->migrate_us = elapsed;
      conclude(run, reason);
      return;
    }
    if (cancel_at >= 0 && now(run) - cancel_at >= (gint64)o->cancel_wait_ms * 1000) {
      r->migrate_us = now(run) - t0;
      fail(run, VS_MIGRATE_FAILED,
           g_error_new(VS_ERROR, VS_ERROR_TIMEOUT,
                       "the migration did not stop within %.1f s of the cancel (it is %s): "
                       "ask the hypervisor where the guest runs",
                       o->cancel_wait_ms / 1000.0, r->info.status_word));
      return;
    }
    nap = (gint64)o->poll_ms * 1000;
    /* Wake up at the timeout, not up to a poll after it. */
    if (reason == CANCEL_NONE && timeout_us && elapsed < timeout_us)
      nap = MIN(nap, timeout_us - elapsed);
    run->clock->sleep_us(run->clock->data, MAX(nap, 1));
  }
}

void vs_migrate_run(VsBackend *backend, const VsMigrateOptions *opts, VsMigrateResult *result) {
  Run run = {backend, opts, opts->clock ? opts->clock : vs_clock_real(), result};
  g_autoptr(GError) error = NULL;
  gboolean paused = FALSE;
  gint64 t0 = now(&run), t;

  result_init(result);
  if (!check_state(&run, &paused))
    goto out;

  /* Step 1. */
  if (opts->agent_mode == VS_AGENT_NONE) {
    result->agent_note = g_strdup("not asked (--no-agent)");
  } else if (paused) {
    /* A paused guest's agent cannot run a round: do not wait for it. */
    result->agent_note = g_strdup("not asked: the guest is paused");
    if (opts->agent_mode == VS_AGENT_REQUIRED) {
      fail(&run, VS_MIGRATE_FAILED,
           g_error_new(VS_ERROR, VS_ERROR_NOT_RUNNING,
                       "%s is paused: its guest agent cannot prepare (--require-agent)",
                       backend->name));
      goto out;
    }
    warn(&run, "%s is paused: migrating without asking its guest agent", backend->name);
  } else if (!prepare(&run, opts->agent_mode == VS_AGENT_REQUIRED
                                ? "the guest agent did not prepare the migration "
                                  "(--require-agent): "
                                : NULL)) {
    goto out;
  }
  if (stop_requested(&run)) {
    fail(&run, VS_MIGRATE_CANCELLED,
         g_error_new_literal(VS_ERROR, VS_ERROR_FAILED,
                             "interrupted before the migration started: nothing was started"));
    goto out;
  }

  /* Step 2. */
  t = now(&run);
  if (!vs_backend_migrate_start(backend, &opts->params, &error)) {
    result->migrate_us = now(&run) - t;
    g_prefix_error(&error, "cannot start the migration: ");
    fail(&run, VS_MIGRATE_FAILED, g_steal_pointer(&error));
    goto out;
  }
  result->started = TRUE;

  /* Step 3. */
  follow(&run, t);
out:
  result->total_us = now(&run) - t0;
}

void vs_migrate_prepare_run(VsBackend *backend, const VsMigrateOptions *opts,
                            VsMigrateResult *result) {
  Run run = {backend, opts, opts->clock ? opts->clock : vs_clock_real(), result};
  gboolean paused = FALSE;
  gint64 t0 = now(&run);

  result_init(result);
  if (!check_state(&run, &paused))
    goto out;
  if (paused) {
    result->agent_note = g_strdup("not asked: the guest is paused");
    fail(&run, VS_MIGRATE_FAILED,
         g_error_new(VS_ERROR, VS_ERROR_NOT_RUNNING, "%s is paused: its guest agent cannot prepare",
                     backend->name));
    goto out;
  }
  if (prepare(&run, "the guest agent did not prepare the migration: "))
    result->outcome = VS_MIGRATE_PREPARED;
out:
  result->total_us = now(&run) - t0;
}
