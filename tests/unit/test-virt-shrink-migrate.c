/* SPDX-License-Identifier: MIT */
/*
 * The migrate state machine over a fake backend (a migration that moves on
 * a fake clock) and a fake agent (no sockets, no sleeping): the soft round
 * then the migration; no agent, agent errors, --no-agent, --require-agent;
 * a migration that cannot start, fails, is cancelled by someone else, does
 * not converge (--timeout), is interrupted, or is lost track of; cancels
 * that are refused, too late or ignored; paused and stopped guests;
 * prepare-migration alone. Then what the reports make of it, and QEMU's
 * query-migrate answers.
 */
#include "cunit-run.h"
#include <string.h>

#include "migrate.h"
#include "qmp-backend.h"
#include "report.h"
#include "vs-fakes.h"
#include "vs-error.h"

#define MiB (G_GUINT64_CONSTANT(1) << 20)

/* ---- the fakes ---- */

typedef enum {
  MIG_OK,                 /* setup, then active until all is sent, then completed */
  MIG_START_FAILS,        /* the hypervisor refuses to start */
  MIG_FAILS_MIDWAY,       /* failed once half is sent */
  MIG_NEVER_CONVERGES,    /* 100 MiB always remain */
  MIG_CANCELLED_BY_OTHER, /* cancelled by someone else after 500 ms */
  MIG_QUERY_FAILS,        /* the hypervisor cannot be asked after 300 ms */
  MIG_CANCEL_REFUSED,     /* the first cancel is refused (no job yet), the next works */
  MIG_CANCEL_TOO_LATE,    /* the cancel is taken, but the migration completes */
  MIG_CANCEL_IGNORED,     /* the cancel is taken; the migration never stops */
} MigBehaviour;

/* The fake migration's figures. */
#define SETUP_US     50000
#define GUEST_BYTES  (1024 * MiB)
#define RATE_BPS     (512.0 * MiB)
#define CANCEL_US    100000 /* a cancel takes 100 ms to stop the migration */
#define DOWNTIME_MS  42
#define REMAIN_BYTES (100 * MiB) /* what never converges */

typedef struct {
  VsBackend parent;
  gint64 now_us;
  const char *state;
  FakeGuestAgent guest; /* the guest agent: its behaviour, what it saw */
  MigBehaviour mig;
  gint64 started_at_us, cancelled_at_us;
  guint cancels, queries;
  GPtrArray *calls; /* "state", "open-agent", the agent's commands, "start", "cancel" */
  guint agents_alive_at_start;
  char *dest_uri;
  guint64 bandwidth_mib_s;
  /* What the progress callback saw. */
  guint progress_calls;
  gint64 last_transferred;
  gboolean transferred_went_back;
  gboolean saw_cancelling;
  gint64 stop_after_bytes; /* >= 0: set stop once this much was sent */
  volatile sig_atomic_t stop;
  GPtrArray *warnings_seen;
} Fake;

static void record(Fake *f, const char *what) {
  g_ptr_array_add(f->calls, g_strdup(what));
}

static gboolean fake_get_memory(VsBackend *self, VsMemory *out, GError **error) {
  out->actual_bytes = out->max_bytes = GUEST_BYTES;
  return TRUE;
}

static gboolean fake_set_memory(VsBackend *self, guint64 target_bytes, GError **error) {
  g_assert_not_reached();
}

static gboolean fake_get_state(VsBackend *self, gboolean *running, char **state, GError **error) {
  Fake *f = (Fake *)self;

  record(f, "state");
  *running = strcmp(f->state, "running") == 0;
  *state = g_strdup(f->state);
  return TRUE;
}

/* The answer of shrinkd-prepare-migration as docs/channel-protocol.md
 * gives it: one soft round, reason "migration". */
static JsonNode *prepare_answer(JsonObject *arguments) {
  return json_from_string(
      "{\"freed_bytes\": 150000000, \"measured_bytes\": 140000000,"
      " \"mem_available_before_bytes\": 200000000, \"mem_available_after_bytes\": 340000000,"
      " \"target_bytes\": 160000000, \"ready\": true, \"rounds\": ["
      "  {\"round_id\": 7, \"level\": \"soft\", \"reason\": \"migration\", \"requests\": ["
      "    {\"pid\": 10, \"client\": \"cache\", \"shrinker\": \"lru\", \"asked_bytes\": 100,"
      "     \"freed_bytes\": 90, \"missed\": false},"
      "    {\"pid\": 10, \"client\": \"cache\", \"shrinker\": \"arena\", \"asked_bytes\": 20,"
      "     \"freed_bytes\": 20, \"missed\": false},"
      "    {\"pid\": 20, \"client\": \"db\", \"shrinker\": \"pool\", \"asked_bytes\": 50,"
      "     \"freed_bytes\": 0, \"missed\": true}]}]}",
      NULL);
}

static VsAgent *fake_open_agent(VsBackend *self, guint timeout_ms, GError **error) {
  return fake_guest_agent_open(&((Fake *)self)->guest, timeout_ms, error);
}

static void fake_free(VsBackend *self) {}

static gboolean fake_migrate_start(VsBackend *self, const VsMigrateParams *params, GError **error) {
  Fake *f = (Fake *)self;

  record(f, "start");
  f->agents_alive_at_start = f->guest.alive;
  f->now_us += 2000;
  if (f->mig == MIG_START_FAILS) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_FAILED,
                        "QMP migrate: There's a migration process in progress (GenericError)");
    return FALSE;
  }
  g_free(f->dest_uri);
  f->dest_uri = g_strdup(params->dest_uri);
  f->bandwidth_mib_s = params->bandwidth_mib_s;
  f->started_at_us = f->now_us;
  return TRUE;
}

static void set_status(VsMigrationInfo *out, VsMigrationStatus status) {
  out->status = status;
  g_strlcpy(out->status_word, vs_migration_status_name(status), sizeof(out->status_word));
}

static gboolean fake_migrate_query(VsBackend *self, VsMigrationInfo *out, GError **error) {
  Fake *f = (Fake *)self;
  gint64 t, sent;
  gboolean cancel_works = f->mig != MIG_CANCEL_TOO_LATE && f->mig != MIG_CANCEL_IGNORED;

  f->queries++;
  f->now_us += 1000; /* a query takes 1 ms */
  if (f->started_at_us < 0)
    return TRUE;
  t = f->now_us - f->started_at_us;
  if (f->mig == MIG_QUERY_FAILS && t >= 300000) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_CLOSED,
                        "QMP query-migrate: the peer closed the connection");
    return FALSE;
  }
  sent = t <= SETUP_US ? 0 : (gint64)(RATE_BPS * (double)(t - SETUP_US) / 1e6);
  out->total_bytes = GUEST_BYTES;
  out->transferred_bytes = MIN(sent, (gint64)GUEST_BYTES);
  out->remaining_bytes = (gint64)GUEST_BYTES - out->transferred_bytes;
  out->rate_bytes_per_s = t <= SETUP_US ? 0 : (gint64)RATE_BPS;
  out->total_time_ms = t / 1000;
  out->setup_time_ms = MIN(t, SETUP_US) / 1000;
  out->downtime_ms = 300; /* expected */
  if (f->mig == MIG_NEVER_CONVERGES || f->mig == MIG_CANCEL_IGNORED ||
      f->mig == MIG_CANCEL_REFUSED) {
    out->remaining_bytes = MAX(out->remaining_bytes, (gint64)REMAIN_BYTES);
    out->transferred_bytes = sent;
  }
  if (f->cancelled_at_us >= 0 && cancel_works) {
    set_status(out, f->now_us - f->cancelled_at_us < CANCEL_US ? VS_MIGRATION_CANCELLING
                                                               : VS_MIGRATION_CANCELLED);
  } else if (f->mig == MIG_CANCELLED_BY_OTHER && t >= 500000) {
    set_status(out, VS_MIGRATION_CANCELLED);
  } else if (t <= SETUP_US) {
    set_status(out, VS_MIGRATION_SETUP);
  } else if (f->mig == MIG_FAILS_MIDWAY && sent >= (gint64)GUEST_BYTES / 2) {
    set_status(out, VS_MIGRATION_FAILED);
    out->error = g_strdup("Unable to write to socket: Broken pipe");
  } else if (out->remaining_bytes == 0) {
    set_status(out, VS_MIGRATION_COMPLETED);
    out->downtime_ms = DOWNTIME_MS;
  } else {
    set_status(out, VS_MIGRATION_ACTIVE);
  }
  return TRUE;
}

static gboolean fake_migrate_cancel(VsBackend *self, GError **error) {
  Fake *f = (Fake *)self;

  record(f, "cancel");
  f->cancels++;
  if (f->mig == MIG_CANCEL_REFUSED && f->cancels == 1) {
    g_set_error_literal(error, VS_ERROR, VS_ERROR_FAILED,
                        "cannot cancel the migration: Requested operation is not valid: no job "
                        "is active on the domain");
    return FALSE;
  }
  f->cancelled_at_us = f->now_us;
  return TRUE;
}

static const VsBackendOps fake_ops = {
    .get_memory = fake_get_memory,
    .set_memory = fake_set_memory,
    .get_state = fake_get_state,
    .open_agent = fake_open_agent,
    .free = fake_free,
    .migrate_start = fake_migrate_start,
    .migrate_query = fake_migrate_query,
    .migrate_cancel = fake_migrate_cancel,
};

static gint64 fake_now(gpointer data) {
  return ((Fake *)data)->now_us;
}

static void fake_sleep(gpointer data, gint64 us) {
  CU_ASSERT(us > 0);
  ((Fake *)data)->now_us += us;
}

static void fake_progress(const VsMigrateProgress *p, gpointer data) {
  Fake *f = data;
  gint64 sent = p->info->transferred_bytes;

  CU_ASSERT(p->elapsed_us >= 0);
  f->progress_calls++;
  if (sent < f->last_transferred)
    f->transferred_went_back = TRUE;
  f->last_transferred = sent;
  if (p->cancelling)
    f->saw_cancelling = TRUE;
  if (f->stop_after_bytes >= 0 && sent >= f->stop_after_bytes)
    f->stop = 1;
}

static void fake_warning(const char *message, gpointer data) {
  g_ptr_array_add(((Fake *)data)->warnings_seen, g_strdup(message));
}

static void fake_init(Fake *f) {
  *f = (Fake){
      .parent = {.ops = &fake_ops, .name = (char *)"domain 'fake'"},
      .now_us = 1000000,
      .state = "running",
      .started_at_us = -1,
      .cancelled_at_us = -1,
      .last_transferred = -1,
      .stop_after_bytes = -1,
      .calls = g_ptr_array_new_with_free_func(g_free),
      .guest = {.command = "shrinkd-prepare-migration", .answer_us = 300000, .answer = prepare_answer},
      .warnings_seen = g_ptr_array_new_with_free_func(g_free),
  };
  f->guest.now_us = &f->now_us;
  f->guest.calls = f->calls;
}

static void fake_clear(Fake *f) {
  g_ptr_array_unref(f->calls);
  g_ptr_array_unref(f->warnings_seen);
  g_free(f->dest_uri);
  fake_guest_agent_clear(&f->guest);
}

static VsClock fake_clock;

static void options(Fake *f, VsMigrateOptions *o, VsAgentMode mode) {
  vs_migrate_options_init(o, "tcp:dest:4444");
  o->agent_mode = mode;
  o->progress = fake_progress;
  o->warning = fake_warning;
  o->data = f;
  o->stop = &f->stop;
  fake_clock = (VsClock){fake_now, fake_sleep, f};
  o->clock = &fake_clock;
}

/* Migrates @f with @mode and the defaults; the caller clears @r. */
static void run(Fake *f, VsAgentMode mode, VsMigrateResult *r) {
  VsMigrateOptions o;

  options(f, &o, mode);
  vs_migrate_run(&f->parent, &o, r);
}

/* The calls other than "state", joined with spaces. */
static char *calls(Fake *f) {
  static const char *const skip[] = {"state", NULL};

  return fake_calls_text(f->calls, skip);
}

static gboolean has_warning(VsMigrateResult *r, const char *words) {
  return fake_has_warning(r->warnings, words);
}

/* ---- the state machine ---- */

static void test_soft_round_then_migration_completes(void) {
  Fake f;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  run(&f, VS_AGENT_AUTO, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "open-agent shrinkd-prepare-migration start");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 0);
  CU_ASSERT_PTR_NULL(r.error);
  CU_ASSERT(r.started);
  CU_ASSERT_FALSE(r.cancel_sent);
  CU_ASSERT(r.agent_used);
  CU_ASSERT_PTR_NULL(r.agent_note);
  CU_ASSERT_PTR_NOT_NULL(r.prepare);
  CU_ASSERT_EQUAL(r.warnings->len, 0);
  /* The agent got the default deadline and no fraction, and the deadline
   * plus the margin to answer; its channel was closed before the start. */
  CU_ASSERT_EQUAL(json_object_get_int_member(f.guest.args, "deadline_ms"),
                  VS_MIGRATE_DEFAULT_DEADLINE_MS);
  CU_ASSERT_FALSE(json_object_has_member(f.guest.args, "fraction_pct"));
  CU_ASSERT_EQUAL(f.guest.call_timeout_ms,
                  VS_MIGRATE_DEFAULT_DEADLINE_MS + VS_MIGRATE_PREPARE_MARGIN_MS);
  CU_ASSERT_EQUAL(f.guest.open_timeout_ms, VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS);
  CU_ASSERT_EQUAL(f.agents_alive_at_start, 0);
  CU_ASSERT_STRING_EQUAL(f.dest_uri, "tcp:dest:4444");
  CU_ASSERT_EQUAL(f.bandwidth_mib_s, 0);
  /* The last reading: completed, everything sent, the real downtime. */
  CU_ASSERT_EQUAL(r.info.status, VS_MIGRATION_COMPLETED);
  CU_ASSERT_STRING_EQUAL(r.info.status_word, "completed");
  CU_ASSERT_EQUAL(r.info.transferred_bytes, (gint64)GUEST_BYTES);
  CU_ASSERT_EQUAL(r.info.remaining_bytes, 0);
  CU_ASSERT_EQUAL(r.info.downtime_ms, DOWNTIME_MS);
  CU_ASSERT_EQUAL(r.info.setup_time_ms, SETUP_US / 1000);
  /* Times on the fake clock: 300 ms for the round; 50 ms of setup and 1 GiB
   * at 512 MiB/s = 2.05 s of migration, seen within a poll (200 ms). */
  CU_ASSERT_EQUAL(r.prepare_us, 300000);
  CU_ASSERT(r.migrate_us >= 2050000 && r.migrate_us <= 2050000 + 210000);
  CU_ASSERT(r.total_us >= r.prepare_us + r.migrate_us);
  CU_ASSERT(f.progress_calls >= 10);
  CU_ASSERT_FALSE(f.transferred_went_back);
  CU_ASSERT_EQUAL(f.last_transferred, (gint64)GUEST_BYTES);
  CU_ASSERT_FALSE(f.saw_cancelling);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_options_reach_agent_and_backend(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;

  fake_init(&f);
  options(&f, &o, VS_AGENT_AUTO);
  o.deadline_ms = 1500;
  o.fraction_pct = 40;
  o.agent_timeout_ms = 700;
  o.params.bandwidth_mib_s = 256;
  vs_migrate_run(&f.parent, &o, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
  CU_ASSERT_EQUAL(json_object_get_int_member(f.guest.args, "deadline_ms"), 1500);
  CU_ASSERT_EQUAL(json_object_get_int_member(f.guest.args, "fraction_pct"), 40);
  CU_ASSERT_EQUAL(json_object_get_size(f.guest.args), 2);
  CU_ASSERT_EQUAL(f.guest.call_timeout_ms, 1500 + VS_MIGRATE_PREPARE_MARGIN_MS);
  CU_ASSERT_EQUAL(f.guest.open_timeout_ms, 700);
  CU_ASSERT_EQUAL(f.bandwidth_mib_s, 256);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_no_agent_warns_and_migrates(void) {
  Fake f;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  f.guest.behaviour = AGENT_ABSENT;
  run(&f, VS_AGENT_AUTO, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "open-agent start");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
  CU_ASSERT_FALSE(r.agent_used);
  CU_ASSERT_PTR_NULL(r.prepare);
  CU_ASSERT_EQUAL(r.warnings->len, 1);
  CU_ASSERT(has_warning(&r, "no guest agent: cannot connect to the guest agent channel at /fake"));
  CU_ASSERT(has_warning(&r, "migrating without a soft round first"));
  CU_ASSERT_EQUAL(f.warnings_seen->len, 1);
  CU_ASSERT_PTR_NOT_NULL(r.agent_note && strstr(r.agent_note, "guest-sync-delimited"));
  CU_ASSERT_EQUAL(r.prepare_us, (gint64)VS_SETMEM_DEFAULT_AGENT_TIMEOUT_MS * 1000);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_no_agent_option(void) {
  Fake f;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  run(&f, VS_AGENT_NONE, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "start");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
  CU_ASSERT_EQUAL(r.warnings->len, 0);
  CU_ASSERT_STRING_EQUAL(r.agent_note, "not asked (--no-agent)");
  CU_ASSERT_EQUAL(r.prepare_us, -1);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_agent_failures_migrate_anyway(void) {
  static const struct {
    AgentBehaviour b;
    const char *words;
  } rows[] = {
      {AGENT_BUSY, "could not prepare the migration: queue full (Busy); migrating anyway"},
      {AGENT_TIMEOUT, "no answer from the guest agent within 5000 ms"},
      {AGENT_NOT_OBJECT, "the answer is not an object"},
  };

  for (guint i = 0; i < G_N_ELEMENTS(rows); i++) {
    Fake f;
    VsMigrateResult r;
    g_autofree char *seq = NULL;

    fake_init(&f);
    f.guest.behaviour = rows[i].b;
    run(&f, VS_AGENT_AUTO, &r);
    seq = calls(&f);
    CU_ASSERT_STRING_EQUAL(seq, "open-agent shrinkd-prepare-migration start");
    CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
    CU_ASSERT_FALSE(r.agent_used);
    CU_ASSERT_PTR_NULL(r.prepare);
    CU_ASSERT(has_warning(&r, rows[i].words));
    vs_migrate_result_clear(&r);
    fake_clear(&f);
  }
}

static void test_required_agent(void) {
  static const AgentBehaviour bad[] = {AGENT_ABSENT, AGENT_BUSY, AGENT_TIMEOUT, AGENT_NOT_OBJECT};

  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    Fake f;
    VsMigrateResult r;
    g_autofree char *seq = NULL;

    fake_init(&f);
    f.guest.behaviour = bad[i];
    run(&f, VS_AGENT_REQUIRED, &r);
    seq = calls(&f);
    /* Failed, and nothing was migrated. */
    CU_ASSERT_PTR_NULL(strstr(seq, "start"));
    CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
    CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 1);
    CU_ASSERT_FALSE(r.started);
    CU_ASSERT_PTR_NOT_NULL(r.error && strstr(r.error->message, "the guest agent did not "
                                                               "prepare the migration "
                                                               "(--require-agent): "));
    CU_ASSERT_EQUAL(r.migrate_us, -1);
    CU_ASSERT_EQUAL(r.warnings->len, 0);
    vs_migrate_result_clear(&r);
    fake_clear(&f);
  }
  {
    Fake f;
    VsMigrateResult r;

    fake_init(&f);
    run(&f, VS_AGENT_REQUIRED, &r);
    CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
    CU_ASSERT(r.agent_used);
    vs_migrate_result_clear(&r);
    fake_clear(&f);
  }
}

static void test_start_fails(void) {
  Fake f;
  VsMigrateResult r;

  fake_init(&f);
  f.mig = MIG_START_FAILS;
  run(&f, VS_AGENT_AUTO, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 1);
  CU_ASSERT_FALSE(r.started);
  CU_ASSERT(r.agent_used); /* the guest did its round */
  CU_ASSERT_STRING_EQUAL(r.error->message, "cannot start the migration: QMP migrate: There's a "
                                           "migration process in progress (GenericError)");
  CU_ASSERT_EQUAL(f.queries, 0);
  CU_ASSERT(r.migrate_us >= 0);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_migration_fails(void) {
  Fake f;
  VsMigrateResult r;

  fake_init(&f);
  f.mig = MIG_FAILS_MIDWAY;
  run(&f, VS_AGENT_AUTO, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 1);
  CU_ASSERT(r.started);
  CU_ASSERT_STRING_EQUAL(r.error->message,
                         "the migration failed: Unable to write to socket: Broken pipe");
  CU_ASSERT_EQUAL(r.info.status, VS_MIGRATION_FAILED);
  CU_ASSERT(r.info.transferred_bytes >= (gint64)GUEST_BYTES / 2);
  CU_ASSERT_EQUAL(f.cancels, 0);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_timeout_cancels(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  f.mig = MIG_NEVER_CONVERGES;
  options(&f, &o, VS_AGENT_NONE);
  o.timeout_ms = 1500;
  vs_migrate_run(&f.parent, &o, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "start cancel");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_TIMEOUT);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 4);
  CU_ASSERT(r.cancel_sent);
  CU_ASSERT(g_error_matches(r.error, VS_ERROR, VS_ERROR_TIMEOUT));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "not done after 1.5 s (--timeout)"));
  CU_ASSERT_EQUAL(r.info.status, VS_MIGRATION_CANCELLED);
  /* Cancelled at the timeout itself, not a poll later (the timeout counts
   * from before the start, which takes 2 ms); stopped 100 ms on. */
  CU_ASSERT_EQUAL(f.cancelled_at_us - f.started_at_us, 1500000 - 2000);
  CU_ASSERT(r.migrate_us >= 1500000 + CANCEL_US && r.migrate_us <= 1500000 + CANCEL_US + 210000);
  CU_ASSERT(f.saw_cancelling);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_cancel_refused_is_tried_again(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  f.mig = MIG_CANCEL_REFUSED;
  options(&f, &o, VS_AGENT_NONE);
  o.timeout_ms = 500;
  vs_migrate_run(&f.parent, &o, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "start cancel cancel");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_TIMEOUT);
  CU_ASSERT_EQUAL(r.warnings->len, 1);
  CU_ASSERT(has_warning(&r, "cannot cancel the migration yet: "));
  CU_ASSERT(has_warning(&r, "; trying again"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_cancel_too_late_completes(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;

  fake_init(&f);
  f.mig = MIG_CANCEL_TOO_LATE;
  options(&f, &o, VS_AGENT_NONE);
  o.timeout_ms = 1000;
  vs_migrate_run(&f.parent, &o, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 0);
  CU_ASSERT(r.cancel_sent);
  CU_ASSERT_PTR_NULL(r.error);
  CU_ASSERT(has_warning(&r, "completed before the cancel took effect"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_cancel_ignored_gives_up(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;

  fake_init(&f);
  f.mig = MIG_CANCEL_IGNORED;
  options(&f, &o, VS_AGENT_NONE);
  o.timeout_ms = 1000;
  o.cancel_wait_ms = 3000;
  vs_migrate_run(&f.parent, &o, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT_EQUAL(f.cancels, 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "did not stop within 3.0 s of the cancel (it "
                                                  "is active)"));
  CU_ASSERT(r.migrate_us >= 4000000 && r.migrate_us <= 4000000 + 210000);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_interrupted(void) {
  Fake f;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  /* While it runs: cancelled, exit 3. */
  fake_init(&f);
  f.stop_after_bytes = 256 * MiB;
  run(&f, VS_AGENT_NONE, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "start cancel");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_CANCELLED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 3);
  CU_ASSERT(r.cancel_sent);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "interrupted: the migration was cancelled"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* Before it started: nothing is started. */
  fake_init(&f);
  f.stop = 1;
  run(&f, VS_AGENT_AUTO, &r);
  g_free(seq);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "open-agent shrinkd-prepare-migration");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_CANCELLED);
  CU_ASSERT_FALSE(r.started);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "nothing was started"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_cancelled_by_another_client(void) {
  Fake f;
  VsMigrateResult r;

  fake_init(&f);
  f.mig = MIG_CANCELLED_BY_OTHER;
  run(&f, VS_AGENT_NONE, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_CANCELLED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 3);
  CU_ASSERT_FALSE(r.cancel_sent);
  CU_ASSERT_EQUAL(f.cancels, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "cancelled (not by virt-shrink)"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_lost_track(void) {
  Fake f;
  VsMigrateResult r;

  fake_init(&f);
  f.mig = MIG_QUERY_FAILS;
  run(&f, VS_AGENT_NONE, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT(g_error_matches(r.error, VS_ERROR, VS_ERROR_CLOSED));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "lost track of the migration"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "the peer closed the connection"));
  /* The last good reading is kept; nothing was cancelled. */
  CU_ASSERT_EQUAL(r.info.status, VS_MIGRATION_ACTIVE);
  CU_ASSERT(r.info.transferred_bytes > 0);
  CU_ASSERT_EQUAL(f.cancels, 0);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_guest_states(void) {
  Fake f;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  /* Shut off: nothing is done. */
  fake_init(&f);
  f.state = "shut off";
  run(&f, VS_AGENT_AUTO, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "");
  CU_ASSERT(g_error_matches(r.error, VS_ERROR, VS_ERROR_NOT_RUNNING));
  CU_ASSERT_STRING_EQUAL(r.error->message, "domain 'fake' is not running (shut off)");
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 1);
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* Paused: the agent is not asked, the migration goes on. */
  fake_init(&f);
  f.state = "paused";
  run(&f, VS_AGENT_AUTO, &r);
  g_free(seq);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "start");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_COMPLETED);
  CU_ASSERT(has_warning(&r, "domain 'fake' is paused: migrating without asking its guest agent"));
  CU_ASSERT_STRING_EQUAL(r.agent_note, "not asked: the guest is paused");
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* Paused, agent required: nothing is done. */
  fake_init(&f);
  f.state = "paused";
  run(&f, VS_AGENT_REQUIRED, &r);
  g_free(seq);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.error->message, "is paused"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_backend_without_migration(void) {
  static const VsBackendOps old_ops = {fake_get_memory, fake_set_memory, fake_get_state,
                                       fake_open_agent, fake_free};
  Fake f;
  VsMigrateResult r;

  fake_init(&f);
  f.parent.ops = &old_ops;
  run(&f, VS_AGENT_NONE, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT_STRING_EQUAL(r.error->message,
                         "cannot start the migration: domain 'fake': cannot migrate with this "
                         "backend");
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_prepare_only(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;
  g_autofree char *seq = NULL;

  fake_init(&f);
  options(&f, &o, VS_AGENT_AUTO);
  o.fraction_pct = 100;
  vs_migrate_prepare_run(&f.parent, &o, &r);
  seq = calls(&f);
  CU_ASSERT_STRING_EQUAL(seq, "open-agent shrinkd-prepare-migration");
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_PREPARED);
  CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 0);
  CU_ASSERT(r.agent_used);
  CU_ASSERT_FALSE(r.started);
  CU_ASSERT_EQUAL(json_object_get_int_member(f.guest.args, "fraction_pct"), 100);
  CU_ASSERT_EQUAL(r.prepare_us, 300000);
  CU_ASSERT_EQUAL(r.migrate_us, -1);
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* Without an agent, or when it fails: exit 1, no warning (the error says
   * it). */
  for (AgentBehaviour b = AGENT_ABSENT; b <= AGENT_NOT_OBJECT; b++) {
    fake_init(&f);
    f.guest.behaviour = b;
    options(&f, &o, VS_AGENT_AUTO);
    vs_migrate_prepare_run(&f.parent, &o, &r);
    CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
    CU_ASSERT_EQUAL(vs_migrate_exit_code(&r), 1);
    CU_ASSERT_PTR_NOT_NULL(r.error &&
                           g_str_has_prefix(r.error->message, "the guest agent did not prepare the "
                                                              "migration: "));
    CU_ASSERT_PTR_NOT_NULL(r.agent_note);
    CU_ASSERT_EQUAL(r.warnings->len, 0);
    vs_migrate_result_clear(&r);
    fake_clear(&f);
  }

  fake_init(&f);
  f.state = "paused";
  options(&f, &o, VS_AGENT_AUTO);
  vs_migrate_prepare_run(&f.parent, &o, &r);
  CU_ASSERT_EQUAL(r.outcome, VS_MIGRATE_FAILED);
  CU_ASSERT_EQUAL(f.agents_alive_at_start, 0);
  CU_ASSERT_STRING_EQUAL(r.error->message,
                         "domain 'fake' is paused: its guest agent cannot prepare");
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

/* ---- reports ---- */

static void test_migrate_json(void) {
  Fake f;
  VsMigrateResult r;
  g_autoptr(JsonNode) j = NULL;
  JsonObject *o, *m, *phases, *agent;
  JsonArray *apps;

  fake_init(&f);
  run(&f, VS_AGENT_AUTO, &r);
  j = vs_report_migrate_json("fake", "tcp:dest:4444", &r);
  o = json_node_get_object(j);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "guest"), "fake");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "destination"), "tcp:dest:4444");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "result"), "completed");
  CU_ASSERT_EQUAL(json_object_get_int_member(o, "exit_status"), 0);
  CU_ASSERT(json_node_is_null(json_object_get_member(o, "error")));
  m = json_object_get_object_member(o, "migration");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(m, "status"), "completed");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(m, "hypervisor_status"), "completed");
  CU_ASSERT_EQUAL(json_object_get_int_member(m, "transferred_bytes"), (gint64)GUEST_BYTES);
  CU_ASSERT_EQUAL(json_object_get_int_member(m, "remaining_bytes"), 0);
  CU_ASSERT_EQUAL(json_object_get_int_member(m, "total_bytes"), (gint64)GUEST_BYTES);
  CU_ASSERT_EQUAL(json_object_get_int_member(m, "rate_bytes_per_s"), (gint64)RATE_BPS);
  CU_ASSERT_EQUAL(json_object_get_int_member(m, "downtime_ms"), DOWNTIME_MS);
  CU_ASSERT(json_node_is_null(json_object_get_member(m, "expected_downtime_ms")));
  CU_ASSERT_EQUAL(json_object_get_int_member(m, "setup_time_ms"), SETUP_US / 1000);
  CU_ASSERT(json_object_get_int_member(m, "total_time_ms") >= 2050);
  CU_ASSERT(json_node_is_null(json_object_get_member(m, "error")));
  CU_ASSERT_FALSE(json_object_get_boolean_member(m, "cancelled_by_us"));
  phases = json_object_get_object_member(o, "phases_us");
  CU_ASSERT_EQUAL(json_object_get_int_member(phases, "prepare"), 300000);
  CU_ASSERT_EQUAL(json_object_get_int_member(phases, "migrate"), r.migrate_us);
  CU_ASSERT_EQUAL(json_object_get_int_member(phases, "total"), r.total_us);
  agent = json_object_get_object_member(o, "agent");
  CU_ASSERT(json_object_get_boolean_member(agent, "used"));
  CU_ASSERT_EQUAL(
      json_object_get_int_member(json_object_get_object_member(agent, "prepare"), "freed_bytes"),
      150000000);
  apps = json_object_get_array_member(o, "applications");
  CU_ASSERT_EQUAL_FATAL(json_array_get_length(apps), 2);
  CU_ASSERT_EQUAL(json_object_get_int_member(json_array_get_object_element(apps, 0), "freed_bytes"),
                  110);
  CU_ASSERT_EQUAL(json_object_get_int_member(json_array_get_object_element(apps, 1), "missed"), 1);
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(o, "warnings")), 0);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_migrate_json_not_started_and_prepare_only(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;
  g_autoptr(JsonNode) j = NULL;
  g_autoptr(JsonNode) k = NULL;
  JsonObject *obj;

  fake_init(&f);
  f.mig = MIG_START_FAILS;
  f.guest.behaviour = AGENT_ABSENT;
  run(&f, VS_AGENT_AUTO, &r);
  j = vs_report_migrate_json("fake", "tcp:dest:4444", &r);
  obj = json_node_get_object(j);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(obj, "result"), "failed");
  CU_ASSERT_EQUAL(json_object_get_int_member(obj, "exit_status"), 1);
  CU_ASSERT(json_node_is_null(json_object_get_member(obj, "migration")));
  CU_ASSERT_PTR_NOT_NULL(strstr(json_object_get_string_member(obj, "error"), "cannot start"));
  CU_ASSERT(json_node_is_null(
      json_object_get_member(json_object_get_object_member(obj, "agent"), "prepare")));
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(obj, "warnings")), 1);
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  fake_init(&f);
  options(&f, &o, VS_AGENT_AUTO);
  vs_migrate_prepare_run(&f.parent, &o, &r);
  k = vs_report_migrate_json("fake", NULL, &r);
  obj = json_node_get_object(k);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(obj, "result"), "prepared");
  CU_ASSERT_FALSE(json_object_has_member(obj, "migration"));
  CU_ASSERT_FALSE(json_object_has_member(obj, "destination"));
  CU_ASSERT_FALSE(
      json_object_has_member(json_object_get_object_member(obj, "phases_us"), "migrate"));
  CU_ASSERT_EQUAL(json_array_get_length(json_object_get_array_member(obj, "applications")), 2);
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

/* The text report of @r, as a string. */
static char *text_report(const char *destination, const VsMigrateResult *r) {
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);

  vs_report_migrate_text(out, "domain 'fake'", destination, r);
  fclose(out);
  return buf;
}

static void test_migrate_text(void) {
  Fake f;
  VsMigrateOptions o;
  VsMigrateResult r;
  g_autofree char *text = NULL;

  fake_init(&f);
  run(&f, VS_AGENT_AUTO, &r);
  text = text_report("tcp:dest:4444", &r);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "domain 'fake': migrated to tcp:dest:4444 in "));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "  prepare    300.0 ms  the guest freed 143 MiB (measured "
                                      "134 MiB; available 191 MiB -> 324 MiB; 1 round; ready)"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "completed: sent 1 GiB, left 0 B, at 512 MiB/s; total "));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, " ms, setup 50 ms, downtime 42 ms\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "cache"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "lru,arena"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* Timed out, without an agent. */
  fake_init(&f);
  f.mig = MIG_NEVER_CONVERGES;
  options(&f, &o, VS_AGENT_NONE);
  o.timeout_ms = 1000;
  vs_migrate_run(&f.parent, &o, &r);
  g_free(text);
  text = text_report("tcp:dest:4444", &r);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "migration to tcp:dest:4444 CANCELLED at the timeout"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "prepare           -  not asked (--no-agent)"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "cancelled: sent "));
  CU_ASSERT_PTR_NULL(strstr(text, "downtime")); /* only a completed one had one */
  CU_ASSERT_PTR_NULL(strstr(text, "PID"));
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* Failed before anything: nothing (the caller prints the error). */
  fake_init(&f);
  f.state = "shut off";
  run(&f, VS_AGENT_AUTO, &r);
  g_free(text);
  text = text_report("tcp:dest:4444", &r);
  CU_ASSERT_STRING_EQUAL(text, "");
  vs_migrate_result_clear(&r);
  fake_clear(&f);

  /* prepare-migration. */
  fake_init(&f);
  options(&f, &o, VS_AGENT_AUTO);
  vs_migrate_prepare_run(&f.parent, &o, &r);
  g_free(text);
  text = text_report(NULL, &r);
  CU_ASSERT_PTR_NOT_NULL(
      strstr(text, "domain 'fake': the guest agent prepared for a migration in 300.0 ms"));
  CU_ASSERT_PTR_NULL(strstr(text, "migrate "));
  vs_migrate_result_clear(&r);
  fake_clear(&f);
}

static void test_unknown_figures(void) {
  /* libvirt's test driver (and a migration that failed at once) gives no
   * figure: the line says only what is known. */
  VsMigrateResult r = {0};
  g_autofree char *text = NULL;

  r.outcome = VS_MIGRATE_FAILED;
  r.started = TRUE;
  r.prepare_us = -1;
  r.migrate_us = 200000;
  r.total_us = 200000;
  r.agent_note = g_strdup("not asked (--no-agent)");
  r.warnings = g_ptr_array_new_with_free_func(g_free);
  vs_migration_info_init(&r.info);
  r.info.status = VS_MIGRATION_FAILED;
  g_strlcpy(r.info.status_word, "failed", sizeof(r.info.status_word));
  text = text_report("qemu+ssh://dest/system", &r);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "  migrate    200.0 ms  failed\n"));
  g_free(text);
  r.info.setup_time_ms = 5;
  text = text_report("qemu+ssh://dest/system", &r);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "  migrate    200.0 ms  failed: setup 5 ms\n"));
  g_free(text);
  r.info.rate_bytes_per_s = 1024;
  text = text_report("qemu+ssh://dest/system", &r);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "  migrate    200.0 ms  failed: at 1 KiB/s; setup 5 ms\n"));
  vs_migrate_result_clear(&r);
}

static void test_null_figures_in_the_answer(void) {
  /* The agent answers null when the guest could not read MemAvailable. */
  VsMigrateResult r = {0};
  g_autofree char *text = NULL;

  r.outcome = VS_MIGRATE_PREPARED;
  r.agent_used = TRUE;
  r.prepare_us = 1000;
  r.migrate_us = -1;
  r.total_us = 1000;
  r.prepare = json_from_string("{\"freed_bytes\": 0, \"measured_bytes\": null,"
                               " \"mem_available_before_bytes\": null,"
                               " \"mem_available_after_bytes\": null, \"target_bytes\": 0,"
                               " \"ready\": true, \"rounds\": [{\"requests\": []}]}",
                               NULL);
  r.warnings = g_ptr_array_new_with_free_func(g_free);
  vs_migration_info_init(&r.info);
  text = text_report(NULL, &r);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "freed 0 B (measured -; available - -> -; 1 round; ready)"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "no application was asked"));
  vs_migrate_result_clear(&r);
}

/* ---- QEMU's query-migrate ---- */

static void test_qmp_parse_migration(void) {
  static const char active[] =
      "{\"expected-downtime\": 300, \"status\": \"active\", \"setup-time\": 12,"
      " \"total-time\": 1532, \"ram\": {\"total\": 1082523648, \"postcopy-requests\": 0,"
      " \"dirty-sync-count\": 1, \"multifd-bytes\": 0, \"pages-per-second\": 32710,"
      " \"page-size\": 4096, \"remaining\": 542851072, \"mbps\": 1073.741824,"
      " \"transferred\": 541064226, \"duplicate\": 4, \"dirty-pages-rate\": 0,"
      " \"skipped\": 0, \"normal-bytes\": 539230208, \"normal\": 131648}}";
  static const char completed[] =
      "{\"status\": \"completed\", \"setup-time\": 12, \"downtime\": 45, \"total-time\": 3012,"
      " \"ram\": {\"total\": 1082523648, \"remaining\": 0, \"mbps\": 2915,"
      " \"transferred\": 1090000000}}";
  static const char failed[] =
      "{\"status\": \"failed\", \"error-desc\": \"Failed to connect socket: Connection refused\"}";
  VsMigrationInfo i;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) a = json_from_string(active, NULL);
  g_autoptr(JsonNode) c = json_from_string(completed, NULL);
  g_autoptr(JsonNode) fl = json_from_string(failed, NULL);
  g_autoptr(JsonNode) none = json_from_string("{}", NULL);
  g_autoptr(JsonNode) other = json_from_string("{\"status\": \"pre-switchover\", \"ram\": 5,"
                                               " \"total-time\": -3, \"downtime\": \"x\"}",
                                               NULL);
  g_autoptr(JsonNode) cancelling = json_from_string("{\"status\": \"cancelling\"}", NULL);
  g_autoptr(JsonNode) bad = json_from_string("[1]", NULL);

  CU_ASSERT(vs_qmp_parse_migration(a, &i, &error));
  CU_ASSERT_EQUAL(i.status, VS_MIGRATION_ACTIVE);
  CU_ASSERT_STRING_EQUAL(i.status_word, "active");
  CU_ASSERT_EQUAL(i.transferred_bytes, 541064226);
  CU_ASSERT_EQUAL(i.remaining_bytes, 542851072);
  CU_ASSERT_EQUAL(i.total_bytes, 1082523648);
  CU_ASSERT_EQUAL(i.rate_bytes_per_s, 134217728); /* 1073.741824 Mbit/s */
  CU_ASSERT_EQUAL(i.total_time_ms, 1532);
  CU_ASSERT_EQUAL(i.setup_time_ms, 12);
  CU_ASSERT_EQUAL(i.downtime_ms, 300);
  CU_ASSERT_PTR_NULL(i.error);
  vs_migration_info_clear(&i);

  CU_ASSERT(vs_qmp_parse_migration(c, &i, &error));
  CU_ASSERT_EQUAL(i.status, VS_MIGRATION_COMPLETED);
  CU_ASSERT_EQUAL(i.downtime_ms, 45);
  CU_ASSERT_EQUAL(i.rate_bytes_per_s, 364375000); /* an integer mbps */
  CU_ASSERT_EQUAL(i.remaining_bytes, 0);
  vs_migration_info_clear(&i);

  CU_ASSERT(vs_qmp_parse_migration(fl, &i, &error));
  CU_ASSERT_EQUAL(i.status, VS_MIGRATION_FAILED);
  CU_ASSERT_STRING_EQUAL(i.error, "Failed to connect socket: Connection refused");
  CU_ASSERT_EQUAL(i.transferred_bytes, -1);
  vs_migration_info_clear(&i);

  /* QEMU answers {} before any migration. */
  CU_ASSERT(vs_qmp_parse_migration(none, &i, &error));
  CU_ASSERT_EQUAL(i.status, VS_MIGRATION_NONE);
  CU_ASSERT_STRING_EQUAL(i.status_word, "none");
  vs_migration_info_clear(&i);

  /* Stages of a running migration keep their word; junk figures stay
   * unknown. */
  CU_ASSERT(vs_qmp_parse_migration(other, &i, &error));
  CU_ASSERT_EQUAL(i.status, VS_MIGRATION_ACTIVE);
  CU_ASSERT_STRING_EQUAL(i.status_word, "pre-switchover");
  CU_ASSERT_EQUAL(i.transferred_bytes, -1);
  CU_ASSERT_EQUAL(i.total_time_ms, -1);
  CU_ASSERT_EQUAL(i.downtime_ms, -1);
  vs_migration_info_clear(&i);

  CU_ASSERT(vs_qmp_parse_migration(cancelling, &i, &error));
  CU_ASSERT_EQUAL(i.status, VS_MIGRATION_CANCELLING);
  CU_ASSERT_FALSE(vs_migration_status_is_final(i.status));
  vs_migration_info_clear(&i);

  CU_ASSERT_FALSE(vs_qmp_parse_migration(bad, &i, &error));
  CU_ASSERT(g_error_matches(error, VS_ERROR, VS_ERROR_PROTOCOL));
  vs_migration_info_clear(&i);
}

int main(void) {
  CU_pSuite s;

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  s = CU_add_suite("virt-shrink migrate", NULL, NULL);
  CU_add_test(s, "the soft round, then the migration completes: exit 0",
              test_soft_round_then_migration_completes);
  CU_add_test(s, "deadline, fraction, agent timeout, bandwidth reach their ends",
              test_options_reach_agent_and_backend);
  CU_add_test(s, "no agent: a warning, and the migration goes on",
              test_no_agent_warns_and_migrates);
  CU_add_test(s, "--no-agent", test_no_agent_option);
  CU_add_test(s, "agent errors: a warning, and the migration goes on",
              test_agent_failures_migrate_anyway);
  CU_add_test(s, "--require-agent: fail before migrating", test_required_agent);
  CU_add_test(s, "the hypervisor refuses to start: exit 1", test_start_fails);
  CU_add_test(s, "the migration fails: exit 1", test_migration_fails);
  CU_add_test(s, "--timeout: cancelled at the timeout, exit 4", test_timeout_cancels);
  CU_add_test(s, "a refused cancel is tried again", test_cancel_refused_is_tried_again);
  CU_add_test(s, "a cancel too late: completed, with a warning", test_cancel_too_late_completes);
  CU_add_test(s, "a cancel that never takes: give up waiting", test_cancel_ignored_gives_up);
  CU_add_test(s, "interrupted: cancelled, exit 3; before the start: nothing started",
              test_interrupted);
  CU_add_test(s, "cancelled by another client: exit 3", test_cancelled_by_another_client);
  CU_add_test(s, "the hypervisor cannot be asked any more: exit 1", test_lost_track);
  CU_add_test(s, "shut off, paused, paused with --require-agent", test_guest_states);
  CU_add_test(s, "a backend without migration", test_backend_without_migration);
  CU_add_test(s, "prepare-migration alone", test_prepare_only);
  s = CU_add_suite("virt-shrink migrate reports", NULL, NULL);
  CU_add_test(s, "migrate JSON", test_migrate_json);
  CU_add_test(s, "JSON: not started; prepare-migration",
              test_migrate_json_not_started_and_prepare_only);
  CU_add_test(s, "the report for people", test_migrate_text);
  CU_add_test(s, "figures the hypervisor did not give", test_unknown_figures);
  CU_add_test(s, "null figures in the agent's answer", test_null_figures_in_the_answer);
  s = CU_add_suite("QEMU query-migrate", NULL, NULL);
  CU_add_test(s, "statuses and figures", test_qmp_parse_migration);
  return cunit_run_all();
}
